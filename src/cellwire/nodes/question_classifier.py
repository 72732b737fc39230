"""question-classifier: ask a model which class a question belongs to; branch on its id.

Dify's fields: ``query_variable_selector``, ``model``, ``classes[]{id, name, label}``,
``instruction``, ``memory``, ``vision``. The node leaves through the handle of the chosen
class id; outputs are ``class_name``, ``class_id``, ``class_label`` and ``usage``. The model
is asked for ``{"category_id": ..., "category_name": ...}`` with a JSON schema whose
``category_id`` is an enum of the ids (structured output). A reply that is not that JSON is
searched for a class id or name; a reply naming no class goes to the first class, as Dify
does, with a note.

As in Dify, memory puts the conversation's earlier turns in the system prompt, as
``Human:`` / ``Assistant:`` lines inside ``<histories>`` tags, and vision puts the image files
before the text of the user message that holds the question.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, field_validator

from cellwire.engine import NodeContext, NodeError, NodeResult
from cellwire.model import NodeConfig, node_type
from cellwire.services.llm import ChatMessage, ChatRequest

from .config_checks import empty_text
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


class ClassifierClass(NodeConfig):
    id: str
    name: str = ""
    label: str | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _id_text(cls, value: Any) -> Any:
        # Dify writes ids as '1', '2' but hand-written YAML may give numbers.
        return str(value) if isinstance(value, int) else value


class QuestionClassifierConfig(NodeConfig):
    query_variable_selector: list[str] = Field(default_factory=list)
    model: ModelConfig = Field(default_factory=ModelConfig)
    classes: list[ClassifierClass] = Field(default_factory=list)
    instruction: Annotated[str, BeforeValidator(empty_text)] = ""
    memory: MemoryConfig | None = None
    vision: VisionConfig | None = None
    #: Keep replies in the run store's response cache and answer repeats from it.
    cache: bool = False

    @field_validator("classes")
    @classmethod
    def _unique_classes(cls, classes: list[ClassifierClass]) -> list[ClassifierClass]:
        ids = [c.id for c in classes]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"class ids must be unique; repeated: {', '.join(repeated)}")
        return classes


SYSTEM = (
    "You are a text classification engine. Read the user's input and pick the one category "
    "it belongs to from the categories given. Reply with a JSON object only, of the form "
    '{"category_id": "<id>", "category_name": "<name>"}.'
)


@node_type("question-classifier", config=QuestionClassifierConfig,
           handles=lambda c: [k.id for k in c.classes],
           outputs=["class_name", "class_id", "class_label", "usage"])
async def run(ctx: NodeContext) -> NodeResult:
    """Classify the query into one of ``classes``; leaves through that class's id."""
    config: QuestionClassifierConfig = ctx.config
    if not config.classes:
        raise LLMConfigError("no classes are defined", field="classes",
                             hint="add classes as {id, name}")
    if not config.query_variable_selector:
        raise LLMConfigError("no query is selected", field="query_variable_selector",
                             hint="select the variable holding the question, e.g. "
                                  "['sys', 'query']")
    query = ctx.get(config.query_variable_selector, field="query_variable_selector")
    query_text = query if isinstance(query, str) else json.dumps(query, ensure_ascii=False)
    instruction = ctx.render(config.instruction) if config.instruction else ""
    route = route_for(ctx, config.model)
    notes: list[str] = []
    history: list[tuple[str, str]] = []
    request = _request(config, route.model, query_text, instruction, history)
    if config.memory is not None:
        # Dify takes the window's size even when the window is off, here and in the extractor.
        history = await read_history(ctx, config.memory, notes, route=route, request=request,
                                     limit=window_limit(config.memory, enabled_only=False))
        if history:
            request = _request(config, route.model, query_text, instruction, history)
    if config.vision is not None and config.vision.enabled:
        await attach_images(ctx, config.vision, request.messages, notes)
    call = await invoke(ctx, route, request, cache=config.cache, stream=False)

    chosen, how = _choose(config.classes, call.response.text)
    usage = call.usage_dict
    process_data: dict[str, Any] = {
        "model_mode": config.model.mode,
        "model_provider": route.provider.name,
        "model_name": route.model,
        "prompts": [m.as_dict() for m in request.messages],
        "usage": usage,
        "finish_reason": call.response.finish_reason,
        "reply": call.response.text,
        "chosen_by": how,
    }
    if call.note:
        notes.append(call.note)
    if notes:
        process_data["notes"] = notes
    return NodeResult(
        outputs={"class_name": chosen.name, "class_id": chosen.id,
                 "class_label": chosen.label or chosen.name, "usage": usage},
        inputs={"query": query_text, "instruction": instruction},
        process_data=process_data,
        handle=chosen.id,
        usage=call.node_usage(),
        metadata=call.metadata(),
    )


def _request(config: QuestionClassifierConfig, model: str, query: str, instruction: str,
             history: list[tuple[str, str]]) -> ChatRequest:
    categories = [{"category_id": c.id, "category_name": c.name} for c in config.classes]
    system = SYSTEM
    if config.memory is not None:
        system += "\n\n" + memory_section(history)
    if instruction:
        system += f"\n\nInstructions:\n{instruction}"
    user = (f"Categories:\n{json.dumps(categories, ensure_ascii=False)}\n\n"
            f"Input:\n{query}")
    params = dict(config.model.completion_params or {})
    schema = {
        "type": "object",
        "properties": {
            "category_id": {"type": "string", "enum": [c.id for c in config.classes]},
            "category_name": {"type": "string"},
        },
        "required": ["category_id", "category_name"],
        "additionalProperties": False,
    }
    return ChatRequest(
        model=model,
        messages=[ChatMessage("system", system), ChatMessage("user", user)],
        temperature=params.get("temperature"),
        top_p=params.get("top_p"),
        max_tokens=params.get("max_tokens"),
        response_format="json_schema",
        json_schema=schema,
    )


def _choose(classes: list[ClassifierClass], reply: str) -> tuple[ClassifierClass, str]:
    """The class the reply names and how it was found (``json``, ``text`` or ``default``)."""
    by_id = {c.id: c for c in classes}
    try:
        data = parse_json(reply)
    except NodeError:
        data = None
    if isinstance(data, dict):
        found = by_id.get(str(data.get("category_id", "")))
        if found is None:
            name = str(data.get("category_name", "")).strip().lower()
            found = next((c for c in classes if c.name.strip().lower() == name), None)
        if found is not None:
            return found, "json"
    text = reply.strip()
    if text in by_id:
        return by_id[text], "text"
    lowered = text.lower()
    named = [c for c in classes if c.name and c.name.lower() in lowered]
    if len(named) == 1:
        return named[0], "text"
    return classes[0], "default"
