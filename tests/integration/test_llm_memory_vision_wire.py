"""Chat memory and vision on the wire: what an llm node sends to a real OpenAI-compatible
server (llm_server.py) and to Anthropic's Messages API (anthropic_server.py) on 127.0.0.1,
with the conversation's earlier turns read from a real SQLite run store."""

from __future__ import annotations

import base64
import sys
from pathlib import Path

import pytest
from anthropic_server import anthropic_server

import cellwire
from cellwire.services.files import working_folder
from cellwire.services.llm import LLMRouter
from cellwire.services.llm.anthropic import AnthropicProvider
from cellwire.services.llm.openai import OpenAIProvider
from cellwire.services.llm.ratelimit import RateLimits
from cellwire.store import RunStore

sys.path.insert(0, str(Path(__file__).parent))
from llm_server import llm_server

pytestmark = pytest.mark.timeout(30)

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(32))
PNG_B64 = base64.b64encode(PNG).decode()
REMOTE = "https://example.com/dog.jpg"


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    # Runs read local images from the working folder (the default file policy).
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def store(tmp_path):
    with RunStore(tmp_path / "runs.db") as opened:
        yield opened


@pytest.fixture
def picture(tmp_path) -> str:
    path = tmp_path / "cat.png"
    path.write_bytes(PNG)
    return str(path)


def chatflow(provider: str, model: str) -> cellwire.Workflow:
    wf = cellwire.Workflow("wire-chat", mode="advanced-chat")
    wf.add_node("start", "start")
    wf.add_node("llm", "llm", after="start", model={"provider": provider, "name": model},
                prompt_template=[{"role": "system", "text": "Describe what you see."}],
                memory={"window": {"enabled": True, "size": 4}},
                vision={"enabled": True, "configs": {"variable_selector": ["sys", "files"],
                                                     "detail": "low"}})
    wf.add_node("answer", "answer", after="llm", answer="{{#llm.text#}}")
    return wf


async def two_turns(wf: cellwire.Workflow, provider, store: RunStore, picture: str):
    runtime = cellwire.Runtime(llm=LLMRouter([provider]), files=working_folder())
    first = await wf.arun({"sys.query": "hello", "sys.conversation_id": "c1"},
                          runtime=runtime, store=store)
    assert first.ok, first.error
    files = [{"type": "image", "transfer_method": "remote_url", "remote_url": REMOTE},
             {"type": "image", "transfer_method": "local_file", "path": picture}]
    second = await wf.arun({"sys.query": "and these?", "sys.conversation_id": "c1",
                            "sys.files": files}, runtime=runtime, store=store)
    assert second.ok, second.error
    other = await wf.arun({"sys.query": "new chat", "sys.conversation_id": "c2"},
                          runtime=runtime, store=store)
    assert other.ok, other.error
    return first, second


async def test_openai_wire_carries_the_history_and_image_url_parts(store, picture):
    with llm_server("openai") as server:
        provider = OpenAIProvider("openai", base_url=server.base_url, api_key="sk-test",
                                  rate_limits=RateLimits())
        first, _ = await two_turns(chatflow("langgenius/openai/openai", "gpt-4o-mini"),
                                   provider, store, picture)
        assert first.answer == "echo: hello"
        requests = server.chat_requests()
        assert requests[0]["messages"] == [
            {"role": "system", "content": "Describe what you see."},
            {"role": "user", "content": "hello"}]
        assert requests[1]["messages"] == [
            {"role": "system", "content": "Describe what you see."},
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "echo: hello"},
            {"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": REMOTE, "detail": "low"}},
                {"type": "image_url", "image_url": {
                    "url": f"data:image/png;base64,{PNG_B64}", "detail": "low"}},
                {"type": "text", "text": "and these?"}]}]
        # Another conversation starts with no history.
        assert requests[2]["messages"][1:] == [{"role": "user", "content": "new chat"}]


async def test_anthropic_wire_carries_the_history_and_image_blocks(store, picture):
    with anthropic_server() as server:
        provider = AnthropicProvider(base_url=server.url, rate_limits=RateLimits())
        try:
            _, second = await two_turns(
                chatflow("langgenius/anthropic/anthropic", "claude-haiku-4-5"), provider,
                store, picture)
        finally:
            await provider.aclose()
        assert second.answer == "echo: and these?"
        body = server.requests[1]
        assert body["system"] == "Describe what you see."
        assert body["messages"] == [
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "echo: hello"},
            {"role": "user", "content": [
                {"type": "image", "source": {"type": "url", "url": REMOTE}},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": PNG_B64}},
                {"type": "text", "text": "and these?"}]}]
        assert server.requests[2]["messages"] == [{"role": "user", "content": "new chat"}]
