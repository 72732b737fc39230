"""What runs cost, summed in the run store: runs, tokens, cost and latency per workflow, and
tokens and cost per node type.

A cost the store does not know (an unpriced model: NULL, see schema ``_v3``) is never counted
as 0: the sums cover the priced runs, and ``unpriced_runs`` says how many were left out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .sqlite import RunStore


@dataclass(frozen=True, slots=True)
class WorkflowUsage:
    """One workflow's stored runs, summed; latencies are of the runs that finished."""

    workflow: str
    runs: int
    succeeded: int
    failed: int
    total_tokens: int
    total_cost: float
    unpriced_runs: int
    latency_mean_ms: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None


@dataclass(frozen=True, slots=True)
class NodeTypeUsage:
    """One node type's executions in one workflow's runs, summed."""

    workflow: str
    node_type: str
    executions: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    total_cost: float
    latency_mean_ms: float | None


def _in(names: Sequence[str]) -> str:
    return ", ".join("?" * len(names))


def workflow_usage(store: RunStore, workflows: Sequence[str]) -> list[WorkflowUsage]:
    """The usage of each of ``workflows`` that has stored runs, in the order given."""
    if not workflows:
        return []
    with store._lock:
        rows = store._conn.execute(
            "SELECT workflow, count(*), sum(status IN ('succeeded', 'partial-succeeded')), "
            "sum(status = 'failed'), coalesce(sum(total_tokens), 0), "
            "coalesce(sum(total_cost), 0), sum(total_cost IS NULL), avg(elapsed_ms) "
            f"FROM runs WHERE workflow IN ({_in(workflows)}) GROUP BY workflow",
            list(workflows)).fetchall()
        latencies: dict[str, list[float]] = {}
        for workflow, elapsed in store._conn.execute(
                f"SELECT workflow, elapsed_ms FROM runs WHERE workflow IN ({_in(workflows)}) "
                "AND elapsed_ms IS NOT NULL ORDER BY workflow, elapsed_ms", list(workflows)):
            latencies.setdefault(workflow, []).append(elapsed)
    found = {row[0]: row for row in rows}
    usage = []
    for name in workflows:
        if name not in found:
            continue
        _, runs, ok, failed, tokens, cost, unpriced, mean = found[name]
        sorted_ms = latencies.get(name, [])
        usage.append(WorkflowUsage(name, runs, ok or 0, failed or 0, tokens, float(cost),
                                   unpriced or 0, mean, percentile(sorted_ms, 50),
                                   percentile(sorted_ms, 95)))
    return usage


def node_type_usage(store: RunStore, workflows: Sequence[str]) -> list[NodeTypeUsage]:
    """Tokens, cost and latency per node type in the runs of ``workflows``, by workflow and
    then by most tokens."""
    if not workflows:
        return []
    with store._lock:
        rows = store._conn.execute(
            "SELECT r.workflow, n.node_type, count(*), coalesce(sum(n.prompt_tokens), 0), "
            "coalesce(sum(n.completion_tokens), 0), coalesce(sum(n.total_tokens), 0), "
            "coalesce(sum(n.cost), 0), avg(n.elapsed_ms) FROM node_executions n "
            "JOIN runs r ON r.run_id = n.run_id "
            f"WHERE r.workflow IN ({_in(workflows)}) AND n.execution_id IS NOT NULL "
            "GROUP BY r.workflow, n.node_type ORDER BY r.workflow, 6 DESC, n.node_type",
            list(workflows)).fetchall()
    return [NodeTypeUsage(w, t, n, p, c, tot, float(cost), mean)
            for w, t, n, p, c, tot, cost, mean in rows]


def percentile(sorted_values: Sequence[float], pct: float) -> float | None:
    """The ``pct`` percentile of ascending values (nearest rank); None for no values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return float(sorted_values[rank - 1])


__all__ = ["NodeTypeUsage", "WorkflowUsage", "node_type_usage", "percentile", "workflow_usage"]
