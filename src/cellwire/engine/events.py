"""The one typed event stream of a run. Every sink (store, widget, SSE, progress) reads it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(slots=True, kw_only=True)
class Event:
    run_id: str
    time: float

    @property
    def name(self) -> str:
        return _NAMES[type(self)]

    def as_dict(self) -> dict[str, Any]:
        return {"event": self.name, **asdict(self)}


# -- run events ---------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class RunStarted(Event):
    workflow: str
    inputs: dict[str, Any]
    reason: str = "initial"


@dataclass(slots=True, kw_only=True)
class RunSucceeded(Event):
    outputs: dict[str, Any]


@dataclass(slots=True, kw_only=True)
class RunPartialSucceeded(Event):
    outputs: dict[str, Any]
    exceptions_count: int


@dataclass(slots=True, kw_only=True)
class RunFailed(Event):
    error: str
    node_id: str | None = None
    exceptions_count: int = 0


@dataclass(slots=True, kw_only=True)
class RunStopped(Event):
    reason: str


@dataclass(slots=True, kw_only=True)
class RunPaused(Event):
    """The run waits for people: ``forms`` (as :meth:`Form.to_dict` gives them) are what
    they are asked; answering them resumes the run."""

    forms: list[dict[str, Any]]
    outputs: dict[str, Any] = field(default_factory=dict)


# -- node events ---------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class NodeEvent(Event):
    node_id: str
    node_type: str
    execution_id: str
    #: The iteration or loop this execution runs inside, and which round of it.
    parent_id: str | None = None
    round: int | None = None
    #: The execution of that container (one container node can run several times at once).
    parent_execution_id: str | None = None


@dataclass(slots=True, kw_only=True)
class NodeStarted(NodeEvent):
    title: str
    index: int
    predecessor_id: str | None = None


@dataclass(slots=True, kw_only=True)
class NodeFinished(NodeEvent):
    """Common to the events that end a node execution; each is one row of a trace."""

    title: str = ""
    index: int = 0
    started_at: float = 0.0

    inputs: dict[str, Any] = field(default_factory=dict)
    process_data: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    elapsed: float = 0.0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True, kw_only=True)
class NodeSucceeded(NodeFinished):
    handle: str = "source"


@dataclass(slots=True, kw_only=True)
class NodeException(NodeFinished):
    """The node failed and its error strategy handled it (default value or fail branch)."""

    error: str
    error_type: str
    handle: str = "source"


@dataclass(slots=True, kw_only=True)
class NodeFailed(NodeFinished):
    error: str
    error_type: str


@dataclass(slots=True, kw_only=True)
class NodeStopped(NodeFinished):
    reason: str = "stopped"


@dataclass(slots=True, kw_only=True)
class NodePaused(NodeFinished):
    """The node waits for a person to answer ``form``; it runs again when the run resumes."""

    form: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True, kw_only=True)
class NodeSkipped(Event):
    node_id: str
    node_type: str
    parent_id: str | None = None
    round: int | None = None
    parent_execution_id: str | None = None


@dataclass(slots=True, kw_only=True)
class NodeRetry(NodeEvent):
    attempt: int
    error: str
    delay: float


@dataclass(slots=True, kw_only=True)
class StreamChunk(NodeEvent):
    """A piece of streamed text (answer node, LLM tokens)."""

    selector: tuple[str, ...]
    text: str
    is_final: bool = False


# -- containers ------------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class ContainerStarted(NodeEvent):
    kind: str  # "iteration" | "loop"
    total: int | None = None


@dataclass(slots=True, kw_only=True)
class ContainerNext(NodeEvent):
    kind: str
    index: int


@dataclass(slots=True, kw_only=True)
class ContainerCompleted(NodeEvent):
    kind: str
    rounds: int
    reason: str = ""


_NAMES: dict[type, str] = {
    RunStarted: "run_started",
    RunSucceeded: "run_succeeded",
    RunPartialSucceeded: "run_partial_succeeded",
    RunFailed: "run_failed",
    RunStopped: "run_stopped",
    RunPaused: "run_paused",
    NodeStarted: "node_started",
    NodeSucceeded: "node_succeeded",
    NodeException: "node_exception",
    NodeFailed: "node_failed",
    NodeStopped: "node_stopped",
    NodePaused: "node_paused",
    NodeSkipped: "node_skipped",
    NodeRetry: "node_retry",
    StreamChunk: "stream_chunk",
    ContainerStarted: "container_started",
    ContainerNext: "container_next",
    ContainerCompleted: "container_completed",
}

RUN_END_EVENTS = (RunSucceeded, RunPartialSucceeded, RunFailed, RunStopped, RunPaused)
