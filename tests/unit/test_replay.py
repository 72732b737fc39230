"""Replay and fork: a stored run re-run from a chosen node, with an edited workflow, reusing the
recorded outputs of the nodes before it (from its checkpoints, not its redacted trace)."""

from __future__ import annotations

from pathlib import Path

import pytest

import cellwire
from cellwire.store import open_store


def pipeline(log: Path, template: str = "Summary of {{ text }}") -> cellwire.Workflow:
    wf = cellwire.Workflow("pipe")
    wf.add_node("start", "start", variables=[{"variable": "topic", "type": "text-input"}])
    wf.add_node("fetch", "code", after="start",
                code=f"def main(topic):\n    open({str(log)!r}, 'a').write('fetch\\n')\n"
                     "    return {'text': topic.upper()}",
                variables=[{"variable": "topic", "value_selector": ["start", "topic"]}],
                outputs={"text": {"type": "string"}})
    wf.add_node("draft", "template-transform", after="fetch", template=template,
                variables=[{"variable": "text", "value_selector": ["fetch", "text"]}])
    wf.add_node("end", "end", after="draft",
                outputs=[{"variable": "out", "value_selector": ["draft", "output"]}])
    return wf


async def test_a_replay_reuses_the_nodes_before_its_start_and_forks_a_new_run(tmp_path: Path):
    log, db = tmp_path / "side-effects.log", tmp_path / "runs.db"
    store = open_store(db)
    first = await pipeline(log).arun(topic="tides", store=store)
    assert first.outputs == {"out": "Summary of TIDES"}
    edited = pipeline(log, template="Brief: {{ text }}")
    fork = await cellwire.replay(first.run_id, "draft", workflow=edited, store=store)
    assert fork.run_id != first.run_id and fork.outputs == {"out": "Brief: TIDES"}
    assert log.read_text() == "fetch\n"  # fetch ran once: the fork reused its output
    table = cellwire.compare(first, fork)
    assert dict(zip(table["node_id"], table["same_outputs"], strict=True))["draft"] is False
    # The fork is a run of its own, stored with the edited version.
    assert store.run(fork.run_id)["status"] == "succeeded"


async def test_a_replay_of_the_recorded_version_and_its_errors(tmp_path: Path):
    log, db = tmp_path / "side-effects.log", tmp_path / "runs.db"
    store = open_store(db)
    first = await pipeline(log).arun(topic="reef", store=store)
    again = await cellwire.replay(first.run_id, "draft", store=store, trust=True)
    assert again.outputs == first.outputs and log.read_text() == "fetch\n"
    with pytest.raises(cellwire.durable.NotResumable, match="not a top-level node"):
        await cellwire.replay(first.run_id, "nope", store=store)
