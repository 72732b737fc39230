"""The state of one run, owned by the executor and kept apart from its events.

Events are what the outside sees (redacted, for layers); the state is what the run knows:
the top-level variable pool, which nodes finished and how, which edge each one chose, the
usage and the step count. A rerun from a node ("run from here", "run this node") starts from
a previous run's state, never from its events, so values the events redact (secrets) reach
the rerun intact. ``to_dict``/``from_dict`` give its JSON-safe form, with the ``env`` values
left out and every granted secret redacted, for checkpoints.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .context import VariablePool
from .forms import Form
from .node import Usage
from .secrets import NO_SECRETS, Redactor
from .state import NodeStatus, RunStatus

#: Statuses of a node whose outputs are in the pool.
FINISHED = frozenset({NodeStatus.SUCCEEDED, NodeStatus.EXCEPTION})

#: Pool sections never written out: environment values may be secrets, and a run that
#: resumes is granted them again.
_NOT_DUMPED = frozenset({"env"})


@dataclass(slots=True)
class RunState:
    """What a run knows: its pool, node statuses and edge decisions at the top level."""

    run_id: str
    workflow: str
    #: The run's inputs as given (not redacted: they never leave the process this way).
    inputs: dict[str, Any] = field(default_factory=dict)
    status: RunStatus = RunStatus.PENDING
    pool: VariablePool = field(default_factory=VariablePool)
    #: Top-level node statuses.
    nodes: dict[str, NodeStatus] = field(default_factory=dict)
    #: The source handle each finished top-level node left through (its edge decision).
    handles: dict[str, str | None] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    answer: list[str] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    steps: int = 0
    exceptions: int = 0
    #: Forms of the top-level nodes that paused the run, waiting for people, by node id.
    forms: dict[str, Form] = field(default_factory=dict)
    #: What the user granted the run (kept in memory for reruns; never written, never shown).
    secrets: dict[str, str] = field(default_factory=dict, repr=False, compare=False)
    #: Redacts those values from :meth:`to_dict`.
    redactor: Redactor = field(default=NO_SECRETS, repr=False, compare=False)

    def __repr__(self) -> str:
        # The state holds the run's real values (a notebook shows a repr): never them.
        return (f"RunState(run_id={self.run_id!r}, workflow={self.workflow!r}, "
                f"status={str(self.status)!r}, nodes={len(self.nodes)}, steps={self.steps})")

    def finished(self) -> set[str]:
        """Top-level nodes whose outputs are in the pool."""
        return {n for n, status in self.nodes.items() if status in FINISHED}

    def skipped(self) -> set[str]:
        return {n for n, status in self.nodes.items() if status is NodeStatus.SKIPPED}

    def to_dict(self) -> dict[str, Any]:
        """The state as JSON-safe data, without ``env`` and with every granted secret (and
        its transformed forms) redacted."""
        redact = self.redactor
        pool = {k: v for k, v in self.pool.snapshot().items() if k not in _NOT_DUMPED}
        return {
            "run_id": self.run_id, "workflow": self.workflow,
            "inputs": redact.value(self.inputs), "status": str(self.status),
            "pool": redact.value(pool),
            "nodes": {n: str(s) for n, s in self.nodes.items()},
            "handles": dict(self.handles), "outputs": redact.value(self.outputs),
            "answer": redact.text("".join(self.answer)),
            "usage": dataclasses.asdict(self.usage), "steps": self.steps,
            "exceptions": self.exceptions,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunState:
        """The state :meth:`to_dict` wrote (the run that resumes is granted ``env`` again)."""
        return cls(
            run_id=data["run_id"], workflow=data["workflow"], inputs=dict(data["inputs"]),
            status=RunStatus(data["status"]),
            pool=VariablePool({k: dict(v) for k, v in data["pool"].items()}),
            nodes={n: NodeStatus(s) for n, s in data["nodes"].items()},
            handles=dict(data["handles"]), outputs=dict(data["outputs"]),
            answer=[data["answer"]] if data.get("answer") else [],
            usage=Usage(**data["usage"]), steps=int(data["steps"]),
            exceptions=int(data["exceptions"]),
        )


__all__ = ["FINISHED", "RunState"]
