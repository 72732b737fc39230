"""cellwire in Jupyter: ``%load_ext cellwire`` for the ``%%workflow`` magics, rich displays of
runs, and dashboards (traces, runs, costs, latency) read from the run store."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cellwire.runner import RunHandle

from .dashboards import (
    cost_chart,
    costs,
    latency,
    latency_chart,
    node_executions,
    runs,
    timeline,
    trace,
)
from .session import Session

if TYPE_CHECKING:
    from cellwire.model import Workflow

_session = Session()


def session() -> Session:
    """The notebook's workflows and runs, shared with the magics."""
    return _session


def workflows() -> dict[str, Workflow]:
    """The workflows the ``%%workflow`` cells defined, by name."""
    return _session.workflows


def last_run() -> RunHandle | None:
    """The run started most recently from ``%workflow run`` (await it for its result)."""
    return _session.find_run(None)


def load_ipython_extension(ip: Any) -> None:
    """Register the magics, the RunResult displays and the deleted-cell hook."""
    from .display import register_formatters
    from .magics import WorkflowMagics

    magics = WorkflowMagics(ip, session=_session)
    ip.register_magics(magics)
    ip.events.register("pre_run_cell", magics.prune_deleted)
    register_formatters(ip)


__all__ = [
    "RunHandle", "Session", "cost_chart", "costs", "last_run", "latency", "latency_chart",
    "load_ipython_extension", "node_executions", "runs", "session", "timeline", "trace",
    "workflows",
]
