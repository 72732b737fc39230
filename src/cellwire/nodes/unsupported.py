"""Dify node types that need something cellwire does not have here.

Plugin triggers and RAG-pipeline nodes keep their config so a workflow imports, validates and
exports unchanged; running one fails at that node with a message saying what it needs and how to supply it.
(Tool and agent nodes run in :mod:`cellwire.nodes.tool` and :mod:`cellwire.nodes.agent`; webhook
and schedule triggers in :mod:`cellwire.nodes.triggers`.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import Field, field_validator

from cellwire.engine import NodeContext, NodeError, NodeResult
from cellwire.model import Node, NodeConfig, node_type, registry

from .config_checks import unique

#: What each type needs, and how to supply it: (need, fix). ``{...}`` fields come from config.
NEEDS: dict[str, tuple[str, str]] = {
    "trigger-plugin": (
        "the trigger plugin '{plugin_unique_identifier}' from Dify's marketplace",
        "replace the trigger with a start node that declares the event's fields as inputs",
    ),
    "datasource": (
        "a Dify RAG-pipeline data source",
        "replace it with a start node whose inputs carry the documents",
    ),
    "knowledge-index": (
        "a Dify knowledge base to write chunks into",
        "index the chunks into a cellwire knowledge base from a code node",
    ),
    "command": (
        "Dify's command node (a shell command, '{command}', in Dify's agent sandbox)",
        "replace it with a code node that does the same in Python",
    ),
    "question-classifier": (
        "the question-classifier node, which this cellwire build does not provide",
        "install a cellwire version with LLM nodes, or replace it with an llm and if-else node",
    ),
    "parameter-extractor": (
        "the parameter-extractor node, which this cellwire build does not provide",
        "install a cellwire version with LLM nodes, or replace it with an llm and code node",
    ),
}


class _Format(dict):
    def __missing__(self, key: str) -> str:
        return "?"


#: What a node type of a file that no one here knows needs (a plugin's, or a fork's).
UNKNOWN = (("the node type '{type}', which neither Dify 1.16 nor this cellwire provides (a "
            "plugin's or a fork's node type)"),
           "register a node type of that name (@cellwire.node_type), or replace the node")


def placeholder(name: str) -> None:
    """Make ``name``, a node type a Dify file uses that nothing here provides, known as a
    placeholder, as Dify's import keeps it: the workflow imports, and a run fails at the
    node. A real type or plugin registered under ``name`` replaces it."""
    if registry.find(name) is None:
        # The text is a format template (``need`` fills it from the config): a brace in
        # the type's name is literal.
        literal = name.replace("{", "{{").replace("}", "}}")
        NEEDS[name] = (UNKNOWN[0].replace("{type}", literal), UNKNOWN[1])
        _register(name)


def need(node: Node) -> tuple[str, str] | None:
    """``(what the node needs, how to supply it)`` for a node of a type listed here."""
    found = registry.find(node.type)
    if found is None or getattr(found.run, "__module__", None) != __name__:
        return None
    need_text, fix = NEEDS[found.name]
    config = node.config if isinstance(node.config, Mapping) else {}
    values = _Format({k: v for k, v in config.items() if isinstance(v, (str, int, float, list))})
    values["provider"] = config.get("provider_name") or config.get("provider_id") or "?"
    return need_text.format_map(values), fix.format_map(values)


def _fail(ctx: NodeContext) -> NodeError:
    found = need(ctx.node)
    need_text, fix = found if found is not None else ("something unavailable", "replace it")
    title = ctx.node.title or ctx.node.id
    return NodeError(f"node '{ctx.node.id}' ({title}, {ctx.node.type}) cannot run here: it "
                     f"needs {need_text}", field="type", hint=fix,
                     error_type="UnsupportedNode")


async def _unsupported(ctx: NodeContext) -> NodeResult:
    raise _fail(ctx)


def _register(name: str, run: Callable[[NodeContext], Any] = _unsupported, *,
              config: type[NodeConfig] = NodeConfig, **options: Any) -> None:
    # A fallback: a built-in or a plugin of the same name replaces it, before or after.
    node_type(name, config=config, fallback=True, **options)(_copy(run, name))


def _copy(run: Callable[[NodeContext], Any], name: str) -> Callable[[NodeContext], Any]:
    async def run_node(ctx: NodeContext) -> NodeResult:
        return await run(ctx)

    run_node.__module__ = __name__
    run_node.__doc__ = f"{name}: kept from a Dify workflow; needs {NEEDS[name][0]}."
    return run_node



# -- classifier and extractor (only when no real implementation is registered) ---------------


class ClassifierClass(NodeConfig):
    id: str
    name: str = ""


class QuestionClassifierConfig(NodeConfig):
    classes: list[ClassifierClass] = Field(default_factory=list)

    @field_validator("classes")
    @classmethod
    def _unique_classes(cls, classes: list[ClassifierClass]) -> list[ClassifierClass]:
        unique([c.id for c in classes], "class id")
        return classes


class ExtractorParameter(NodeConfig):
    name: str


class ParameterExtractorConfig(NodeConfig):
    parameters: list[ExtractorParameter] = Field(default_factory=list)


_register("trigger-plugin", start=True)
_register("datasource", start=True)
_register("knowledge-index")
_register("command")
_register("question-classifier", config=QuestionClassifierConfig,
          handles=lambda c: [k.id for k in c.classes],
          outputs=["class_name", "class_id", "class_label", "usage"])
_register("parameter-extractor", config=ParameterExtractorConfig,
          outputs=lambda c: [*(p.name for p in c.parameters), "__is_success", "__reason",
                             "__usage"])
