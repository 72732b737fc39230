"""The prompt: Dify's prompt template rendered into chat messages, and the chat request."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from cellwire.engine import NodeContext
from cellwire.services.llm import ChatMessage, ChatRequest

from .config import LLMConfig, LLMConfigError, PromptMessage
from .memory import histories_text

_CONTEXT = "\x00cellwire:context\x00"
_HISTORIES = "\x00cellwire:histories\x00"
# completion_params that have a field of their own in a ChatRequest.
_REQUEST_FIELDS = ("temperature", "top_p", "max_tokens", "stop", "response_format",
                   "json_schema")


def context_text(ctx: NodeContext, config: LLMConfig) -> str:
    """Dify's ``{{#context#}}``: a string, or the contents of retrieved chunks joined."""
    context = config.context
    if context is None or not context.enabled or not context.variable_selector:
        return ""
    value = ctx.get(context.variable_selector, None, field="context.variable_selector")
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = [
            str(item.get("content", "")) if isinstance(item, dict) else _as_text(item)
            for item in value
        ]
        return "\n".join(p for p in parts if p)
    return _as_text(value)


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def jinja_variables(ctx: NodeContext, config: LLMConfig) -> dict[str, Any]:
    if config.prompt_config is None:
        return {}
    found: dict[str, Any] = {}
    for index, var in enumerate(config.prompt_config.jinja2_variables):
        if var.value_selector:
            found[var.variable] = ctx.get(
                var.value_selector, None,
                field=f"prompt_config.jinja2_variables[{index}].value_selector",
            )
        else:
            found[var.variable] = None
    return found


async def render_messages(ctx: NodeContext, config: LLMConfig, context: str,
                     variables: dict[str, Any], history: Sequence[tuple[str, str]] = ()
                     ) -> list[ChatMessage]:
    template = config.prompt_template
    if template is None:
        raise LLMConfigError("the prompt is missing", field="prompt_template",
                             hint="give a list of {role, text} messages")
    items = template if isinstance(template, list) else [template]
    # Completion mode has one prompt: the history goes in as text, at {{#histories#}}.
    histories = "" if isinstance(template, list) or config.memory is None else \
        histories_text(history, config.memory.role_prefix)
    messages: list[ChatMessage] = []
    for index, item in enumerate(items):
        field = f"prompt_template[{index}]" if isinstance(template, list) else "prompt_template"
        text = await _render_one(ctx, item, field, context, variables, histories)
        if text:
            role = item.role if isinstance(template, list) else "user"
            if role not in ("system", "user", "assistant"):
                raise LLMConfigError(f"unknown role {role!r}", field=f"{field}.role",
                                     hint="use system, user or assistant")
            messages.append(ChatMessage(role, text))
    if config.memory is not None and isinstance(template, list):
        # Dify's chat nodes with memory send the user's message last, through the memory's
        # query template (``{{#sys.query#}}`` by default).
        query = ctx.pool.get(("sys", "query"), None)
        if query:
            # Dify's default template is "{{#sys.query#}}\n\n{{#sys.files#}}": files render as
            # no text there, they reach the model as image parts (vision).
            template_text = (config.memory.query_prompt_template or "{{#sys.query#}}"
                             ).replace("{{#sys.files#}}", "")
            text = ctx.render(template_text)
            messages.append(ChatMessage("user", text))
    if history and isinstance(template, list):
        # Dify puts the remembered turns after the prompt's messages, before the user's
        # message (the query, or else the prompt's last user message).
        past = [ChatMessage(role, text) for query, answer in history
                for role, text in (("user", query), ("assistant", answer)) if text]
        at = max((i for i, m in enumerate(messages) if m.role == "user"),
                 default=len(messages))
        messages[at:at] = past
    if not messages:
        raise LLMConfigError("the prompt renders to nothing", field="prompt_template",
                             hint="write some text in the prompt, or check its variables")
    return messages


async def _render_one(ctx: NodeContext, item: PromptMessage, field: str, context: str,
                      variables: dict[str, Any], histories: str = "") -> str:
    if item.edition_type == "jinja2":
        namespace = {k: ("" if v is None else v) for k, v in variables.items()}
        return await ctx.render_jinja(item.jinja2_text or item.text or "", namespace,
                                field=f"{field}.jinja2_text")
    # Dify's special placeholders are not pool references: keep them out of the renderer.
    text = item.text.replace("{{#context#}}", _CONTEXT).replace("{{#histories#}}", _HISTORIES)
    if histories and _HISTORIES not in text:
        text = f"{_HISTORIES}\n{text}"  # as Dify does when a completion prompt has no slot
    text = ctx.render(text)  # plain: references only, as Dify's basic edition
    return text.replace(_CONTEXT, context).replace(_HISTORIES, histories)


def build_request(config: LLMConfig, model: str, messages: list[ChatMessage]) -> ChatRequest:
    params = dict(config.model.completion_params or {})
    stop = params.get("stop") or []
    request = ChatRequest(
        model=model,
        messages=messages,
        temperature=params.get("temperature"),
        top_p=params.get("top_p"),
        max_tokens=params.get("max_tokens"),
        stop=[stop] if isinstance(stop, str) else list(stop),
        params={k: v for k, v in params.items() if k not in _REQUEST_FIELDS},
    )
    schema = params.get("json_schema")
    if params.get("response_format") in ("text", "json_object", "json_schema"):
        request.response_format = params["response_format"]
    if config.structured:
        schema = config.structured_output.json_schema if config.structured_output else None
        if not schema:
            raise LLMConfigError("structured output is on but has no schema",
                                 field="structured_output.schema",
                                 hint="give a JSON Schema, or turn structured output off")
        request.response_format = "json_schema"
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as exc:
            raise LLMConfigError(f"the JSON schema is not valid JSON: {exc}",
                                 field="structured_output.schema",
                                 hint="write the schema as a JSON object") from None
    request.json_schema = schema or None
    return request

