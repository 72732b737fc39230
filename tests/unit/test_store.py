"""The run store: real runs of small workflows, checked against the SQLite file they leave."""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
import time
from pathlib import Path

import pandas as pd
import pytest

import cellwire
import cellwire.store.sink
from cellwire import NodeError, NodeResult, Workflow
from cellwire.api import arun, resolve_store
from cellwire.engine.events import (
    NodeSkipped,
    NodeStarted,
    RunFailed,
    RunStarted,
    RunSucceeded,
)
from cellwire.engine.result import TRACE_COLUMNS
from cellwire.store import RunNotFound, RunStore, home, open_store
from cellwire.store.codec import BLOB_MIN_CHARS
from cellwire.store.writer import StoreError, Write
from cellwire.store.writes import write_nodes


@cellwire.node_type("test-store-pick", handles=["a", "b"])
async def _pick(ctx):
    """A branch that always leaves through handle 'a'."""
    return NodeResult(outputs={"picked": "a"}, handle="a")


@cellwire.node_type("test-store-echo")
async def _echo(ctx):
    """Outputs its config's ``value`` (and its inputs), usage included when asked."""
    value = ctx.config.model_extra.get("value")
    usage = ctx.config.model_extra.get("tokens")
    result = NodeResult(inputs={"value": value}, outputs={"value": value})
    if usage:
        result.usage = cellwire.engine.Usage(prompt_tokens=usage, completion_tokens=1,
                                             total_tokens=usage + 1, cost=0.5)
    return result


@cellwire.node_type("test-store-boom")
async def _boom(ctx):
    raise NodeError("it went boom", field="value", hint="do not go boom")


@cellwire.node_type("test-store-noop")
async def _noop(ctx):
    return None


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test keeps its store in its own temporary home, never in the repository."""
    folder = tmp_path / "home"
    monkeypatch.setenv("CELLWIRE_HOME", str(folder))
    monkeypatch.chdir(tmp_path)
    return folder


def _start(wf: Workflow) -> None:
    wf.add_node("start", "start", variables=[{"variable": "x", "type": "text-input"}])


def branching_workflow() -> Workflow:
    """start -> pick -a-> left (succeeds, with usage) ; pick -b-> right (skipped);
    start -> risky (boom, default-value) ; all -> end."""
    wf = Workflow("branchy")
    _start(wf)
    wf.add_node("pick", "test-store-pick", after="start")
    wf.add_node("left", "test-store-echo", after=[("pick", "a")], value="L", tokens=10)
    wf.add_node("right", "test-store-echo", after=[("pick", "b")], value="R")
    wf.add_node("risky", "test-store-boom", after="start", error_strategy="default-value",
                default_value={"value": "fallback"})
    wf.add_node("end", "end", after=["left", "right", "risky"], outputs=[
        {"variable": "left", "value_selector": ["left", "value"]},
        {"variable": "risky", "value_selector": ["risky", "value"]},
    ])
    return wf


def failing_workflow() -> Workflow:
    wf = Workflow("failing")
    _start(wf)
    wf.add_node("boom", "test-store-boom", after="start")
    wf.add_node("end", "end", after="boom")
    return wf


def _rows(db: Path, sql: str, *params: object) -> list[sqlite3.Row]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def _assert_same_trace(stored: pd.DataFrame, memory: pd.DataFrame) -> None:
    assert list(stored.columns) == TRACE_COLUMNS
    pd.testing.assert_frame_equal(stored, memory)


async def test_pragmas_and_schema_version(_home: Path) -> None:
    store = resolve_store(True)
    assert store.path == _home / "runs.db"
    assert store.pragma("journal_mode") == "wal"
    assert store.pragma("synchronous") == 1  # NORMAL
    assert store.pragma("user_version") >= 1
    tables = {r["name"] for r in _rows(store.path, "SELECT name FROM sqlite_master")}
    assert {"runs", "node_executions", "blobs"} <= tables


async def test_branching_run_with_handled_exception_matches_the_trace(_home: Path) -> None:
    result = await branching_workflow().arun(x="hi")
    assert str(result.status) == "partial-succeeded"
    db = _home / "runs.db"

    [run] = _rows(db, "SELECT * FROM runs")
    assert run["run_id"] == result.run_id
    assert run["workflow"] == "branchy"
    assert run["status"] == "partial-succeeded"
    assert run["exceptions_count"] == 1 == result.exceptions_count
    assert run["total_tokens"] == 11 == result.total_tokens
    assert run["total_cost"] == pytest.approx(result.total_cost)
    assert run["total_steps"] == 5  # start, pick, left, risky, end; right was skipped
    assert run["error"] is None and run["finished_at"] >= run["started_at"]

    nodes = _rows(db, "SELECT * FROM node_executions WHERE run_id = ? ORDER BY seq", result.run_id)
    by_node = {r["node_id"]: r for r in nodes}
    assert by_node["right"]["status"] == "skipped"
    assert by_node["risky"]["status"] == "exception"
    assert "it went boom" in by_node["risky"]["error"]
    assert by_node["pick"]["handle"] == "a"
    assert len(nodes) == len(result.trace) == 6

    store = open_store(db)
    _assert_same_trace(store.trace(result.run_id), result.trace)
    stored = store.run(result.run_id)
    assert stored["outputs"] == result.outputs == {"left": "L", "risky": "fallback"}
    assert stored["inputs"] == {"x": "hi"}
    assert stored["started_at"].tzinfo is not None
    trace = store.trace(result.run_id)
    assert str(trace["started_at"].dt.tz) == "UTC"


async def test_failed_run_names_the_error_and_the_node(_home: Path) -> None:
    result = await failing_workflow().arun(x="hi")
    assert str(result.status) == "failed"
    store = resolve_store(True)
    run = store.run(result.run_id)
    assert run["status"] == "failed"
    assert run["error_node"] == "boom"
    assert "it went boom" in run["error"]
    assert run["error"] == result.error
    trace = store.trace(result.run_id)
    _assert_same_trace(trace, result.trace)
    assert trace.set_index("node_id").loc["boom", "status"] == "failed"


async def test_runs_view_filters_and_orders_newest_first(_home: Path) -> None:
    ids = []
    for _ in range(3):
        ids.append((await branching_workflow().arun(x="a")).run_id)
    ids.append((await failing_workflow().arun(x="b")).run_id)
    frame = cellwire.runs()
    assert list(frame["run_id"]) == ids[::-1]
    assert frame["started_at"].is_monotonic_decreasing
    assert str(frame["started_at"].dt.tz) == "UTC"
    assert list(cellwire.runs(workflow="branchy")["run_id"]) == ids[2::-1]
    assert list(cellwire.runs(status="failed")["run_id"]) == [ids[3]]
    assert list(cellwire.runs(status=cellwire.RunStatus.FAILED)["run_id"]) == [ids[3]]
    assert list(cellwire.runs(limit=2)["run_id"]) == ids[:1:-1]
    assert cellwire.runs(workflow="branchy", status="failed").empty


async def test_cellwire_home_and_current_folder(_home: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    await failing_workflow().arun(x="1")
    assert (_home / "runs.db").exists()
    monkeypatch.delenv("CELLWIRE_HOME")
    assert home() == (tmp_path / ".cellwire").resolve()
    result = await failing_workflow().arun(x="2")
    assert [r["run_id"] for r in _rows(tmp_path / ".cellwire" / "runs.db",
                                       "SELECT run_id FROM runs")] == [result.run_id]
    assert len(_rows(_home / "runs.db", "SELECT run_id FROM runs")) == 1


async def test_store_false_writes_nothing(_home: Path, tmp_path: Path) -> None:
    result = await branching_workflow().arun(x="hi", store=False)
    assert result.ok
    assert not _home.exists()
    assert not (tmp_path / ".cellwire").exists()


async def test_unusable_default_home_warns_and_runs(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CELLWIRE_HOME", str(blocker / "home"))
    with pytest.warns(RuntimeWarning, match="not stored"):
        result = await branching_workflow().arun(x="hi")
    assert result.ok
    with pytest.raises(OSError):
        await branching_workflow().arun(x="hi", store=blocker / "home" / "runs.db")


async def test_store_path_and_store_object(tmp_path: Path, _home: Path) -> None:
    elsewhere = tmp_path / "other" / "my.db"
    result = await branching_workflow().arun(x="hi", store=elsewhere)
    assert open_store(elsewhere).run(result.run_id)["status"] == "partial-succeeded"
    with RunStore(tmp_path / "third.db") as mine:
        result = await arun(branching_workflow(), {"x": "hi"}, store=mine)
        assert mine.runs()["run_id"].tolist() == [result.run_id]
    assert not _home.exists()


async def test_runtime_with_a_store_sink_gets_no_second_copy(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "one.db")
    runtime = cellwire.Runtime()
    runtime.subscribe(store.sink)
    result = await branching_workflow().arun(x="hi", runtime=runtime)
    assert len(store.trace(result.run_id)) == 6
    assert runtime.layers == [store.sink]  # the caller's runtime is left as it was
    store.close()


async def test_given_runtime_is_copied_not_changed(tmp_path: Path) -> None:
    runtime = cellwire.Runtime()
    result = await branching_workflow().arun(x="hi", runtime=runtime, store=tmp_path / "c.db")
    assert runtime.layers == []
    assert len(open_store(tmp_path / "c.db").trace(result.run_id)) == 6


async def test_concurrent_runs_share_one_sink(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "many.db")
    results = await asyncio.gather(
        *[branching_workflow().arun(x=str(i), store=store) for i in range(4)],
        failing_workflow().arun(x="f", store=store),
    )
    for result in results:
        _assert_same_trace(store.trace(result.run_id), result.trace)
        assert store.run(result.run_id)["status"] == str(result.status)
    store.close()


@pytest.mark.parametrize(("durability", "on_disk"), [("exit", 4), ("async", 5)])
async def test_long_runs_write_in_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          durability: str, on_disk: int) -> None:
    """Without checkpoints (exit), rows go in batches; with them, each node's rows are
    committed with its checkpoint, so every finished node is on disk."""
    monkeypatch.setattr(cellwire.store.sink, "FLUSH_ROWS", 2)
    store = RunStore(tmp_path / "batches.db")
    seen: list[int] = []

    def count_rows(event: object) -> None:
        if isinstance(event, NodeStarted) and event.node_id == "end":
            assert store.flush(5)  # the batches are queued; wait for the writer to commit them
            seen.append(len(_rows(store.path, "SELECT 1 FROM node_executions")))

    runtime = cellwire.Runtime(layers=[count_rows])
    result = await branching_workflow().arun(x="hi", store=store, runtime=runtime,
                                             durability=durability)
    assert seen == [on_disk]  # exit: two batches of two were on disk before the run ended
    _assert_same_trace(store.trace(result.run_id), result.trace)
    store.close()


async def test_stopped_run(tmp_path: Path) -> None:
    from cellwire.engine import CompiledWorkflow, Execution

    store = RunStore(tmp_path / "stop.db")
    entered = asyncio.Event()

    @cellwire.node_type("test-store-wait")
    async def _wait(ctx):
        entered.set()
        await asyncio.Event().wait()

    wf = Workflow("stoppable")
    _start(wf)
    wf.add_node("wait", "test-store-wait", after="start")
    execution = Execution(CompiledWorkflow(wf), {"x": "1"},
                          cellwire.Runtime(layers=[store.sink]))
    task = asyncio.create_task(execution.run())
    await entered.wait()
    execution.stop("enough")
    result = await task
    run = store.run(result.run_id)
    assert (run["status"], run["error"]) == ("stopped", "enough")
    trace = store.trace(result.run_id).set_index("node_id")
    assert trace.loc["wait", "status"] == "stopped"
    store.close()


async def test_resumed_run_continues_its_rows(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "resume.db")
    now = time.time()
    sink = store.sink.on_event
    sink(RunStarted(run_id="r1", time=now, workflow="wf", inputs={}))
    sink(NodeSkipped(run_id="r1", time=now, node_id="a", node_type="x"))
    sink(RunFailed(run_id="r1", time=now + 1, error="kernel died", node_id="a"))
    sink(RunStarted(run_id="r1", time=now + 5, workflow="wf", inputs={}, reason="resume"))
    sink(NodeSkipped(run_id="r1", time=now + 6, node_id="b", node_type="x"))
    sink(RunSucceeded(run_id="r1", time=now + 7, outputs={"ok": True}))
    assert store.flush(5)
    run = store.run("r1")
    assert (run["status"], run["error"], run["outputs"]) == ("succeeded", None, {"ok": True})
    assert run["elapsed_ms"] == pytest.approx(7000)
    assert store.trace("r1")["node_id"].tolist() == ["a", "b"]
    store.close()


async def test_rows_are_numbered_from_what_is_stored_after_a_rollback(tmp_path: Path) -> None:
    """The writer's connection remembers each running run's next row number; a transaction
    that rolls back makes it forget, so the next rows follow what is on disk, without a gap."""
    store = RunStore(tmp_path / "seq.db")
    now = time.time()
    sink = store.sink.on_event
    sink(RunStarted(run_id="r1", time=now, workflow="wf", inputs={}))
    sink(NodeSkipped(run_id="r1", time=now, node_id="a", node_type="x"))
    assert store.flush(5)

    def add_a_row_and_fail(conn: sqlite3.Connection) -> None:
        write_nodes(conn, run_id="r1",
                    rows=[NodeSkipped(run_id="r1", time=now, node_id="lost", node_type="x")])
        raise sqlite3.IntegrityError("a write that fails after adding a row")

    failed: concurrent.futures.Future[None] = concurrent.futures.Future()
    store.writer.submit(Write("r1", add_a_row_and_fail, time.monotonic() + 5, "nodes", failed))
    with pytest.raises(StoreError, match="a write that fails"):
        failed.result(5)
    sink(NodeSkipped(run_id="r1", time=now, node_id="b", node_type="x"))
    sink(RunSucceeded(run_id="r1", time=now + 1, outputs={}))
    assert store.flush(5)
    stored = _rows(store.path, "SELECT seq, node_id FROM node_executions WHERE run_id = 'r1' "
                   "ORDER BY seq")
    assert [tuple(row) for row in stored] == [(0, "a"), (1, "b")]
    store.close()


async def test_a_broken_store_warns_but_the_run_goes_on(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "closed.db")
    store.close()
    with pytest.warns(RuntimeWarning, match="could not store run"):
        result = await branching_workflow().arun(x="hi", store=store)
    assert result.ok


async def test_interrupted_run_stays_running(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    store = RunStore(db)
    store.sink.on_event(RunStarted(run_id="r-crashed", time=time.time(), workflow="wf",
                                   inputs={"x": 1}))
    store.close()  # the kernel dies here: no end event ever comes (close drains the queue)
    reopened = RunStore(db)
    run = reopened.run("r-crashed")
    assert run["status"] == "running"
    assert run["finished_at"] is None
    assert run["inputs"] == {"x": 1}
    assert reopened.trace("r-crashed").empty
    assert reopened.runs(status="running")["run_id"].tolist() == ["r-crashed"]
    reopened.close()


async def test_run_lookup_by_prefix_and_unknown_ids(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "ids.db")
    result = await branching_workflow().arun(x="hi", store=store)
    assert store.run(result.run_id[:8])["run_id"] == result.run_id
    with pytest.raises(RunNotFound, match="no stored run"):
        store.run("zzz-not-there")
    with pytest.raises(RunNotFound, match="no stored run"):
        store.trace("")
    store.close()


async def test_odd_and_large_values_are_stored_once(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "values.db")
    big = "y" * (BLOB_MIN_CHARS * 2)
    wf = Workflow("values")
    _start(wf)
    wf.add_node("big", "test-store-echo", after="start", value=big)
    wf.add_node("end", "end", after="big", outputs=[
        {"variable": "big", "value_selector": ["big", "value"]},
        {"variable": "odd", "value_selector": ["start", "x"]},
    ])
    result = await wf.arun(x=object(), store=store)  # not JSON: stored as its str()
    assert result.ok
    # big's inputs and outputs, end's inputs and outputs, the run's outputs: one blob each.
    blobs = _rows(store.path, "SELECT size FROM blobs")
    assert len(blobs) == 2  # {"value": big} and {"big": big, "odd": "<object ...>"}
    run = store.run(result.run_id)
    assert run["outputs"]["big"] == big
    assert run["inputs"]["x"].startswith("<object object")
    trace = store.trace(result.run_id).set_index("node_id")
    assert trace.loc["big", "outputs"] == {"value": big}
    assert trace.loc["end", "inputs"]["big"] == big
    store.close()


async def test_schema_newer_than_this_cellwire_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "future.db"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    with pytest.raises(cellwire.store.SchemaTooNew, match="upgrade cellwire"):
        RunStore(db)


def test_blocking_run_inside_a_loop_uses_the_cached_store(_home: Path) -> None:
    async def from_a_notebook() -> str:
        # run() hops to a helper thread here: the cached store must work from there too.
        return branching_workflow().run(x="hi").run_id

    run_id = asyncio.run(from_a_notebook())
    assert resolve_store(True).run(run_id)["status"] == "partial-succeeded"
    assert resolve_store(True) is resolve_store(True)


def _chain(n: int) -> Workflow:
    wf = Workflow("chain")
    wf.add_node("start", "start")
    prev = "start"
    for i in range(n):
        wf.add_node(f"n{i}", "test-store-noop", after=prev)
        prev = f"n{i}"
    wf.add_node("end", "end", after=prev)
    return wf


async def test_overhead_per_node_store_on_and_off(tmp_path: Path) -> None:
    """Measures, never asserts, timing: the numbers go to the report."""
    from cellwire.engine import CompiledWorkflow, Execution, Runtime

    n, repeats = 200, 20
    compiled = CompiledWorkflow(_chain(n))
    store = RunStore(tmp_path / "bench.db")

    async def best(with_store: bool) -> float:
        times = []
        for _ in range(repeats):
            runtime = Runtime(layers=[store.sink] if with_store else [])
            t0 = time.perf_counter()
            result = await Execution(compiled, {}, runtime).run()
            times.append(time.perf_counter() - t0)
            assert result.ok
        return min(times) / (n + 2) * 1e6

    await best(True)  # warm up
    off, on = await best(False), await best(True)
    print(f"\nper node, {n}-node chain: store off {off:.1f} us, store on {on:.1f} us, "
          f"store cost {on - off:.1f} us")
    assert len(store.trace(store.runs(limit=1)["run_id"][0])) == n + 2
    store.close()
