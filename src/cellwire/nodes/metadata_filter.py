"""Automatic metadata filtering: a model writes a knowledge-retrieval node's metadata
conditions from the query (Dify's ``metadata_filtering_mode: automatic``).

As in Dify: the model (``metadata_model_config``) gets a system prompt naming the operators
and the value rules, two worked examples, then the query and the bases' metadata fields as
``{name, type}``; it answers ``{"metadata_map": [{"metadata_field_name",
"metadata_field_value", "comparison_operator"}]}`` (fenced or bare JSON). Items naming a
field the bases do not have are dropped; the conditions join with the node's
``metadata_filtering_conditions.logical_operator``, else ``or``. A reply that is not that JSON,
or a call that fails, leaves the search unfiltered (Dify logs it; here the node's
``process_data`` notes it); a model that is not configured fails the node.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from cellwire.engine import NodeContext, NodeError
from cellwire.services.llm import ChatMessage, ChatRequest

from .llm import ModelConfig, invoke, parse_json, route_for
from .llm.call import Call

#: The operators the chat prompt offers (Dify's list; the completion prompt offers fewer).
OPERATORS = ["contains", "not contains", "start with", "end with", "is", "is not", "empty",
             "not empty", "=", "≠", ">", "<", "≥", "≤", "before", "after"]
_COMPLETION_OPERATORS = ["=", "!=", ">", "<", ">=", "<="]
#: Every operator the knowledge service evaluates (filters.OPERATORS).
_KNOWN = {*OPERATORS, *_COMPLETION_OPERATORS, "in", "not in"}

_TASK = (
    "### Job Description\n"
    "You extract metadata from a user's text and give each extracted item a value.\n"
    "### Task\n"
    "Extract ONLY the metadata that appears in the input text, choosing from the metadata "
    "fields listed, and relate each value with one of the operators {operators}. Answer in "
    "JSON: an object with the key \"metadata_map\", a list of objects with "
    "\"metadata_field_name\", \"metadata_field_value\" and \"comparison_operator\".\n"
    "### Format\n"
    "The input text is in input_text. The metadata fields are the list metadata_fields; "
    "each item has a \"name\" and a \"type\" (\"string\", \"number\" or \"time\").\n"
    "### Value rules\n"
    "- For \"time\" fields, metadata_field_value MUST be a Unix timestamp in seconds (UTC "
    "midnight for a date without a time), never a date string such as \"2024-01-01\".\n"
    "- For \"number\" fields, metadata_field_value MUST be a plain number.\n"
    "- For \"string\" fields, metadata_field_value is the text extracted.\n"
    "### Constraint\n"
    "Answer with the JSON object only, nothing else."
)
#: Two worked examples: (the user's turn, the model's answer).
EXAMPLES = [
    (
        {"input_text": "I want to know which company's email address test@example.com is?",
         "metadata_fields": [{"name": "filename", "type": "string"},
                             {"name": "email", "type": "string"},
                             {"name": "phone", "type": "string"},
                             {"name": "address", "type": "string"}]},
        {"metadata_map": [{"metadata_field_name": "email",
                           "metadata_field_value": "test@example.com",
                           "comparison_operator": "="}]},
    ),
    (
        {"input_text": "What are the movies released after 2024-01-01 with a score of more "
                       "than 9?",
         "metadata_fields": [{"name": "name", "type": "string"},
                             {"name": "release_date", "type": "time"},
                             {"name": "rating", "type": "number"},
                             {"name": "country", "type": "string"}]},
        {"metadata_map": [{"metadata_field_name": "release_date",
                           "metadata_field_value": 1704067200,
                           "comparison_operator": "after"},
                          {"metadata_field_name": "rating", "metadata_field_value": 9,
                           "comparison_operator": ">"}]},
    ),
]


@dataclass
class AutomaticFilter:
    """What the model wrote: the conditions (None: search unfiltered), the call, notes."""

    conditions: dict[str, Any] | None
    call: Call | None = None
    notes: list[str] = field(default_factory=list)
    reply: str = ""


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def filter_request(model: str, mode: str, query: str, fields: list[dict[str, str]],
                   params: dict[str, Any] | None = None) -> ChatRequest:
    """The request that asks ``model`` for the conditions (chat: system prompt, the worked
    examples as earlier turns, then the query; completion: all of it in one prompt)."""
    params = dict(params or {})
    asked = {"input_text": query, "metadata_fields": fields}
    if mode == "completion":
        shots = "\n".join(f"User:{_dumps(user)}\nAssistant:{_dumps(answer)}"
                          for user, answer in EXAMPLES)
        text = (_TASK.format(operators=_dumps(_COMPLETION_OPERATORS))
                + f"\n### Example\n<example>\n{shots}\n</example>\n### User Input\n"
                + f"{_dumps(asked)}\n### Assistant Output\n")
        messages = [ChatMessage("user", text)]
    else:
        messages = [ChatMessage("system", _TASK.format(operators=_dumps(OPERATORS)))]
        for user, answer in EXAMPLES:
            messages += [ChatMessage("user", _dumps(user)),
                         ChatMessage("assistant", f"```json\n{_dumps(answer)}\n```")]
        messages.append(ChatMessage("user", _dumps(asked)))
    stop = params.get("stop")
    return ChatRequest(model=model, messages=messages, temperature=params.get("temperature"),
                       top_p=params.get("top_p"), max_tokens=params.get("max_tokens"),
                       stop=list(stop) if isinstance(stop, list) else [])


def conditions_from(reply: str, fields: list[dict[str, str]],
                    logical_operator: str) -> tuple[dict[str, Any] | None, list[str]]:
    """The conditions in the model's ``reply`` (None when it holds none), and notes on what
    was dropped."""
    notes: list[str] = []
    try:
        data = parse_json(reply)
    except NodeError:
        found = re.search(r"\{.*\}", reply, re.DOTALL)
        try:
            data = json.loads(found.group(0)) if found else None
        except json.JSONDecodeError:
            data = None
    items = data.get("metadata_map") if isinstance(data, dict) else None
    if not isinstance(items, list):
        notes.append("automatic metadata filtering: the model's reply holds no metadata_map, "
                     "so the search is not filtered")
        return None, notes
    names = {f["name"] for f in fields}
    conditions = []
    for item in items:
        if not isinstance(item, dict) or item.get("metadata_field_name") not in names:
            continue
        operator = str(item.get("comparison_operator") or "")
        if operator not in _KNOWN:
            notes.append(f"automatic metadata filtering: dropped the condition on "
                         f"{item['metadata_field_name']!r}: unknown operator {operator!r}")
            continue
        conditions.append({"name": item["metadata_field_name"],
                           "comparison_operator": operator,
                           "value": item.get("metadata_field_value")})
    if not conditions:
        return None, notes
    return {"logical_operator": logical_operator, "conditions": conditions}, notes


async def automatic_filter(ctx: NodeContext, model: ModelConfig | None,
                           fields: list[dict[str, str]], query: str,
                           logical_operator: str) -> AutomaticFilter:
    """Ask ``model`` for the metadata conditions of ``query`` over ``fields``."""
    if model is None or not (model.name or model.provider):
        raise NodeError("automatic metadata filtering needs a model, and none is set",
                        field="metadata_model_config",
                        hint="set metadata_model_config {provider, name, mode}, or use "
                             "metadata_filtering_mode manual with conditions")
    if not fields:
        return AutomaticFilter(None, notes=[("automatic metadata filtering: the knowledge "
                                            "bases' documents have no metadata fields")])
    route = route_for(ctx, model)
    request = filter_request(route.model, model.mode, query, fields, model.completion_params)
    try:
        call = await invoke(ctx, route, request, stream=False)
    except NodeError as exc:
        return AutomaticFilter(None, notes=[(f"automatic metadata filtering failed ({exc}); "
                                            "the search is not filtered")])
    conditions, notes = conditions_from(call.response.text, fields, logical_operator)
    return AutomaticFilter(conditions, call, notes, call.response.text)
