"""One batch three ways against the OpenAI-wire test server on 127.0.0.1 (tests/integration/
llm_server.py): the local pool, a Dask LocalCluster of threads and one of worker processes.
The outputs are equal row for row, and the progress bar and callback count every row."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pandas as pd
import pytest

import cellwire
from cellwire.services.llm import LLMRouter
from cellwire.services.llm.openai import OpenAIProvider, Timeouts
from cellwire.services.llm.ratelimit import RateLimits
from cellwire.store import open_store

distributed = pytest.importorskip("distributed")

sys.path.insert(0, str(Path(__file__).parent))
from llm_server import llm_server

pytestmark = pytest.mark.timeout(180)

LOOPBACK = {"protocol": "tcp", "host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"}
#: The last state of a tqdm bar: ``done/total [...failed=F, cost=$C]``.
BAR = re.compile(r"(\d+)/(\d+) \[[^\]]*failed=(\d+), cost=\$([0-9.]+)")


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLWIRE_HOME", str(tmp_path))
    monkeypatch.delenv("CELLWIRE_DEFAULT_MODEL", raising=False)


def workflow() -> cellwire.Workflow:
    wf = cellwire.Workflow("cluster-echo")
    wf.add_node("start", "start", variables=[{"variable": "query", "required": True}])
    wf.add_node("llm", "llm", after="start",
                model={"provider": "openai", "name": "gpt-4o-mini", "mode": "chat"},
                prompt_template=[{"role": "user", "text": "Q: {{#start.query#}}"}])
    wf.add_node("end", "end", after="llm",
                outputs=[{"variable": "text", "value_selector": ["llm", "text"]}])
    return wf


def runtime(server) -> cellwire.Runtime:
    provider = OpenAIProvider("openai", base_url=server.base_url, api_key="sk-test",
                              rate_limits=RateLimits(),
                              timeouts=Timeouts(connect=2, read=10, first_byte=10))
    return cellwire.Runtime(llm=LLMRouter([provider]))


def last_bar(text: str) -> tuple[int, int, int, float]:
    found = BAR.findall(text)
    assert found, f"no progress bar in {text!r}"
    done, total, failed, cost = found[-1]
    return int(done), int(total), int(failed), float(cost)


# The last row lacks its required input: it fails without reaching the server.
ROWS = pd.DataFrame({"query": [f"q{i}" for i in range(12)] + [None]},
                    index=[f"r{i}" for i in range(13)])
COMPARED = ["query", "text", "status", "total_tokens", "cost"]


def run_three_ways(server, clusters, tmp_path, capsys):
    """The local result, then each cluster's, with the bar's and the callback's counts."""
    server.reply = lambda body: f"answer to {body['messages'][-1]['content']}"
    results = []
    for name, client in [("local", None), *clusters]:
        seen: list[tuple[int, int]] = []
        counted = seen.append
        capsys.readouterr()
        out = workflow().map(ROWS, client=client, runtime=runtime(server), concurrency=3,
                             store=tmp_path / f"{name}.db", progress=True)
        bar = last_bar(capsys.readouterr().err)
        again = workflow().map(ROWS, client=client, runtime=runtime(server), concurrency=3,
                               store=False, progress=lambda d, t, counted=counted: counted((d, t)))
        results.append((name, out, bar, seen, again))
    return results


def check(results, tmp_path):
    local = results[0][1]
    assert local["status"].tolist() == ["succeeded"] * 12 + ["failed"], local["error"].tolist()
    assert "query" in local.loc["r12", "error"]
    assert local.loc["r3", "text"] == "answer to Q: q3"
    for name, out, bar, seen, again in results:
        pd.testing.assert_frame_equal(out[COMPARED], local[COMPARED], obj=name)
        pd.testing.assert_frame_equal(again[COMPARED], local[COMPARED], obj=name)
        # The bar: every row done, one failed, the running cost is the result's cost.
        assert bar[:3] == (13, 13, 1), name
        assert bar[3] == pytest.approx(out["cost"].sum(), abs=1e-4)
        # The callback: counts only grow, and end at every row.
        assert seen[-1] == (13, 13) and [d for d, _ in seen] == sorted(d for d, _ in seen)
        stored = open_store(tmp_path / f"{name}.db").runs().set_index("run_id")
        assert stored.loc[out["run_id"], "status"].tolist() == out["status"].tolist()


def test_local_pool_and_a_thread_cluster_give_the_same_rows(tmp_path, capsys):
    with llm_server() as server, \
            distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                     **LOOPBACK) as cluster, \
            distributed.Client(cluster) as client:
        results = run_three_ways(server, [("threads", client)], tmp_path, capsys)
        # 12 rows with a query, twice each way: every request reached the server.
        assert len(server.chat_requests()) == 12 * 2 * 2
    check(results, tmp_path)


@pytest.mark.slow
def test_worker_processes_give_the_same_rows(tmp_path, capsys):
    with llm_server() as server, \
            distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                     memory_limit="1GiB", **LOOPBACK) as cluster, \
            distributed.Client(cluster) as client:
        # The workers are other processes; the server (and its reply rule) is here.
        results = run_three_ways(server, [("processes", client)], tmp_path, capsys)
        assert len(server.chat_requests()) == 12 * 2 * 2
    check(results, tmp_path)


def test_a_batch_on_the_cluster_resumes_only_its_unfinished_rows(tmp_path):
    import sqlite3

    db = tmp_path / "dask.db"
    with llm_server() as server, \
            distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                     **LOOPBACK) as cluster, \
            distributed.Client(cluster) as client:
        first = workflow().map(ROWS.head(8), client=client, runtime=runtime(server),
                               chunk_size=3, store=db, progress=False)
        assert len(server.chat_requests()) == 8
        # The workers recorded each row's run in the batch: two rows as a crash leaves them.
        with sqlite3.connect(db) as conn:
            conn.executemany("UPDATE runs SET status = 'running' WHERE run_id = ?",
                             [(first.run_id.iloc[2],), (first.run_id.iloc[7],)])
        again = workflow().map(ROWS.head(8), client=client, runtime=runtime(server),
                               chunk_size=3, store=db, progress=False,
                               batch_id=first.attrs["batch_id"])
        asked = [b["messages"][-1]["content"] for b in server.chat_requests()[8:]]
    assert sorted(asked) == ["Q: q2", "Q: q7"]
    pd.testing.assert_frame_equal(again[COMPARED], first[COMPARED])
    kept = [0, 1, 3, 4, 5, 6]
    assert again.run_id.iloc[kept].tolist() == first.run_id.iloc[kept].tolist()
