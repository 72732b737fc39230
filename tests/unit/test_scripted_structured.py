"""The scripted provider answers requests for structure with JSON that fits (issue 15), so
offline runs of parameter extractors and structured-output llm nodes take their real paths;
the same request always gets the same answer."""

from __future__ import annotations

import json
from typing import Any

import pytest

import cellwire
from cellwire.engine import RunStatus
from cellwire.services.llm import ChatMessage, ChatRequest
from cellwire.services.llm.scripted import ScriptedProvider

SCHEMA = {"type": "object", "required": ["city", "nights"], "properties": {
    "city": {"type": "string", "enum": ["Paris", "Rome"]},
    "nights": {"type": "integer", "minimum": 1},
    "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1}}}


@pytest.fixture(autouse=True)
def _scripted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELLWIRE_DEFAULT_MODEL", "scripted/echo")


def _extractor(mode: str) -> cellwire.Workflow:
    wf = cellwire.Workflow("extract")
    wf.add_node("start", "start", variables=[{"variable": "q"}])
    wf.add_node("pe", "parameter-extractor", after="start", query=["start", "q"],
                model={"provider": "scripted", "name": "echo", "mode": "chat"},
                reasoning_mode=mode, parameters=[
                    {"name": "city", "type": "select", "options": ["Paris", "Rome"],
                     "required": True, "description": "where"},
                    {"name": "budget", "type": "number", "required": True},
                    {"name": "vip", "type": "boolean", "required": True},
                    {"name": "stops", "type": "array[string]"}])
    wf.add_node("end", "end", after="pe", outputs=[
        {"variable": k, "value_selector": ["pe", k]}
        for k in ("city", "budget", "vip", "__is_success", "__reason")])
    return wf


@pytest.mark.parametrize("mode", ["function_call", "prompt"])
async def test_parameter_extractor_gets_parameters_that_fit(mode: str):
    result = await _extractor(mode).arun(q="two nights in Paris")
    assert result.status is RunStatus.SUCCEEDED, result.error
    assert result.outputs == {"city": "Paris", "budget": 0, "vip": False, "__is_success": 1,
                              "__reason": None}


async def test_structured_output_llm_node_gets_an_object_of_the_schema():
    wf = cellwire.Workflow("structured")
    wf.add_node("start", "start", variables=[{"variable": "q"}])
    wf.add_node("llm", "llm", after="start",
                model={"provider": "scripted", "name": "echo", "mode": "chat"},
                prompt_template=[{"role": "user", "text": "{{#start.q#}}"}],
                structured_output_switch_on=True, structured_output={"schema": SCHEMA})
    wf.add_node("end", "end", after="llm", outputs=[
        {"variable": "trip", "value_selector": ["llm", "structured_output"]},
        {"variable": "nights", "value_selector": ["llm", "structured_output", "nights"]}])
    first = await wf.arun(q="plan a trip")
    assert first.status is RunStatus.SUCCEEDED, first.error
    assert first.outputs == {"trip": {"city": "Paris", "nights": 1, "tags": [""]},
                             "nights": 1}
    assert (await wf.arun(q="plan a trip")).outputs == first.outputs


async def test_json_mode_takes_the_schema_in_the_prompt_else_wraps_the_echo():
    provider = ScriptedProvider()
    with_schema = ChatRequest(model="echo", response_format="json_object", messages=[
        ChatMessage("system", "Reply following this JSON Schema:\n" + json.dumps(SCHEMA)),
        ChatMessage("user", "hi")])
    assert json.loads((await provider.chat(with_schema)).text) == {
        "city": "Paris", "nights": 1, "tags": [""]}
    plain = ChatRequest(model="echo", response_format="json_object",
                        messages=[ChatMessage("user", "hi {not json")])
    assert json.loads((await provider.chat(plain)).text) == {"text": "hi {not json"}


async def test_a_forced_function_gets_a_call_and_free_tools_keep_the_echo():
    provider = ScriptedProvider()
    tool: dict[str, Any] = {"type": "function", "function": {"name": "book",
                                                             "parameters": SCHEMA}}
    forced = ChatRequest(model="echo", messages=[ChatMessage("user", "go")], tools=[tool],
                         tool_choice={"type": "function", "function": {"name": "book"}})
    (call,) = (await provider.chat(forced)).tool_calls
    assert call.name == "book" and json.loads(call.arguments)["city"] == "Paris"
    free = ChatRequest(model="echo", messages=[ChatMessage("user", "go")], tools=[tool],
                       tool_choice="auto")
    answer = await provider.chat(free)
    assert answer.tool_calls == [] and answer.text == "go"
