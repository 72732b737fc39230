"""The engine: plan, scheduler, node runner, run state, events and layers, and the typed
runtime a run is given."""

from .clock import Clock
from .context import VariablePool
from .events import Event
from .executor import Execution
from .node import NodeContext, NodeError, NodeResult, Usage
from .node_runner import NodeFailure
from .plan import CompiledWorkflow, compile_workflow
from .result import RunResult
from .retry import FatalError, RetryableError
from .runtime import Runtime
from .state import IllegalTransition, NodeStatus, RunStatus

__all__ = [
    "Clock", "CompiledWorkflow", "Event", "Execution", "FatalError", "IllegalTransition",
    "NodeContext", "NodeError", "NodeFailure", "NodeResult", "NodeStatus", "RetryableError",
    "RunResult", "RunStatus", "Runtime", "Usage", "VariablePool", "compile_workflow",
]
