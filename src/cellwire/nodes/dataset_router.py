"""Single retrieval: a model picks the one knowledge base to search, as Dify's
``FunctionCallMultiDatasetRouter`` does.

Each base is offered as a function tool named after it (its dataset id as the node gives it)
whose description is the base's description, or "useful for when you want to answer queries
about <name>"; the model (``single_retrieval_config.model``) gets "You are a helpful AI
assistant." and the query, at temperature 0.2, top_p 0.3. The base of its first tool call is
searched; no tool call means no base, and an empty result. With one base there is no call at
all. As in Dify, a failed call chooses no base (the node's ``process_data`` notes why).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cellwire.engine import NodeContext, NodeError
from cellwire.services.llm import ChatMessage, ChatRequest

from .llm import ModelConfig, invoke, route_for
from .llm.call import Call

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass
class Choice:
    """The base chosen (None: none), the model call that chose it, and notes."""

    dataset: str | None
    call: Call | None = None
    notes: list[str] = field(default_factory=list)


def tools_for(bases: Sequence[Mapping[str, str]]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The function tools offering ``bases`` (``{key, name, description}``), and each tool's
    name mapped back to its base's key (names hold only letters, digits, ``_`` and ``-``, as
    function names must)."""
    tools, keys = [], {}
    for base in bases:
        name = _UNSAFE.sub("_", base["key"])[:64]
        keys[name] = base["key"]
        description = (base.get("description") or
                       f"useful for when you want to answer queries about the {base['name']}")
        tools.append({"type": "function", "function": {
            "name": name, "description": description.replace("\n", "").replace("\r", ""),
            "parameters": {"type": "object", "properties": {}, "required": []}}})
    return tools, keys


async def choose_base(ctx: NodeContext, single: Mapping[str, Any] | None,
                      bases: Sequence[Mapping[str, str]], query: str) -> Choice:
    """The base the model picks for ``query`` among ``bases``."""
    if not bases:
        return Choice(None)
    if len(bases) == 1:
        return Choice(bases[0]["key"])
    given = (single or {}).get("model")
    if not isinstance(given, Mapping) or not given.get("name"):
        raise NodeError("single retrieval over several knowledge bases needs a model to "
                        "choose one, and none is set", field="single_retrieval_config.model",
                        hint="set single_retrieval_config.model {provider, name, mode}, or "
                             "use retrieval_mode multiple")
    model = ModelConfig.model_validate(dict(given))
    route = route_for(ctx, model)
    tools, keys = tools_for(bases)
    request = ChatRequest(model=route.model,
                          messages=[ChatMessage("system", "You are a helpful AI assistant."),
                                    ChatMessage("user", query)],
                          temperature=0.2, top_p=0.3, max_tokens=1500, tools=tools)
    try:
        call = await invoke(ctx, route, request, stream=False)
    except NodeError as exc:
        return Choice(None, notes=[(f"single retrieval: the model could not choose a "
                                   f"knowledge base ({exc}); nothing was retrieved")])
    calls = call.response.tool_calls
    if not calls:
        return Choice(None, call, [("single retrieval: the model chose no knowledge base; "
                                   "nothing was retrieved")])
    chosen = keys.get(calls[0].name)
    if chosen is None:
        return Choice(None, call, [(f"single retrieval: the model named {calls[0].name!r}, "
                                   "which is none of the knowledge bases offered")])
    return Choice(chosen, call)
