"""The workflow as data. Imports nothing else of cellwire."""

from .problems import Problem, WorkflowError
from .registry import NodeConfig, NodeType, node_type, registry
from .selectors import Selector, as_selector, template_references
from .validate import validate
from .workflow import (
    FAIL_BRANCH,
    SOURCE,
    ConversationVariable,
    Edge,
    EnvironmentVariable,
    Node,
    Note,
    Position,
    Retry,
    Workflow,
)

__all__ = [
    "FAIL_BRANCH", "SOURCE", "ConversationVariable", "Edge", "EnvironmentVariable", "Node",
    "NodeConfig", "NodeType", "Note", "Position", "Problem", "Retry", "Selector",
    "Workflow", "WorkflowError", "as_selector", "node_type", "registry", "template_references",
    "validate",
]
