"""The llm node on the scripted test provider, the router, and the provider's own behaviour."""

from __future__ import annotations

import pytest

import cellwire
from cellwire.engine.events import (
    NodeFailed,
    NodeRetry,
    NodeStarted,
    NodeSucceeded,
    StreamChunk,
)
from cellwire.services.llm import (
    ChatAccumulator,
    ChatMessage,
    ChatRequest,
    LLMRouter,
    RateLimitError,
    Rule,
    ScriptedProvider,
    UnknownModelError,
    default_router,
    example_from_schema,
)

OPENAI = {"provider": "langgenius/openai/openai", "name": "gpt-4o", "mode": "chat",
          "completion_params": {"temperature": 0.2}}
SCRIPTED = {"provider": "scripted", "name": "echo", "mode": "chat"}


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLWIRE_HOME", str(tmp_path))
    monkeypatch.delenv("CELLWIRE_DEFAULT_MODEL", raising=False)


def runtime(provider: ScriptedProvider) -> cellwire.Runtime:
    return cellwire.Runtime(llm=LLMRouter([provider]))


def workflow(*llm_ids: str, model: dict | None = None, variables=("query",),
             **llm_config) -> cellwire.Workflow:
    """start -> each llm (in parallel) -> end, with the end node exposing each llm's text."""
    wf = cellwire.Workflow("llm-test")
    wf.add_node("start", "start",
                variables=[{"variable": v, "type": "paragraph"} for v in variables])
    config = {"prompt_template": [{"role": "user", "text": "{{#start.query#}}"}], **llm_config}
    retry = config.pop("retry", None)
    for node_id in llm_ids:
        wf.add_node(node_id, "llm", after="start", model=model or SCRIPTED, retry=retry,
                    **config)
    wf.add_node("end", "end", after=list(llm_ids),
                outputs=[{"variable": n, "value_selector": [n, "text"]} for n in llm_ids])
    return wf


def finished(result, node_id: str) -> NodeSucceeded:
    return next(e for e in result.events
                if isinstance(e, NodeSucceeded) and e.node_id == node_id)


# -- prompts -----------------------------------------------------------------------------------


async def test_prompt_renders_references_context_and_jinja2_edition():
    provider = ScriptedProvider()
    wf = workflow(
        "llm", variables=("query", "topic", "doc"),
        prompt_template=[
            {"role": "system", "text": "You write about {{#start.topic#}}, not {{ topic }}.",
             "edition_type": "basic"},
            {"role": "assistant", "text": "", "edition_type": "jinja2",
             "jinja2_text": "{% for w in words %}[{{ w }}]{% endfor %}"},
            {"role": "user", "text": "Use: {{#context#}}\nQ: {{#start.query#}}"},
        ],
        prompt_config={"jinja2_variables": [
            {"variable": "words", "value_selector": ["start", "topic"]}]},
        context={"enabled": True, "variable_selector": ["start", "doc"]},
    )
    result = await wf.arun(query="why?", topic="owls", doc="Owls hunt at night.",
                           runtime=runtime(provider))

    assert result.ok, result.error
    sent = provider.calls[0].messages
    assert [(m.role, m.text) for m in sent] == [
        # Basic edition: references only, the rest literal (as Dify).
        ("system", "You write about owls, not {{ topic }}."),
        ("assistant", "[o][w][l][s]"),
        ("user", "Use: Owls hunt at night.\nQ: why?"),
    ]
    # The scripted model echoes the last user message.
    assert result.outputs["llm"] == "Use: Owls hunt at night.\nQ: why?"
    row = result.trace.set_index("node_id").loc["llm"]
    assert row.process_data["prompts"][0] == {"role": "system",
                                              "text": "You write about owls, not {{ topic }}."}
    assert row.inputs == {"words": "owls", "#context#": "Owls hunt at night."}


async def test_context_from_retrieved_chunks_joins_their_contents():
    provider = ScriptedProvider()
    wf = cellwire.Workflow("ctx")
    wf.add_node("start", "start", variables=[{"variable": "chunks", "type": "json_object"}])
    wf.add_node("llm", "llm", after="start", model=SCRIPTED,
                prompt_template=[{"role": "user", "text": "{{#context#}}"}],
                context={"enabled": True, "variable_selector": ["start", "chunks"]})
    wf.add_node("end", "end", after="llm",
                outputs=[{"variable": "text", "value_selector": ["llm", "text"]}])
    chunks = [{"content": "first", "title": "a"}, {"content": "second", "title": "b"}]
    result = await wf.arun(chunks=chunks, runtime=runtime(provider))
    assert result.outputs == {"text": "first\nsecond"}


async def test_completion_mode_sends_one_user_message():
    provider = ScriptedProvider()
    wf = workflow("llm", model={**SCRIPTED, "mode": "completion"},
                  prompt_template={"text": "Complete: {{#start.query#}}"})
    result = await wf.arun(query="once upon", runtime=runtime(provider))
    assert result.outputs == {"llm": "Complete: once upon"}
    assert [m.role for m in provider.calls[0].messages] == ["user"]


# -- usage and streaming ---------------------------------------------------------------------


async def test_usage_reaches_outputs_trace_and_run_totals():
    provider = ScriptedProvider([Rule(contains="hello", reply="one two three")])
    wf = workflow("a", "b", model={**SCRIPTED, "completion_params": {"temperature": 0.1}})
    result = await wf.arun(query="hello big world", runtime=runtime(provider))

    assert result.ok, result.error
    trace = result.trace.set_index("node_id")
    # Scripted tokens are whitespace words: 3 in the prompt, 3 in the reply.
    for node_id in ("a", "b"):
        assert (trace.loc[node_id, "prompt_tokens"], trace.loc[node_id, "completion_tokens"],
                trace.loc[node_id, "total_tokens"], trace.loc[node_id, "cost"]) == (3, 3, 6, 0.0)
        usage = finished(result, node_id).outputs["usage"]
        assert usage["total_tokens"] == 6 and usage["total_price"] == 0.0
        assert usage["estimated"] is False
    assert result.total_tokens == 12
    assert result.usage.model == "scripted/echo"
    assert provider.calls[0].temperature == 0.1


async def test_reply_streams_in_chunks_to_the_text_selector():
    provider = ScriptedProvider([Rule(reply="alpha beta gamma delta")])
    result = await workflow("llm").arun(query="go", runtime=runtime(provider))

    chunks = [e for e in result.events if isinstance(e, StreamChunk)]
    assert {c.selector for c in chunks} == {("llm", "text")}
    assert [c.text for c in chunks] == ["alpha ", "beta ", "gamma ", "delta", ""]
    assert [c.is_final for c in chunks] == [False] * 4 + [True]
    assert "".join(c.text for c in chunks) == result.outputs["llm"]


async def test_reasoning_tagged_in_text_or_separated():
    provider = ScriptedProvider([Rule(reasoning="think hard", reply="42")])
    tagged = await workflow("llm").arun(query="q", runtime=runtime(provider))
    out = finished(tagged, "llm").outputs
    assert out["text"] == "<think>\nthink hard\n</think>\n42"
    assert out["reasoning_content"] == ""
    streamed = "".join(e.text for e in tagged.events if isinstance(e, StreamChunk))
    assert streamed == out["text"]

    separated = await workflow("llm", reasoning_format="separated").arun(
        query="q", runtime=runtime(provider))
    out = finished(separated, "llm").outputs
    assert (out["text"], out["reasoning_content"]) == ("42", "think hard")


async def test_tool_calls_are_reported_in_process_data():
    call = {"name": "weather", "arguments": {"city": "Oslo"}}
    provider = ScriptedProvider([Rule(tool_calls=[call])])
    result = await workflow("llm").arun(query="weather?", runtime=runtime(provider))
    event = finished(result, "llm")
    assert event.outputs["finish_reason"] == "tool_calls"
    assert event.process_data["tool_calls"] == [
        {"id": "call_0", "name": "weather", "arguments": '{"city": "Oslo"}'}]


# -- structured output -----------------------------------------------------------------------

SCHEMA = {"type": "object", "properties": {
    "label": {"type": "string", "enum": ["spam", "ham"]},
    "score": {"type": "number", "minimum": 0.5},
    "tags": {"type": "array", "items": {"type": "string"}}}, "required": ["label"]}


async def test_structured_output_built_from_schema_and_readable_downstream():
    provider = ScriptedProvider()
    wf = workflow("llm", structured_output_switch_on=True,
                  structured_output={"schema": SCHEMA})
    wf.add_node("end", "end", after="llm", outputs=[
        {"variable": "label", "value_selector": ["llm", "structured_output", "label"]}])
    result = await wf.arun(query="buy now", runtime=runtime(provider))

    assert result.ok, result.error
    assert finished(result, "llm").outputs["structured_output"] == {
        "label": "spam", "score": 0.5, "tags": []}
    assert result.outputs == {"label": "spam"}
    assert provider.calls[0].response_format == "json_schema"
    assert provider.calls[0].json_schema == SCHEMA


async def test_structured_output_from_a_rule_with_the_legacy_switch():
    provider = ScriptedProvider([Rule(json={"label": "ham", "score": 0.9})])
    wf = workflow("llm", structured_output_enabled=True, structured_output={"schema": SCHEMA})
    result = await wf.arun(query="hi mum", runtime=runtime(provider))
    assert finished(result, "llm").outputs["structured_output"] == {"label": "ham", "score": 0.9}


async def test_structured_output_rejects_a_reply_that_is_not_json():
    provider = ScriptedProvider([Rule(reply="sorry, no JSON today")])
    wf = workflow("llm", structured_output_switch_on=True, structured_output={"schema": SCHEMA})
    result = await wf.arun(query="x", runtime=runtime(provider))
    assert not result.ok
    assert result.error_node == "llm"
    assert "structured_output" in result.error and "not valid JSON" in result.error


async def test_structured_output_without_schema_is_a_config_error_without_retries():
    provider = ScriptedProvider()
    wf = workflow("llm", structured_output_switch_on=True, retry=3)
    result = await wf.arun(query="x", runtime=runtime(provider))
    assert "structured_output.schema" in result.error
    assert not [e for e in result.events if isinstance(e, NodeRetry)]
    assert provider.calls == []


# -- routing ---------------------------------------------------------------------------------


async def test_model_override_routes_every_llm_node():
    provider = ScriptedProvider([Rule(model="other", reply="from other")])
    wf = workflow("a", "b", model=OPENAI)
    result = await wf.arun(query="hi", runtime=runtime(provider), model="scripted/other")

    assert result.ok, result.error
    assert result.outputs == {"a": "from other", "b": "from other"}
    assert [c.model for c in provider.calls] == ["other", "other"]
    assert finished(result, "a").process_data["model_name"] == "other"
    assert result.usage.model == "scripted/other"


async def test_unknown_provider_names_node_and_model_and_is_not_retried():
    wf = workflow("writer", model=OPENAI, retry=2)
    result = await wf.arun(query="hi", runtime=runtime(ScriptedProvider()))

    assert result.status == cellwire.RunStatus.FAILED
    assert result.error_node == "writer"
    assert "'writer'" in result.error and "openai/gpt-4o" in result.error
    assert "CELLWIRE_DEFAULT_MODEL" in result.error
    assert not [e for e in result.events if isinstance(e, NodeRetry)]
    failed = result.trace.set_index("node_id").loc["writer"]
    assert failed.status == "failed"


async def test_default_runtime_routes_dify_models_to_the_default_model(monkeypatch):
    monkeypatch.setenv("CELLWIRE_DEFAULT_MODEL", "scripted/echo")
    result = await workflow("llm", model=OPENAI).arun(query="ping")
    assert result.ok, result.error
    assert result.outputs == {"llm": "ping"}
    assert result.usage.model == "scripted/echo"


async def test_default_runtime_without_configuration_fails_clearly():
    result = await workflow("llm", model=OPENAI).arun(query="ping")
    assert result.error_node == "llm"
    assert "no provider is configured for model 'openai/gpt-4o'" in result.error


async def test_model_map_routes_a_dify_provider_to_a_registered_one():
    provider = ScriptedProvider([Rule(model="small", reply="mapped")])
    router = LLMRouter([provider], model_map={"openai/gpt-4o": "scripted/small"})
    result = await workflow("llm", model=OPENAI).arun(
        query="q", runtime=cellwire.Runtime(llm=router))
    assert result.outputs == {"llm": "mapped"}


# -- failures, retries, parallelism --------------------------------------------------------------


async def test_retryable_failures_then_success_with_node_retries():
    provider = ScriptedProvider([Rule(fail_times=2, retry_after=0.01, reply="finally")])
    wf = workflow("llm", retry={"max_retries": 2, "interval": 0.0})
    result = await wf.arun(query="q", runtime=runtime(provider))

    assert result.ok, result.error
    assert result.outputs == {"llm": "finally"}
    retries = [e for e in result.events if isinstance(e, NodeRetry)]
    assert [r.attempt for r in retries] == [1, 2]
    # The provider's retry_after reaches the engine's backoff.
    assert [r.delay for r in retries] == [0.01, 0.01]
    assert "scripted failure 1 of 2" in retries[0].error
    assert result.trace.set_index("node_id").loc["llm", "retries"] == 2
    assert len(provider.calls) == 3


async def test_retryable_failures_beyond_the_retries_fail_the_node():
    provider = ScriptedProvider([Rule(fail_times=2)])
    wf = workflow("llm", retry={"max_retries": 1, "interval": 0.0})
    result = await wf.arun(query="q", runtime=runtime(provider))
    assert result.error_node == "llm"
    assert "scripted/echo" in result.error and "scripted failure 2 of 2" in result.error
    failed = next(e for e in result.events if isinstance(e, NodeFailed))
    assert (failed.error_type, failed.retries) == ("RetryableProviderError", 1)


async def test_parallel_llm_nodes_overlap():
    provider = ScriptedProvider(latency=0.05)
    result = await workflow("a", "b", "c").arun(query="q", runtime=runtime(provider))

    assert result.ok, result.error
    llm = {"a", "b", "c"}
    order = [(type(e).__name__, e.node_id) for e in result.events
             if isinstance(e, (NodeStarted, NodeSucceeded)) and e.node_id in llm]
    first_finish = next(i for i, (kind, _) in enumerate(order) if kind == "NodeSucceeded")
    assert {n for kind, n in order[:first_finish] if kind == "NodeStarted"} == llm


# -- the router and the scripted provider on their own ---------------------------------------------


async def test_router_resolution_order_and_errors():
    scripted = ScriptedProvider()
    local = ScriptedProvider(name="local")
    router = LLMRouter([scripted, local], default="scripted/fallback")
    router.map("langgenius/anthropic/anthropic", "local")
    assert router.resolve("scripted/echo").id == "scripted/echo"
    assert router.resolve_config("langgenius/anthropic/anthropic", "claude").id == "local/claude"
    assert router.resolve_config("mistral", "large").id == "scripted/fallback"
    assert router.resolve("openai/gpt-4o", override="local/x").id == "local/x"
    with pytest.raises(UnknownModelError, match="does not name a provider"):
        router.resolve("gpt-4o")
    with pytest.raises(UnknownModelError, match="not registered"):
        LLMRouter([scripted], default="nope/x").resolve("openai/gpt-4o")
    assert await router.models() == ["local/echo", "scripted/echo"]
    assert default_router({"CELLWIRE_DEFAULT_MODEL": "scripted/echo"}).default == "scripted/echo"


async def test_scripted_provider_chat_stream_limits_and_errors():
    provider = ScriptedProvider([
        Rule(system="strict", reply="a b c d e f"),
        Rule(contains="boom", error=RateLimitError("slow down", retry_after=3)),
    ])
    strict = ChatRequest("echo", [ChatMessage("system", "be strict"), ChatMessage("user", "q")],
                         max_tokens=2)
    reply = await provider.chat(strict)
    assert (reply.text, reply.finish_reason) == ("a b", "length")

    accumulator = ChatAccumulator()
    async for chunk in provider.stream(strict):
        accumulator.add(chunk)
    assert accumulator.response().text == reply.text

    stopped = await provider.chat(ChatRequest("echo", [ChatMessage("user", "one. two")],
                                              stop=["."]))
    assert stopped.text == "one"

    with pytest.raises(RateLimitError) as info:
        await provider.chat(ChatRequest("echo", [ChatMessage("user", "boom")]))
    assert info.value.retry_after == 3

    vectors = await provider.embed("echo", ["owls at night", "owls at night", "tax law"])
    assert vectors[0] == vectors[1] != vectors[2]


def test_example_from_schema_follows_refs_and_combinators():
    schema = {
        "type": "object",
        "$defs": {"Item": {"type": "object", "properties": {"n": {"type": "integer",
                                                                  "exclusiveMinimum": 1}}}},
        "properties": {
            "item": {"$ref": "#/$defs/Item"},
            "maybe": {"anyOf": [{"type": "null"}, {"type": "boolean"}]},
            "fixed": {"const": "v1"},
            "two": {"type": "array", "items": {"type": "string", "minLength": 2},
                    "minItems": 2},
        },
    }
    assert example_from_schema(schema) == {
        "item": {"n": 2}, "maybe": False, "fixed": "v1", "two": ["xx", "xx"]}


async def test_chat_memory_sends_the_users_message_last():
    wf = cellwire.Workflow("memory-chat", mode="advanced-chat")
    wf.add_node("start", "start")
    wf.add_node("llm", "llm", after="start", model={"provider": "scripted", "name": "echo"},
                prompt_template=[{"role": "system", "text": "be brief"}],
                memory={"window": {"enabled": True, "size": 5},
                        "query_prompt_template": "Q: {{#sys.query#}}"})
    wf.add_node("answer", "answer", after="llm", answer="{{#llm.text#}}")
    result = await wf.arun({"sys.query": "hello"}, store=False)
    assert result.ok, result.error
    assert result.answer == "Q: hello"


def _no_model_workflow() -> cellwire.Workflow:
    wf = cellwire.Workflow("no-model")
    wf.add_node("start", "start", variables=[{"variable": "q", "type": "text-input"}])
    wf.add_node("ask", "llm", after="start",
                prompt_template=[{"role": "user", "text": "say {{#start.q#}}"}])
    wf.add_node("end", "end", after="ask",
                outputs=[{"variable": "a", "value_selector": ["ask", "text"]}])
    return wf


def test_an_llm_node_without_a_model_runs_on_the_default_model(monkeypatch):
    monkeypatch.setenv("CELLWIRE_DEFAULT_MODEL", "scripted/echo")
    result = _no_model_workflow().run({"q": "hi"}, store=False)
    assert result.status == "succeeded" and result.outputs == {"a": "say hi"}


def test_without_any_default_the_error_says_how_to_set_one(monkeypatch):
    monkeypatch.delenv("CELLWIRE_DEFAULT_MODEL", raising=False)
    monkeypatch.setenv("CELLWIRE_CONFIG_DIR", "/nonexistent-cellwire-config")
    result = _no_model_workflow().run({"q": "hi"}, store=False)
    assert result.status == "failed" and result.error_node == "ask"
    assert "no model is set, and there is no default model" in result.error
    assert "CELLWIRE_DEFAULT_MODEL=provider/model (make lab sets one)" in result.error
