"""OpenTelemetry export: span shapes (GenAI conventions, nesting, errors, times) from real runs."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import cellwire
from cellwire import telemetry
from cellwire.engine.events import NodeFinished
from cellwire.runner import default_runner
from cellwire.services.llm import LLMRouter, ScriptedProvider
from cellwire.services.llm.base import ChatChunk, ChatRequest
from cellwire.telemetry.otel import OTelSink, OTelSpans, traces_url

MINI = {"provider": "openai", "name": "gpt-4o-mini", "mode": "chat"}


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLWIRE_HOME", str(tmp_path))
    monkeypatch.delenv("CELLWIRE_DEFAULT_MODEL", raising=False)
    yield
    telemetry.disable_otel()


class PaidDouble:
    """The scripted provider's replies under the name ``openai``, so the price table applies
    (the scripted provider itself is free by definition)."""

    name = "openai"

    def __init__(self) -> None:
        self.inner = ScriptedProvider(name="openai")

    async def chat(self, request: ChatRequest):
        return await self.inner.chat(request)

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        async for chunk in self.inner.stream(request):
            yield chunk

    async def embed(self, model, texts):
        return await self.inner.embed(model, texts)

    async def models(self):
        return []


@pytest.fixture
def exporter():
    return InMemorySpanExporter()


@pytest.fixture
def sink(exporter):
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sink = OTelSink(provider)
    yield sink
    sink.close()


def runtime(*sinks) -> cellwire.Runtime:
    return cellwire.Runtime(llm=LLMRouter([PaidDouble()]), layers=list(sinks))


def by_name(exporter) -> dict:
    return {s.name: s for s in exporter.get_finished_spans()}


def qa_workflow() -> cellwire.Workflow:
    """start -> ask (llm) -> shout (code) -> end, and an iteration of llm calls over words."""
    wf = cellwire.Workflow("qa")
    wf.add_node("start", "start", variables=[{"variable": "q", "type": "paragraph"},
                                             {"variable": "words", "type": "json_object"}])
    wf.add_node("ask", "llm", after="start", model=MINI,
                prompt_template=[{"role": "user", "text": "{{#start.q#}}"}])
    wf.add_node("shout", "code", after="ask", title="Shout",
                variables=[{"variable": "text", "value_selector": ["ask", "text"]}],
                code="def main(text):\n    return {'loud': text.upper()}\n",
                outputs={"loud": {"type": "string"}})
    wf.add_node("each", "iteration", after="start", iterator_selector=["start", "words"],
                output_selector=["say", "text"], start_node_id="each_start")
    wf.add_node("each_start", "iteration-start", parent="each")
    wf.add_node("say", "llm", parent="each", after="each_start", model=MINI,
                prompt_template=[{"role": "user", "text": "say {{#each.item#}}"}])
    wf.add_node("end", "end", after=["shout", "each"], outputs=[
        {"variable": "loud", "value_selector": ["shout", "loud"]},
        {"variable": "said", "value_selector": ["each", "output"]}])
    return wf


async def test_a_run_is_one_trace_under_an_invoke_workflow_root(sink, exporter):
    result = await qa_workflow().arun(q="one two three", words=["a", "b"],
                                      runtime=runtime(sink), store=False)
    assert result.status == "succeeded", result.error
    spans = exporter.get_finished_spans()
    root = next(s for s in spans if s.parent is None)
    assert root.name == "invoke_workflow qa"
    assert {s.context.trace_id for s in spans} == {root.context.trace_id}
    assert root.attributes["gen_ai.operation.name"] == "invoke_workflow"
    assert root.attributes["gen_ai.workflow.name"] == "qa"
    assert root.attributes["cellwire.run_id"] == result.run_id
    assert root.status.status_code is StatusCode.OK
    # One span per node execution: 5 top-level nodes, and iteration-start + say per round.
    finished = [e for e in result.events if isinstance(e, NodeFinished)]
    assert len(spans) == len(finished) + 1
    # Tokens and cost add up over the run, as in the result.
    assert root.attributes["gen_ai.usage.input_tokens"] == result.usage.prompt_tokens
    assert root.attributes["gen_ai.usage.output_tokens"] == result.usage.completion_tokens
    assert root.attributes["cellwire.cost"] == pytest.approx(result.total_cost)
    assert result.total_cost > 0


async def test_llm_spans_follow_the_genai_conventions(sink, exporter):
    result = await qa_workflow().arun(q="one two three", words=[],
                                      runtime=runtime(sink), store=False)
    ask_event = next(e for e in result.events
                     if isinstance(e, NodeFinished) and e.node_id == "ask")
    chat = next(s for s in exporter.get_finished_spans()
                if s.attributes.get("cellwire.node.id") == "ask")
    assert chat.name == "chat gpt-4o-mini"
    assert chat.kind is SpanKind.CLIENT
    attrs = chat.attributes
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.model"] == "gpt-4o-mini"
    assert attrs["gen_ai.usage.input_tokens"] == 3 == ask_event.prompt_tokens
    assert attrs["gen_ai.usage.output_tokens"] == 3 == ask_event.completion_tokens
    assert attrs["cellwire.cost"] == pytest.approx(ask_event.cost) and ask_event.cost > 0
    assert attrs["cellwire.currency"] == "USD"
    assert tuple(attrs["gen_ai.response.finish_reasons"]) == ("stop",)
    # Times are the events' times, not the moment the sink saw them.
    assert chat.start_time == int(ask_event.started_at * 1e9)
    assert chat.end_time == int(ask_event.time * 1e9)
    code = by_name(exporter)["cellwire.code Shout"]
    assert code.kind is SpanKind.INTERNAL
    assert code.attributes["gen_ai.operation.name"] == "cellwire.code"
    assert "gen_ai.usage.input_tokens" not in code.attributes
    assert "cellwire.inputs" not in code.attributes  # content is opt-in


async def test_nodes_inside_an_iteration_nest_under_its_span(sink, exporter):
    await qa_workflow().arun(q="x", words=["a", "b", "c"], runtime=runtime(sink), store=False)
    spans = exporter.get_finished_spans()
    node = {s.context.span_id: s for s in spans}
    iteration = next(s for s in spans if s.attributes.get("cellwire.node.id") == "each")
    says = [s for s in spans if s.attributes.get("cellwire.node.id") == "say"]
    assert sorted(s.attributes["cellwire.round"] for s in says) == [0, 1, 2]
    for say in says:
        assert say.parent.span_id == iteration.context.span_id
        assert iteration.start_time <= say.start_time <= say.end_time <= iteration.end_time
    assert node[iteration.parent.span_id].name == "invoke_workflow qa"
    assert iteration.attributes["cellwire.rounds"] == 3
    assert [e.attributes["cellwire.round"] for e in iteration.events] == [0, 1, 2]


async def test_a_failed_node_and_run_are_errors_with_the_message(sink, exporter):
    wf = cellwire.Workflow("boom")
    wf.add_node("start", "start")
    wf.add_node("bad", "code", after="start", variables=[],
                code="def main():\n    raise ValueError('no luck')\n",
                outputs={"x": {"type": "string"}})
    wf.add_node("end", "end", after="bad", outputs=[])
    result = await wf.arun(runtime=runtime(sink), store=False)
    assert result.status == "failed"
    spans = by_name(exporter)
    bad = spans["cellwire.code bad"]
    assert bad.status.status_code is StatusCode.ERROR
    assert "no luck" in bad.status.description
    assert bad.attributes["error.type"]
    root = spans["invoke_workflow boom"]
    assert root.status.status_code is StatusCode.ERROR
    assert "no luck" in root.status.description
    assert root.attributes["cellwire.failed_node"] == "bad"


async def test_capture_content_records_inputs_outputs_and_prompts(exporter):
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sink = OTelSink(provider, capture_content=True)
    await qa_workflow().arun(q="hi there", words=[], runtime=runtime(sink), store=False)
    chat = by_name(exporter)["chat gpt-4o-mini"]
    assert "hi there" in chat.attributes["gen_ai.input.messages"]
    assert "hi there" in chat.attributes["cellwire.outputs"]
    assert "HI THERE" in by_name(exporter)["invoke_workflow qa"].attributes["cellwire.outputs"]


async def test_secrets_never_reach_the_spans(exporter):
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sink = OTelSink(provider, capture_content=True)
    wf = cellwire.Workflow("secret", environment=[
        {"name": "API_TOKEN", "value_type": "secret", "value": ""}])
    wf.add_node("start", "start")
    wf.add_node("t", "template-transform", after="start", template="token {{ k }}",
                variables=[{"variable": "k", "value_selector": ["env", "API_TOKEN"]}])
    wf.add_node("end", "end", after="t", outputs=[{"variable": "o", "value_selector": ["t", "output"]}])
    result = await default_runner().arun(wf, None, runtime=runtime(sink), store=False,
                                         secrets={"API_TOKEN": "sk-very-secret-value"})
    assert result.status == "succeeded", result.error
    text = repr([dict(s.attributes) for s in exporter.get_finished_spans()])
    assert "sk-very-secret-value" not in text and "***" in text


def test_a_sink_added_mid_run_ignores_that_run(exporter):
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    spans = OTelSpans(provider.get_tracer("test"))
    spans.on_event(NodeFinished(run_id="unknown", time=1.0, node_id="x", node_type="code",
                                execution_id="e"))
    assert exporter.get_finished_spans() == ()


class BrokenTracerProvider(TracerProvider):
    """Test double: an exporter setup whose tracer fails on the first node span, as a broken
    exporter or SDK would."""

    def get_tracer(self, *args, **kwargs):
        tracer = super().get_tracer(*args, **kwargs)
        start = tracer.start_span

        def start_span(name, *a, **kw):
            if not name.startswith("invoke_workflow"):
                raise RuntimeError("exporter is down")
            return start(name, *a, **kw)

        tracer.start_span = start_span
        return tracer


async def test_a_failing_export_is_reported_once_and_never_fails_the_run(exporter):
    provider = BrokenTracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sink = OTelSink(provider)
    try:
        result = await qa_workflow().arun(q="hi", words=["a", "b"], runtime=runtime(sink),
                                          store=False)
    finally:
        sink.close()
    assert result.status == "succeeded", result.error
    assert result.warnings == [("layer 'OTelSpans' failed in on_run_end: RuntimeError: "
                                "exporter is down; it got nothing more from this run")]
    assert result.stored is None
    # What the run had open when the export broke is ended, marked as an error.
    [root] = exporter.get_finished_spans()
    assert root.status.status_code == StatusCode.ERROR


async def test_enable_otel_feeds_every_default_run(exporter):
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sink = telemetry.enable_otel(tracer_provider=provider)
    assert sink in default_runner().layers
    wf = cellwire.Workflow("plain")
    wf.add_node("start", "start")
    wf.add_node("end", "end", after="start", outputs=[])
    await wf.arun(store=False)
    assert [s.name for s in exporter.get_finished_spans()][-1] == "invoke_workflow plain"
    again = telemetry.enable_otel(tracer_provider=provider)
    assert default_runner().layers.count(again) == 1 and sink not in default_runner().layers
    telemetry.disable_otel()
    assert again not in default_runner().layers
    exporter.clear()
    await wf.arun(store=False)
    assert exporter.get_finished_spans() == ()  # disabled: the next run is not exported


def test_endpoints_get_the_traces_path_once():
    assert traces_url("http://127.0.0.1:4318") == "http://127.0.0.1:4318/v1/traces"
    assert traces_url("http://h:4318/v1/traces/") == "http://h:4318/v1/traces"
    with pytest.raises(ValueError, match="not both"):
        OTelSink(TracerProvider(), endpoint="http://127.0.0.1:1")


def test_without_the_extra_enable_otel_says_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    monkeypatch.delitem(sys.modules, "cellwire.telemetry.otel")
    monkeypatch.delattr(telemetry, "otel")
    with pytest.raises(ImportError, match=r"opentelemetry is missing\): pip install 'cellwire\[otel\]'"):
        telemetry.enable_otel(endpoint="http://127.0.0.1:4318")
    telemetry.disable_otel()  # works without the extra
    assert not any(type(s).__name__ == "OTelSink" for s in default_runner().layers)


async def test_containers_nested_in_a_parallel_iteration_parent_their_own_rounds(sink, exporter):
    wf = cellwire.Workflow("nested")
    wf.add_node("start", "start", variables=[{"variable": "rows", "type": "json_object"}])
    wf.add_node("outer", "iteration", after="start", iterator_selector=["start", "rows"],
                output_selector=["inner", "output"], is_parallel=True, parallel_nums=3)
    wf.add_node("outer_start", "iteration-start", parent="outer")
    wf.add_node("inner", "iteration", parent="outer", after="outer_start",
                iterator_selector=["outer", "item"], output_selector=["cell", "output"])
    wf.add_node("inner_start", "iteration-start", parent="inner")
    wf.add_node("cell", "template-transform", parent="inner", after="inner_start",
                template="{{ inner.item }}")
    result = await wf.arun(rows=[["a", "b"], ["c"], ["d", "e", "f"]], runtime=runtime(sink),
                           store=False)
    assert result.ok, result.error
    spans = {s.context.span_id: s for s in exporter.get_finished_spans()}
    inners = {s.attributes["cellwire.execution_id"]: s for s in spans.values()
              if s.attributes.get("cellwire.node.id") == "inner"}
    assert len(inners) == 3
    # Each cell hangs under the inner iteration that ran it, which holds its row's letters.
    row_of = {s.attributes["cellwire.execution_id"]: s.attributes["cellwire.round"]
              for s in inners.values()}
    rows = [["a", "b"], ["c"], ["d", "e", "f"]]
    for span in spans.values():
        if span.attributes.get("cellwire.node.id") == "cell":
            parent = spans[span.parent.span_id]
            assert parent.attributes["cellwire.node.id"] == "inner"
            row = rows[row_of[parent.attributes["cellwire.execution_id"]]]
            assert len([s for s in spans.values() if s.parent is not None
                        and s.parent.span_id == parent.context.span_id
                        and s.attributes.get("cellwire.node.id") == "cell"]) == len(row)
