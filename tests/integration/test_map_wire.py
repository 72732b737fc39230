"""Batch runs against the OpenAI-wire test server on 127.0.0.1 (tests/integration/
llm_server.py): the row bound seen by the server, model= routing on the wire, prices."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

import cellwire
from cellwire.services.llm import LLMRouter
from cellwire.services.llm.openai import OpenAIProvider, Timeouts
from cellwire.services.llm.ratelimit import RateLimits
from cellwire.store import open_store

sys.path.insert(0, str(Path(__file__).parent))
from llm_server import llm_server

pytestmark = pytest.mark.timeout(60)


def two_llm_workflow() -> cellwire.Workflow:
    """Two llm nodes naming providers this test has no provider for."""
    wf = cellwire.Workflow("batch-wire")
    wf.add_node("start", "start", variables=[{"variable": "query", "required": True}])
    wf.add_node("draft", "llm", after="start",
                model={"provider": "anthropic", "name": "claude-sonnet-4-5", "mode": "chat"},
                prompt_template=[{"role": "user", "text": "{{#start.query#}}"}])
    wf.add_node("polish", "llm", after="draft",
                model={"provider": "langgenius/mistral/mistral", "name": "large",
                       "mode": "chat"},
                prompt_template=[{"role": "user", "text": "polish {{#draft.text#}}"}])
    wf.add_node("end", "end", after="polish",
                outputs=[{"variable": "text", "value_selector": ["polish", "text"]}])
    return wf


async def test_rows_share_the_provider_and_the_server_sees_at_most_concurrency(tmp_path):
    # Each answer takes a while, so every row the pool admits is on the wire at once.
    with llm_server(latency=0.05) as server:
        provider = OpenAIProvider("openai", base_url=server.base_url, api_key="sk-test",
                                  rate_limits=RateLimits(),
                                  timeouts=Timeouts(connect=2, read=10, first_byte=10))
        runtime = cellwire.Runtime(llm=LLMRouter([provider]))
        df = pd.DataFrame({"query": [f"question {i}" for i in range(16)]})
        out = await two_llm_workflow().amap(df, model="openai/gpt-4o-mini", concurrency=4,
                                            runtime=runtime, store=tmp_path / "runs.db")

        assert (out["status"] == "succeeded").all(), out["error"].tolist()
        assert out["text"].tolist() == [f"echo: polish echo: question {i}" for i in range(16)]
        requests = server.chat_requests()
        assert len(requests) == 32
        # model= sent every llm node of every row to the one model.
        assert {r["model"] for r in requests} == {"gpt-4o-mini"}
        # A row has one call in flight at a time, so the server's peak is the row bound.
        assert server.peak == 4
        # Usage from the server, priced by the price table (gpt-4o-mini is not free).
        assert (out["total_tokens"] > 0).all()
        assert (out["cost"] > 0).all()
        stored = open_store(tmp_path / "runs.db").runs().set_index("run_id")
        assert stored.loc[out["run_id"], "status"].tolist() == ["succeeded"] * 16


async def test_a_server_error_fails_one_row_and_names_its_node(tmp_path):
    with llm_server() as server:
        provider = OpenAIProvider("openai", base_url=server.base_url, api_key="sk-test",
                                  rate_limits=RateLimits(),
                                  timeouts=Timeouts(connect=2, read=10, first_byte=10))
        runtime = cellwire.Runtime(llm=LLMRouter([provider]))
        server.fail("status", status=400, body={"error": {"message": "prompt rejected",
                                                          "type": "invalid_request_error"}})
        out = await two_llm_workflow().amap(
            pd.DataFrame({"query": ["first", "second", "third"]}), concurrency=1,
            model="openai/gpt-4o-mini", runtime=runtime, store=False)
        assert out["status"].tolist() == ["failed", "succeeded", "succeeded"]
        assert "node 'draft'" in out.loc[0, "error"]
        assert "prompt rejected" in out.loc[0, "error"]
        assert out.loc[2, "text"] == "echo: polish echo: third"
