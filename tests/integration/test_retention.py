"""`cellwire runs prune` and `RunStore.prune`: real runs in real store files; the files'
sizes are measured on disk before and after."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

import cellwire
from cellwire.store import RunStore
from cellwire.store.codec import BLOB_MIN_CHARS
from cellwire.store.retention import parse_duration

DAY = 86400.0


def echo(name: str = "echo") -> cellwire.Workflow:
    wf = cellwire.Workflow(name)
    wf.add_node("start", "start", variables=[{"variable": "text", "type": "paragraph"}])
    wf.add_node("end", "end", after="start",
                outputs=[{"variable": "text", "value_selector": ["start", "text"]}])
    return wf


def run(db: Path, text: str, workflow: str = "echo", **inputs: str) -> str:
    result = echo(workflow).run(text=text, store=db, **inputs)
    assert result.ok and result.stored, result.error
    return result.run_id


def age(db: Path, run_id: str, days: float) -> None:
    """Make a run look as if it started ``days`` ago."""
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE runs SET started_at = started_at - ? WHERE run_id = ?",
                     (days * DAY, run_id))


def count(db: Path, sql: str, *params: object) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).fetchone()[0]


def size(db: Path) -> int:
    return sum(p.stat().st_size for p in (db, db.with_name(db.name + "-wal")) if p.exists())


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cellwire.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=120, check=False,
                          env=dict(os.environ))


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELLWIRE_HOME", str(tmp_path / "home"))


def test_durations():
    assert [parse_duration(d) for d in ("90m", "12h", "30d", "2w", "45s", "1.5h", " 3D ")] == [
        5400, 43200, 30 * DAY, 14 * DAY, 45, 5400, 3 * DAY]
    assert parse_duration(timedelta(hours=2)) == 7200 and parse_duration(60) == 60
    for bad in ("30", "d", "30 days", "-1d", "1e9d"):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)


def test_older_than_deletes_old_runs_their_rows_and_the_values_only_they_used(tmp_path: Path):
    db = tmp_path / "runs.db"
    shared, unique = "A" * (2 * BLOB_MIN_CHARS), "B" * (2 * BLOB_MIN_CHARS)
    old_shared = run(db, shared)
    old_unique = run(db, unique)
    kept = run(db, shared)
    for run_id in (old_shared, old_unique):
        age(db, run_id, 31)
    blobs_before = count(db, "SELECT count(*) FROM blobs")
    with RunStore(db) as store:
        report = store.prune(older_than="30d")
        assert report.runs == 2 and report.deleted["node_executions"] == 4
        assert report.deleted["blobs"] == blobs_before - count(db, "SELECT count(*) FROM blobs")
        assert report.deleted["blobs"] >= 1 and report.spared == ()
        assert set(report.run_ids) == {old_shared, old_unique}
        assert store.runs()["run_id"].tolist() == [kept]
        # The kept run reads back whole: the value it shares with a pruned run is still there.
        assert store.run(kept)["outputs"] == {"text": shared}
        assert store.trace(kept)["outputs"].tolist()[-1] == {"text": shared}
    assert count(db, "SELECT count(*) FROM node_executions WHERE run_id != ?", kept) == 0
    data = [row[0] for row in sqlite3.connect(db).execute("SELECT data FROM blobs")]
    assert any(shared in d for d in data) and not any(unique in d for d in data)
    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_keep_n_from_the_cli_shrinks_the_files_on_disk(tmp_path: Path):
    db = tmp_path / "runs.db"
    ids = [run(db, f"{i:04d}" + "x" * (4 * BLOB_MIN_CHARS)) for i in range(120)]
    before = size(db)
    listed = cli("runs", "prune", "--keep", "10", "--db", db, "--json")
    assert listed.returncode == 0, listed.stderr
    report = json.loads(listed.stdout)
    assert report["deleted"]["runs"] == 110 and report["deleted"]["blobs"] >= 110
    assert set(report["run_ids"]) == set(ids[:110])
    after = size(db)
    assert report["size_before"] >= before // 2 and report["size_after"] == after
    # 110 of 120 runs' values went: the files take a small part of what they took.
    print(f"store files: {before} -> {after} bytes")
    assert after < before / 5, (before, after)
    assert not db.with_name("runs.db-wal").exists() or \
        db.with_name("runs.db-wal").stat().st_size == 0
    with RunStore(db) as store:
        assert store.runs()["run_id"].tolist() == ids[:-11:-1]
        assert store.pragma("integrity_check") == "ok"
        assert store.pragma("freelist_count") == 0
    text = cli("runs", "prune", "--keep", "10", "--db", db)
    assert text.returncode == 0 and text.stdout.startswith("deleted 0 run(s)")


def test_keep_counts_the_whole_store_or_one_workflow(tmp_path: Path):
    db = tmp_path / "runs.db"
    a = [run(db, f"a{i}", workflow="a") for i in range(3)]
    b = [run(db, f"b{i}", workflow="b") for i in range(3)]
    with RunStore(db) as store:
        assert store.prune(keep=2, workflow="a").run_ids == (a[0],)
        assert sorted(store.runs(workflow="b")["run_id"]) == sorted(b)
        # The whole store: the 4 newest stay (b's three and a's newest), a[1] goes.
        assert store.prune(keep=4).run_ids == (a[1],)
        assert set(store.runs()["run_id"]) == {a[2], *b}


def test_both_criteria_must_hold(tmp_path: Path):
    db = tmp_path / "runs.db"
    ids = [run(db, str(i)) for i in range(4)]
    age(db, ids[3], 10)
    with RunStore(db) as store:
        # Beyond the newest 2 (ids[2], ids[1]): ids[0] and ids[3]; of those only ids[3] is
        # older than 5 days.
        assert store.prune(older_than=timedelta(days=5), keep=2).run_ids == (ids[3],)
        assert set(store.runs()["run_id"]) == set(ids[:3])


def test_dry_run_changes_nothing(tmp_path: Path):
    db = tmp_path / "runs.db"
    ids = [run(db, str(i) * (2 * BLOB_MIN_CHARS)) for i in range(3)]
    with RunStore(db) as store:
        store.flush()
        rows = count(db, "SELECT count(*) FROM node_executions")
        blobs = count(db, "SELECT count(*) FROM blobs")
        report = store.prune(keep=1, dry_run=True)
        assert report.dry_run and report.runs == 2 and report.deleted["blobs"] == 2
        assert set(report.run_ids) == set(ids[:2])
        assert len(store.runs()) == 3
    assert (count(db, "SELECT count(*) FROM node_executions"),
            count(db, "SELECT count(*) FROM blobs")) == (rows, blobs)
    shown = cli("runs", "prune", "--keep", "1", "--dry-run", "--db", db)
    assert shown.returncode == 0
    assert shown.stdout.startswith("would delete 2 run(s), 4 node execution(s), 2 stored")
    assert count(db, "SELECT count(*) FROM runs") == 3


def test_conversations_go_with_their_last_run(tmp_path: Path):
    db = tmp_path / "runs.db"
    gone = run(db, "x", **{"sys.conversation_id": "gone"})
    stays_old = run(db, "y", **{"sys.conversation_id": "stays"})
    run(db, "z", **{"sys.conversation_id": "stays"})
    with sqlite3.connect(db) as conn:
        conn.executemany("INSERT INTO conversations VALUES ('echo', ?, '{}', NULL, 0)",
                         [("gone",), ("stays",)])
    age(db, gone, 40)
    age(db, stays_old, 40)
    with RunStore(db) as store:
        report = store.prune(older_than="30d")
        assert report.runs == 2 and report.deleted["conversations"] == 1
    assert [r[0] for r in sqlite3.connect(db).execute(
        "SELECT conversation_id FROM conversations")] == ["stays"]


def test_any_table_keyed_by_run_id_goes_with_its_runs(tmp_path: Path):
    # Later tables (checkpoints, say) are pruned with their runs, and the values they
    # reference stay while they do.
    db = tmp_path / "runs.db"
    old, new = run(db, "old"), run(db, "new")
    big = "C" * (2 * BLOB_MIN_CHARS)
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE extra (run_id TEXT, state TEXT)")
        conn.executemany("INSERT INTO blobs VALUES (?, ?, ?)",
                         [("h-old", len(big), big), ("h-new", len(big), big)])
        conn.executemany("INSERT INTO extra VALUES (?, ?)", [(old, "@h-old"), (new, "@h-new")])
    age(db, old, 2)
    with RunStore(db) as store:
        assert store.prune(older_than="1d").deleted == {
            "extra": 1, "node_executions": 2, "runs": 1, "blobs": 1,
            "checkpoints": 1, "checkpoint_writes": 2}
    assert [r[0] for r in sqlite3.connect(db).execute("SELECT hash FROM blobs")] == ["h-new"]


def test_bad_command_lines(tmp_path: Path):
    db = tmp_path / "runs.db"
    run(db, "x")
    nothing = cli("runs", "prune", "--db", db)
    assert nothing.returncode == 2 and "--older-than DURATION and/or --keep N" in nothing.stderr
    bad = cli("runs", "prune", "--older-than", "30 days", "--db", db)
    assert bad.returncode == 2 and "not a duration" in bad.stderr
    negative = cli("runs", "prune", "--keep", "-1", "--db", db)
    assert negative.returncode == 2
    with RunStore(db) as store, pytest.raises(ValueError, match="say what to prune"):
        store.prune()
    missing = cli("runs", "prune", "--keep", "1", "--db", tmp_path / "none.db")
    assert missing.returncode == 0 and "nothing to prune" in missing.stdout
    assert not (tmp_path / "none.db").exists()
    # `cellwire runs` with its options still lists, as before the subcommand existed.
    listed = cli("runs", "--json", "--db", db, "--limit", "1")
    assert listed.returncode == 0 and len(json.loads(listed.stdout)) == 1
    assert count(db, "SELECT count(*) FROM runs") == 1
