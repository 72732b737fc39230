"""Dify's ``ReAct`` strategy, for models without tool calling: the prompt describes the
tools, the model writes ``Thought`` / ``Action`` (a JSON blob) and reads back an
``Observation``, until its action is ``Final Answer``."""

from __future__ import annotations

import json
import re
from typing import Any

from cellwire.services.llm import ChatMessage

from .model import AgentModel
from .toolbox import Toolbox

#: Dify's ReAct prompt (langgenius/agent), with cellwire's tool list filled in.
PROMPT = """Respond to the human as helpfully and accurately as possible.

{instruction}

You have access to the following tools:

{tools}

Use a json blob to specify a tool by providing an action key (tool name) and an action_input key (tool input).
Valid "action" values: "Final Answer" or {tool_names}

Provide only ONE action per $JSON_BLOB, as shown:

```
{{
  "action": $TOOL_NAME,
  "action_input": $ACTION_INPUT
}}
```

Follow this format:

Question: input question to answer
Thought: consider previous and subsequent steps
Action:
```
$JSON_BLOB
```
Observation: action result
... (repeat Thought/Action/Observation N times)
Thought: I know what to respond
Action:
```
{{
  "action": "Final Answer",
  "action_input": "Final response to human"
}}
```

Begin! Reminder to ALWAYS respond with a valid json blob of a single action. Use tools if necessary. Respond directly if appropriate. Format is Action:```$JSON_BLOB```then Observation:.
"""

_FENCED = re.compile(r"```(?:json)?\s*(\{.*?\})\s*```", re.DOTALL)
_FINAL = re.compile(r"Final Answer\s*:\s*(.*)", re.DOTALL | re.IGNORECASE)
_ACTION = re.compile(r"Action\s*:\s*(\{.*\})", re.DOTALL)


def prompt(instruction: str, toolbox: Toolbox) -> str:
    tools = "\n".join(json.dumps({"name": b.tool.name, "description": b.description,
                                  "parameters": b.schema}, ensure_ascii=False)
                      for b in toolbox.tools.values()) or "(none)"
    names = ", ".join(json.dumps(name) for name in toolbox.tools) or "(none)"
    return PROMPT.format(instruction=instruction.strip(), tools=tools, tool_names=names)


def parse(text: str) -> tuple[str, Any] | None:
    """``(action, action_input)`` of a reply, ``("Final Answer", text)`` for a final answer,
    or None when the reply names an action it does not spell out as JSON."""
    blob = None
    match = _FENCED.search(text) or _ACTION.search(text)
    if match:
        try:
            blob = json.loads(match.group(1))
        except json.JSONDecodeError:
            blob = None
    if isinstance(blob, dict) and "action" in blob:
        return str(blob["action"]), blob.get("action_input")
    final = _FINAL.search(text)
    if final:
        return "Final Answer", final.group(1).strip()
    if "Action" in text and match is not None:
        return None
    # No action at all: the reply is the answer, as Dify reads it.
    return "Final Answer", re.sub(r"^\s*Thought\s*:.*?\n", "", text, count=1).strip()


async def run(model: AgentModel, toolbox: Toolbox, messages: list[ChatMessage],
              rounds: int, instruction: str) -> tuple[str, list[str]]:
    """The final answer and notes."""
    notes: list[str] = []
    messages.insert(0, ChatMessage("system", prompt(instruction, toolbox)))
    for round_ in range(1, rounds + 1):
        response = await model.ask(toolbox, messages, stop=["Observation:"], stream=False)
        text = response.text
        action = parse(text)
        messages.append(ChatMessage("assistant", text))
        if action is None:
            observation = ("Error: the Action is not a valid JSON blob; write it as "
                           '```{"action": "<tool>", "action_input": {...}}```')
        elif action[0].lower() == "final answer":
            answer = action[1]
            return (answer if isinstance(answer, str) else json.dumps(answer)), notes
        else:
            name, argument = action
            arguments = _arguments(toolbox, name, argument)
            observation = await toolbox.call(toolbox.next_step(), f"react_{round_}", name,
                                             arguments)
        messages.append(ChatMessage("user", f"Observation: {observation}"))
    note = (f"stopped at maximum_iterations ({rounds}) before the model gave a Final Answer; "
            "raise maximum_iterations to let it finish")
    notes.append(note)
    return f"[{note}]", notes


def _arguments(toolbox: Toolbox, name: str, argument: Any) -> dict[str, Any] | str:
    """The action input as arguments. A bare value goes to the tool's first argument, as
    Dify does with a ReAct model that writes ``"action_input": "Paris"``."""
    if isinstance(argument, dict):
        return argument
    if isinstance(argument, str):
        try:
            loaded = json.loads(argument)
        except json.JSONDecodeError:
            loaded = None
        if isinstance(loaded, dict):
            return loaded
    bound = toolbox.tools.get(name)
    if bound is not None and argument is not None:
        names = list(bound.schema.get("required") or []) or list(
            bound.schema.get("properties") or {})
        if names:
            return {names[0]: argument}
    return json.dumps(argument)
