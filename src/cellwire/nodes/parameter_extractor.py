"""parameter-extractor: pull typed parameters out of text with a model.

Dify's fields: ``model``, ``query`` (a selector), ``parameters[]{name, type, description,
required, options}``, ``instruction``, ``reasoning_mode``, ``memory``, ``vision``. In
``function_call`` mode the model is made to call a tool ``extract_parameters`` whose JSON
Schema is built from the parameters; in ``prompt`` mode it is asked for a JSON object in its
reply. Either way the values are checked against the declared types and options. As in Dify,
memory puts the conversation's earlier turns in the system prompt (inside ``<histories>``
tags) and vision puts the image files before the text of the user message.

Outputs: each parameter, ``__is_success`` (1 or 0, as Dify), ``__reason`` (why it failed,
else None) and ``__usage``. A failed extraction is not a node error: parameters the model did
not give keep Dify's empty values (``""``, ``0``, ``false``, ``[]``) and ``__reason`` says
what went wrong, so a workflow can branch on ``__is_success``.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from cellwire.engine import NodeContext, NodeError, NodeResult
from cellwire.model import NodeConfig, node_type
from cellwire.services.llm import ChatMessage, ChatRequest, ChatResponse

from .config_checks import empty_list
from .llm import (
    LLMConfigError,
    MemoryConfig,
    ModelConfig,
    VisionConfig,
    attach_images,
    invoke,
    memory_section,
    parse_json,
    read_history,
    route_for,
    window_limit,
)

TOOL = "extract_parameters"
#: Tokens Dify holds back beyond the prompt when it sizes the extractor's history.
MEMORY_RESERVE = 1000
_SCALARS = {"string": "string", "number": "number", "bool": "boolean", "boolean": "boolean",
            "select": "string"}
_EMPTY: dict[str, Any] = {"string": "", "select": "", "number": 0, "bool": False,
                          "boolean": False}


class ExtractorParameter(NodeConfig):
    name: str
    type: str = "string"
    description: str = ""
    required: bool = False
    options: Annotated[list[str], BeforeValidator(empty_list)] = Field(default_factory=list)


class ParameterExtractorConfig(NodeConfig):
    model: ModelConfig = Field(default_factory=ModelConfig)
    query: list[str] = Field(default_factory=list)
    parameters: list[ExtractorParameter] = Field(default_factory=list)
    instruction: str = ""
    #: Dify reads a null or empty mode as function_call.
    reasoning_mode: Annotated[Literal["function_call", "prompt"],
                              BeforeValidator(lambda v: v or "function_call")] = "function_call"
    memory: MemoryConfig | None = None
    vision: VisionConfig | None = None
    #: Keep replies in the run store's response cache and answer repeats from it.
    cache: bool = False


class ExtractionError(Exception):
    """The reply holds no usable parameters; becomes ``__reason``, not a node error."""


def _outputs(config: ParameterExtractorConfig) -> list[str]:
    return [*(p.name for p in config.parameters), "__is_success", "__reason", "__usage"]


@node_type("parameter-extractor", config=ParameterExtractorConfig, outputs=_outputs)
async def run(ctx: NodeContext) -> NodeResult:
    """Extract ``parameters`` from the query; outputs them with ``__is_success``."""
    config: ParameterExtractorConfig = ctx.config
    if not config.parameters:
        raise LLMConfigError("no parameters are declared", field="parameters",
                             hint="declare parameters as {name, type, description, required}")
    schema = parameters_schema(config.parameters)
    if not config.query:
        raise LLMConfigError("no query is selected", field="query",
                             hint="select the variable holding the text, e.g. ['sys', 'query']")
    value = ctx.get(config.query, field="query")
    query = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    instruction = ctx.render(config.instruction) if config.instruction else ""
    route = route_for(ctx, config.model)
    notes: list[str] = []
    history: list[tuple[str, str]] = []
    request = _request(config, route.model, query, instruction, schema, history)
    if config.memory is not None:
        # As in Dify: the window's size counts even when the window is off.
        history = await read_history(ctx, config.memory, notes, route=route, request=request,
                                     limit=window_limit(config.memory, enabled_only=False),
                                     reserve=MEMORY_RESERVE)
        if history:
            request = _request(config, route.model, query, instruction, schema, history)
    if config.vision is not None and config.vision.enabled:
        await attach_images(ctx, config.vision, request.messages, notes)
    call = await invoke(ctx, route, request, cache=config.cache, stream=False)

    reason: str | None
    try:
        found = _reply_values(call.response, config.reasoning_mode)
        values, reason = check(config.parameters, found)
    except ExtractionError as exc:
        values, reason = {}, str(exc)
    outputs: dict[str, Any] = {p.name: values.get(p.name, _empty(p)) for p in config.parameters}
    usage = call.usage_dict
    outputs.update({"__is_success": 0 if reason else 1, "__reason": reason, "__usage": usage})
    process_data: dict[str, Any] = {
        "model_mode": config.model.mode,
        "model_provider": route.provider.name,
        "model_name": route.model,
        "reasoning_mode": config.reasoning_mode,
        "prompts": [m.as_dict() for m in request.messages],
        "usage": usage,
        "finish_reason": call.response.finish_reason,
        "reply": call.response.text,
    }
    if call.response.tool_calls:
        process_data["tool_calls"] = [{"name": c.name, "arguments": c.arguments}
                                      for c in call.response.tool_calls]
    if call.note:
        notes.append(call.note)
    if notes:
        process_data["notes"] = notes
    return NodeResult(outputs=outputs, inputs={"query": query, "instruction": instruction},
                      process_data=process_data, usage=call.node_usage(),
                      metadata=call.metadata())


def parameters_schema(parameters: list[ExtractorParameter]) -> dict[str, Any]:
    """The JSON Schema of the parameters object; bad types raise a config error."""
    properties: dict[str, Any] = {}
    for index, param in enumerate(parameters):
        kind = param.type
        if kind in _SCALARS:
            prop: dict[str, Any] = {"type": _SCALARS[kind]}
        elif kind.startswith("array[") and kind.endswith("]") and (
                kind[6:-1] in ("string", "number", "boolean", "object")):
            prop = {"type": "array", "items": {"type": kind[6:-1]}}
        else:
            raise LLMConfigError(
                f"parameter {param.name!r} has unknown type {kind!r}",
                field=f"parameters[{index}].type",
                hint="use string, number, boolean, select or array[string|number|boolean|"
                     "object]")
        if param.description:
            prop["description"] = param.description
        if param.options:
            prop["enum"] = list(param.options)
        properties[param.name] = prop
    return {"type": "object", "properties": properties,
            "required": [p.name for p in parameters if p.required]}


def _request(config: ParameterExtractorConfig, model: str, query: str, instruction: str,
             schema: dict[str, Any], history: list[tuple[str, str]]) -> ChatRequest:
    params = dict(config.model.completion_params or {})
    system = ("You extract structured parameters from the user's text. Give only values the "
              "text supports; leave out parameters it does not mention.")
    if config.memory is not None:
        system += "\n\n" + memory_section(history)
    if instruction:
        system += f"\n\nInstructions:\n{instruction}"
    request = ChatRequest(model=model, messages=[], temperature=params.get("temperature"),
                          top_p=params.get("top_p"), max_tokens=params.get("max_tokens"))
    if config.reasoning_mode == "function_call":
        request.tools = [{"type": "function", "function": {
            "name": TOOL, "description": "Record the parameters found in the text.",
            "parameters": schema}}]
        request.tool_choice = {"type": "function", "function": {"name": TOOL}}
        user = f"Text:\n{query}"
    else:
        system += ("\n\nReply with one JSON object only, following this JSON Schema:\n"
                   + json.dumps(schema, ensure_ascii=False))
        request.response_format = "json_object"
        user = f"Text:\n{query}"
    request.messages = [ChatMessage("system", system), ChatMessage("user", user)]
    return request


def _reply_values(response: ChatResponse, mode: str) -> dict[str, Any]:
    """The parameters object of the reply; ``ExtractionError`` saying why when there is none."""
    if mode == "function_call":
        for call in response.tool_calls:
            if call.name == TOOL:
                try:
                    data = call.parsed_arguments()
                except ValueError as exc:
                    raise ExtractionError(f"the tool call's arguments are not JSON: {exc}") from None
                if not isinstance(data, dict):
                    raise ExtractionError("the tool call's arguments are not an object")
                return data
        if not response.text.strip():
            raise ExtractionError(f"the model did not call {TOOL}")
    try:
        data = parse_json(response.text)
    except NodeError:
        raise ExtractionError(f"the reply is not JSON: {response.text[:200]!r}") from None
    if not isinstance(data, dict):
        raise ExtractionError("the reply is not a JSON object")
    return data


def check(parameters: list[ExtractorParameter],
          found: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The values that fit their declared types and options, and the first problem."""
    values: dict[str, Any] = {}
    problems: list[str] = []
    for param in parameters:
        if param.name not in found or found[param.name] is None:
            if param.required:
                problems.append(f"required parameter {param.name!r} is missing")
            continue
        try:
            values[param.name] = _coerce(param, found[param.name])
        except ExtractionError as exc:
            problems.append(f"parameter {param.name!r}: {exc}")
    return values, "; ".join(problems) or None


def _coerce(param: ExtractorParameter, value: Any) -> Any:
    kind = param.type
    if kind in ("string", "select"):
        if isinstance(value, (dict, list)):
            raise ExtractionError(f"expected text, got {type(value).__name__}")
        text = str(value)
        if param.options and text not in param.options:
            raise ExtractionError(f"{text!r} is not one of {param.options}")
        return text
    if kind == "number":
        if isinstance(value, bool):
            raise ExtractionError("expected a number, got a boolean")
        if isinstance(value, (int, float)):
            return value
        try:
            number = float(str(value).strip())
        except ValueError:
            raise ExtractionError(f"expected a number, got {value!r}") from None
        return int(number) if number.is_integer() else number
    if kind in ("bool", "boolean"):
        if isinstance(value, bool):
            return value
        if str(value).strip().lower() in ("true", "yes", "1"):
            return True
        if str(value).strip().lower() in ("false", "no", "0"):
            return False
        raise ExtractionError(f"expected true or false, got {value!r}")
    if not isinstance(value, list):
        raise ExtractionError(f"expected a list, got {type(value).__name__}")
    item = kind[6:-1]
    inner = ExtractorParameter(name=param.name, type=item if item != "object" else "string")
    if item == "object":
        if not all(isinstance(v, dict) for v in value):
            raise ExtractionError("expected a list of objects")
        return value
    return [_coerce(inner, v) for v in value]


def _empty(param: ExtractorParameter) -> Any:
    return [] if param.type.startswith("array[") else _EMPTY.get(param.type, "")
