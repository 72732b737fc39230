"""map(..., client=) on a real Dask LocalCluster on 127.0.0.1 (in-process workers, so custom
node types and the test server are shared with them), with a real SQLite store."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pytest

import cellwire
from cellwire.scale import MapError
from cellwire.services.llm import LLMRouter, Rule, ScriptedProvider
from cellwire.services.llm.openai import OpenAIProvider, Timeouts
from cellwire.services.llm.ratelimit import RateLimits
from cellwire.store import open_store

distributed = pytest.importorskip("distributed")

sys.path.insert(0, str(Path(__file__).parent))
from llm_server import llm_server

pytestmark = pytest.mark.timeout(120)

#: Workers in this process, talking TCP on 127.0.0.1; no dashboard on a fixed port.
LOOPBACK = {"protocol": "tcp", "host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"}


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  **LOOPBACK) as cluster, \
            distributed.Client(cluster) as dask_client:
        yield dask_client


@pytest.fixture
def one_thread():
    """A cluster with one worker thread: one chunk in flight at a time."""
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  **LOOPBACK) as cluster, \
            distributed.Client(cluster) as dask_client:
        yield dask_client


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLWIRE_HOME", str(tmp_path))
    monkeypatch.delenv("CELLWIRE_DEFAULT_MODEL", raising=False)


def echo_workflow() -> cellwire.Workflow:
    wf = cellwire.Workflow("dask-echo")
    wf.add_node("start", "start", variables=[{"variable": "query", "required": True}])
    wf.add_node("llm", "llm", after="start",
                model={"provider": "openai", "name": "gpt-4o", "mode": "chat"},
                prompt_template=[{"role": "user", "text": "Q: {{#start.query#}}"}])
    wf.add_node("end", "end", after="llm",
                outputs=[{"variable": "text", "value_selector": ["llm", "text"]}])
    return wf


# Rows in flight per worker (a worker runs its chunks on its event loop).
_lock = threading.Lock()
_now: dict[str, int] = defaultdict(int)
_peak: dict[str, int] = defaultdict(int)


@cellwire.node_type("t-dask-gauge", outputs=["worker"])
async def _gauged(ctx):
    me = distributed.get_worker().address
    with _lock:
        _now[me] += 1
        _peak[me] = max(_peak[me], _now[me])
    for _ in range(5):
        await asyncio.sleep(0)
    with _lock:
        _now[me] -= 1
    return {"worker": me}


def test_chunks_run_on_the_workers_with_the_row_bound_per_chunk(client):
    _peak.clear()
    wf = cellwire.Workflow("dask-gauge")
    wf.add_node("start", "start", variables=[{"variable": "i", "type": "number"}])
    wf.add_node("g", "t-dask-gauge", after="start")
    wf.add_node("end", "end", after="g",
                outputs=[{"variable": "worker", "value_selector": ["g", "worker"]},
                         {"variable": "i", "value_selector": ["start", "i"]}])
    df = pd.DataFrame({"i": range(48)}, index=[f"r{i}" for i in range(48)])
    seen = []
    out = wf.map(df, client=client, concurrency=3, chunk_size=8, store=False,
                 progress=lambda done, total: seen.append((done, total)))

    assert list(out.index) == list(df.index)
    assert (out["status"] == "succeeded").all(), out["error"].tolist()
    assert out["output.i"].tolist() == list(range(48))
    # Rows ran on both workers, and each worker's chunk held 3 rows at once, never more.
    assert set(out["worker"]) == set(client.scheduler_info()["workers"])
    assert _peak == {worker: 3 for worker in set(out["worker"])}
    # Progress comes per chunk of 8 rows.
    assert seen == [(8 * k, 48) for k in range(1, 7)]


def test_model_routes_every_row_through_a_shipped_runtime_and_rows_are_stored(client,
                                                                              tmp_path):
    provider = ScriptedProvider(rules=[Rule(model="routed", reply="from routed")])
    runtime = cellwire.Runtime(llm=LLMRouter([provider]))
    path = tmp_path / "dask.db"
    df = pd.DataFrame({"query": [f"q{i}" for i in range(10)]})
    out = echo_workflow().map(df, client=client, model="scripted/routed", runtime=runtime,
                              store=open_store(path))

    assert out["text"].tolist() == ["from routed"] * 10
    stored = open_store(path).runs().set_index("run_id")
    assert stored.loc[out["run_id"], "status"].tolist() == ["succeeded"] * 10
    assert set(stored.loc[out["run_id"], "workflow"]) == {"dask-echo"}


def test_rows_reach_the_wire_test_server_from_the_workers(client):
    with llm_server(latency=0.02) as server:
        provider = OpenAIProvider("openai", base_url=server.base_url, api_key="sk-test",
                                  rate_limits=RateLimits(),
                                  timeouts=Timeouts(connect=2, read=10, first_byte=10))
        runtime = cellwire.Runtime(llm=LLMRouter([provider]))
        df = pd.DataFrame({"query": [f"q{i}" for i in range(12)]})
        out = echo_workflow().map(df, client=client, model="openai/gpt-4o-mini",
                                  concurrency=2, chunk_size=3, runtime=runtime, store=False)
        assert out["text"].tolist() == [f"echo: Q: q{i}" for i in range(12)]
        requests = server.chat_requests()
        assert len(requests) == 12
        assert {r["model"] for r in requests} == {"gpt-4o-mini"}
        # Two worker threads, each running a chunk with 2 rows at once.
        assert server.peak <= 4
        assert (out["cost"] > 0).all()


def test_a_failing_row_keeps_the_others(client):
    provider = ScriptedProvider(rules=[Rule(contains="boom", error="refused")])
    runtime = cellwire.Runtime(llm=LLMRouter([provider]))
    df = pd.DataFrame({"query": ["a", "boom", "c", "d", "e"]})
    out = echo_workflow().map(df, client=client, model="scripted/echo", runtime=runtime,
                              chunk_size=2, store=False)
    assert out["status"].tolist() == ["succeeded", "failed", "succeeded", "succeeded",
                                      "succeeded"]
    assert "node 'llm'" in out.loc[1, "error"] and "refused" in out.loc[1, "error"]


def test_on_error_raise_submits_no_more_chunks(one_thread):
    provider = ScriptedProvider(rules=[Rule(contains="boom", error="refused")])
    runtime = cellwire.Runtime(llm=LLMRouter([provider]))
    df = pd.DataFrame({"query": ["a", "boom", "c", "d", "e", "f"]})
    with pytest.raises(MapError, match="row 1 failed at node 'llm'") as caught:
        echo_workflow().map(df, client=one_thread, model="scripted/echo", runtime=runtime,
                            chunk_size=2, concurrency=1, on_error="raise", store=False)
    assert caught.value.frame["status"].tolist() == ["succeeded", "failed", "pending",
                                                     "pending", "pending", "pending"]


def test_a_runtime_that_cannot_be_pickled_is_refused_before_anything_runs(client, tmp_path):
    runtime = cellwire.Runtime(llm=LLMRouter([ScriptedProvider()]))
    runtime.subscribe(open_store(tmp_path / "open.db").sink)
    with pytest.raises(TypeError, match="cannot be sent to Dask workers"):
        echo_workflow().map([{"query": "x"}], client=client, runtime=runtime)
    with pytest.raises(TypeError, match="chunk_size= applies to Dask batches only"):
        echo_workflow().map([{"query": "x"}], chunk_size=2, store=False)


async def test_an_asynchronous_client_in_the_running_loop():
    async with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                        **LOOPBACK,
                                        asynchronous=True) as cluster, \
            distributed.Client(cluster, asynchronous=True) as dask_client:
        df = pd.DataFrame({"query": [f"q{i}" for i in range(6)]})
        out = await echo_workflow().amap(df, client=dask_client, model="scripted/echo",
                                         store=False)
    assert out["text"].tolist() == [f"Q: q{i}" for i in range(6)]


@pytest.mark.slow
def test_worker_processes_run_the_rows_and_store_them_in_one_file(tmp_path):
    """Real worker processes: the job is pickled, cellwire imported there, SQLite shared."""
    path = tmp_path / "procs.db"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  memory_limit="1GiB", **LOOPBACK) as cluster, \
            distributed.Client(cluster) as dask_client:
        df = pd.DataFrame({"query": [f"q{i}" for i in range(20)]})
        out = echo_workflow().map(df, client=dask_client, model="scripted/echo",
                                  chunk_size=5, store=path)
    assert out["text"].tolist() == [f"Q: q{i}" for i in range(20)]
    stored = open_store(path).runs().set_index("run_id")
    assert stored.loc[out["run_id"], "status"].tolist() == ["succeeded"] * 20
