"""Property tests over random DAGs with random branch choices, against a reference model."""

from __future__ import annotations

import asyncio

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import Field

import cellwire
from cellwire.engine import NodeResult
from cellwire.engine.events import NodeFinished, NodeSkipped
from cellwire.model import NodeConfig, node_type

HANDLES = ["h0", "h1", "h2"]


class PropConfig(NodeConfig):
    choice: str | None = None
    #: The node's upstream nodes, so it can report which of them produced values.
    ups: list[str] = Field(default_factory=list)


@node_type("p-node", config=PropConfig, outputs=["seen"])
async def _p_node(ctx):
    """Outputs which upstream nodes produced values; yields to the loop to shuffle timing."""
    await asyncio.sleep(0)
    return {"seen": sorted(u for u in ctx.config.ups if ctx.pool.outputs(u) is not None)}


@node_type("p-branch", config=PropConfig, outputs=["seen"], handles=HANDLES)
async def _p_branch(ctx):
    await asyncio.sleep(0)
    return NodeResult(outputs={"seen": ctx.config.choice}, handle=ctx.config.choice)


@st.composite
def dags(draw):
    size = draw(st.integers(2, 14))
    wf = cellwire.Workflow("random")
    wf.add_node("n0", "p-node")
    branch_choice: dict[str, str] = {}
    for i in range(1, size):
        node_id = f"n{i}"
        if draw(st.booleans()):
            choice = draw(st.sampled_from(HANDLES))
            branch_choice[node_id] = choice
            wf.add_node(node_id, "p-branch", choice=choice)
        else:
            wf.add_node(node_id, "p-node")
        # Edges only from lower to higher numbers: acyclic; at least one parent: reachable.
        parents = draw(st.lists(st.integers(0, i - 1), min_size=1, max_size=3, unique=True))
        for p in parents:
            source = f"n{p}"
            handle = draw(st.sampled_from(HANDLES)) if source in branch_choice else "source"
            wf.connect(source, node_id, handle)
        wf.update_node(node_id, ups=[f"n{p}" for p in parents])
    return wf, branch_choice


def reference(wf, branch_choice):
    """Dify's semantics, computed directly in topological (numeric) order."""
    status: dict[str, str] = {}
    for node_id in sorted(wf.nodes, key=lambda n: int(n[1:])):
        incoming = [e for e in wf.edges if e.target == node_id]
        if not incoming:
            status[node_id] = "succeeded"
            continue
        taken = [
            e for e in incoming
            if status[e.source] == "succeeded"
            and (e.source not in branch_choice or e.source_handle == branch_choice[e.source])
        ]
        status[node_id] = "succeeded" if taken else "skipped"
    return status


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dags())
def test_random_dags_follow_the_reference_semantics(case):
    wf, branch_choice = case
    result = wf.run(concurrency=3)
    assert result.status == cellwire.RunStatus.SUCCEEDED
    terminal = [e for e in result.events if isinstance(e, (NodeFinished, NodeSkipped))]
    # Every node ends in exactly one terminal state.
    assert sorted(e.node_id for e in terminal) == sorted(wf.nodes)
    actual = {row.node_id: row.status for row in result.trace.itertuples()}
    # A node is skipped exactly when all its incoming edges are skipped.
    assert actual == reference(wf, branch_choice)
    # Outputs are deterministic: a second run gives the same values.
    again = wf.run(concurrency=1)
    outputs = {row.node_id: row.outputs for row in result.trace.itertuples()}
    assert outputs == {row.node_id: row.outputs for row in again.trace.itertuples()}
