"""The Anthropic provider against a loopback double of the Messages API."""

from __future__ import annotations

import json

import pytest
from anthropic_server import anthropic_server

import cellwire
from cellwire.services.llm import (
    AuthenticationError,
    ChatAccumulator,
    ChatMessage,
    ChatRequest,
    LLMRouter,
    ProviderError,
    RateLimitError,
    RetryableProviderError,
)
from cellwire.services.llm.anthropic import JSON_TOOL, AnthropicProvider
from cellwire.services.llm.prices import _snapshot
from cellwire.services.llm.ratelimit import RateLimits
from cellwire.services.llm.resilience import RetryPolicy

MODEL = "claude-haiku-4-5-20251001"


@pytest.fixture
def server():
    with anthropic_server(api_key="sk-ant-test") as srv:
        yield srv


@pytest.fixture
async def provider(server):
    made = AnthropicProvider(base_url=server.url, api_key="sk-ant-test",
                             retry=RetryPolicy(base=0.01), rate_limits=RateLimits())
    yield made
    await made.aclose()


def request(*messages: ChatMessage, **kwargs) -> ChatRequest:
    return ChatRequest(model=MODEL, messages=list(messages), **kwargs)


async def collect(provider: AnthropicProvider, req: ChatRequest):
    acc = ChatAccumulator()
    chunks = []
    async for chunk in provider.stream(req):
        chunks.append(chunk)
        acc.add(chunk)
    return acc.response(req.model, req.messages), chunks


async def test_system_prompt_headers_and_usage(server, provider):
    req = request(ChatMessage("system", "Be terse."), ChatMessage("user", "hello there"),
                  ChatMessage("assistant", "hi"), ChatMessage("user", "how are you"),
                  temperature=0.3, stop=["END"])
    reply = await provider.chat(req)
    body, headers = server.requests[-1], server.headers[-1]
    assert body["system"] == "Be terse."
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["max_tokens"] == 4096 and body["temperature"] == 0.3
    assert body["stop_sequences"] == ["END"]
    assert headers["x-api-key"] == "sk-ant-test" and headers["anthropic-version"]
    assert reply.text == "echo: how are you" and reply.finish_reason == "stop"
    # Input: 2 + 2 + 1 + 3 words; output: 4 words.
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (8, 4)


async def test_streaming_events_text_thinking_and_usage(server, provider):
    server.reply("The answer is 42", thinking="let me think")
    reply, chunks = await collect(provider, request(ChatMessage("user", "what is it")))
    assert reply.text == "The answer is 42" and reply.reasoning == "let me think"
    assert [c.text for c in chunks if c.text] == ["The ", "answer ", "is ", "42"]
    assert reply.usage.prompt_tokens == 3
    assert reply.usage.completion_tokens == 4 + 3
    assert chunks[-1].finish_reason == "stop"
    assert server.requests[-1]["stream"] is True


async def test_tool_use_streamed_with_input_json_delta_and_tool_results(server, provider):
    server.reply("Checking.", tools=[{"id": "toolu_1", "name": "weather",
                                      "input": {"city": "Oslo", "days": 2}}])
    tools = [{"type": "function", "function": {
        "name": "weather", "description": "forecast",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    req = request(ChatMessage("user", "weather in Oslo?"), tools=tools, tool_choice="required")
    reply, _ = await collect(provider, req)
    assert reply.finish_reason == "tool_calls"
    assert reply.tool_calls[0].id == "toolu_1" and reply.tool_calls[0].name == "weather"
    assert json.loads(reply.tool_calls[0].arguments) == {"city": "Oslo", "days": 2}
    sent = server.requests[-1]
    assert sent["tools"][0]["input_schema"]["properties"]["city"] == {"type": "string"}
    assert sent["tool_choice"] == {"type": "any"}

    follow = request(ChatMessage("user", "weather in Oslo?"),
                     ChatMessage("assistant", "Checking.", tool_calls=reply.tool_calls),
                     ChatMessage("tool", "sunny", tool_call_id="toolu_1"), tools=tools)
    await provider.chat(follow)
    messages = server.requests[-1]["messages"]
    assert messages[1]["content"][1] == {"type": "tool_use", "id": "toolu_1",
                                         "name": "weather", "input": {"city": "Oslo", "days": 2}}
    assert messages[2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}]}


async def test_structured_output_through_a_forced_tool(server, provider):
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    server.reply("", tools=[{"name": JSON_TOOL, "input": {"n": 7}}])
    reply, _ = await collect(provider, request(ChatMessage("user", "seven"),
                                               response_format="json_schema",
                                               json_schema=schema))
    assert json.loads(reply.text) == {"n": 7} and not reply.tool_calls
    assert server.requests[-1]["tool_choice"] == {"type": "tool", "name": JSON_TOOL}
    server.reply("", tools=[{"name": JSON_TOOL, "input": {"n": 8}}])
    whole = await provider.chat(request(ChatMessage("user", "eight"),
                                        response_format="json_schema", json_schema=schema))
    assert json.loads(whole.text) == {"n": 8}


async def test_errors_http_and_stream_events(server):
    # How errors map, seen without the provider's retries (test_anthropic_resilience.py).
    provider = AnthropicProvider(base_url=server.url, api_key="sk-ant-test",
                                 retry=RetryPolicy(retries=0), rate_limits=RateLimits())
    server.fault(429, retry_after="0.25")
    with pytest.raises(RateLimitError) as caught:
        await provider.chat(request(ChatMessage("user", "x")))
    assert caught.value.retry_after == 0.25
    server.fault(529)
    with pytest.raises(RetryableProviderError, match="overloaded_error"):
        await collect(provider, request(ChatMessage("user", "x")))
    server.fault(400)
    with pytest.raises(ProviderError) as bad:
        await provider.chat(request(ChatMessage("user", "x")))
    assert not bad.value.retryable
    server.fault(error="overloaded_error")
    with pytest.raises(RetryableProviderError, match="stream error"):
        await collect(provider, request(ChatMessage("user", "x")))
    server.fault(error="invalid_request_error")
    with pytest.raises(ProviderError) as fatal:
        await collect(provider, request(ChatMessage("user", "x")))
    assert not fatal.value.retryable
    server.fault(cut_after=3)  # before any text: another attempt may get all of it
    with pytest.raises(RetryableProviderError, match="before message_stop"):
        await collect(provider, request(ChatMessage("user", "x y z")))
    server.fault(cut_after=5)  # after the first words: a retry would stream them twice
    with pytest.raises(ProviderError, match="before message_stop") as cut:
        await collect(provider, request(ChatMessage("user", "x y z")))
    assert not cut.value.retryable and "not retried" in str(cut.value)
    wrong = AnthropicProvider(base_url=server.url, api_key="wrong")
    with pytest.raises(AuthenticationError):
        await wrong.chat(request(ChatMessage("user", "x")))
    await wrong.aclose()
    await provider.aclose()


async def test_models_listing(server, provider):
    assert await provider.models() == ["claude-3-5-haiku-20241022"]


async def test_llm_node_over_anthropic_with_cost_from_the_table(server, provider):
    server.fault(529)  # the node's retry gets past one overload
    wf = cellwire.Workflow("claude")
    wf.add_node("start", "start", variables=[{"variable": "q", "type": "paragraph"}])
    wf.add_node("llm", "llm", after="start", retry={"max_retries": 2, "interval": 0.01},
                model={"provider": "langgenius/anthropic/anthropic", "name": MODEL},
                prompt_template=[{"role": "system", "text": "Answer briefly."},
                                 {"role": "user", "text": "{{#start.q#}}"}])
    wf.add_node("end", "end", after=["llm"],
                outputs=[{"variable": "text", "value_selector": ["llm", "text"]}])
    router = LLMRouter([provider])
    result = await wf.arun(q="name three colours", runtime=cellwire.Runtime(llm=router),
                           store=False)
    assert result.ok, result.error
    assert result.outputs == {"text": "echo: name three colours"}
    assert server.requests[-1]["system"] == "Answer briefly."
    price_in, price_out = _snapshot()["models"][MODEL][1:]
    # Input: 2 + 3 words; output: 4 words.
    assert result.total_cost == pytest.approx(5 * price_in + 4 * price_out, rel=1e-12)
    trace = result.trace
    node = trace[trace.node_id == "llm"].iloc[-1]
    assert node["retries"] == 1 and len(server.requests) == 2
    assert node["metadata"]["time_to_first_token"] is not None
