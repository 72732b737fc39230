"""cellwire: Dify-style LLM workflows, native to Jupyter.

Importing it loads the workflow model and declares the built-in node types; the engine, the
runner, the formats and the services load on first use (PEP 562 ``__getattr__``), so a script
pays only for what it touches.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

from cellwire import nodes as _nodes  # noqa: F401 - declares the built-in node types
from cellwire.model import Edge, Node, Problem, Retry, Workflow, WorkflowError, node_type, validate
from cellwire.model.workflow import provide_on_import

if TYPE_CHECKING:
    from cellwire.api import compare, evaluate, forms, replay, respond, resume, runs, stale
    from cellwire.engine import NodeContext, NodeError, NodeResult, RunResult, RunStatus, Runtime
    from cellwire.formats import dump, load, save
    from cellwire.services.llm.config import configure_provider, map_model, set_price
    from cellwire.services.tools import tool

__version__ = "0.1.0"

#: The module each lazy attribute comes from (the same names as the imports above).
_LAZY = {
    **dict.fromkeys(["compare", "evaluate", "forms", "replay", "respond", "resume", "runs",
                     "stale"], "cellwire.api"),
    **dict.fromkeys(["NodeContext", "NodeError", "NodeResult", "RunResult", "RunStatus",
                     "Runtime"], "cellwire.engine"),
    **dict.fromkeys(["dump", "load", "save"], "cellwire.formats"),
    **dict.fromkeys(["configure_provider", "map_model", "set_price"],
                    "cellwire.services.llm.config"),
    "tool": "cellwire.services.tools",
}

# Workflow.run and its kin come from cellwire.api, imported on the first such call.
provide_on_import("cellwire.api")


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cellwire' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(globals().keys() | _LAZY.keys())


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
