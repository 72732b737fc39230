"""A run store another process holds locked: the run waits for it off the event loop and is
stored, or, past the store timeout, says it was not stored (``cellwire run`` exits 3).

The lock is real: a separate Python process holding ``BEGIN EXCLUSIVE`` on the file."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import cellwire
from cellwire.formats import load
from cellwire.jupyter.display import run_text
from cellwire.store import RunStore

WORKFLOW = """\
cellwire: 1
name: echo
nodes:
  - id: start
    type: start
    variables:
      - {variable: name, type: text-input, required: true}
  - id: end
    type: end
    outputs:
      - {variable: name, value_selector: [start, name]}
edges:
  - {source: start, target: end}
"""

LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CELLWIRE_HOME", str(tmp_path / "home"))
    path = tmp_path / "runs.db"
    RunStore(path).close()  # the schema exists, as in any store used before
    return path


@pytest.fixture
def workflow_file(tmp_path: Path) -> Path:
    path = tmp_path / "echo.yaml"
    path.write_text(WORKFLOW)
    return path


@contextmanager
def locked(db: Path, seconds: float) -> Iterator[float]:
    """Another process holds ``db`` locked for ``seconds``; yields when the lock is held."""
    locker = subprocess.Popen([sys.executable, "-c", LOCKER, str(db), str(seconds)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
        yield time.monotonic() + seconds
    finally:
        locker.wait(timeout=seconds + 30)


def cellwire_run(*args: str | Path, env: dict[str, str] | None = None,
                 ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cellwire.cli", "run", *map(str, args)],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})}, check=False)


def stored_status(db: Path, run_id: str) -> str | None:
    with RunStore(db) as store:
        frame = store.runs()
    found = frame[frame["run_id"] == run_id]
    return None if found.empty else found["status"].iloc[0]


def test_cli_waits_for_a_locked_store_and_stores_the_run(db: Path, workflow_file: Path) -> None:
    with locked(db, 3) as unlocked_at:
        done = cellwire_run(workflow_file, "--input", "name=Ada", "--db", db, "--json")
        finished = time.monotonic()
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["status"], result["stored"], result["store_error"]) == ("succeeded", True,
                                                                          None)
    assert finished >= unlocked_at - 0.1  # it waited for the lock rather than giving up
    assert stored_status(db, result["run_id"]) == "succeeded"


def test_cli_exits_3_when_the_store_stays_locked_past_its_timeout(db: Path,
                                                                 workflow_file: Path) -> None:
    with locked(db, 6):
        done = cellwire_run(workflow_file, "--input", "name=Ada", "--db", db, "--json",
                            "--store-timeout", "0.5")
    assert done.returncode == 3, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "succeeded" and result["stored"] is False
    assert str(db) in result["store_error"] and "CELLWIRE_STORE_TIMEOUT" in result["store_error"]
    assert f"error: run {result['run_id']} ran (succeeded) but was not stored" in done.stderr
    assert str(db) in done.stderr and "raise the timeout" in done.stderr
    assert "could not store run" not in done.stderr  # said once, not again as a warning


def test_cli_store_timeout_from_the_environment(db: Path, workflow_file: Path) -> None:
    with locked(db, 6):
        done = cellwire_run(workflow_file, "--input", "name=Ada", "--db", db,
                            env={"CELLWIRE_STORE_TIMEOUT": "0.5"})
    assert done.returncode == 3
    assert "but was not stored" in done.stderr


def test_a_store_timeout_that_is_not_a_number_exits_2(db: Path, workflow_file: Path) -> None:
    done = cellwire_run(workflow_file, "--input", "name=Ada", "--db", db,
                        env={"CELLWIRE_STORE_TIMEOUT": "soon"})
    assert done.returncode == 2
    assert "CELLWIRE_STORE_TIMEOUT='soon' is not a number of seconds" in done.stderr


async def _ticking(work: asyncio.Future[cellwire.RunResult] | asyncio.Task[cellwire.RunResult],
                   ) -> tuple[cellwire.RunResult, float, int]:
    """Await ``work`` while a ticker runs on the same loop; the ticker's longest gap."""
    gaps: list[float] = []

    async def tick() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.02)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    try:
        result = await work
    finally:
        ticker.cancel()
    return result, max(gaps), len(gaps)


async def test_wf_run_waits_for_the_lock_while_the_loop_stays_responsive(
        db: Path, workflow_file: Path) -> None:
    wf = load(workflow_file)
    with locked(db, 2) as unlocked_at:
        store = RunStore(db)
        result, longest_gap, ticks = await _ticking(
            asyncio.create_task(wf.arun(name="Ada", store=store)))
        finished = time.monotonic()
    assert result.ok and result.stored is True
    assert finished >= unlocked_at - 0.1
    # The loop ticked all along: the lock was waited for on the writer thread.
    assert longest_gap < 0.25 and ticks >= 40
    assert store.run(result.run_id)["status"] == "succeeded"
    store.close()


async def test_wf_run_past_the_store_timeout_says_it_was_not_stored(
        db: Path, workflow_file: Path) -> None:
    wf = load(workflow_file)
    with locked(db, 4):
        store = RunStore(db, timeout=0.5)
        with pytest.warns(RuntimeWarning, match="could not store run"):
            result, longest_gap, _ = await _ticking(
                asyncio.create_task(wf.arun(name="Ada", store=store)))
        assert result.ok and result.stored is False
        assert "stayed locked by another connection past the store timeout" in (
            result.store_error or "")
        assert longest_gap < 0.25
        assert "not stored:" in run_text(result)
    store.close()
