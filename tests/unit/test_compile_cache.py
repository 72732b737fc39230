"""compile_workflow reuses a compilation only while nothing it was made from has changed."""

from __future__ import annotations

import threading

import pytest

import cellwire
from cellwire.engine import compile_workflow
from cellwire.model import NodeConfig, WorkflowError, node_type, registry


def _workflow() -> cellwire.Workflow:
    wf = cellwire.Workflow("cache")
    wf.add_node("start", "start", variables=[{"variable": "x", "type": "text-input"}])
    wf.add_node("t", "template-transform", after="start", template="{{ x }}!",
                variables=[{"variable": "x", "value_selector": ["start", "x"]}])
    wf.add_node("end", "end", after="t", outputs=[{"variable": "y",
                                                   "value_selector": ["t", "output"]}])
    return wf


def test_an_unchanged_workflow_is_compiled_once():
    wf = _workflow()
    assert compile_workflow(wf) is compile_workflow(wf)
    # Another object with equal contents gets its own compilation (it may change apart).
    assert compile_workflow(_workflow()) is not compile_workflow(wf)


def test_any_change_in_place_compiles_again_and_runs_the_new_graph():
    wf = _workflow()
    first = compile_workflow(wf)
    wf.nodes["t"].config["template"] = "{{ x }}?"  # a nested edit, no method called
    second = compile_workflow(wf)
    assert second is not first
    assert wf.run(x="a", store=False).outputs == {"y": "a?"}

    # A config that does not parse cannot compile (a reference to nothing only warns).
    wf.nodes["t"].config["variables"][0]["value_selector"] = "nowhere"
    with pytest.raises(WorkflowError, match="nowhere"):
        compile_workflow(wf)
    wf.nodes["t"].config["variables"][0]["value_selector"] = ["start", "x"]
    assert compile_workflow(wf) is second  # back as it was when ``second`` was made
    wf.nodes["t"].max_time = 5
    assert compile_workflow(wf).nodes["t"].max_time == 5


def test_a_node_type_registered_again_compiles_again():
    @node_type("cache-probe", config=NodeConfig)
    async def probe(ctx):
        return cellwire.NodeResult(outputs={"v": 1})

    try:
        wf = cellwire.Workflow("probe")
        wf.add_node("start", "start")
        wf.add_node("p", "cache-probe", after="start")
        first = compile_workflow(wf)
        assert compile_workflow(wf) is first

        @node_type("cache-probe", config=NodeConfig)
        async def probe_again(ctx):
            return cellwire.NodeResult(outputs={"v": 2})

        again = compile_workflow(wf)
        assert again is not first and again.types["p"].run is probe_again
    finally:
        registry.unregister("cache-probe")


def test_a_config_pickle_cannot_take_is_compiled_every_time():
    wf = _workflow()
    wf.nodes["t"].meta["lock"] = threading.Lock()
    assert compile_workflow(wf) is not compile_workflow(wf)
    assert wf.run(x="b", store=False).outputs == {"y": "b!"}
