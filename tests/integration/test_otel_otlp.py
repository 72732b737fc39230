"""OpenTelemetry export over the wire: runs reach an OTLP/HTTP collector on 127.0.0.1 as
protobuf ExportTraceServiceRequests, one trace per run, with the GenAI attributes."""

from __future__ import annotations

import asyncio

import pytest
from loopback_http import loopback_server
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

import cellwire
from cellwire import telemetry


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLWIRE_HOME", str(tmp_path))
    monkeypatch.delenv("CELLWIRE_DEFAULT_MODEL", raising=False)
    yield
    telemetry.disable_otel()


def _value(any_value):
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def collected(server) -> list[dict]:
    """Every span the collector received, flattened to name, ids, service and attributes."""
    spans = []
    for request in server.requests:
        assert (request.method, request.path) == ("POST", "/v1/traces")
        assert request.header("Content-Type") == "application/x-protobuf"
        message = ExportTraceServiceRequest.FromString(request.body)
        for resource_spans in message.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append({
                        "name": span.name, "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(), "parent": span.parent_span_id.hex(),
                        "service": resource.get("service.name"), "status": span.status.code,
                        "scope": scope_spans.scope.name,
                        "attributes": {a.key: _value(a.value) for a in span.attributes},
                    })
    return spans


async def test_runs_reach_an_otlp_http_collector(tmp_path):
    with loopback_server() as server:
        for _ in range(4):
            server.answer(200, b"", Content_Type="application/x-protobuf")
        sink = telemetry.enable_otel(endpoint=server.url, service_name="otel-test",
                                     headers={"x-api-key": "k1"})
        wf = cellwire.Workflow("wire")
        wf.add_node("start", "start", variables=[{"variable": "q", "type": "paragraph"}])
        wf.add_node("ask", "llm", after="start",
                    model={"provider": "scripted", "name": "echo", "mode": "chat"},
                    prompt_template=[{"role": "user", "text": "{{#start.q#}}"}])
        wf.add_node("end", "end", after="ask",
                    outputs=[{"variable": "a", "value_selector": ["ask", "text"]}])
        first = await wf.arun(q="hello otel world")
        second = await wf.arun(q="again")
        assert first.status == second.status == "succeeded"
        # The batch processor exports on its own thread; flush waits for it.
        assert await asyncio.to_thread(sink.flush, 10_000)
        await asyncio.to_thread(sink.shutdown)
        spans = collected(server)
        assert server.requests[0].header("x-api-key") == "k1"

    roots = [s for s in spans if s["name"] == "invoke_workflow wire"]
    assert {r["attributes"]["cellwire.run_id"] for r in roots} == {first.run_id, second.run_id}
    assert len({r["trace_id"] for r in roots}) == 2
    assert {s["service"] for s in spans} == {"otel-test"}
    assert {s["scope"] for s in spans} == {"cellwire"}
    first_root = next(r for r in roots if r["attributes"]["cellwire.run_id"] == first.run_id)
    chat = next(s for s in spans if s["name"] == "chat echo"
                and s["trace_id"] == first_root["trace_id"])
    assert chat["parent"] == first_root["span_id"]
    assert chat["attributes"]["gen_ai.operation.name"] == "chat"
    assert chat["attributes"]["gen_ai.provider.name"] == "scripted"
    assert chat["attributes"]["gen_ai.usage.input_tokens"] == 3
    assert chat["attributes"]["gen_ai.usage.output_tokens"] == 3
    assert first_root["attributes"]["gen_ai.usage.input_tokens"] == 3
    assert len([s for s in spans if s["trace_id"] == first_root["trace_id"]]) == 4
