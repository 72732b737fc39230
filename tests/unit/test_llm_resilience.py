"""Provider-level resilience without a server: Retry-After, backoff, what the provider may
resend, and the client-side rate limiter on virtual time (looptime)."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import random
import threading

import httpx
import pytest

from cellwire.engine.retry import retry_delay
from cellwire.model import Retry
from cellwire.services.llm import RateLimitError, RetryableProviderError
from cellwire.services.llm.pools import resendable
from cellwire.services.llm.ratelimit import RateLimiter, RateLimits
from cellwire.services.llm.resilience import RetryPolicy, parse_retry_after


def test_retry_after_forms():
    assert parse_retry_after({"Retry-After": "7"}) == 7.0
    assert parse_retry_after({"retry-after-ms": "250", "Retry-After": "9"}) == 0.25
    assert parse_retry_after({"Retry-After": "-3"}) == 0.0
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({}) is None
    date = email.utils.formatdate(1_000_030, usegmt=True)
    assert parse_retry_after({"Retry-After": date}, now=1_000_000) == pytest.approx(30)


def test_backoff_is_jittered_exponential_and_retry_after_wins_up_to_its_cap():
    policy = RetryPolicy(retries=3, base=1.0, factor=2.0, max_delay=3.0,
                         max_retry_after=10.0, rng=random.Random(1))
    for attempt, base in [(1, 1.0), (2, 2.0), (3, 3.0)]:
        assert base / 2 <= policy.delay(attempt) <= base
    assert policy.delay(4) is None
    assert policy.delay(1, RateLimitError("x", retry_after=8.0)) == 8.0
    # A server asking for longer than the cap: give up now, the node's policy decides.
    assert policy.delay(1, RateLimitError("x", retry_after=11.0)) is None


def test_only_failures_before_anything_reached_a_server_are_resent():
    assert resendable(httpx.ConnectError("Connection refused"))
    assert resendable(httpx.ConnectTimeout("no handshake"))
    # The request may have reached the server: the node's retry policy decides.
    for reached in (httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("cut"),
                    httpx.ReadError("reset"), httpx.PoolTimeout("busy")):
        assert not resendable(reached)
    # A certificate that did not verify fails the same way every time.
    assert not resendable(httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] self-signed"))


def test_the_node_retry_honours_retry_after_up_to_max_interval():
    policy = Retry(max_retries=3, interval=0.1, backoff=2.0, max_interval=20.0, jitter=False)
    assert retry_delay(policy, 1) == 0.1
    assert retry_delay(policy, 1, RateLimitError("x", retry_after=5.0)) == 5.0
    assert retry_delay(policy, 2, RetryableProviderError("x", retry_after=0.05)) == 0.2
    assert retry_delay(policy, 1, RateLimitError("x", retry_after=90.0)) == 20.0


@pytest.mark.looptime
async def test_rpm_60_spreads_120_requests_over_60_virtual_seconds():
    limiter = RateLimiter(rpm=60)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    granted: list[float] = []

    async def one() -> None:
        await limiter.acquire()
        granted.append(loop.time() - t0)

    await asyncio.gather(*(one() for _ in range(120)))
    # A full bucket lets the first minute's 60 through; the rest come one a second.
    assert granted[59] == pytest.approx(0, abs=0.01)
    assert granted[-1] == pytest.approx(60, abs=0.01)
    assert loop.time() - t0 >= 60 - 0.01
    assert granted == sorted(granted)


@pytest.mark.looptime
async def test_tpm_waits_for_tokens_and_settling_corrects_the_estimate():
    limiter = RateLimiter(tpm=600)  # 10 tokens a second
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    first = await limiter.acquire(600)
    assert loop.time() - t0 == pytest.approx(0, abs=0.01)
    # The call used only 300 of its 600 estimated tokens: 300 come back at once.
    first.settle(300)
    await limiter.acquire(300)
    assert loop.time() - t0 == pytest.approx(0, abs=0.01)
    # Now empty: 100 more tokens take 10 s.
    await limiter.acquire(100)
    assert loop.time() - t0 == pytest.approx(10, abs=0.01)
    # A request larger than the bucket waits for a full bucket, not forever.
    big = await limiter.acquire(5000)
    assert loop.time() - t0 == pytest.approx(70, abs=0.01)
    big.settle(600)


@pytest.mark.looptime
async def test_waiters_are_served_in_arrival_order_and_limits_are_shared_per_model():
    limits = RateLimits()
    limits.configure("p", rpm=1)
    limits.configure("p", rpm=120, model="fast")
    assert limits.limiter("p", "m") is limits.limiter("p", "m")
    order: list[int] = []

    async def one(i: int) -> None:
        await limits.acquire("p", "m")
        order.append(i)

    await asyncio.gather(*(one(i) for i in range(5)))
    assert order == list(range(5))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await asyncio.gather(*(limits.acquire("p", "fast") for _ in range(121)))
    assert loop.time() - t0 == pytest.approx(0.5, abs=0.01)
    assert limits.limiter("p", "other").rpm == 1


@pytest.mark.looptime
async def test_a_hold_from_the_server_delays_every_caller_of_that_model_only():
    limits = RateLimits()  # no rpm or tpm configured: only the server's word holds requests
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await limits.acquire("p", "m")
    assert loop.time() - t0 == pytest.approx(0, abs=0.01)
    limits.limiter("p", "m").hold(30)
    limits.limiter("p", "m").hold(5)  # a shorter hold never shortens a longer one
    assert limits.limiter("p", "m").held_for() == pytest.approx(30, abs=0.01)
    granted: list[float] = []

    async def one(model: str) -> None:
        await limits.acquire("p", model)
        granted.append(round(loop.time() - t0, 2))

    await asyncio.gather(one("m"), one("m"), one("other"))
    assert granted == [0, 30, 30]  # the other model went at once
    assert limits.limiter("p", "m").held_for() == 0


def test_a_limiter_is_shared_by_every_event_loop_of_the_process():
    # A notebook's loop and the loop of a blocking run (or a Dask worker thread) draw on the
    # same buckets: a second loop does not start with a full minute of its own.
    limiter = RateLimiter(rpm=60)

    async def spend_the_minute() -> None:
        await asyncio.gather(*(limiter.acquire() for _ in range(60)))

    async def next_request_waits() -> bool:
        waiting = asyncio.create_task(limiter.acquire())
        for _ in range(3):
            await asyncio.sleep(0)
        queued = not waiting.done()
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
        return queued

    asyncio.run(spend_the_minute())
    thread_result: list[bool] = []
    worker = threading.Thread(target=lambda: thread_result.append(
        asyncio.run(next_request_waits())))
    worker.start()
    worker.join(10)
    assert thread_result == [True]
    # The cancelled request gave its share back: the debt is one request, not two.
    assert limiter._requests is not None and limiter._requests.level > -0.5
