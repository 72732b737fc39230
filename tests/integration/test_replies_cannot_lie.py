"""Replies that cannot lie: an HTTP 200 that is not the reply it claims to be fails the call
with a clear error (never an empty success), against the OpenAI-compatible and Anthropic fault
servers on 127.0.0.1; bodies are capped while they are read; a late first byte is said while
the wait lasts; and an unknown cost is null in every JSON, never NaN."""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from anthropic_server import AnthropicServer, anthropic_server
from click.testing import CliRunner
from llm_server import LLMServer, llm_server

import cellwire
from cellwire.cli import cli
from cellwire.engine.events import NodeFailed, NodeRetry
from cellwire.services.llm import ChatAccumulator, ChatMessage, ChatRequest, LLMRouter
from cellwire.services.llm.anthropic import AnthropicProvider
from cellwire.services.llm.base import ProviderError, ProviderTimeout, RetryableProviderError
from cellwire.services.llm.openai import OpenAIProvider, Timeouts
from cellwire.services.llm.pools import MAX_REPLY
from cellwire.services.llm.ratelimit import RateLimits
from cellwire.services.llm.resilience import RetryPolicy

pytestmark = pytest.mark.timeout(60)

KEY = "sk-test-SECRET-0123456789"
ANTHROPIC_MODEL = "claude-haiku-4-5-20251001"
#: A proxy's sign-in page that echoes the credentials it was sent, as some do.
LOGIN_PAGE = ("<!DOCTYPE html><html><head><title>Corporate proxy: sign in</title></head><body>"
              f"<p>Your request carried Authorization: Bearer {KEY} which is not accepted "
              "here.</p><form action=/login>" + "<input>" * 40 + "</form></body></html>")
OPENAI_RETRY = {"max_retries": 2, "interval": 0.0}


@pytest.fixture
def server() -> Iterator[LLMServer]:
    with llm_server("openai") as running:
        yield running


@pytest.fixture
def claude() -> Iterator[AnthropicServer]:
    with anthropic_server(api_key=KEY) as running:
        yield running


def openai(server: LLMServer, **options) -> OpenAIProvider:
    options.setdefault("timeouts", Timeouts(connect=2, read=5, first_byte=5))
    return OpenAIProvider("openai", base_url=server.base_url, api_key=KEY,
                          retry=RetryPolicy(retries=0), rate_limits=RateLimits(), **options)


def anthropic(server: AnthropicServer, **options) -> AnthropicProvider:
    options.setdefault("timeouts", Timeouts(connect=2, read=5, first_byte=5))
    return AnthropicProvider(base_url=server.url, api_key=KEY, retry=RetryPolicy(retries=0),
                             rate_limits=RateLimits(), **options)


def workflow(provider: str, model: str, retry: dict | None = None) -> cellwire.Workflow:
    wf = cellwire.Workflow("lies")
    wf.add_node("start", "start", variables=[{"variable": "query", "type": "paragraph"}])
    wf.add_node("llm", "llm", after="start", retry=retry or OPENAI_RETRY,
                model={"provider": provider, "name": model, "mode": "chat"},
                prompt_template=[{"role": "user", "text": "{{#start.query#}}"}])
    wf.add_node("end", "end", after="llm",
                outputs=[{"variable": "text", "value_selector": ["llm", "text"]}])
    return wf


async def run(provider, wf: cellwire.Workflow | None = None) -> cellwire.RunResult:
    if wf is None:
        wf = (workflow("anthropic", ANTHROPIC_MODEL) if isinstance(provider, AnthropicProvider)
              else workflow("openai", "gpt-4o-mini"))
    runtime = cellwire.Runtime(llm=LLMRouter([provider]))
    return await wf.arun(query="hi there", runtime=runtime, store=False)


def retries(result: cellwire.RunResult) -> list[NodeRetry]:
    return [e for e in result.events if isinstance(e, NodeRetry)]


def failed_fatally(result: cellwire.RunResult) -> str:
    """The error of a run whose llm node failed without retries: never a success."""
    assert result.status == "failed" and not result.outputs
    assert retries(result) == []
    error = str(result.error)
    assert KEY not in error and KEY not in repr(result.events)
    return error


def ask(text: str = "hi", model: str = "gpt-4o-mini") -> ChatRequest:
    return ChatRequest(model, [ChatMessage("user", text)])


async def collect(provider, request: ChatRequest):
    acc = ChatAccumulator()
    async for chunk in provider.stream(request):
        acc.add(chunk)
    return acc.response(request.model, request.messages)


# -- a 200 that is not JSON or an event stream -------------------------------------------------


async def test_an_html_page_is_an_error_quoting_its_start_without_the_key(server):
    provider = openai(server)
    server.fail("html", body=LOGIN_PAGE)
    error = failed_fatally(await run(provider))  # the llm node streams
    assert "answered a streamed request with text/html, not an event stream" in error
    assert "'<!DOCTYPE html><html><head><title>Corporate proxy" in error
    assert "Bearer ***" in error and KEY not in error
    assert len(error) < 1000  # the start of the body, not the page
    server.fail("html", body=LOGIN_PAGE)
    with pytest.raises(ProviderError, match="answered HTTP 200 with text/html, not JSON") as bad:
        await provider.chat(ask())
    assert not bad.value.retryable and KEY not in str(bad.value)
    assert "base_url" in bad.value.hint
    await provider.aclose()


async def test_truncated_or_shapeless_json_is_an_error(server):
    provider = openai(server)
    server.fail("malformed")  # a 200 whose JSON stops half-way
    with pytest.raises(ProviderError, match="malformed JSON") as cut:
        await provider.chat(ask())
    assert """'{"id": "chatcmpl-1", "choices": [{'""" in str(cut.value)
    server.fail("no_choices")
    with pytest.raises(ProviderError, match="answered without any choice"):
        await provider.chat(ask())
    server.fail("no_choices")
    error = failed_fatally(await run(provider))
    assert "sent a stream without any choice" in error
    await provider.aclose()


# -- streams that end without their terminal marker -------------------------------------------


async def test_a_stream_without_done_or_finish_reason_is_an_error_retried_while_nothing_came(
        server):
    provider = openai(server)
    server.fail("truncate", after=1)  # the role chunk only, then a clean end
    result = await run(provider)
    assert result.ok and result.outputs == {"text": "echo: hi there"}
    (retry,) = retries(result)
    assert "ended without [DONE] or a finish_reason" in retry.error

    server.fail("truncate", after=3)  # "echo: hi " went out, then a clean end
    error = failed_fatally(await run(provider))
    assert "ended without [DONE] or a finish_reason: the reply was cut short" in error
    assert "not retried" in error
    # Never the partial text with a finish_reason the server did not send.
    server.fail("truncate", after=3)
    with pytest.raises(ProviderError, match="cut short"):
        await collect(provider, ask())
    server.fail("truncate", after=1)
    with pytest.raises(RetryableProviderError, match="cut short"):
        await collect(provider, ask())
    await provider.aclose()


async def test_a_finish_reason_or_done_alone_ends_a_stream(server):
    # LM Studio sends [DONE] without a finish_reason; some servers the reverse.
    with llm_server("lmstudio") as lmstudio:
        provider = openai(lmstudio)
        reply = await collect(provider, ask("hi there"))
        assert reply.text == "echo: hi there"
        await provider.aclose()
    provider = openai(server)
    server.fail("truncate", after=6)  # every event, finish_reason included, but no [DONE]
    reply = await collect(provider, ask("hi there"))
    assert (reply.text, reply.finish_reason) == ("echo: hi there", "stop")
    await provider.aclose()


# -- size caps ------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_a_huge_reply_is_given_up_at_the_cap_while_it_is_read(server, stream):
    provider = openai(server, max_body=1024 * 1024)
    server.fail("huge", size=200 * 1024 * 1024)
    with pytest.raises(ProviderError, match="larger than 1048576 bytes") as big:
        if stream:
            await collect(provider, ask())
        else:
            await provider.chat(ask())
    assert not big.value.retryable and "max_body" in big.value.hint
    await provider.aclose()
    await asyncio.sleep(0.1)  # the server notices the client left
    assert server.sent < 32 * 1024 * 1024  # of the 200 MiB on offer


async def test_the_default_cap_stops_a_200_mib_stream_of_one_endless_line(server):
    provider = openai(server)
    assert provider.max_body == MAX_REPLY == 64 * 1024 * 1024
    server.fail("huge", size=200 * 1024 * 1024)
    error = failed_fatally(await run(provider))
    assert f"larger than {MAX_REPLY} bytes" in error
    await provider.aclose()
    await asyncio.sleep(0.1)
    assert server.sent < 100 * 1024 * 1024


async def test_an_error_answer_is_read_only_as_far_as_its_message(server):
    provider = openai(server)
    server.fail("status", status=500, body="<html>" + "x" * (8 * 1024 * 1024) + "</html>")
    with pytest.raises(RetryableProviderError, match="HTTP 500: '<html>xxx") as failed:
        await provider.chat(ask())
    assert len(str(failed.value)) < 1000
    await provider.aclose()


# -- the first byte ---------------------------------------------------------------------------


def test_the_first_byte_timeout_is_shorter_than_it_was():
    assert Timeouts().first_byte == 60.0  # was 120, four times over with the node's retries


async def test_a_late_first_byte_is_said_while_the_wait_lasts(server, caplog):
    caplog.set_level(logging.WARNING, logger="cellwire.llm")
    provider = openai(server, timeouts=Timeouts(connect=2, read=5, first_byte=0.6))
    server.fail("slow", delay=3)  # a server that does not answer in time
    result = await run(provider, workflow("openai", "gpt-4o-mini", retry={"max_retries": 0}))
    assert result.status == "failed"
    assert "sent no response within 0.6 s" in str(result.error)
    assert "timeouts.first_byte" in str(result.error)
    notices = [r.getMessage() for r in caplog.records if r.name == "cellwire.llm"]
    assert notices == [(f"openai ({server.base_url}), model gpt-4o-mini: nothing received "
                        "for 0.3 s; still waiting, up to 0.6 s (timeouts.first_byte)")]
    caplog.clear()
    assert (await run(provider)).ok and caplog.records == []  # a prompt answer says nothing
    await provider.aclose()


# -- Anthropic ------------------------------------------------------------------------------


async def test_anthropic_replies_that_are_not_messages_are_errors(claude):
    provider = anthropic(claude)
    claude.fault(html=LOGIN_PAGE)
    error = failed_fatally(await run(provider))
    assert "text/html, not an event stream" in error and "Corporate proxy" in error
    claude.fault(html=LOGIN_PAGE)
    with pytest.raises(ProviderError, match="text/html, not JSON"):
        await provider.chat(ask(model=ANTHROPIC_MODEL))
    claude.fault(no_content=True)
    with pytest.raises(ProviderError, match="without a message's content"):
        await provider.chat(ask(model=ANTHROPIC_MODEL))
    claude.fault(malformed=True)
    with pytest.raises(ProviderError, match="malformed JSON"):
        await provider.chat(ask(model=ANTHROPIC_MODEL))
    await provider.aclose()


async def test_anthropic_stream_without_message_stop_is_retried_while_nothing_came(claude):
    provider = anthropic(claude)
    claude.fault(cut_after=3)  # message_start, ping, content_block_start: no text yet
    result = await run(provider)
    assert result.ok and "before message_stop" in retries(result)[0].error
    claude.fault(cut_after=6)  # some words went out
    error = failed_fatally(await run(provider))
    assert "before message_stop: the reply was cut short" in error and "not retried" in error
    await provider.aclose()


@pytest.mark.parametrize("stream", [False, True])
async def test_anthropic_huge_replies_are_given_up_at_the_cap(claude, stream):
    provider = anthropic(claude, max_body=1024 * 1024)
    claude.fault(huge=200 * 1024 * 1024)
    with pytest.raises(ProviderError, match="larger than 1048576 bytes"):
        if stream:
            await collect(provider, ask(model=ANTHROPIC_MODEL))
        else:
            await provider.chat(ask(model=ANTHROPIC_MODEL))
    await provider.aclose()
    await asyncio.sleep(0.1)
    assert claude.sent < 32 * 1024 * 1024


async def test_anthropic_late_first_byte_is_said_and_times_out(claude, caplog):
    caplog.set_level(logging.WARNING, logger="cellwire.llm")
    provider = anthropic(claude, timeouts=Timeouts(connect=2, read=5, first_byte=0.6))
    claude.fault(slow=3)
    with pytest.raises(ProviderTimeout, match="no response within 0.6 s"):
        await collect(provider, ask(model=ANTHROPIC_MODEL))
    (notice,) = [r.getMessage() for r in caplog.records if r.name == "cellwire.llm"]
    assert "nothing received for 0.3 s" in notice and "timeouts.first_byte" in notice
    await provider.aclose()


# -- NaN never in JSON ------------------------------------------------------------------------


async def test_an_unknown_cost_is_null_in_json_and_nan_in_the_trace(server):
    provider = openai(server)
    result = await run(provider, workflow("openai", "mystery-model-7"))
    assert result.ok
    assert math.isnan(result.total_cost)  # pandas users keep NaN
    assert math.isnan(result.trace.set_index("node_id").loc["llm", "cost"])
    shown = json.loads(json.dumps(result.as_dict(), allow_nan=False))
    assert shown["total_cost"] is None
    (llm,) = [e for e in result.events if getattr(e, "node_id", None) == "llm"
              and type(e).__name__ == "NodeSucceeded"]
    json.dumps({"outputs": llm.outputs, "metadata": llm.metadata}, allow_nan=False)
    assert llm.outputs["usage"]["total_price"] is None
    assert llm.metadata["total_price"] is None and "no price" in llm.metadata["cost_reason"]
    assert not [e for e in result.events if isinstance(e, NodeFailed)]
    await provider.aclose()


LLM_FILE = """\
cellwire: 1
name: priceless
nodes:
  - {id: start, type: start}
  - id: llm
    type: llm
    model: {provider: openai, name: mystery-model-7, mode: chat}
    prompt_template: [{role: user, text: hello}]
  - id: end
    type: end
    outputs: [{variable: usage, value_selector: [llm, usage]}]
edges:
  - {source: start, target: llm}
  - {source: llm, target: end}
"""


def test_cellwire_run_json_prints_null_for_an_unknown_cost(server, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CELLWIRE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "priceless.yaml"
    path.write_text(LLM_FILE)
    done = CliRunner().invoke(cli, ["run", str(path), "--json"], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    assert "NaN" not in done.stdout
    shown = json.loads(done.stdout)
    assert shown["status"] == "succeeded" and shown["total_cost"] is None
    assert shown["outputs"]["usage"]["total_price"] is None
    text = CliRunner().invoke(cli, ["run", str(path)], catch_exceptions=False)
    assert text.exit_code == 0 and "cost unknown" in text.stderr
    listed = CliRunner().invoke(cli, ["runs", "--json"], catch_exceptions=False)
    assert listed.exit_code == 0 and "NaN" not in listed.stdout
    assert json.loads(listed.stdout)[0]["total_cost"] is None
