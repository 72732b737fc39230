"""The OpenAI-compatible provider against a real server on 127.0.0.1 (tests/integration/
llm_server.py) behaving like OpenAI, Ollama, vLLM, llama.cpp and LM Studio, with faults."""

from __future__ import annotations

import asyncio
import base64
import sys
from pathlib import Path

import pytest

import cellwire
from cellwire.engine.events import NodeRetry
from cellwire.services.llm import (
    AuthenticationError,
    ChatAccumulator,
    ChatMessage,
    ChatRequest,
    LLMRouter,
    ProviderError,
    ProviderTimeout,
    RetryableProviderError,
)
from cellwire.services.llm.openai import OpenAIProvider, Timeouts
from cellwire.services.llm.ratelimit import RateLimits
from cellwire.services.llm.resilience import RetryPolicy

sys.path.insert(0, str(Path(__file__).parent))
from llm_server import FLAVOURS, LLMServer, embedding_of, llm_server
from skipping_clock import SkippingClock

pytestmark = pytest.mark.timeout(30)

KEY = "sk-test-SECRET-0123456789"
TOOLS = [{"type": "function", "function": {
    "name": "weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
SCHEMA = {"title": "Answer", "type": "object",
          "properties": {"answer": {"type": "string"}, "score": {"type": "integer"}}}


@pytest.fixture
def waits() -> list[float]:
    return []


def node_retries(result) -> list[NodeRetry]:
    return [e for e in result.events if isinstance(e, NodeRetry)]


def provider(server: LLMServer, waits: list[float] | None = None, **options) -> OpenAIProvider:
    """A provider for ``server`` whose connection-retry waits are recorded and skipped."""
    recorded = [] if waits is None else waits

    async def sleep(seconds: float) -> None:
        recorded.append(seconds)
        await asyncio.sleep(0)

    options.setdefault("retry", RetryPolicy(retries=3, base=0.05, sleep=sleep))
    options.setdefault("rate_limits", RateLimits())
    options.setdefault("timeouts", Timeouts(connect=2, read=5, first_byte=5))
    return OpenAIProvider("openai", base_url=server.base_url, api_key=KEY, **options)


def workflow(retry: dict | None = None, **llm) -> cellwire.Workflow:
    wf = cellwire.Workflow("openai-test")
    wf.add_node("start", "start", variables=[{"variable": "query", "type": "paragraph"}])
    llm.setdefault("prompt_template", [{"role": "user", "text": "{{#start.query#}}"}])
    wf.add_node("llm", "llm", after="start", retry=retry,
                model={"provider": "langgenius/openai/openai", "name": "gpt-4o-mini",
                       "mode": "chat", "completion_params": {"temperature": 0.2}}, **llm)
    wf.add_node("end", "end", after="llm",
                outputs=[{"variable": "text", "value_selector": ["llm", "text"]}])
    return wf


async def run(p: OpenAIProvider, wf: cellwire.Workflow | None = None, query: str = "hi there"):
    runtime = cellwire.Runtime(llm=LLMRouter([p]), clock=SkippingClock())
    return await (wf or workflow()).arun(query=query, runtime=runtime, store=False)


async def collect(p: OpenAIProvider, request: ChatRequest):
    acc = ChatAccumulator()
    async for chunk in p.stream(request):
        acc.add(chunk)
    return acc.response(request.model, request.messages)


def ask(text: str = "hi", model: str = "m", **options) -> ChatRequest:
    return ChatRequest(model, [ChatMessage("user", text)], **options)


def assert_no_key(result) -> None:
    shown = [repr(result.outputs), repr(result.events), result.trace.to_json(date_format="iso"),
             str(result.error)]
    assert not any(KEY in text for text in shown)


# -- every flavour through a workflow -------------------------------------------------------


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_workflow_runs_against_each_server_flavour(flavour, waits):
    with llm_server(flavour, api_key=KEY) as server:
        result = await run(provider(server, waits), workflow(), "hello world")
        assert result.ok, result.error
        assert result.outputs == {"text": "echo: hello world"}
        usage = result.trace.set_index("node_id").loc["llm", "total_tokens"]
        assert usage > 0
        sent = server.chat_requests()[-1]
        assert sent["stream"] is True and sent["temperature"] == 0.2
        assert sent["messages"] == [{"role": "user", "content": "hello world"}]
        assert_no_key(result)
        assert waits == []


@pytest.mark.parametrize(("flavour", "estimated"), [
    ("openai", False), ("vllm", False), ("llamacpp", False),
    ("ollama", True),      # ignores stream_options: no usage in the stream
    ("lmstudio", True),    # rejects stream_options: sent again without it
])
async def test_stream_usage_from_the_usage_chunk_or_estimated(flavour, estimated):
    with llm_server(flavour) as server:
        p = provider(server)
        reply = await collect(p, ask("one two three"))
        assert reply.text == "echo: one two three"
        assert reply.usage.estimated is estimated
        if not estimated:
            assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (3, 4)
        assert reply.finish_reason == "stop"  # LM Studio sends none: inferred
        # Remembered per model: the second call is one request.
        before = len(server.chat_requests())
        await collect(p, ask())
        assert len(server.chat_requests()) == before + 1


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_reasoning_field_of_each_flavour(flavour):
    with llm_server(flavour) as server:
        p = provider(server)
        streamed = await collect(p, ask("x", model="think-1"))
        whole = await p.chat(ask("x", model="think-1"))
        expected = "" if flavour == "openai" else "Let me think."  # OpenAI hides it
        assert streamed.reasoning == whole.reasoning == expected
        assert streamed.text == whole.text == "echo: x"


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_tool_calls_merge_into_whole_calls(flavour):
    with llm_server(flavour, tool_calls=2) as server:
        p = provider(server)
        for reply in (await collect(p, ask(tools=TOOLS)), await p.chat(ask(tools=TOOLS))):
            assert reply.finish_reason == "tool_calls"
            assert [(c.id, c.name, c.parsed_arguments()) for c in reply.tool_calls] == [
                ("call_0abc", "weather", {"city": "Paris", "n": 0}),
                ("call_1abc", "weather", {"city": "Paris", "n": 1}),
            ]
            assert reply.text == ""
        sent = server.chat_requests()[-1]
        assert sent["tools"] == TOOLS


async def test_tool_call_xml_leaked_into_the_text_becomes_a_tool_call():
    with llm_server("lmstudio", leak_tool_xml=True) as server:
        p = provider(server)
        for reply in (await collect(p, ask(tools=TOOLS)), await p.chat(ask(tools=TOOLS))):
            assert reply.text == ""
            assert [(c.name, c.parsed_arguments()) for c in reply.tool_calls] == [
                ("weather", {"city": "Paris", "n": 0})]
            assert reply.tool_calls[0].id.startswith("call_")  # synthesised
            assert reply.finish_reason == "tool_calls"


async def test_sse_with_crlf_keepalive_comments_and_event_lines():
    with llm_server("vllm", crlf=True, keepalive=True) as server:
        reply = await collect(provider(server), ask("a b"))
        assert reply.text == "echo: a b" and not reply.usage.estimated


# -- request shims ------------------------------------------------------------------------


async def test_max_tokens_switches_to_max_completion_tokens_and_remembers_it():
    with llm_server("openai") as server:
        p = provider(server)
        reply = await collect(p, ask("a b c d e f", model="o3-mini", max_tokens=3))
        first, second = server.chat_requests()
        assert "max_tokens" in first and "max_completion_tokens" not in first
        assert second["max_completion_tokens"] == 3 and "max_tokens" not in second
        assert reply.finish_reason == "length" and reply.text == "echo: a b"
        await p.chat(ask(model="o3-mini", max_tokens=3))
        assert "max_completion_tokens" in server.chat_requests()[-1]
        assert len(server.chat_requests()) == 3
        # Other models keep max_tokens, which Ollama-like servers need.
        await collect(p, ask(model="gpt-4o-mini", max_tokens=3))
        assert server.chat_requests()[-1]["max_tokens"] == 3


async def test_ollama_honours_max_tokens():
    with llm_server("ollama") as server:
        reply = await collect(provider(server), ask("a b c d", max_tokens=2))
        assert reply.text == "echo: a" and reply.finish_reason == "length"


@pytest.mark.parametrize(("flavour", "rejects", "mode"), [
    ("openai", {}, "json_schema"),
    ("ollama", {}, "json_object"),  # rejects json_schema
    ("lmstudio", {"reject_json_schema": True}, "prompt"),  # and json_object
    ("vllm", {"reject_json_schema": True, "reject_json_object": True}, "prompt"),
])
async def test_structured_output_falls_back_and_remembers(flavour, rejects, mode):
    with llm_server(flavour, **rejects) as server:
        p = provider(server)
        wf = workflow(structured_output_switch_on=True, structured_output={"schema": SCHEMA})
        result = await run(p, wf)
        assert result.ok, result.error
        out = result.trace.set_index("node_id").loc["llm", "outputs"]["structured_output"]
        assert out == {"answer": "text", "score": 1}
        assert p.model_state("gpt-4o-mini").structured == mode
        last = server.chat_requests()[-1]
        kind = (last.get("response_format") or {}).get("type")
        assert kind == (None if mode == "prompt" else mode)
        if mode != "json_schema":
            assert "JSON Schema" in last["messages"][0]["content"]
        attempts = len(server.chat_requests())
        await run(p, wf)
        assert len(server.chat_requests()) == attempts + 1


async def test_embeddings_float_and_base64_in_input_order():
    texts = ["one", "two words", "three little words"]
    expected = [embedding_of(t) for t in texts]
    for flavour in ("openai", "ollama", "llamacpp"):  # llama.cpp answers floats to base64
        with llm_server(flavour) as server:
            p = provider(server)
            assert await p.embed("text-embed", texts) == expected
            assert await p.embed("text-embed", texts, encoding_format="base64") == expected
            formats = [r.body["encoding_format"] for r in server.requests]
            assert formats == ["float", "base64"]


def test_a_base64_embedding_that_is_not_whole_floats_is_the_providers_error():
    p = OpenAIProvider("openai", base_url="http://127.0.0.1:9/v1", api_key="test")
    assert p._vector(base64.b64encode(b"\0\0\x80?").decode(), "text-embed") == [1.0]
    with pytest.raises(ProviderError, match="6 bytes, not whole 32-bit floats"):
        p._vector(base64.b64encode(b"\0" * 6).decode(), "text-embed")


async def test_model_listing():
    with llm_server("ollama", models=["llama3.2", "qwen3:0.6b"]) as server:
        assert await provider(server).models() == ["llama3.2", "qwen3:0.6b"]
        router = LLMRouter([provider(server)])
        assert await router.models() == ["openai/llama3.2", "openai/qwen3:0.6b"]


# -- faults -------------------------------------------------------------------------------


async def test_429_retry_after_is_honoured_by_the_node_retry_and_shows_in_events(waits):
    with llm_server("openai", api_key=KEY) as server:
        server.fail("status", status=429, headers={"Retry-After": "1"},
                    body={"error": {"message": "Rate limit reached", "type": "requests"}})
        server.fail("status", status=429, headers={"retry-after-ms": "1500"})
        result = await run(provider(server, waits), workflow(
            retry={"max_retries": 3, "interval": 0.05, "jitter": False}))
        assert result.ok, result.error
        retries = node_retries(result)
        # Longer than the 0.05 s backoff: the server's wait wins.
        assert [e.delay for e in retries] == [1.0, 1.5]
        assert "HTTP 429" in retries[0].error
        assert len(server.chat_requests()) == 3 and waits == []  # the provider did not retry
        assert_no_key(result)


async def test_5xx_retry_once_each_by_the_default_node_policy_then_fail_clearly(waits):
    with llm_server("vllm") as server:
        server.fail("status", status=500)
        result = await run(provider(server, waits))  # the node sets no retry: the default
        assert result.ok and len(node_retries(result)) == 1
        for _ in range(4):
            server.fail("status", status=503, headers={"Retry-After": "2"})
        result = await run(provider(server, waits))
        assert not result.ok
        assert "HTTP 503" in result.error and "127.0.0.1" in result.error
        retries = node_retries(result)
        assert len(retries) == 3 and all(e.delay >= 2 for e in retries)  # then none left
        assert len(server.chat_requests()) == 1 + 1 + 4 and waits == []
        # A node that sets "no retries" gets none: explicit off is not "unset".
        server.fail("status", status=503)
        result = await run(provider(server, waits), workflow(retry=0))
        assert not result.ok and node_retries(result) == []


async def test_slow_first_byte_times_out_and_the_node_retries(waits):
    with llm_server("llamacpp") as server:
        p = provider(server, waits, timeouts=Timeouts(connect=2, read=5, first_byte=0.2))
        server.fail("slow", delay=3)      # no headers in time
        server.fail("stall", delay=3)     # headers, then no event in time
        result = await run(p)
        assert result.ok, result.error
        retries = node_retries(result)
        assert "no response within 0.2 s" in retries[0].error
        assert "started a stream but sent nothing within 0.2 s" in retries[1].error
        assert len(retries) == 2 and result.outputs == {"text": "echo: hi there"}
        server.fail("slow", delay=3)
        with pytest.raises(ProviderTimeout, match="no response within 0.2 s"):
            await p.chat(ask())
        assert waits == []


async def test_a_cut_stream_goes_to_the_node_retry_until_text_was_delivered(waits):
    with llm_server("openai") as server:
        p = provider(server, waits)
        server.fail("cut", after=1)  # only the empty role chunk got out
        server.fail("drop")
        result = await run(p, workflow(retry={"max_retries": 3, "interval": 0.0}))
        assert result.ok, result.error
        assert result.outputs == {"text": "echo: hi there"}
        retries = node_retries(result)
        assert len(retries) == 2 and all("dropped" in e.error for e in retries)
        assert waits == []  # the server had been reached: not the provider's to resend

        server.fail("cut", after=3)  # text had been delivered: a retry would stream it twice
        result = await run(p, workflow(retry={"max_retries": 3, "interval": 0.0}))
        assert not result.ok and node_retries(result) == []
        assert "dropped" in result.error and "not retried" in result.error

        server.fail("cut")
        # A cut JSON body is a dropped connection too: retryable, for the node.
        with pytest.raises(RetryableProviderError, match="dropped"):
            await p.chat(ask())
        assert waits == []


async def test_malformed_json_is_a_clear_error_and_not_retried(waits):
    with llm_server("openai") as server:
        p = provider(server, waits)
        server.fail("malformed")
        result = await run(p, workflow(retry={"max_retries": 2, "interval": 0.0}))
        assert not result.ok
        assert "malformed JSON" in result.error and server.base_url in result.error
        assert len(server.chat_requests()) == 1 and waits == []
        server.fail("malformed")
        with pytest.raises(ProviderError, match="malformed JSON"):
            await p.chat(ask())
        server.fail("malformed")
        with pytest.raises(ProviderError, match="malformed JSON"):
            await p.embed("e", ["a"])


async def test_wrong_key_is_an_authentication_error_that_never_shows_the_key(waits):
    with llm_server("openai", api_key="sk-the-right-one") as server:
        p = provider(server, waits)
        result = await run(p, workflow(retry={"max_retries": 3, "interval": 0.0}))
        assert not result.ok
        assert "HTTP 401" in result.error and "Incorrect API key provided: ***" in result.error
        assert_no_key(result)
        assert len(server.chat_requests()) == 1 and waits == []
        with pytest.raises(AuthenticationError) as info:
            await p.chat(ask())
        assert KEY not in str(info.value) and KEY not in repr(p)


async def test_a_refused_connection_is_retried_by_the_provider_then_fails(waits):
    with llm_server("openai") as server:
        base = server.base_url
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    p = OpenAIProvider("openai", base_url=base, api_key=KEY, rate_limits=RateLimits(),
                       retry=RetryPolicy(retries=2, base=0.01, sleep=sleep))
    with pytest.raises(RetryableProviderError, match="could not connect"):
        await p.chat(ask())
    assert len(sleeps) == 2  # nothing reached a server: safe to send again, twice


async def test_a_server_that_comes_up_during_the_provider_retries_answers(waits):
    with llm_server("openai") as gone:
        base = gone.base_url
    port = int(base.rsplit(":", 1)[1].split("/")[0])
    started: list[LLMServer] = []

    async def sleep(seconds: float) -> None:
        # The server starts on the refused port while the provider waits to retry.
        if not started:
            started.append(LLMServer("openai").start(port))

    p = OpenAIProvider("openai", base_url=base, rate_limits=RateLimits(),
                       retry=RetryPolicy(retries=2, base=0.01, sleep=sleep))
    try:
        assert (await p.chat(ask("up"))).text == "echo: up"
    finally:
        for server in started:
            server.stop()
        await p.aclose()


async def test_bad_request_is_not_retried_and_names_the_server():
    with llm_server("openai") as server:
        server.fail("status", status=400, body={"error": {"message": "messages is too long"}})
        with pytest.raises(ProviderError, match="HTTP 400: messages is too long") as info:
            await provider(server).chat(ask())
        assert not isinstance(info.value, RetryableProviderError)


# -- concurrency and rate limits -----------------------------------------------------------


async def test_many_concurrent_streams_share_one_pool_and_the_server_overlaps_them():
    with llm_server("openai", latency=0.2) as server:
        p = provider(server)
        replies = await asyncio.gather(*(collect(p, ask(f"q{i}")) for i in range(50)))
        assert [r.text for r in replies] == [f"echo: q{i}" for i in range(50)]
        assert server.peak >= 40  # served concurrently, not one after another
        assert p.transport is not None and len(p.transport) == 1  # one loop's pools


async def test_rate_limit_spaces_requests_of_one_model():
    with llm_server("openai") as server:
        p = provider(server, rate_limits=RateLimits(), model_limits={"slow": (120, None)})
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await asyncio.gather(*(p.chat(ask(model="slow")) for _ in range(122)))
        # A full bucket lets 120 through at once; the next two come at 2 a second.
        assert loop.time() - t0 >= 0.95
        t0 = loop.time()
        await p.chat(ask(model="other"))  # another model has no limit
        assert loop.time() - t0 < 0.5
