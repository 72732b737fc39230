"""Dify apps without a graph (chat, agent-chat, completion) imported as the workflow Dify's
converter (api/services/workflow/workflow_converter.py) makes of them, and run offline."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

import cellwire
from cellwire.engine import RunStatus
from cellwire.formats.dify import dump_dify, import_dify, load_dify
from cellwire.formats.loader import load_data
from cellwire.model import WorkflowError

# The shape of a Dify 1.x export of a basic chatbot ("chat" mode, simple prompt).
CHAT = """
app:
  description: Answers questions in a given role
  icon: "\U0001F916"
  icon_background: '#FFEAD5'
  mode: chat
  name: Role helper
  use_icon_as_answer_icon: false
dependencies: []
kind: app
model_config:
  agent_mode: {enabled: false, max_iteration: 5, strategy: function_call, tools: []}
  annotation_reply: {enabled: false}
  chat_prompt_config: {}
  completion_prompt_config: {}
  dataset_configs:
    datasets: {datasets: []}
    reranking_enable: false
    retrieval_model: multiple
    top_k: 4
  dataset_query_variable: ''
  external_data_tools: []
  file_upload:
    image: {detail: high, enabled: true, number_limits: 3, transfer_methods: [remote_url]}
  model:
    completion_params: {stop: [], temperature: 0.7}
    mode: chat
    name: gpt-4o-mini
    provider: langgenius/openai/openai
  more_like_this: {enabled: false}
  opening_statement: Hello! Which role should I take?
  pre_prompt: "You are a {{role}}. Answer in a {{tone}} tone."
  prompt_type: simple
  retriever_resource: {enabled: true}
  sensitive_word_avoidance: {enabled: false, type: '', configs: []}
  speech_to_text: {enabled: false}
  suggested_questions: ['What can you do?']
  suggested_questions_after_answer: {enabled: false}
  text_to_speech: {enabled: false, language: '', voice: ''}
  user_input_form:
    - text-input: {default: '', label: Role, max_length: 48, required: true, variable: role}
    - select: {default: '', label: Tone, options: [friendly, formal], required: false,
               variable: tone}
version: 0.1.5
"""

COMPLETION = """
app: {mode: completion, name: Translator, icon: "\U0001F916", icon_background: '#FFEAD5'}
kind: app
model_config:
  agent_mode: {enabled: false, tools: []}
  dataset_configs: {datasets: {datasets: []}, retrieval_model: single}
  dataset_query_variable: ''
  file_upload: {image: {enabled: false}}
  model:
    completion_params: {max_tokens: 512, stop: ["###"]}
    mode: completion
    name: gpt-3.5-turbo-instruct
    provider: openai
  more_like_this: {enabled: true}
  opening_statement: ''
  pre_prompt: "Translate into {{target}}:\\n{{text}}"
  prompt_type: simple
  user_input_form:
    - select: {label: Target, options: [French, German], required: true, variable: target}
    - paragraph: {label: Text, required: true, variable: text, max_length: 2000}
version: 0.1.5
"""

AGENT_CHAT = """
app: {mode: agent-chat, name: Weather agent}
kind: app
model_config:
  agent_mode:
    enabled: true
    max_iteration: 5
    strategy: function_call
    tools:
      - enabled: true
        provider_id: wttr
        provider_name: wttr
        provider_type: builtin
        tool_label: Current weather
        tool_name: current_weather
        tool_parameters: {city: ''}
      - enabled: false
        provider_id: time
        provider_type: builtin
        tool_name: current_time
        tool_parameters: {}
  model:
    completion_params: {temperature: 0.2}
    mode: chat
    name: gpt-4o
    provider: openai
  opening_statement: Ask me about the weather.
  pre_prompt: Use the weather tool for {{city}}.
  prompt_type: simple
  user_input_form:
    - text-input: {label: City, required: false, variable: city}
version: 0.1.5
"""


def _edges(wf: Any) -> list[tuple[str, str]]:
    return [(e.source, e.target) for e in wf.edges]


def test_a_chat_app_becomes_dify_s_advanced_chat_graph() -> None:
    imported = import_dify(CHAT)
    wf = imported.workflow
    assert wf.mode == "advanced-chat"
    assert {n: wf.nodes[n].type for n in wf.nodes} == {
        "start": "start", "llm": "llm", "answer": "answer"}
    assert _edges(wf) == [("start", "llm"), ("llm", "answer")]
    llm = wf.nodes["llm"].config
    # The simple prompt is one user message; {{var}} of a start input is {{#start.var#}}.
    assert llm["prompt_template"] == [{"role": "user", "text": (
        "You are a {{#start.role#}}. Answer in a {{#start.tone#}} tone.\n")}]
    assert llm["memory"] == {"role_prefix": None, "window": {"enabled": False}}
    assert llm["model"] == {"provider": "langgenius/openai/openai", "name": "gpt-4o-mini",
                            "mode": "chat",
                            "completion_params": {"temperature": 0.7, "stop": []}}
    assert llm["vision"] == {"enabled": True, "variable_selector": ["sys", "files"],
                             "configs": {"detail": "high"}}
    assert llm["context"] == {"enabled": False, "variable_selector": None}
    assert wf.nodes["answer"].config["answer"] == "{{#llm.text#}}"
    start = wf.nodes["start"].config["variables"]
    assert [(v["variable"], v["type"], v["required"]) for v in start] == [
        ("role", "text-input", True), ("tone", "select", False)]
    assert start[1]["options"] == ["friendly", "formal"]
    assert wf.features["opening_statement"] == "Hello! Which role should I take?"
    assert wf.features["suggested_questions"] == ["What can you do?"]
    assert wf.meta["dify"]["converted_from"] == "chat"
    assert not [p for p in imported.problems if "model_config" in (p.field or "")]


def test_an_exported_converted_app_is_the_workflow_form() -> None:
    wf = load_dify(CHAT)
    doc = yaml.safe_load(dump_dify(wf))
    assert doc["app"]["mode"] == "advanced-chat" and "model_config" not in doc
    assert "converted_from" not in str(doc)
    assert [n["id"] for n in doc["workflow"]["graph"]["nodes"]] == ["start", "llm", "answer"]
    again = load_dify(doc)
    assert (again.nodes, again.edges, again.features) == (wf.nodes, wf.edges, wf.features)


async def test_an_imported_chat_app_runs_on_the_scripted_model() -> None:
    wf = load_dify(CHAT)
    result = await wf.arun({"role": "tutor", "tone": "formal", "sys.query": "hi"},
                           model="scripted/echo")
    assert result.status is RunStatus.SUCCEEDED, result
    assert result.answer == "hi"  # the echo model answers the user's turn
    trace = result.trace
    (prompts,) = trace[trace.node_id == "llm"].process_data.map(lambda d: d["prompts"])
    # The app's prompt, rendered, then the query: as Dify's llm node with memory sends them.
    assert prompts == [{"role": "user", "text": "You are a tutor. Answer in a formal tone.\n"},
                       {"role": "user", "text": "hi"}]


def test_datasets_of_a_chat_app_become_a_knowledge_retrieval_node_and_context() -> None:
    doc = yaml.safe_load(CHAT)
    doc["model_config"]["dataset_configs"].update({
        "datasets": {"datasets": [{"dataset": {"enabled": True, "id": "ds-1"}},
                                  {"dataset": {"enabled": False, "id": "ds-off"}}]},
        "score_threshold": 0.5, "score_threshold_enabled": True, "top_k": 3})
    imported = import_dify(doc)
    wf = imported.workflow
    assert _edges(wf) == [("start", "knowledge_retrieval"), ("knowledge_retrieval", "llm"),
                          ("llm", "answer")]
    kr = wf.nodes["knowledge_retrieval"].config
    assert kr["dataset_ids"] == ["ds-1"] and kr["retrieval_mode"] == "multiple"
    assert kr["query_variable_selector"] == ["sys", "query"]
    assert kr["multiple_retrieval_config"] == {"top_k": 3, "score_threshold": 0.5,
                                               "reranking_model": None}
    llm = wf.nodes["llm"].config
    assert llm["context"] == {"enabled": True,
                              "variable_selector": ["knowledge_retrieval", "result"]}
    text = llm["prompt_template"][0]["text"]
    # Dify's context block comes first, then the app's prompt.
    assert text.startswith("Use the following context as your learned knowledge")
    assert "{{#context#}}" in text and text.endswith("{{#start.tone#}} tone.\n")
    # The dataset is Dify's: this machine lacks it, and the import says so.
    assert any(p.node_id == "knowledge_retrieval" and p.level == "warning"
               for p in imported.problems)


def test_a_completion_app_becomes_a_workflow_with_an_end_node() -> None:
    imported = import_dify(COMPLETION)
    wf = imported.workflow
    assert wf.mode == "workflow"
    assert _edges(wf) == [("start", "llm"), ("llm", "end")]
    llm = wf.nodes["llm"].config
    assert llm["prompt_template"] == {
        "text": "Translate into {{#start.target#}}:\n{{#start.text#}}\n"}
    assert llm["memory"] is None
    assert llm["model"]["completion_params"] == {"max_tokens": 512, "stop": ["###"]}
    assert llm["vision"]["enabled"] is False
    assert wf.nodes["end"].config["outputs"] == [
        {"variable": "result", "value_selector": ["llm", "text"]}]
    assert set(wf.features) == {"text_to_speech", "file_upload", "sensitive_word_avoidance"}
    (dropped,) = [p for p in imported.problems if p.field == "model_config.more_like_this"]
    assert dropped.level == "warning" and dropped.hint


async def test_an_imported_completion_app_runs_on_the_scripted_model() -> None:
    wf = load_data(yaml.safe_load(COMPLETION))  # found as Dify by its model_config
    result = await wf.arun({"target": "French", "text": "good morning"},
                           model="scripted/echo")
    assert result.status is RunStatus.SUCCEEDED, result
    assert "good morning" in result.outputs["result"]


def test_an_advanced_prompt_keeps_its_messages_and_maps_the_query() -> None:
    doc = yaml.safe_load(COMPLETION)
    doc["model_config"].update({"prompt_type": "advanced", "completion_prompt_config": {
        "prompt": {"text": "{{text}} -> {{target}} ({{#query#}})"},
        "conversation_histories_role": {"user_prefix": "U", "assistant_prefix": "A"}}})
    llm = load_dify(doc).nodes["llm"].config
    assert llm["prompt_template"] == {
        "text": "{{#start.text#}} -> {{#start.target#}} ({{#sys.query#}})"}
    chat = yaml.safe_load(CHAT)
    chat["model_config"].update({"prompt_type": "advanced", "chat_prompt_config": {"prompt": [
        {"role": "system", "text": "Be a {{role}}."}, {"role": "user", "text": "{{tone}}"}]}})
    assert load_dify(chat).nodes["llm"].config["prompt_template"] == [
        {"role": "system", "text": "Be a {{#start.role#}}."},
        {"role": "user", "text": "{{#start.tone#}}"}]


async def test_an_agent_chat_app_becomes_an_agent_node_bound_to_its_tools() -> None:
    imported = import_dify(AGENT_CHAT)
    wf = imported.workflow
    assert wf.mode == "advanced-chat"
    assert _edges(wf) == [("start", "agent"), ("agent", "answer")]
    assert wf.nodes["answer"].config["answer"] == "{{#agent.text#}}"
    agent = wf.nodes["agent"].config
    assert agent["agent_strategy_name"] == "function_calling"
    params = agent["agent_parameters"]
    assert params["instruction"]["value"] == "Use the weather tool for {{#start.city#}}."
    assert params["query"]["value"] == "{{#sys.query#}}"
    assert params["maximum_iterations"]["value"] == 5
    assert params["model"]["value"]["model"] == "gpt-4o"
    # The disabled tool is left out; '' parameters are the model's to fill.
    (tool,) = params["tools"]["value"]
    assert (tool["provider_name"], tool["tool_name"], tool["settings"]) == (
        "wttr", "current_weather", {})
    (note,) = [p for p in imported.problems if p.field == "model_config.agent_mode"]
    assert note.level == "warning" and note.node_id == "agent"
    assert "wttr/current_weather" in note.message and "conversation history" in note.message
    # Unregistered, the tool is named as what the node needs; registered, the app runs.
    assert any(p.node_id == "agent" and "current_weather" in p.message
               for p in imported.problems if p.field != "model_config.agent_mode")

    @cellwire.tool(name="current_weather", provider="wttr")
    def current_weather(city: str) -> str:
        """The weather in a city."""
        return f"rain in {city}"

    wf.tools = [current_weather]
    result = await wf.arun({"city": "Oslo", "sys.query": "rain?"}, model="scripted/echo")
    assert result.status is RunStatus.SUCCEEDED, result
    assert result.answer


def test_an_agent_chat_app_without_tools_is_a_chat_app() -> None:
    doc = yaml.safe_load(AGENT_CHAT)
    doc["model_config"]["agent_mode"]["tools"] = []
    wf = load_dify(doc)
    assert [n.type for n in wf.nodes.values()] == ["start", "llm", "answer"]
    assert wf.nodes["llm"].config["memory"] == {"role_prefix": None,
                                                "window": {"enabled": False}}


def test_an_external_data_tool_is_dropped_with_a_warning() -> None:
    doc = yaml.safe_load(CHAT)
    doc["model_config"]["user_input_form"].append({"external_data_tool": {
        "label": "Stock", "variable": "stock", "type": "api", "enabled": True,
        "config": {"api_based_extension_id": "ext-1"}}})
    imported = import_dify(doc)
    (dropped,) = [p for p in imported.problems
                  if p.field == "model_config.external_data_tools"]
    assert "'stock'" in dropped.message and dropped.node_id == "start"
    assert [v["variable"] for v in imported.workflow.nodes["start"].config["variables"]] == [
        "role", "tone"]


@pytest.mark.parametrize("config", [None, "text", [1]])
def test_a_broken_model_config_names_the_field(config: Any) -> None:
    doc = yaml.safe_load(CHAT)
    doc["model_config"] = config
    with pytest.raises(WorkflowError) as caught:
        import_dify(doc)
    assert any(p.field == "model_config" for p in caught.value.problems), str(caught.value)


def test_fields_of_the_wrong_shape_never_raise_anything_but_a_workflow_error() -> None:
    doc = yaml.safe_load(CHAT)
    doc["model_config"].update({"dataset_configs": "x", "user_input_form": "x", "agent_mode": 3,
                                "file_upload": [], "chat_prompt_config": 1})
    try:
        wf = load_dify(doc)
    except WorkflowError as exc:  # a clear refusal is fine; a traceback is not
        assert exc.problems
    else:
        assert wf.nodes["start"].config["variables"] == []


def test_an_agent_s_datasets_are_dropped_with_a_warning_and_its_export_reimports() -> None:
    doc = yaml.safe_load(AGENT_CHAT)
    doc["model_config"]["dataset_configs"] = {
        "retrieval_model": "multiple",
        "datasets": {"datasets": [{"dataset": {"enabled": True, "id": "ds-1"}}]}}
    imported = import_dify(doc)
    wf = imported.workflow
    assert "knowledge_retrieval" not in wf.nodes
    (dropped,) = [p for p in imported.problems if p.field == "model_config.dataset_configs"]
    assert dropped.level == "warning" and "no context" in dropped.message
    again = load_dify(dump_dify(wf))  # the workflow form; only the original mode is not kept
    assert (again.nodes, again.edges, again.mode) == (wf.nodes, wf.edges, wf.mode)
