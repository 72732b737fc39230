"""The agent node on the scripted provider: its steps in the run store and as OpenTelemetry
spans under the agent's, and the config mistakes it names."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import cellwire
from cellwire.services.llm import LLMRouter
from cellwire.services.llm.scripted import Rule, ScriptedProvider
from cellwire.services.tools import ToolRegistry
from cellwire.store import RunStore
from cellwire.telemetry.otel import OTelSink


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


def answered(request) -> bool:
    return any(m.role == "tool" for m in request.messages)


SCRIPT = [Rule(when=answered, reply=lambda r: f"the sum is {r.messages[-1].text}"),
          Rule(tool_calls=[{"name": "add", "arguments": {"a": 2, "b": 40}}])]


def agent(strategy="function_calling", **parameters) -> cellwire.Workflow:
    params = {"model": {"type": "constant", "value": {"provider": "scripted", "model": "m"}},
              "tools": {"type": "constant", "value": [{"provider_name": "python",
                                                       "tool_name": "add"}]},
              "query": {"type": "constant", "value": "{{#sys.query#}}"}, **parameters}
    wf = cellwire.Workflow("adder", mode="advanced-chat")
    wf.add_node("start", "start")
    wf.add_node("agent", "agent", after="start", agent_strategy_name=strategy,
                agent_parameters=params)
    wf.add_node("answer", "answer", after="agent", answer="{{#agent.text#}}")
    return wf


def runtime(*layers) -> cellwire.Runtime:
    return cellwire.Runtime(llm=LLMRouter([ScriptedProvider(SCRIPT)]),
                            tools=ToolRegistry([add]), layers=list(layers))


def test_the_steps_are_stored_nested_under_the_agent(tmp_path):
    with RunStore(tmp_path / "runs.db") as store:
        result = agent().run({"sys.query": "2 + 40?"}, runtime=runtime(), store=store)
        assert result.answer == "the sum is 42"
        trace = store.trace(result.run_id)
    steps = trace[trace.parent_id == "agent"].sort_values("node_id")
    assert list(steps.node_id) == ["agent/1", "agent/2", "agent/3"]
    assert list(steps.node_type) == ["llm", "tool", "llm"]
    assert steps.iloc[1].outputs["text"] == "42"
    assert trace.total_tokens.sum() == result.usage.total_tokens > 0


def test_the_steps_are_spans_under_the_agents_span():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    sink = OTelSink(provider)
    try:
        result = agent().run({"sys.query": "2 + 40?"}, runtime=runtime(sink), store=False)
        assert result.ok, result.error
        sink.flush()
    finally:
        sink.close()
    spans = exporter.get_finished_spans()
    agent_span = next(s for s in spans if s.attributes.get("cellwire.node.id") == "agent")
    children = [s for s in spans if s.parent is not None
                and s.parent.span_id == agent_span.context.span_id]
    assert sorted(s.attributes["cellwire.node.type"] for s in children) == ["llm", "llm", "tool"]


@pytest.mark.parametrize(("strategy", "parameters", "message"), [
    ("cot_plus", {}, "the agent strategy 'cot_plus' is not one cellwire runs"),
    ("function_calling", {"query": {"type": "constant", "value": "  "}}, "the query is empty"),
    ("function_calling", {"maximum_iterations": {"type": "constant", "value": "lots"}},
     "maximum_iterations is 'lots', not a number"),
    ("function_calling", {"maximum_iterations": {"type": "constant", "value": 500}},
     "maximum_iterations is 500"),
    ("function_calling", {"model": {"type": "constant", "value": {}}}, "no model is chosen"),
])
def test_config_mistakes_are_named(strategy, parameters, message):
    result = agent(strategy, **parameters).run({"sys.query": "2 + 40?"}, runtime=runtime(),
                                               store=False)
    assert not result.ok
    assert result.error_node == "agent"
    assert message in result.error


async def test_the_editor_shows_the_agents_steps_in_its_panel():
    from cellwire.jupyter.widget import WorkflowWidget

    class Recorder(WorkflowWidget):
        def __init__(self, *args, **kwargs) -> None:
            self.outbox: list[dict] = []
            super().__init__(*args, **kwargs)

        def send(self, content, buffers=None) -> None:  # type: ignore[override]
            self.outbox.append(content)

    wf = agent()
    w = Recorder(wf)
    result = await wf.arun({"sys.query": "2 + 40?"}, runtime=runtime(), store=False)
    assert result.ok, result.error
    patches = [p for m in w.outbox if m["type"] == "status" for p in m["patches"]]
    # Steps are entries of the agent, never nodes of their own.
    assert not any("/" in node_id for p in patches for node_id in p)
    steps = w.status["agent"]["steps"]
    assert [(s["step"], s["type"], s["title"]) for s in steps] == [
        (1, "llm", "scripted/m"), (2, "tool", "add"), (3, "llm", "scripted/m")]
    assert steps[1]["output"] == "42" and steps[0]["tokens"] > 0
    assert w.status["agent"]["status"] == "succeeded"
    # Each patch carries the steps so far, whole: the browser replaces what a patch names.
    sent = [p["agent"]["steps"] for p in patches if "steps" in p.get("agent", {})]
    assert [len(s) for s in sent] == [1, 2, 3]


def test_the_editor_lists_a_nodes_tools_bound_as_a_run_binds_them():
    from cellwire.jupyter.widget_protocol import graph_traits

    wf = agent()
    wf.add_node("clock", "tool", after="start", provider_id="langgenius/time/time",
                tool_name="current_time")
    nodes = {n["id"]: n for n in graph_traits(wf)[0]}
    [unbound] = nodes["agent"]["tools"]
    assert unbound["bound"] is None and unbound["field"] == "agent_parameters.tools[0]"
    assert unbound["problem"] == "no registered tool is named 'add'"
    assert "@cellwire.tool(name='add', provider='python')" in unbound["fix"]
    # The workflow's own tools bind, as in its runs; the built-in clock binds by provider.
    wf.tools = [add]
    nodes = {n["id"]: n for n in graph_traits(wf)[0]}
    [bound] = nodes["agent"]["tools"]
    assert (bound["bound"], bound["kind"], bound["arguments"], bound["description"]) == (
        "python/add", "python", ["a", "b"], "Add two numbers.")
    assert nodes["clock"]["tools"][0]["bound"] == "time/current_time"
    assert "tools" not in nodes["start"]
