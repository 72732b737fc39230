"""Durable runs in one process: checkpoints in a real store file, versions, resume, sealing."""

from __future__ import annotations

import asyncio
import base64
import os
import sqlite3
import stat
from pathlib import Path

import pytest

import cellwire
from cellwire import NodeError, Workflow
from cellwire.api import arun
from cellwire.durable import NotResumable
from cellwire.model import EnvironmentVariable
from cellwire.store import RunStore
from cellwire.store.codec import BLOB_MIN_CHARS
from cellwire.store.schema import MIGRATIONS, migrate

#: Node ids in the order they ran, per test.
calls: list[str] = []
#: Nodes that fail while in here (a crash stand-in that leaves the process alive).
failing: set[str] = set()
gate: dict[str, asyncio.Event] = {}


@cellwire.node_type("test-ckpt-step")
async def _step(ctx):
    me = ctx.node.id
    calls.append(me)
    if me in gate:
        await gate[me].wait()
    if me in failing:
        raise NodeError("down for now", hint="try again later")
    total = sum(ctx.pool.get([up, "v"], 0) for up in ctx.config.model_extra.get("ups", []))
    return {"v": total + 1, "text": ctx.config.model_extra.get("text", "")}


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELLWIRE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CELLWIRE_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("CELLWIRE_STORE_KEY", raising=False)
    monkeypatch.chdir(tmp_path)
    calls.clear()
    failing.clear()
    gate.clear()


def diamond(text: str = "") -> Workflow:
    """start -> a -> (b | c) -> d -> end."""
    wf = Workflow("diamond")
    wf.add_node("start", "start")
    wf.add_node("a", "test-ckpt-step", after="start", text=text)
    wf.add_node("b", "test-ckpt-step", after="a", ups=["a"])
    wf.add_node("c", "test-ckpt-step", after="a", ups=["a"])
    wf.add_node("d", "test-ckpt-step", after=["b", "c"], ups=["b", "c"])
    wf.add_node("end", "end", after="d", outputs=[
        {"variable": "v", "value_selector": ["d", "v"]},
        {"variable": "text", "value_selector": ["a", "text"]}])
    return wf


def rows(db: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, args).fetchall()


@pytest.mark.parametrize("durability", ["sync", "async"])
async def test_a_failed_run_resumes_with_its_id_and_runs_only_what_had_not_finished(
        tmp_path: Path, durability: str) -> None:
    db = tmp_path / "runs.db"
    failing.add("d")
    first = await arun(diamond(), store=db, durability=durability)
    assert first.status == "failed" and calls == ["a", "b", "c", "d"]
    assert {r[0] for r in rows(db, "SELECT node_id FROM checkpoint_writes")} == \
        {"start", "a", "b", "c"}
    failing.clear()
    calls.clear()
    again = await cellwire.resume(first.run_id, store=db)
    assert again.run_id == first.run_id and again.status == "succeeded"
    assert calls == ["d"] and again.outputs == {"v": 5, "text": ""}
    assert rows(db, "SELECT status FROM runs") == [("succeeded",)]
    # The trace keeps both sessions: the failed d and the one that succeeded.
    assert [r[0] for r in rows(db, "SELECT status FROM node_executions WHERE node_id = 'd' "
                                   "ORDER BY seq")] == ["failed", "succeeded"]
    with pytest.raises(NotResumable, match="already succeeded"):
        await cellwire.resume(first.run_id, store=db)


async def test_each_finished_node_is_committed_while_the_run_goes_on(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    gate["d"] = asyncio.Event()
    handle = cellwire.runner.default_runner().start(diamond(), store=db, durability="sync")
    while "d" not in calls:
        await asyncio.sleep(0.01)
    # Another connection (another process would do the same) sees them committed.
    assert {r[0] for r in rows(db, "SELECT node_id FROM checkpoint_writes")} >= {"a", "b", "c"}
    assert {r[0] for r in rows(db, "SELECT node_id FROM node_executions")} >= {"a", "b", "c"}
    gate["d"].set()
    assert (await handle).ok


async def test_versions_are_stored_once_per_content_and_resume_runs_the_recorded_one(
        tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    wf = diamond("one")
    runs = [await arun(wf, store=db, durability=d) for d in ("async", "exit")]
    failing.add("d")
    wf.nodes["a"].config["text"] = "two"
    changed = await arun(wf, store=db)
    versions = rows(db, "SELECT hash, definition FROM versions")
    assert len(versions) == 2
    by_run = dict(rows(db, "SELECT run_id, version FROM runs"))
    assert by_run[runs[0].run_id] == by_run[runs[1].run_id] != by_run[changed.run_id]
    # The workflow is edited again after the run: the resume still runs what the run ran.
    wf.nodes["a"].config["text"] = "three"
    failing.clear()
    resumed = await cellwire.resume(changed.run_id, store=db)
    assert resumed.outputs["text"] == "two"
    with pytest.raises(NotResumable, match="durability='exit'"):
        await cellwire.resume(runs[1].run_id, store=db)


async def test_a_large_output_is_stored_once_for_the_trace_and_the_checkpoint(
        tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    text = "x" * (BLOB_MIN_CHARS * 2)
    result = await arun(diamond(text), store=db)
    assert result.ok
    # Two distinct large values: a's outputs, and end's (also the run's outputs); each is
    # stored once however many rows (trace, checkpoint, run) hold it.
    assert rows(db, "SELECT count(*) FROM blobs WHERE size > ?", len(text)) == [(2,)]
    (ref,), = rows(db, "SELECT outputs FROM checkpoint_writes WHERE node_id = 'a'")
    (trace_ref,), = rows(db, "SELECT outputs FROM node_executions WHERE node_id = 'a'")
    assert ref == trace_ref and str(ref).startswith("@")


def secret_workflow() -> Workflow:
    """a's outputs hold a header built from the secret TOKEN; d uses it downstream."""
    wf = Workflow("secretive")
    wf.environment.append(EnvironmentVariable(name="TOKEN", value_type="secret"))
    wf.add_node("start", "start")
    wf.add_node("header", "template-transform", after="start", template="Bearer {{ t }}",
                variables=[{"variable": "t", "value_selector": ["env", "TOKEN"]}])
    wf.add_node("d", "test-ckpt-step", after="header")
    wf.add_node("end", "end", after="d", outputs=[
        {"variable": "length", "value_selector": ["header", "output"]}])
    return wf


async def test_a_run_granted_secrets_seals_its_checkpoints_and_needs_the_grant_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "runs.db"
    token = "tok-" + "s3cr3t" * 4
    failing.add("d")
    first = await arun(secret_workflow(), store=db, secrets={"TOKEN": token})
    assert first.status == "failed"
    cellwire.store.open_store(db).flush()
    for path in tmp_path.rglob("runs.db*"):
        assert token.encode() not in path.read_bytes(), path
    key = tmp_path / "config" / "store.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    (sealed,), = rows(db, "SELECT outputs FROM checkpoint_writes WHERE node_id = 'header'")
    assert str(sealed).startswith("!")
    failing.clear()
    with pytest.raises(NotResumable, match="--secret TOKEN"):
        await cellwire.resume(first.run_id, store=db)
    monkeypatch.setenv("CELLWIRE_STORE_KEY",
                       base64.urlsafe_b64encode(os.urandom(32)).decode())
    with pytest.raises(NotResumable, match="another store key"):
        await cellwire.resume(first.run_id, store=db, secrets={"TOKEN": token})
    monkeypatch.delenv("CELLWIRE_STORE_KEY")
    calls.clear()
    resumed = await cellwire.resume(first.run_id, store=db, secrets={"TOKEN": token})
    assert resumed.ok and calls == ["d"]
    # The header was not rebuilt: it came back, whole, from the sealed checkpoint.
    assert resumed.state is not None and \
        resumed.state.pool.get(["header", "output"]) == f"Bearer {token}"
    assert resumed.outputs == {"length": "Bearer ***"}


def test_a_version_4_store_upgrades_in_place(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db, isolation_level=None)
    for number, step in enumerate(MIGRATIONS[:4], start=1):
        step(conn)
        conn.execute(f"PRAGMA user_version = {number}")
    conn.execute("INSERT INTO runs (run_id, workflow, status, started_at) "
                 "VALUES ('old', 'w', 'succeeded', 0)")
    conn.close()
    db.chmod(0o600)
    RunStore(db).close()
    assert rows(db, "PRAGMA user_version") == [(len(MIGRATIONS),)]
    assert rows(db, "SELECT run_id, version FROM runs") == [("old", None)]
    assert rows(db, "SELECT count(*) FROM checkpoint_writes") == [(0,)]
    conn = sqlite3.connect(db, isolation_level=None)
    assert migrate(conn) == len(MIGRATIONS)
    conn.close()


async def test_a_workflow_yaml_cannot_hold_runs_but_records_no_version(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    wf = diamond()
    wf.nodes["a"].config["text"] = object()  # a live Python object: no YAML for it
    with pytest.warns(RuntimeWarning, match="records no version .* node 'a' field 'text'"):
        result = await arun(wf, store=db)
    assert result.stored is True
    assert rows(db, "SELECT version FROM runs") == [(None,)]
    assert rows(db, "SELECT count(*) FROM versions") == [(0,)]
    with pytest.raises(NotResumable, match="keeps no checkpoint"):
        await cellwire.resume(result.run_id, store=db)
