"""The OpenAI provider's connection pools: one per event loop, closed when the loop
shuts down, never left open (a provider outlives many ``asyncio.run`` calls)."""

from __future__ import annotations

import asyncio
import gc
import sys
import warnings
from pathlib import Path

import pytest

from cellwire.services.http import FastTransport
from cellwire.services.http.engine import HTTPPool
from cellwire.services.llm import ChatMessage, ChatRequest
from cellwire.services.llm.openai import OpenAIProvider
from cellwire.services.llm.ratelimit import RateLimits

sys.path.insert(0, str(Path(__file__).parent))
from llm_server import llm_server

pytestmark = pytest.mark.timeout(30)


def ask(text: str) -> ChatRequest:
    return ChatRequest("m", [ChatMessage("user", text)])


def unclosed(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if "nclosed" in str(w.message)]


def open_pools(provider: OpenAIProvider) -> list[HTTPPool]:
    """The running loop's open pools of the provider's fast transport."""
    assert isinstance(provider.transport, FastTransport)
    pools = provider.transport._loops.current()
    return [] if pools is None else list(pools.by_origin.values())


def test_each_loop_gets_a_pool_that_closes_with_the_loop():
    with llm_server("openai") as server, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        provider = OpenAIProvider("openai", base_url=server.base_url, rate_limits=RateLimits())
        pools: list[HTTPPool] = []

        async def call(text: str) -> str:
            reply = await provider.chat(ask(text))
            pools.extend(open_pools(provider))
            assert len(provider.transport) == 1
            return reply.text

        assert asyncio.run(call("one")) == "echo: one"
        assert asyncio.run(call("two")) == "echo: two"
        assert len(pools) == 2 and pools[0] is not pools[1] and all(p.closed for p in pools)
        assert len(provider.transport) == 0
        # A dropped provider whose loop is still running is closed when that loop ends.

        async def dropped() -> None:
            other = OpenAIProvider("openai", base_url=server.base_url, rate_limits=RateLimits())
            await other.chat(ask("x"))
            pools.extend(open_pools(other))

        asyncio.run(dropped())
        assert pools[-1].closed
        gc.collect()
    assert unclosed(caught) == []


def test_a_loop_closed_without_shutdown_is_swept_by_the_next_pool():
    with llm_server("openai") as server:
        provider = OpenAIProvider("openai", base_url=server.base_url, rate_limits=RateLimits())
        loop = asyncio.new_event_loop()
        loop.run_until_complete(provider.chat(ask("a")))

        async def pools_now() -> list[HTTPPool]:
            return open_pools(provider)

        first = loop.run_until_complete(pools_now())[0]
        loop.close()  # no shutdown_asyncgens: the pool is left open
        assert not first.closed
        assert asyncio.run(provider.chat(ask("b"))).text == "echo: b"
        assert first.closed


async def test_aclose_closes_this_loops_pool_and_a_later_call_opens_another():
    with llm_server("openai") as server:
        provider = OpenAIProvider("openai", base_url=server.base_url, rate_limits=RateLimits())
        await provider.chat(ask("a"))
        first = open_pools(provider)[0]
        await provider.aclose()
        assert first.closed and len(provider.transport) == 0
        assert (await provider.chat(ask("b"))).text == "echo: b"
        assert open_pools(provider)[0] is not first


def test_the_environments_proxy_serves_remote_servers_but_never_this_machine(monkeypatch):
    from cellwire.services.http import env_proxy

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "internal.example")
    assert env_proxy("https://api.openai.com/v1") == "http://proxy.example:3128"
    assert env_proxy("http://gpu-box:8000/v1") == "http://proxy.example:3128"
    assert env_proxy("http://internal.example/v1") is None
    for local in ("http://127.0.0.1:8080/v1", "http://localhost:11434/v1", "http://[::1]:1/v1",
                  "http://127.1.2.3:9/v1"):
        assert env_proxy(local) is None, local
