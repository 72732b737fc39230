"""template-transform: render a Jinja2 template (sandboxed) over named variables and the pool."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import jinja2
import jinja2.nodes
from jinja2.sandbox import SecurityError
from pydantic import Field

from cellwire.engine import NodeContext, NodeError, NodeResult
from cellwire.engine.context import render
from cellwire.model import NodeConfig, node_type
from cellwire.model.selectors import DIFY_REFERENCE

#: Longest output a template may produce (Dify's TEMPLATE_TRANSFORM_MAX_LENGTH in graphon).
TEMPLATE_TRANSFORM_MAX_LENGTH = 400_000


class TemplateVariable(NodeConfig):
    variable: str
    value_selector: list[str] = Field(default_factory=list)


class TemplateTransformConfig(NodeConfig):
    template: str = ""
    variables: list[TemplateVariable] = Field(default_factory=list)


def named_inputs(ctx: NodeContext, variables: list[TemplateVariable]) -> dict[str, Any]:
    """``{variable: value}`` read from the pool; a missing value is None, as in Dify."""
    return {
        v.variable: ctx.pool.get(v.value_selector, None) if v.value_selector else None
        for v in variables
    }


def render_template(text: str, ctx: NodeContext, names: dict[str, Any], *, field: str,
                    max_length: int | None = None) -> str:
    """Render ``text`` (either reference form) in the sandbox; every failure is a NodeError."""
    check_sandbox(text, field=field)
    try:
        output = render(text, ctx.pool, names)
    except jinja2.TemplateSyntaxError as exc:
        raise NodeError(f"syntax error on line {exc.lineno}: {exc.message}", field=field,
                        hint="fix the Jinja syntax of the template") from None
    except SecurityError as exc:
        raise NodeError(f"blocked by the sandbox: {exc}", field=field,
                        hint="templates may not reach Python internals") from None
    except jinja2.TemplateError as exc:
        raise NodeError(f"template error: {exc}", field=field,
                        hint="check the variable names the template uses") from None
    except Exception as exc:  # noqa: BLE001 - e.g. a TypeError from `{{ 1 + 'a' }}`
        raise NodeError(f"rendering failed: {type(exc).__name__}: {exc}", field=field,
                        hint="check the expressions of the template") from None
    if max_length is not None and len(output) > max_length:
        raise NodeError(
            f"the output is {len(output)} characters, more than the maximum of {max_length}",
            field=field, hint="make the template produce less text, e.g. with |truncate",
            error_type="OutputTooLong",
        )
    return output


def check_sandbox(text: str, *, field: str) -> None:
    """Refuse Python internals (``''.__class__``) before rendering.

    Jinja's sandbox renders such an access as empty text; naming it as an error tells the
    author why their template printed nothing. Only dunder names are refused here: a single
    underscore may be a dict key (``doc._id``), which the sandbox allows.
    """
    bad = _private_attributes(text)
    if bad:
        raise NodeError(f"blocked by the sandbox: access to attribute {bad!r} is not allowed",
                        field=field, hint="templates may not use names starting with '__'",
                        error_type="SecurityError")


_parser = jinja2.Environment()


@lru_cache(maxsize=1024)
def _private_attributes(text: str) -> str | None:
    if "__" not in text:
        return None
    try:
        ast = _parser.parse(DIFY_REFERENCE.sub("", text))
    except jinja2.TemplateSyntaxError:
        return None  # the renderer reports it, with its line
    for node in ast.find_all((jinja2.nodes.Getattr, jinja2.nodes.Getitem)):
        if isinstance(node, jinja2.nodes.Getattr):
            name: Any = node.attr
        elif isinstance(node.arg, jinja2.nodes.Const):
            name = node.arg.value
        else:
            continue
        if isinstance(name, str) and name.startswith("__"):
            return name
    return None


@node_type("template-transform", config=TemplateTransformConfig, outputs=("output",))
async def run(ctx: NodeContext) -> NodeResult:
    """Render ``template`` with the named ``variables``; the text is the output ``output``."""
    names = named_inputs(ctx, ctx.config.variables)
    output = render_template(ctx.config.template, ctx, names, field="template",
                             max_length=TEMPLATE_TRANSFORM_MAX_LENGTH)
    return NodeResult(inputs=names, outputs={"output": output})
