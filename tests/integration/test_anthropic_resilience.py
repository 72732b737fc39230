"""The Anthropic provider's retries and shared rate limits, against the loopback Messages API
double (tests/integration/anthropic_server.py) with injected faults: runs complete through
the node's retries (shown as NodeRetry events) where they should and fail with a clear error
where they must; the provider itself resends only what never reached a server."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from anthropic_server import anthropic_server
from skipping_clock import SkippingClock

import cellwire
from cellwire.engine.events import NodeRetry
from cellwire.services.llm import (
    ChatAccumulator,
    ChatMessage,
    ChatRequest,
    LLMRouter,
    ProviderError,
    ProviderTimeout,
    RateLimitError,
    RetryableProviderError,
)
from cellwire.services.llm.anthropic import AnthropicProvider, _reset_wait
from cellwire.services.llm.openai import Timeouts
from cellwire.services.llm.ratelimit import RateLimits
from cellwire.services.llm.resilience import RetryPolicy

pytestmark = pytest.mark.timeout(30)

KEY = "sk-ant-SECRET-0123456789"
MODEL = "claude-haiku-4-5-20251001"


@pytest.fixture
def server():
    with anthropic_server(api_key=KEY) as srv:
        yield srv


@pytest.fixture
def waits() -> list[float]:
    return []


class RecordingLimits(RateLimits):
    """The real registry, also recording every acquire (a spy, to see each attempt)."""

    def __init__(self) -> None:
        super().__init__()
        self.acquired: list[tuple[str, str, int]] = []

    async def acquire(self, provider: str, model: str, tokens: int = 0):
        self.acquired.append((provider, model, tokens))
        return await super().acquire(provider, model, tokens)


@pytest.fixture
async def make(server, waits):
    """Providers for ``server`` whose retry waits are recorded and skipped."""
    made: list[AnthropicProvider] = []

    def build(**options) -> AnthropicProvider:
        async def sleep(seconds: float) -> None:
            waits.append(seconds)
            await asyncio.sleep(0)

        options.setdefault("retry", RetryPolicy(retries=3, base=0.05, sleep=sleep))
        options.setdefault("rate_limits", RecordingLimits())
        options.setdefault("timeouts", Timeouts(connect=2, read=5, first_byte=5))
        provider = AnthropicProvider(base_url=options.pop("base_url", server.url),
                                     api_key=KEY, **options)
        made.append(provider)
        return provider

    yield build
    for provider in made:
        await provider.aclose()


def ask(text: str = "hi there") -> ChatRequest:
    return ChatRequest(MODEL, [ChatMessage("user", text)])


async def collect(provider: AnthropicProvider, request: ChatRequest):
    acc = ChatAccumulator()
    async for chunk in provider.stream(request):
        acc.add(chunk)
    return acc.response(request.model, request.messages)


def workflow(retry: dict | None = None) -> cellwire.Workflow:
    wf = cellwire.Workflow("anthropic-resilience")
    wf.add_node("start", "start", variables=[{"variable": "q", "type": "paragraph"}])
    wf.add_node("llm", "llm", after="start", retry=retry,
                model={"provider": "langgenius/anthropic/anthropic", "name": MODEL},
                prompt_template=[{"role": "user", "text": "{{#start.q#}}"}])
    wf.add_node("end", "end", after="llm",
                outputs=[{"variable": "text", "value_selector": ["llm", "text"]}])
    return wf


async def run(provider: AnthropicProvider, wf: cellwire.Workflow | None = None):
    runtime = cellwire.Runtime(llm=LLMRouter([provider]), clock=SkippingClock())
    return await (wf or workflow()).arun(q="hi there", runtime=runtime, store=False)


def node_retries(result) -> list[NodeRetry]:
    return [e for e in result.events if isinstance(e, NodeRetry)]


def assert_no_key(result) -> None:
    shown = [repr(result.outputs), repr(result.events), result.trace.to_json(date_format="iso"),
             str(result.error)]
    assert not any(KEY in text for text in shown)


# -- retried by the node's policy ------------------------------------------------------------


async def test_429_retry_after_is_honoured_by_the_node_retry(server, make, waits):
    server.fault(429, retry_after="0.3")
    provider = make()
    result = await run(provider, workflow(retry={"max_retries": 2, "interval": 0.05,
                                                 "jitter": False}))
    assert result.ok, result.error
    assert result.outputs == {"text": "echo: hi there"}
    # Longer than the 0.05 s backoff: the server's wait wins; shown as an event.
    assert [e.delay for e in node_retries(result)] == [0.3]
    assert len(server.requests) == 2 and waits == []
    # Every attempt went through the shared limiter of (provider, model).
    assert [a[:2] for a in provider._limits.acquired] == [("anthropic", MODEL)] * 2
    assert_no_key(result)


async def test_529_and_500_are_retryable_errors_for_the_node(server, make, waits):
    provider = make()
    server.fault(529)
    with pytest.raises(RetryableProviderError, match="HTTP 529"):
        await collect(provider, ask())
    server.fault(500)
    with pytest.raises(RetryableProviderError, match="HTTP 500"):
        await provider.chat(ask("again"))
    assert waits == [] and len(server.requests) == 2
    server.fault(529)
    server.fault(500)
    result = await run(provider)  # the llm node's default policy retries them
    assert result.ok, result.error
    assert len(node_retries(result)) == 2


async def test_overload_fails_with_a_clear_error_once_retries_are_spent(server, make, waits):
    for _ in range(4):
        server.fault(529)
    result = await run(make())
    assert not result.ok
    assert "HTTP 529" in result.error and "overloaded_error" in result.error
    assert server.url in result.error  # names the server
    # 1 + the default 3 node retries, each an event; none inside the provider.
    assert len(node_retries(result)) == 3 and len(server.requests) == 4 and waits == []


async def test_overload_error_event_and_cut_streams_go_to_the_node_retry(server, make, waits):
    server.fault(error="overloaded_error")
    server.fault(cut_after=2)              # message_start and ping only, then a clean close
    server.fault(cut_after=1, reset=True)  # message_start, then a reset connection
    server.fault(drop=True)                # no answer at all
    result = await run(make(), workflow(retry={"max_retries": 5, "interval": 0.0}))
    assert result.ok, result.error
    assert result.outputs == {"text": "echo: hi there"}
    assert len(node_retries(result)) == 4 and waits == []

    # Once the first words got out, a retry would stream them twice: the node fails instead.
    for cut in ({"cut_after": 5, "reset": True}, {"cut_after": 5}):
        server.fault(**cut)
        result = await run(make(), workflow(retry={"max_retries": 5, "interval": 0.0}))
        assert not result.ok and node_retries(result) == []
        assert "not retried" in result.error
    assert "message_stop" in result.error


async def test_slow_first_byte_and_stalled_stream_time_out_and_the_node_retries(
        server, make, waits):
    provider = make(timeouts=Timeouts(connect=2, read=5, first_byte=0.2))
    server.fault(slow=3)   # no headers in time
    server.fault(stall=3)  # headers, then nothing
    result = await run(provider)
    assert result.ok, result.error
    assert len(node_retries(result)) == 2 and result.outputs == {"text": "echo: hi there"}
    server.fault(slow=3)
    with pytest.raises(ProviderTimeout, match="no response within 0.2 s"):
        await provider.chat(ask())
    assert waits == []


# -- failing with a clear error ---------------------------------------------------------------


async def test_malformed_json_is_a_clear_error_and_not_retried(server, make, waits):
    provider = make()
    server.fault(malformed=True)
    result = await run(provider, workflow(retry={"max_retries": 2, "interval": 0.0}))
    assert not result.ok
    assert "malformed JSON in its stream" in result.error and server.url in result.error
    assert len(server.requests) == 1 and waits == []
    server.fault(malformed=True)
    with pytest.raises(ProviderError, match="malformed JSON") as info:
        await provider.chat(ask())
    assert not info.value.retryable


async def test_bad_requests_and_should_retry_false_are_not_retried(server, make, waits):
    provider = make()
    server.fault(400)
    with pytest.raises(ProviderError, match="HTTP 400: invalid_request_error") as info:
        await provider.chat(ask())
    assert not info.value.retryable
    server.fault(500, x_should_retry="false")
    with pytest.raises(ProviderError, match="HTTP 500") as info:
        await provider.chat(ask())
    assert not info.value.retryable
    server.fault(409, x_should_retry="true")  # the server's word wins both ways
    with pytest.raises(RetryableProviderError, match="HTTP 409"):
        await provider.chat(ask())
    assert waits == []


async def test_wrong_key_fails_at_once_and_never_shows_the_key(server, make, waits):
    provider = make()
    provider._api_key = "sk-ant-WRONG"
    result = await run(provider, workflow(retry={"max_retries": 3, "interval": 0.0}))
    assert not result.ok and "HTTP 401" in result.error and "ANTHROPIC_API_KEY" in result.error
    assert len(server.requests) == 1 and waits == []
    assert "sk-ant-WRONG" not in result.error and "sk-ant" not in repr(provider)


async def test_unreachable_server_fails_after_retries(make, waits):
    with anthropic_server() as gone:
        url = gone.url
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    provider = make(base_url=url, retry=RetryPolicy(retries=2, base=0.01, sleep=sleep))
    with pytest.raises(RetryableProviderError, match="could not connect to anthropic"):
        await provider.chat(ask())
    assert len(sleeps) == 2  # refused: nothing was sent, so the provider sent it again


# -- shared limits and Anthropic's rate-limit headers -----------------------------------------


async def test_429_holds_the_models_shared_limiter_for_every_caller(server, make):
    limits = RateLimits()
    provider = make(retry=RetryPolicy(retries=0), rate_limits=limits)
    server.fault(429, retry_after="30")
    with pytest.raises(RateLimitError) as info:
        await provider.chat(ask())
    assert info.value.retry_after == 30.0
    # Every node, row and run asking this model waits for the server's reset, not only the
    # call that was told; another model is free.
    assert 25 < limits.limiter("anthropic", MODEL).held_for() <= 30
    assert limits.limiter("anthropic", "claude-other").held_for() == 0


async def test_spent_limit_headers_hold_the_limiter_until_their_reset(server, make):
    limits = RateLimits()
    provider = make(rate_limits=limits)
    reset = (datetime.now(UTC) + timedelta(seconds=20)).isoformat().replace("+00:00", "Z")
    server.fault(anthropic_ratelimit_requests_remaining="0",
                 anthropic_ratelimit_requests_reset=reset,
                 anthropic_ratelimit_tokens_remaining="81000",
                 anthropic_ratelimit_tokens_reset=reset)
    assert (await provider.chat(ask())).text == "echo: hi there"
    assert 15 < limits.limiter("anthropic", MODEL).held_for() <= 20


def test_reset_wait_reads_only_spent_limits():
    at = datetime(2026, 1, 1, tzinfo=UTC)
    later = (at + timedelta(seconds=12)).isoformat().replace("+00:00", "Z")
    latest = (at + timedelta(seconds=40)).isoformat()
    headers = {"anthropic-ratelimit-requests-remaining": "0",
               "anthropic-ratelimit-requests-reset": later,
               "anthropic-ratelimit-output-tokens-remaining": "5000",
               "anthropic-ratelimit-output-tokens-reset": latest}
    assert _reset_wait(headers, now=at.timestamp()) == pytest.approx(12)
    headers["anthropic-ratelimit-output-tokens-remaining"] = "0"
    assert _reset_wait(headers, now=at.timestamp()) == pytest.approx(40)
    assert _reset_wait({"anthropic-ratelimit-requests-remaining": "0",
                        "anthropic-ratelimit-requests-reset": "soon"}) is None
    assert _reset_wait({}) is None


async def test_configured_limits_and_retry_come_from_provider_options(server):
    limits = RateLimits()
    provider = AnthropicProvider(base_url=server.url, api_key=KEY, rate_limits=limits,
                                 rpm=50, model_limits={MODEL: (5, 20_000)},
                                 retry={"retries": 1, "base": 0.01},
                                 timeouts={"first_byte": 7})
    assert (limits.limiter("anthropic", MODEL).rpm,
            limits.limiter("anthropic", MODEL).tpm) == (5, 20_000)
    assert limits.limiter("anthropic", "claude-other").rpm == 50
    assert provider.retry.retries == 1 and provider.timeouts.first_byte == 7
    server.fault(529)
    with pytest.raises(RetryableProviderError, match="HTTP 529"):
        await provider.chat(ask())
    assert len(server.requests) == 1  # a 529 is the node's to retry
    await provider.aclose()


def test_one_provider_serves_runs_on_successive_event_loops(server):
    # cellwire.run in a script runs each workflow on an event loop of its own; the provider
    # (built once per config) keeps a client per loop instead of reusing dead connections.
    provider = AnthropicProvider(base_url=server.url, api_key=KEY, rate_limits=RateLimits())
    for n in range(3):
        assert asyncio.run(provider.chat(ask(f"turn {n}"))).text == f"echo: turn {n}"
    asyncio.run(provider.aclose())
