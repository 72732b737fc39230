"""OpenTelemetry export: a run's events as spans with the GenAI semantic conventions.

One trace per run: a root span ``invoke_workflow {name}`` and a child span per node
execution (``chat {model}`` for model calls, ``execute_tool {title}`` for tools,
``cellwire.{type} {title}`` for the rest); nodes inside an iteration or loop are children of
their container's span. Times come from the events, so spans show when nodes really ran.

The spans are made on a thread of the sink's own (:class:`~cellwire.engine.layers.Threaded`):
the event loop only queues events. An export that fails is reported once in that run's
``warnings`` and never fails the run.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from cellwire.engine.events import (
    ContainerCompleted,
    ContainerNext,
    Event,
    NodeException,
    NodeFailed,
    NodeFinished,
    NodeRetry,
    NodeSkipped,
    NodeStarted,
    NodeStopped,
    RunFailed,
    RunPartialSucceeded,
    RunPaused,
    RunStarted,
    RunStopped,
    RunSucceeded,
)
from cellwire.engine.layers import Layer, Threaded

#: Node types whose execution is one model call (span kind CLIENT, operation ``chat``).
CHAT_TYPES = frozenset({"llm", "question-classifier", "parameter-extractor"})
#: Node types that run a tool.
TOOL_TYPES = frozenset({"tool", "agent"})
#: Node types that search a knowledge base.
RETRIEVAL_TYPES = frozenset({"knowledge-retrieval"})

#: Captured inputs and outputs are cut to this many characters.
CONTENT_LIMIT = 4000

_TRACER_NAME = "cellwire"


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL for ``endpoint``: a base URL gets ``/v1/traces`` appended."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else endpoint + "/v1/traces"


def otlp_provider(endpoint: str, *, headers: Mapping[str, str] | None = None,
                  service_name: str = "cellwire") -> TracerProvider:
    """A tracer provider that batches spans to an OTLP/HTTP (protobuf) ``endpoint``."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    exporter = OTLPSpanExporter(endpoint=traces_url(endpoint), headers=dict(headers or {}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


@dataclass(slots=True)
class _Run:
    """The open spans of one run."""

    root: Span
    workflow: str
    #: Open node spans by execution id.
    nodes: dict[str, Span] = field(default_factory=dict)
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    currency: str = ""


class OTelSink(Threaded):
    """The layer that turns runs into OpenTelemetry spans, off the event loop.

    Give it a ``tracer_provider`` (yours, or the SDK's with an in-memory exporter in tests),
    or an OTLP/HTTP ``endpoint`` (Jaeger, Phoenix, Langfuse, an OpenTelemetry Collector);
    with neither it uses the global tracer provider. ``capture_content=True`` also records
    node inputs, outputs and prompts (already redacted of secrets by the engine), cut to
    :data:`CONTENT_LIMIT` characters.
    """

    def __init__(self, tracer_provider: trace.TracerProvider | None = None, *,
                 endpoint: str | None = None, headers: Mapping[str, str] | None = None,
                 service_name: str = "cellwire", capture_content: bool = False) -> None:
        if tracer_provider is not None and endpoint is not None:
            raise ValueError("give a tracer_provider or an endpoint, not both")
        if endpoint is not None:
            tracer_provider = otlp_provider(endpoint, headers=headers, service_name=service_name)
        self.tracer_provider = tracer_provider or trace.get_tracer_provider()
        super().__init__(OTelSpans(self.tracer_provider.get_tracer(_TRACER_NAME),
                                   capture_content=capture_content), name="cellwire-otel")

    def __repr__(self) -> str:
        return f"OTelSink({self.tracer_provider!r})"

    def flush(self, timeout_millis: int = 30_000) -> bool:
        """Export the spans still buffered (blocks; call it off the event loop)."""
        flush = getattr(self.tracer_provider, "force_flush", None)
        return bool(flush(timeout_millis)) if callable(flush) else True

    def shutdown(self) -> None:
        """Export what is buffered and stop the provider's exporters."""
        shutdown = getattr(self.tracer_provider, "shutdown", None)
        if callable(shutdown):
            shutdown()


class OTelSpans(Layer):
    """Spans from events, made on the thread that calls it (:class:`OTelSink` gives it one).

    Not thread-safe: one thread delivers every run's events to it.
    """

    def __init__(self, tracer: trace.Tracer, *, capture_content: bool = False) -> None:
        self.tracer = tracer
        self.capture_content = capture_content
        self._runs: dict[str, _Run] = {}

    def on_event(self, event: Event) -> None:
        try:
            self._handle(event)
        except Exception:
            # The run gets no more events after a failure: end what it had open, then report.
            self._abandon(event.run_id)
            raise

    def _abandon(self, run_id: str) -> None:
        run = self._runs.pop(run_id, None)
        if run is None:
            return
        for span in [*run.nodes.values(), run.root]:
            try:
                span.set_status(Status(StatusCode.ERROR, "the OpenTelemetry export failed"))
                span.end()
            except Exception:  # noqa: BLE001, S110 - already failing; the first error is reported
                pass

    def _handle(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self._run_started(event)
            return
        run = self._runs.get(event.run_id)
        if run is None:
            return  # a run that started before this sink was added
        if isinstance(event, NodeStarted):
            self._node_started(run, event)
        elif isinstance(event, NodeFinished):
            self._node_finished(run, event)
        elif isinstance(event, NodeRetry):
            span = run.nodes.get(event.execution_id)
            if span is not None:
                span.add_event("retry", {"cellwire.attempt": event.attempt,
                                         "cellwire.error": event.error,
                                         "cellwire.delay": event.delay}, _ns(event.time))
        elif isinstance(event, ContainerNext):
            span = run.nodes.get(event.execution_id)
            if span is not None:
                span.add_event(f"{event.kind} round", {"cellwire.round": event.index},
                               _ns(event.time))
        elif isinstance(event, ContainerCompleted):
            span = run.nodes.get(event.execution_id)
            if span is not None:
                span.set_attribute("cellwire.rounds", event.rounds)
                if event.reason:
                    span.set_attribute("cellwire.container.end_reason", event.reason)
        elif isinstance(event, NodeSkipped):
            run.root.add_event("node skipped", {"cellwire.node.id": event.node_id},
                               _ns(event.time))
        elif isinstance(event, RunSucceeded | RunPartialSucceeded | RunFailed | RunStopped
                        | RunPaused):
            self._run_ended(run, event)

    def _run_started(self, event: RunStarted) -> None:
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "invoke_workflow",
            "gen_ai.workflow.name": event.workflow,
            "cellwire.run_id": event.run_id,
        }
        if self.capture_content:
            attributes["cellwire.inputs"] = _json(event.inputs)
        root = self.tracer.start_span(f"invoke_workflow {event.workflow}", kind=SpanKind.INTERNAL,
                                      attributes=attributes, start_time=_ns(event.time))
        self._runs[event.run_id] = _Run(root=root, workflow=event.workflow)

    def _parent(self, run: _Run, parent_execution_id: str | None) -> Span:
        # The container's own execution, so rounds of parallel iterations nest correctly.
        span = run.nodes.get(parent_execution_id) if parent_execution_id else None
        return span if span is not None else run.root

    def _node_started(self, run: _Run, event: NodeStarted) -> None:
        operation = _operation(event.node_type)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation,
            "cellwire.node.id": event.node_id,
            "cellwire.node.type": event.node_type,
            "cellwire.node.title": event.title,
            "cellwire.execution_id": event.execution_id,
            "cellwire.index": event.index,
        }
        if event.parent_id is not None:
            attributes["cellwire.parent_id"] = event.parent_id
        if event.round is not None:
            attributes["cellwire.round"] = event.round
        if operation == "execute_tool":
            attributes["gen_ai.tool.name"] = event.title or event.node_id
        context = trace.set_span_in_context(self._parent(run, event.parent_execution_id))
        kind = SpanKind.CLIENT if operation == "chat" else SpanKind.INTERNAL
        # The model is known only when the call ends; the name is set again then.
        span = self.tracer.start_span(f"{operation} {event.title or event.node_id}",
                                      context=context, kind=kind, attributes=attributes,
                                      start_time=_ns(event.time))
        run.nodes[event.execution_id] = span

    def _node_finished(self, run: _Run, event: NodeFinished) -> None:
        span = run.nodes.pop(event.execution_id, None)
        if span is None:  # started before the sink was added
            return
        operation = _operation(event.node_type)
        if operation == "chat":
            self._chat_attributes(span, event)
        if event.prompt_tokens or event.completion_tokens:
            span.set_attribute("gen_ai.usage.input_tokens", event.prompt_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", event.completion_tokens)
            run.input_tokens += event.prompt_tokens
            run.output_tokens += event.completion_tokens
        if event.cost == event.cost and event.cost:  # NaN (unpriced) is left out
            span.set_attribute("cellwire.cost", float(event.cost))
            run.cost += float(event.cost)
        currency = event.metadata.get("currency")
        if isinstance(currency, str) and currency:
            span.set_attribute("cellwire.currency", currency)
            run.currency = run.currency or currency
        if event.metadata.get("cache_hit"):
            span.set_attribute("cellwire.cache_hit", True)
        span.set_attribute("cellwire.retries", event.retries)
        span.set_attribute("cellwire.elapsed", event.elapsed)
        if self.capture_content:
            span.set_attribute("cellwire.inputs", _json(event.inputs))
            span.set_attribute("cellwire.outputs", _json(event.outputs))
            if operation == "chat" and "prompts" in event.process_data:
                span.set_attribute("gen_ai.input.messages", _json(event.process_data["prompts"]))
        if isinstance(event, NodeFailed | NodeException):
            span.set_attribute("error.type", event.error_type or "NodeError")
            span.set_status(Status(StatusCode.ERROR, event.error))
            if isinstance(event, NodeException):
                span.set_attribute("cellwire.error_handled", True)
        elif isinstance(event, NodeStopped):
            span.set_attribute("cellwire.status", "stopped")
            span.set_attribute("cellwire.stop_reason", event.reason)
        else:
            span.set_attribute("cellwire.status", "succeeded")
        span.end(end_time=_ns(event.time))

    def _chat_attributes(self, span: Span, event: NodeFinished) -> None:
        process, meta = event.process_data, event.metadata
        route = meta.get("model") if isinstance(meta.get("model"), str) else ""
        provider = process.get("model_provider") or (route.split("/", 1)[0] if route else "")
        model = process.get("model_name") or (route.split("/", 1)[-1] if route else "")
        if provider:
            span.set_attribute("gen_ai.provider.name", str(provider))
        if model:
            span.set_attribute("gen_ai.request.model", str(model))
            span.update_name(f"chat {model}")
        finish = process.get("finish_reason")
        if isinstance(finish, str) and finish:
            span.set_attribute("gen_ai.response.finish_reasons", [finish])
        ttft = meta.get("time_to_first_token")
        if isinstance(ttft, int | float):
            span.set_attribute("gen_ai.response.time_to_first_chunk", float(ttft))

    def _run_ended(self, run: _Run, event: Event) -> None:
        end = _ns(event.time)
        # Spans a stopped or failed run left open still end, so the trace is complete.
        for span in run.nodes.values():
            span.set_attribute("cellwire.status", "unfinished")
            span.end(end_time=end)
        root = run.root
        root.set_attribute("gen_ai.usage.input_tokens", run.input_tokens)
        root.set_attribute("gen_ai.usage.output_tokens", run.output_tokens)
        root.set_attribute("cellwire.cost", run.cost)
        if run.currency:
            root.set_attribute("cellwire.currency", run.currency)
        root.set_attribute("cellwire.status", event.name.removeprefix("run_"))
        if isinstance(event, RunFailed):
            if event.node_id:
                root.set_attribute("cellwire.failed_node", event.node_id)
            root.set_status(Status(StatusCode.ERROR, event.error))
        elif isinstance(event, RunStopped):
            root.set_attribute("cellwire.stop_reason", event.reason)
        else:
            if self.capture_content:
                root.set_attribute("cellwire.outputs", _json(getattr(event, "outputs", {})))
            root.set_status(Status(StatusCode.OK))
        root.end(end_time=end)
        del self._runs[event.run_id]


def _operation(node_type: str) -> str:
    """The ``gen_ai.operation.name`` of a node type's executions."""
    if node_type in CHAT_TYPES:
        return "chat"
    if node_type in TOOL_TYPES:
        return "execute_tool"
    if node_type in RETRIEVAL_TYPES:
        return "retrieval"
    return f"cellwire.{node_type}"


def _json(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= CONTENT_LIMIT else text[:CONTENT_LIMIT] + "…"
