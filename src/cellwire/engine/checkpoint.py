"""Checkpoints: what a run commits after each finished top-level node, and what a resumed
run starts from.

A checkpoint is not a copy of the state. After a top-level node finishes, the run hands its
*write* to the checkpointer: the node's status, the handle it left through (its edge decision),
its outputs, the step count, and the conversation variables when they changed. Replaying the
writes over the run's start (its inputs and ``sys`` values) rebuilds the state: the pool, the
statuses and the edge decisions of every finished node (:class:`Restored`).

``durability`` says when a write must be on disk:

In ``sync`` and ``async`` alike, the run's start (its version, inputs and ``sys`` values) is
committed before its first node starts, so a run that started can be resumed.

- ``sync``: a node's write is committed before any node that depends on it starts; a killed process loses only the nodes in
  flight, and no node whose successors started ever runs again.
- ``async`` (the default): writes are queued and committed by the store's writer thread
  while the run goes on (it commits at once, in groups); a killed process also loses the
  writes not yet committed, a fraction of a millisecond's worth, and those nodes run again.
- ``exit``: nothing per node; only the run's end is stored, and the run cannot be resumed.

Containers (iteration, loop) are checkpointed as one node: a resumed run runs an unfinished
container again from its start.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args

from .forms import Answer, Form
from .node import Usage
from .state import NodeStatus

if TYPE_CHECKING:
    from .executor import Execution

Durability = Literal["sync", "async", "exit"]
DURABILITIES: tuple[str, ...] = get_args(Durability)
#: Measured (benchmarks/checkpoint_overhead.py, a chain of no-op nodes on 2 cores): `async`
#: costs 30-45 us per node, `sync` 115-220 us (a commit and two thread hand-offs per node).
DEFAULT_DURABILITY: Durability = "async"


def check_durability(value: str) -> Durability:
    """``value`` as a :data:`Durability`; ValueError naming the choices otherwise."""
    if value not in DURABILITIES:
        raise ValueError(f"durability={value!r} is not one of {', '.join(DURABILITIES)}: "
                         "'sync' commits each node before its successors start, 'async' "
                         "commits in the background, 'exit' stores the run at its end only")
    return value  # type: ignore[return-value]


class RunCheckpoint(Protocol):
    """The checkpoint of one run, taken by its executor."""

    def started(self) -> Awaitable[None]:
        """Completes once the run's start (what a resume needs) is committed."""

    def put(self, node_id: str, handle: str | None, wait: bool) -> Awaitable[None] | None:
        """Record that top-level ``node_id`` finished (its status and outputs are in the
        run's state). With ``wait``, return an awaitable that completes once it is committed."""


class Checkpointer(Protocol):
    """Where runs keep their checkpoints (the run store)."""

    def begin(self, run: Execution, durability: Durability,
              resumed: Restored | None) -> RunCheckpoint | None:
        """Record the start of ``run`` (its version and what a resume needs); returns what
        takes its node writes, or None when it keeps none (``exit``)."""


@dataclass(slots=True)
class Restored:
    """A run's checkpoint, read back: where a resumed run starts from."""

    run_id: str
    workflow: str
    #: The run's inputs as given (``sys.*`` ones included).
    inputs: dict[str, Any]
    #: The ``sys`` section of the run's pool at its start (its id, timestamp, files...).
    system: dict[str, Any]
    #: The conversation variables after the last recorded write.
    conversation: dict[str, Any]
    #: Finished top-level nodes in the order they finished: (status, handle).
    nodes: dict[str, tuple[NodeStatus, str | None]] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    steps: int = 0
    usage: Usage = field(default_factory=Usage)
    exceptions: int = 0
    #: Run options as the run was started: concurrency, max_steps, max_time, durability.
    options: dict[str, Any] = field(default_factory=dict)
    #: Names of the secrets the run was granted (their values are never stored).
    secrets: list[str] = field(default_factory=list)
    #: Forms the run paused with, by node id, and the answers given to them.
    forms: dict[str, Form] = field(default_factory=dict)
    answers: dict[str, Answer] = field(default_factory=dict)

    def __repr__(self) -> str:
        # Holds the run's real values: a notebook shows a repr, never them.
        return (f"Restored(run_id={self.run_id!r}, workflow={self.workflow!r}, "
                f"finished={len(self.nodes)}, steps={self.steps})")


__all__ = ["DEFAULT_DURABILITY", "DURABILITIES", "Checkpointer", "Durability", "Restored",
           "RunCheckpoint", "check_durability"]
