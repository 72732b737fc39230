"""Dify apps without a graph (``chat``, ``agent-chat``, ``completion``) as the workflow Dify's
own converter makes of them (``api/services/workflow/workflow_converter.py``).

A chat app becomes an advanced-chat graph ``start -> [knowledge_retrieval] -> llm -> answer``,
a completion app a workflow graph ``start -> [knowledge_retrieval] -> llm -> end``. The node
ids, titles and fields are those the converter writes, so an export reads as Dify's own
conversion would. Dify does not convert agent apps: an ``agent-chat`` app with tools becomes
``start -> agent -> answer`` (the agent node's Dify fields, bound to the app's tools), one
without tools a chat app. What cannot be carried (external data tools whose endpoint lives in
the Dify database, annotation replies, "more like this", an agent's conversation history) is
dropped with a warning naming the ``model_config`` field.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import pairwise
from typing import Any

from cellwire.model import Problem

#: The mode each convertible app becomes (Dify's ``_get_new_app_mode``).
CONVERTED_MODES = {"chat": "advanced-chat", "agent-chat": "advanced-chat",
                   "completion": "workflow"}

#: Dify's simple-prompt rules (``core/prompt/prompt_templates/common_*.json``): the context
#: block precedes the app's pre-prompt.
_CONTEXT_PROMPT = (
    "Use the following context as your learned knowledge, inside <context></context> XML tags."
    "\n\n<context>\n{{#context#}}\n</context>\n\nWhen answer to user:\n"
    "- If you don't know, just say that you don't know.\n"
    "- If you don't know when you are not sure, ask for clarification.\n"
    "Avoid mentioning that you obtained the information from the context.\n"
    "And answer according to the language of the user's question.\n\n")
#: user_input_form entries that become start variables (the rest are external data tools).
_INPUT_TYPES = ("text-input", "paragraph", "select", "number", "checkbox", "file", "file-list",
                "json_object")
#: Features each new mode keeps (the converter's ``features`` dict).
_CHAT_FEATURES = ("opening_statement", "suggested_questions", "suggested_questions_after_answer",
                  "speech_to_text", "text_to_speech", "file_upload", "sensitive_word_avoidance",
                  "retriever_resource")
_WORKFLOW_FEATURES = ("text_to_speech", "file_upload", "sensitive_word_avoidance")
_X_STEP = 300  # Dify's converter leaves positions empty; a row keeps the canvas readable


def convert_app(doc: Mapping[str, Any]) -> tuple[dict[str, Any], list[Problem]]:
    """The document with its ``model_config`` replaced by the workflow Dify's converter makes.

    Returns the new document (``app.mode`` is the new mode, ``workflow`` holds the graph and
    features) and the problems: errors for a ``model_config`` that cannot be read, warnings
    for what the workflow leaves out.
    """
    problems: list[Problem] = []
    app = dict(doc.get("app") or {})
    mode = str(app.get("mode"))
    config = doc.get("model_config")
    if not isinstance(config, Mapping):
        problems.append(Problem(None, "model_config", f"a {mode} app needs a model_config "
                                "mapping, got " + type(config).__name__,
                                "export the app from Dify again"))
        return dict(doc), problems
    new_mode = CONVERTED_MODES[mode]
    variables, external = _variables(config, problems)
    nodes: list[dict[str, Any]] = [_node("start", "START", "start", variables=variables)]
    _drop_external_tools(external, config, problems)
    retrieval = _knowledge_retrieval(config, new_mode, problems)
    if retrieval is not None:
        nodes.append(retrieval)
    tools = _agent_tools(config) if mode == "agent-chat" else []
    if tools:
        if retrieval is not None:
            nodes.pop()
            problems.append(Problem(None, "model_config.dataset_configs", "the agent's datasets "
                                    "were dropped: an agent node has no context", "add a "
                                    "knowledge-retrieval node and read its result in the "
                                    "agent's instruction", "warning"))
        nodes.append(_agent(config, variables, tools, problems))
    else:
        nodes.append(_llm(config, mode, new_mode, variables, retrieval is not None, problems))
    if new_mode == "workflow":
        nodes.append(_node("end", "END", "end", outputs=[
            {"variable": "result", "value_selector": ["llm", "text"]}]))
    else:
        answer = "{{#agent.text#}}" if tools else "{{#llm.text#}}"
        nodes.append(_node("answer", "ANSWER", "answer", answer=answer))
    for index, node in enumerate(nodes):
        node["position"] = {"x": 30 + index * _X_STEP, "y": 250}
    edges = [{"id": f"{a['id']}-{b['id']}", "source": a["id"], "target": b["id"]}
             for a, b in pairwise(nodes)]
    _dropped_features(config, mode, new_mode, problems)
    keys = _CHAT_FEATURES if new_mode == "advanced-chat" else _WORKFLOW_FEATURES
    features = {key: config.get(key) for key in keys}
    out = {k: v for k, v in doc.items() if k not in ("model_config", "workflow")}
    out["app"] = {**app, "mode": new_mode}
    out["workflow"] = {"graph": {"nodes": nodes, "edges": edges}, "features": features,
                       "environment_variables": [], "conversation_variables": []}
    return out, problems


def _map(value: Any) -> Mapping[str, Any]:
    """A field that should be a mapping; Dify's config managers read a wrong one as absent."""
    return value if isinstance(value, Mapping) else {}


def _seq(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _node(node_id: str, title: str, node_type: str, **data: Any) -> dict[str, Any]:
    return {"id": node_id, "data": {"title": title, "type": node_type, **data}}


# -- start -----------------------------------------------------------------------------------


def _variables(config: Mapping[str, Any], problems: list[Problem],
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``user_input_form`` as start variables, and its external data tools (Dify's
    ``BasicVariablesConfigManager``: the entry's one key is its type)."""
    variables: list[dict[str, Any]] = []
    external: list[dict[str, Any]] = []
    for index, entry in enumerate(_seq(config.get("user_input_form"))):
        if not isinstance(entry, Mapping) or len(entry) != 1:
            problems.append(Problem("start", f"model_config.user_input_form[{index}]",
                                    "an input is a mapping of one key, its type",
                                    "write it as {text-input: {variable: ..., label: ...}}"))
            continue
        kind, body = next(iter(entry.items()))
        body = body if isinstance(body, Mapping) else {}
        if kind == "external_data_tool":
            if "config" in body:
                external.append(dict(body))
            continue
        if kind not in _INPUT_TYPES:
            problems.append(Problem("start", f"model_config.user_input_form[{index}]",
                                    f"input type {kind!r} is not one Dify knows; it was dropped",
                                    "use text-input, paragraph, select or number", "warning"))
            continue
        variables.append({
            "variable": body.get("variable"), "label": body.get("label"),
            "description": body.get("description") or "", "type": kind,
            "required": bool(body.get("required", False)),
            "max_length": body.get("max_length"), "options": body.get("options") or [],
            **({"default": body["default"]} if body.get("default") not in (None, "") else {}),
        })
    for tool in _seq(config.get("external_data_tools")):
        if isinstance(tool, Mapping) and tool.get("enabled") and "config" in tool:
            external.append(dict(tool))
    return variables, external


def _drop_external_tools(external: list[dict[str, Any]], config: Mapping[str, Any],
                         problems: list[Problem]) -> None:
    """Dify turns an API-based external data tool into an http-request and a code node, but the
    endpoint and key live in Dify's database, not in the export: the tool cannot be rebuilt."""
    for tool in external:
        problems.append(Problem(
            "start", "model_config.external_data_tools",
            f"the external data tool filling {tool.get('variable')!r} ({tool.get('type')}) "
            "calls an API-based extension whose endpoint is not in the export; it was dropped "
            "and '{{" + str(tool.get("variable")) + "}}' stays literal in the prompt",
            "add an http-request node calling the extension and read its result in the llm "
            "prompt", "warning"))


# -- knowledge retrieval ---------------------------------------------------------------------


def _dataset_ids(config: Mapping[str, Any]) -> list[str]:
    """Enabled datasets (Dify's ``DatasetConfigManager``: ``dataset_configs.datasets`` and the
    old ``agent_mode.tools`` ``{dataset: {...}}`` form)."""
    ids: list[str] = []
    datasets = _map(_map(config.get("dataset_configs")).get("datasets"))
    entries = list(_seq(datasets.get("datasets")))
    agent = _map(config.get("agent_mode"))
    if agent.get("enabled"):
        entries += [t for t in _seq(agent.get("tools")) if isinstance(t, Mapping) and len(t) == 1]
    for entry in entries:
        item = entry.get("dataset") if isinstance(entry, Mapping) else None
        if isinstance(item, Mapping) and item.get("enabled") and item.get("id"):
            ids.append(str(item["id"]))
    return ids


def _knowledge_retrieval(config: Mapping[str, Any], new_mode: str,
                         problems: list[Problem]) -> dict[str, Any] | None:
    ids = _dataset_ids(config)
    if not ids:
        return None
    settings = _map(config.get("dataset_configs")) or {"retrieval_model": "single"}
    query_variable = config.get("dataset_query_variable")
    if new_mode == "advanced-chat":
        selector = ["sys", "query"]
    elif query_variable:
        selector = ["start", query_variable]
    else:  # Dify's converter leaves the datasets out of a completion app without a query input
        problems.append(Problem(None, "model_config.dataset_configs", "the completion app names "
                                "no dataset_query_variable, so its datasets were dropped (as "
                                "Dify's converter drops them)", "add a knowledge-retrieval node "
                                "reading one of the start variables", "warning"))
        return None
    strategy = settings.get("retrieval_model") or "single"
    model = _model(config)
    single = {"model": {**model, "completion_params": {
        **model["completion_params"], "stop": _stop(config)}}} if strategy == "single" else None
    multiple = {
        "top_k": settings.get("top_k", 4),
        "score_threshold": settings.get("score_threshold")
        if settings.get("score_threshold_enabled", False) else None,
        "reranking_model": settings.get("reranking_model") or None,
    } if strategy == "multiple" else None
    return _node("knowledge_retrieval", "KNOWLEDGE RETRIEVAL", "knowledge-retrieval",
                 query_variable_selector=selector, dataset_ids=ids, retrieval_mode=strategy,
                 single_retrieval_config=single, multiple_retrieval_config=multiple)


# -- llm -------------------------------------------------------------------------------------


def _model(config: Mapping[str, Any]) -> dict[str, Any]:
    """Dify's ``ModelConfigEntity``: ``stop`` is taken out of the parameters."""
    model = _map(config.get("model"))
    params = dict(_map(model.get("completion_params")))
    params.pop("stop", None)
    return {"provider": model.get("provider", ""), "name": model.get("name", ""),
            "mode": model.get("mode") or "chat", "completion_params": params}


def _stop(config: Mapping[str, Any]) -> list[str]:
    params = _map(_map(config.get("model")).get("completion_params"))
    return [str(s) for s in _seq(params.get("stop"))]


def _start_refs(text: str, variables: list[dict[str, Any]]) -> str:
    """``{{name}}`` of a start variable becomes ``{{#start.name#}}``, as the converter does."""
    for var in variables:
        name = str(var.get("variable"))
        text = text.replace("{{" + name + "}}", "{{#start." + name + "#}}")
    return text


def _simple_template(pre_prompt: str, has_context: bool) -> str:
    """Dify's ``SimplePromptTransform.get_prompt_template`` without the query part."""
    prompt = _CONTEXT_PROMPT if has_context else ""
    if pre_prompt:
        prompt += pre_prompt + "\n"
    return prompt


def _llm(config: Mapping[str, Any], mode: str, new_mode: str, variables: list[dict[str, Any]],
         has_context: bool, problems: list[Problem]) -> dict[str, Any]:
    model = _model(config)
    advanced = config.get("prompt_type") == "advanced"
    pre_prompt = str(config.get("pre_prompt") or "")
    if not advanced and not pre_prompt:
        problems.append(Problem("llm", "model_config.pre_prompt", "the app has no prompt: Dify's "
                                "converter refuses it; the llm node gets an empty prompt",
                                "write the prompt in the llm node", "warning"))
    role_prefix = None
    prompts: Any
    if model["mode"] == "chat":
        if not advanced:
            text = _simple_template(pre_prompt, has_context)
            prompts = [{"role": "user", "text": _start_refs(text, variables)}] if text else []
        else:
            messages = _seq(_map(config.get("chat_prompt_config")).get("prompt"))
            prompts = [{"role": m.get("role", "user"),
                        "text": _start_refs(str(m.get("text") or ""), variables)}
                       for m in messages if isinstance(m, Mapping)]
    elif not advanced:
        prompts = {"text": _start_refs(_simple_template(pre_prompt, has_context), variables)}
        role_prefix = {"user": "Human", "assistant": "Assistant"}
    else:
        completion = _map(config.get("completion_prompt_config"))
        text = str(_map(completion.get("prompt")).get("text") or "")
        prompts = {"text": _start_refs(text, variables).replace("{{#query#}}",
                                                                 "{{#sys.query#}}")}
        roles = _map(completion.get("conversation_histories_role"))
        if roles:
            role_prefix = {"user": roles.get("user_prefix", ""),
                           "assistant": roles.get("assistant_prefix", "")}
    memory = ({"role_prefix": role_prefix, "window": {"enabled": False}}
              if new_mode == "advanced-chat" else None)
    upload = _file_upload(config)
    return _node(
        "llm", "LLM", "llm",
        model={**model, "completion_params": {**model["completion_params"],
                                              "stop": _stop(config)}},
        prompt_template=prompts, memory=memory,
        context={"enabled": has_context,
                 "variable_selector": ["knowledge_retrieval", "result"] if has_context else None},
        vision={"enabled": upload is not None,
                "variable_selector": ["sys", "files"] if upload is not None else None,
                "configs": {"detail": upload} if upload else None},
    )


def _file_upload(config: Mapping[str, Any]) -> str | None:
    """None without file upload, else the image detail ('' when not set): Dify's
    ``FileUploadConfigManager`` reads the new ``enabled`` and the old ``image.enabled``."""
    upload = config.get("file_upload")
    if not isinstance(upload, Mapping):
        return None
    image = _map(upload.get("image"))
    if not (upload.get("enabled") or image.get("enabled")):
        return None
    return str(image.get("detail") or "")


# -- what is left out --------------------------------------------------------------------------


def _dropped_features(config: Mapping[str, Any], mode: str, new_mode: str,
                      problems: list[Problem]) -> None:
    def enabled(key: str) -> bool:
        value = config.get(key)
        return isinstance(value, Mapping) and bool(value.get("enabled"))

    if enabled("annotation_reply"):
        problems.append(Problem(None, "model_config.annotation_reply", "annotation replies live "
                                "in Dify's database and are not part of a workflow; dropped",
                                "answer known questions with an if-else or a knowledge base",
                                "warning"))
    if mode == "completion" and enabled("more_like_this"):
        problems.append(Problem(None, "model_config.more_like_this", "'more like this' is a "
                                "completion app's web-app button; a workflow has none, dropped",
                                "run the workflow again for another answer", "warning"))
    if new_mode == "workflow" and (config.get("opening_statement")
                                   or enabled("suggested_questions_after_answer")):
        problems.append(Problem(None, "model_config.opening_statement", "a workflow has no "
                                "conversation: the opening statement and suggested questions "
                                "were dropped", "nothing to do", "warning"))


#: agent-chat strategies as the agent node names them (Dify's agent plugin).
_STRATEGIES = {"function_call": ("function_calling", "FunctionCalling"),
               "react": ("ReAct", "ReAct")}


def _agent_tools(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The enabled tools of ``agent_mode`` (entries of one key are old dataset entries)."""
    agent = _map(config.get("agent_mode"))
    return [dict(t) for t in _seq(agent.get("tools")) if isinstance(t, Mapping)
            and len(t) > 1 and t.get("enabled", True) and t.get("tool_name")]


def _agent(config: Mapping[str, Any], variables: list[dict[str, Any]],
           tools: list[dict[str, Any]], problems: list[Problem]) -> dict[str, Any]:
    """An agent-chat app as an agent node (Dify's own converter does not convert agent apps:
    this is cellwire's mapping onto the agent node's Dify fields)."""
    agent = _map(config.get("agent_mode"))
    raw_strategy = str(agent.get("strategy") or "function_call")
    name, label = _STRATEGIES.get(raw_strategy, _STRATEGIES["function_call"])
    if raw_strategy not in _STRATEGIES:
        problems.append(Problem("agent", "model_config.agent_mode.strategy", f"strategy "
                                f"{raw_strategy!r} runs as function calling",
                                "check the agent's answers", "warning"))
    model = _model(config)
    entries = [{
        "enabled": True, "type": str(t.get("provider_type") or "builtin"),
        "provider_name": str(t.get("provider_id") or t.get("provider_name") or ""),
        "tool_name": str(t["tool_name"]),
        "tool_label": str(t.get("tool_label") or t["tool_name"]),
        "parameters": {},
        # Dify's agent runner fills a tool's form parameters from these values; the model
        # fills the rest, which the registered tool's schema names.
        "settings": {k: {"value": v} for k, v in _map(t.get("tool_parameters")).items()
                     if v not in (None, "")},
        "extra": {"description": ""},
    } for t in tools]
    problems.append(Problem(
        "agent", "model_config.agent_mode",
        "the agent-chat app became an agent node bound to its tools ("
        + ", ".join(f"{e['provider_name']}/{e['tool_name']}" for e in entries)
        + "); the conversation history is not given to it, and the opening statement and "
        "features stay on the app", "register tools of these names to run it (see "
        "docs/tools.md); ask follow-ups with the context in the query", "warning"))
    return _node(
        "agent", "AGENT", "agent",
        agent_strategy_provider_name="langgenius/agent/agent", agent_strategy_name=name,
        agent_strategy_label=label,
        agent_parameters={
            "model": {"type": "constant", "value": {
                "provider": model["provider"], "model": model["name"], "model_type": "llm",
                "mode": model["mode"], "type": "model-selector",
                "completion_params": {**model["completion_params"], "stop": _stop(config)}}},
            "tools": {"type": "constant", "value": entries},
            "instruction": {"type": "constant", "value": _start_refs(
                str(config.get("pre_prompt") or ""), variables)},
            "query": {"type": "constant", "value": "{{#sys.query#}}"},
            "maximum_iterations": {"type": "constant",
                                   "value": agent.get("max_iteration") or 5},
        })
