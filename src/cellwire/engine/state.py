"""Run and node state machines. An illegal transition is a bug in the engine and raises."""

from __future__ import annotations

from enum import Enum


class RunStatus(str, Enum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIAL_SUCCEEDED = "partial-succeeded"
    FAILED = "failed"
    STOPPED = "stopped"
    PAUSED = "paused"
    #: Shown by the store, never entered by the engine: a ``running`` run whose process is
    #: gone (killed, or its machine went down), so it will not end by itself.
    INTERRUPTED = "interrupted"

    def __str__(self) -> str:
        return self.value


class NodeStatus(str, Enum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    EXCEPTION = "exception"  # failed, and the error strategy handled it
    SKIPPED = "skipped"
    PAUSED = "paused"
    STOPPED = "stopped"  # cancelled with its run

    def __str__(self) -> str:
        return self.value


class IllegalTransition(RuntimeError):
    """A state machine was asked to move where it cannot: a bug, never a user error."""


_RUN_MOVES: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.PENDING: frozenset({RunStatus.RUNNING, RunStatus.FAILED, RunStatus.STOPPED}),
    RunStatus.RUNNING: frozenset(
        {RunStatus.SUCCEEDED, RunStatus.PARTIAL_SUCCEEDED, RunStatus.FAILED, RunStatus.STOPPED,
         RunStatus.PAUSED}
    ),
    RunStatus.PAUSED: frozenset({RunStatus.RUNNING, RunStatus.STOPPED}),
}

_NODE_MOVES: dict[NodeStatus, frozenset[NodeStatus]] = {
    NodeStatus.PENDING: frozenset({NodeStatus.RUNNING, NodeStatus.SKIPPED, NodeStatus.STOPPED}),
    NodeStatus.RUNNING: frozenset(
        {NodeStatus.SUCCEEDED, NodeStatus.FAILED, NodeStatus.EXCEPTION, NodeStatus.PAUSED,
         NodeStatus.STOPPED}
    ),
    NodeStatus.PAUSED: frozenset({NodeStatus.RUNNING, NodeStatus.STOPPED}),
}

RUN_TERMINAL = frozenset(
    {RunStatus.SUCCEEDED, RunStatus.PARTIAL_SUCCEEDED, RunStatus.FAILED, RunStatus.STOPPED}
)
NODE_TERMINAL = frozenset(
    {NodeStatus.SUCCEEDED, NodeStatus.FAILED, NodeStatus.EXCEPTION, NodeStatus.SKIPPED,
     NodeStatus.STOPPED}
)


def check_run_move(current: RunStatus, new: RunStatus) -> RunStatus:
    if new not in _RUN_MOVES.get(current, ()):
        raise IllegalTransition(f"run cannot go from {current} to {new}")
    return new


def check_node_move(node_id: str, current: NodeStatus, new: NodeStatus) -> NodeStatus:
    if new not in _NODE_MOVES.get(current, ()):
        raise IllegalTransition(f"node {node_id!r} cannot go from {current} to {new}")
    return new
