"""Memory and vision of the question-classifier and parameter-extractor on the wire: what they
send to a real OpenAI-compatible server (llm_server.py) on 127.0.0.1, with the conversation's
earlier turns read from a real SQLite run store."""

from __future__ import annotations

import base64
import sys
from pathlib import Path

import pytest

import cellwire
from cellwire.services.files import working_folder
from cellwire.services.llm import LLMRouter
from cellwire.services.llm.openai import OpenAIProvider
from cellwire.services.llm.ratelimit import RateLimits
from cellwire.store import RunStore

sys.path.insert(0, str(Path(__file__).parent))
from llm_server import llm_server

pytestmark = pytest.mark.timeout(30)

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(40))
REMOTE = "https://example.com/screenshot.jpg"
MODEL = {"provider": "langgenius/openai/openai", "name": "gpt-4o-mini"}
MEMORY = {"window": {"enabled": True, "size": 4}}
VISION = {"enabled": True, "configs": {"variable_selector": ["sys", "files"], "detail": "low"}}


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    # Runs read local images from the working folder (the default file policy).
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def store(tmp_path):
    with RunStore(tmp_path / "runs.db") as opened:
        yield opened


async def two_turns(wf: cellwire.Workflow, server, store: RunStore, picture: Path):
    provider = OpenAIProvider("openai", base_url=server.base_url, api_key="sk-test",
                              rate_limits=RateLimits())
    runtime = cellwire.Runtime(llm=LLMRouter([provider]), files=working_folder())
    first = await wf.arun({"sys.query": "my invoice is wrong", "sys.conversation_id": "c1"},
                          runtime=runtime, store=store)
    assert first.ok, first.error
    files = [{"type": "image", "transfer_method": "remote_url", "remote_url": REMOTE},
             {"type": "image", "transfer_method": "local_file", "path": str(picture)}]
    second = await wf.arun({"sys.query": "and this screen?", "sys.conversation_id": "c1",
                            "sys.files": files}, runtime=runtime, store=store)
    assert second.ok, second.error
    return first, server.chat_requests()


def image_parts(picture: Path) -> list[dict]:
    data = base64.b64encode(picture.read_bytes()).decode()
    return [{"type": "image_url", "image_url": {"url": REMOTE, "detail": "low"}},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}",
                                                "detail": "low"}}]


@pytest.fixture
def picture(tmp_path) -> Path:
    path = tmp_path / "screen.png"
    path.write_bytes(PNG)
    return path


async def test_classifier_payload_carries_the_history_and_image_parts(store, picture):
    wf = cellwire.Workflow("wire-support", mode="advanced-chat")
    wf.add_node("start", "start")
    wf.add_node("qc", "question-classifier", after="start", model=MODEL,
                query_variable_selector=["sys", "query"], memory=MEMORY, vision=VISION,
                classes=[{"id": "1", "name": "billing"}, {"id": "2", "name": "technical"}])
    wf.add_node("a1", "answer", after=[("qc", "1")], answer="Billing will help.")
    wf.add_node("a2", "answer", after=[("qc", "2")], answer="A technician will help.")
    with llm_server("openai") as server:
        # The server answers structured output with the schema's first enum value: class 1.
        first, requests = await two_turns(wf, server, store, picture)
    assert first.answer == "Billing will help."
    assert len(requests) == 2
    system = requests[1]["messages"][0]
    assert system["role"] == "system"
    assert ("<histories>\nHuman: my invoice is wrong\nAssistant: Billing will help.\n"
            "</histories>") in system["content"]
    assert "<histories>\n\n</histories>" in requests[0]["messages"][0]["content"]
    user = requests[1]["messages"][-1]
    assert [m["role"] for m in requests[1]["messages"]] == ["system", "user"]
    assert user["content"][:2] == image_parts(picture)
    assert user["content"][2]["type"] == "text"
    assert user["content"][2]["text"].endswith("Input:\nand this screen?")
    assert requests[1]["response_format"]["type"] == "json_schema"


async def test_extractor_payload_carries_the_history_and_image_parts(store, picture):
    wf = cellwire.Workflow("wire-booking", mode="advanced-chat")
    wf.add_node("start", "start")
    wf.add_node("pe", "parameter-extractor", after="start", model=MODEL,
                query=["sys", "query"], memory=MEMORY, vision=VISION,
                parameters=[{"name": "city", "type": "string", "required": True}])
    wf.add_node("answer", "answer", after="pe", answer="city={{#pe.city#}}")
    with llm_server("openai", tool_arguments={"city": "Oslo"}) as server:
        first, requests = await two_turns(wf, server, store, picture)
    assert first.answer == "city=Oslo"
    system, user = requests[1]["messages"]
    assert ("<histories>\nHuman: my invoice is wrong\nAssistant: city=Oslo\n</histories>"
            in system["content"])
    assert user["content"] == [*image_parts(picture),
                               {"type": "text", "text": "Text:\nand this screen?"}]
    assert requests[1]["tool_choice"]["function"]["name"] == "extract_parameters"
