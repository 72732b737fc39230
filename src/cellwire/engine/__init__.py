"""The async executor, the variable pool, state machines and the event stream."""

from .clock import Clock
from .context import VariablePool
from .events import Event
from .executor import CompiledWorkflow, Execution, NodeFailure, compile_workflow
from .node import NodeContext, NodeError, NodeResult, Usage
from .result import RunResult
from .retry import FatalError, RetryableError
from .runtime import Runtime
from .state import IllegalTransition, NodeStatus, RunStatus

__all__ = [
    "Clock", "CompiledWorkflow", "Event", "Execution", "FatalError", "IllegalTransition",
    "NodeContext", "NodeError", "NodeFailure", "NodeResult", "NodeStatus", "RetryableError",
    "RunResult", "RunStatus", "Runtime", "Usage", "VariablePool", "compile_workflow",
]
