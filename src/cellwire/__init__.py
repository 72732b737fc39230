"""cellwire: Dify-style LLM workflows, native to Jupyter."""

from cellwire import nodes as _nodes  # noqa: F401 - registers the built-in node types
from cellwire.api import compare, evaluate, forms, replay, respond, resume, runs, stale
from cellwire.engine import NodeContext, NodeError, NodeResult, RunResult, RunStatus, Runtime
from cellwire.formats import dump, load, save
from cellwire.model import Edge, Node, Problem, Retry, Workflow, WorkflowError, node_type, validate
from cellwire.services.llm.config import configure_provider, map_model, set_price
from cellwire.services.tools import tool

__version__ = "0.1.0"


def load_ipython_extension(ip: object) -> None:
    """``%load_ext cellwire``: the ``%%workflow`` magics and notebook displays."""
    from cellwire.jupyter import load_ipython_extension as load

    load(ip)


__all__ = [
    "Edge", "Node", "NodeContext", "NodeError", "NodeResult", "Problem", "Retry", "RunResult",
    "RunStatus", "Runtime", "Workflow", "WorkflowError", "compare", "configure_provider", "dump",
    "evaluate", "forms", "load", "map_model", "node_type", "replay", "respond", "resume",
    "runs", "save", "set_price", "stale", "tool", "validate",
]
