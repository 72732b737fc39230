"""A finished run: status, outputs, answer, usage, and its trace as a DataFrame."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .events import (
    Event,
    NodeException,
    NodeFailed,
    NodeFinished,
    NodePaused,
    NodeSkipped,
    NodeSucceeded,
)
from .forms import Form
from .node import Usage
from .state import NodeStatus, RunStatus

if TYPE_CHECKING:
    import pandas as pd

    from .checkpoint import Checkpointer
    from .run_state import RunState

TRACE_COLUMNS = [
    "run_id", "execution_id", "index", "node_id", "node_type", "title", "status", "parent_id",
    "round", "started_at", "finished_at", "elapsed_ms", "retries", "handle", "error",
    "prompt_tokens", "completion_tokens", "total_tokens", "cost", "inputs", "outputs",
    "process_data", "metadata",
]

_STATUS = {
    NodeSucceeded: NodeStatus.SUCCEEDED,
    NodeException: NodeStatus.EXCEPTION,
    NodeFailed: NodeStatus.FAILED,
    NodePaused: NodeStatus.PAUSED,
}


def trace_values(event: NodeFinished | NodeSkipped) -> tuple[Any, ...]:
    """One row of a trace, in :data:`TRACE_COLUMNS` order, from the event that ended a node
    execution."""
    if isinstance(event, NodeSkipped):
        return (event.run_id, None, None, event.node_id, event.node_type, None,
                str(NodeStatus.SKIPPED), event.parent_id, event.round, None, event.time, 0.0, 0,
                None, None, 0, 0, 0, 0.0, None, None, None, None)
    return (event.run_id, event.execution_id, event.index, event.node_id, event.node_type,
            event.title, str(_STATUS.get(type(event), NodeStatus.STOPPED)), event.parent_id,
            event.round, event.started_at, event.time, event.elapsed * 1000, event.retries,
            getattr(event, "handle", None), getattr(event, "error", None), event.prompt_tokens,
            event.completion_tokens, event.total_tokens, event.cost, event.inputs,
            event.outputs, event.process_data, event.metadata)


def trace_row(event: NodeFinished | NodeSkipped) -> dict[str, Any]:
    """One row of a trace, by column name, from the event that ended a node execution."""
    return dict(zip(TRACE_COLUMNS, trace_values(event), strict=True))


def trace_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    import pandas as pd

    frame = pd.DataFrame(rows, columns=TRACE_COLUMNS)
    for column in ("started_at", "finished_at"):
        frame[column] = pd.to_datetime(frame[column], unit="s", utc=True)
    return frame


def _not_provided(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("answering a form needs cellwire's run layer: import cellwire first")


#: How a paused run is answered and resumed: set by :mod:`cellwire.durable` (the engine
#: imports nothing above it).
_responders: dict[str, Callable[..., Any]] = {"sync": _not_provided, "async": _not_provided}


def provide_respond(sync: Callable[..., RunResult],
                    asynchronous: Callable[..., Awaitable[RunResult]]) -> None:
    """Install what :meth:`RunResult.respond` and :meth:`RunResult.arespond` call."""
    _responders["sync"] = sync
    _responders["async"] = asynchronous


@dataclass(slots=True)
class RunResult:
    """What a run produced. ``trace`` is a DataFrame with a row per node execution."""

    run_id: str
    workflow: str
    status: RunStatus
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    answer: str = ""
    error: str | None = None
    error_node: str | None = None
    started_at: float = 0.0
    elapsed_ms: float = 0.0
    usage: Usage = field(default_factory=Usage)
    exceptions_count: int = 0
    events: list[Event] = field(default_factory=list, repr=False)
    #: What the run knew at its end (pool, statuses, edge decisions): reruns start from it.
    #: Kept in memory only; None for a result read back from the store.
    state: RunState | None = field(default=None, repr=False, compare=False)
    #: Layers that failed during the run, one line each; the run itself went on.
    warnings: list[str] = field(default_factory=list)
    #: True: the run store has the whole run; False: it could not be stored (see
    #: ``store_error``); None: the run had no store.
    stored: bool | None = None
    #: Why the run was not stored, and what to do about it.
    store_error: str | None = None
    #: The forms a ``paused`` run waits on (answer one with :meth:`respond`).
    forms: list[Form] = field(default_factory=list)
    #: Where the run kept its checkpoints (None: nowhere); :meth:`respond` resumes from it.
    checkpointer: Checkpointer | None = field(default=None, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.status in (RunStatus.SUCCEEDED, RunStatus.PARTIAL_SUCCEEDED)

    @property
    def total_tokens(self) -> int:
        return self.usage.total_tokens

    @property
    def total_cost(self) -> float:
        return self.usage.cost

    @property
    def trace(self) -> pd.DataFrame:
        return trace_frame(
            [trace_row(e) for e in self.events if isinstance(e, (NodeFinished, NodeSkipped))]
        )

    def respond(self, action: str, values: Mapping[str, Any] | None = None, *,
                node: str | None = None, **options: Any) -> RunResult:
        """Answer the form this paused run waits on with ``action`` and ``values`` (its
        inputs; defaults fill those left out), and resume the run to its next end: the
        resumed run's result. ``node`` picks the form when it waits on several; other
        options are :func:`cellwire.resume`'s (``secrets``, ``trust``, ...)."""
        return _responders["sync"](self, action, values, node=node, **options)

    async def arespond(self, action: str, values: Mapping[str, Any] | None = None, *,
                       node: str | None = None, **options: Any) -> RunResult:
        """:meth:`respond` on the running event loop."""
        return await _responders["async"](self, action, values, node=node, **options)

    def node_status(self, node_id: str) -> str | None:
        """The status of the last execution of ``node_id`` (None if it never finished)."""
        status = None
        for event in self.events:
            if isinstance(event, (NodeFinished, NodeSkipped)) and event.node_id == node_id:
                status = trace_row(event)["status"]
        return status

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of ``cellwire run --json``; an unknown cost (NaN in
        :attr:`total_cost` and the trace) is None, as JSON has no NaN."""
        cost = self.total_cost
        return {
            "run_id": self.run_id,
            "status": str(self.status),
            "outputs": self.outputs,
            "answer": self.answer,
            "error": self.error,
            "elapsed_ms": round(self.elapsed_ms, 3),
            "total_tokens": self.total_tokens,
            "total_cost": None if math.isnan(cost) else cost,
            "stored": self.stored,
            "store_error": self.store_error,
            "warnings": self.warnings,
            **({"forms": [f.to_dict() for f in self.forms]} if self.forms else {}),
        }

    def __repr__(self) -> str:
        extra = f", stored=False, store_error={self.store_error!r}" if self.stored is False else ""
        if self.warnings:
            extra += f", warnings={self.warnings!r}"
        return (
            f"RunResult(status={self.status.value!r}, outputs={self.outputs!r}, "
            f"elapsed_ms={self.elapsed_ms:.1f}, run_id={self.run_id!r}{extra})"
        )
