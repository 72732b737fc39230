"""A run whose process is gone is shown as `interrupted`, never `running` forever: real
`cellwire run` processes killed with SIGKILL, real store files, and rows that name other
hosts, reboots and reused pids."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import cellwire
from cellwire.jupyter import dashboards
from cellwire.store import RunStore, liveness

SLOW = """\
cellwire: 1
name: slow
nodes:
  - {id: start, type: start}
  - id: wait
    type: code
    code: |
      import time
      def main():
          time.sleep(120)
          return {"done": True}
    outputs: {done: {type: boolean}}
  - {id: end, type: end, outputs: [{variable: done, value_selector: [wait, done]}]}
edges:
  - {source: start, target: wait}
  - {source: wait, target: end}
"""


def cellwire_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cellwire.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=60, check=False)


def wait_for(check, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def running_row(db: Path) -> str | None:
    if not db.exists():
        return None
    try:
        with sqlite3.connect(db) as conn:
            row = conn.execute("SELECT run_id FROM runs WHERE status = 'running'").fetchone()
    except sqlite3.OperationalError:  # the store is being created
        return None
    return row[0] if row else None


@pytest.fixture
def slow_run(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path, str]]:
    """A `cellwire run` process inside its slow node, its store, and its run id."""
    file = tmp_path / "slow.yaml"
    file.write_text(SLOW)
    db = tmp_path / "runs.db"
    proc = subprocess.Popen([sys.executable, "-m", "cellwire.cli", "run", str(file), "--trust",
                             "--db", str(db)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        run_id = wait_for(lambda: running_row(db), "the run's row")
        yield proc, db, run_id
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def listed_status(db: Path, run_id: str) -> str:
    done = cellwire_cli("runs", "--json", "--db", db)
    assert done.returncode == 0, done.stderr
    return {row["run_id"]: row["status"] for row in json.loads(done.stdout)}[run_id]


def test_a_killed_run_shows_as_interrupted_everywhere(slow_run):
    proc, db, run_id = slow_run
    assert listed_status(db, run_id) == "running"
    with RunStore(db) as store:
        assert store.run(run_id)["status"] == "running"
    proc.send_signal(signal.SIGKILL)
    # Not reaped yet: a zombie has exited all the same.
    with RunStore(db) as store:
        wait_for(lambda: store.run(run_id)["status"] == "interrupted", "the zombie to count")
    proc.wait()
    assert listed_status(db, run_id) == "interrupted"
    table = cellwire_cli("runs", "--db", db).stdout.splitlines()
    assert "interrupted" in next(line for line in table if line.startswith(run_id))
    with RunStore(db) as store:
        assert store.run(run_id)["status"] == "interrupted"
        assert store.runs(status="interrupted")["run_id"].tolist() == [run_id]
        assert store.runs(status="running").empty
        # The row itself is left as it was: a resume takes it from there.
        assert sqlite3.connect(db).execute("SELECT status FROM runs").fetchone() == ("running",)
    frame = dashboards.runs(store=db)
    assert frame.set_index("run_id").loc[run_id, "status"] == "interrupted"
    assert dashboards.latency("workflow", store=db).loc["slow", "errors"] == 1


def test_the_owner_is_recorded_when_the_run_starts(slow_run):
    proc, db, run_id = slow_run
    with sqlite3.connect(db) as conn:
        host, boot, pid, start, beat, started = conn.execute(
            "SELECT owner_host, owner_boot, owner_pid, owner_start, heartbeat_at, started_at "
            "FROM runs WHERE run_id = ?", (run_id,)).fetchone()
    assert (host, pid) == (socket.gethostname(), proc.pid)
    assert boot == liveness.this_process().boot
    if Path("/proc/self/stat").exists():
        assert start == liveness._start_ticks(proc.pid) and start is not None
    assert beat >= started


# -- the rules, on rows written as other processes would have --------------------------------


def _row(db: Path, run_id: str, **owner) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(
            "INSERT INTO runs (run_id, workflow, status, started_at, owner_host, owner_boot, "
            "owner_pid, owner_start, heartbeat_at) VALUES (?, 'wf', 'running', ?, ?, ?, ?, ?, ?)",
            (run_id, owner.get("started_at", time.time()), owner.get("host"), owner.get("boot"),
             owner.get("pid"), owner.get("start"), owner.get("beat")))


def test_same_host_rules(tmp_path: Path):
    me = liveness.this_process()
    db = tmp_path / "runs.db"
    store = RunStore(db)
    same = {"host": me.host, "boot": me.boot}
    _row(db, "me", **same, pid=me.pid, start=me.start)
    _row(db, "reused-pid", **same, pid=me.pid, start=(me.start or 0) + 1)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    _row(db, "exited", **same, pid=int(gone.stdout), start=me.start)
    if me.boot is not None:
        rebooted = "0" * 8 + "/" + me.boot.partition("/")[2]
        _row(db, "rebooted", host=me.host, boot=rebooted, pid=me.pid, start=me.start,
             beat=time.time())
        # Same host name and kernel, another pid namespace (a container): by heartbeat.
        other_ns = me.boot.partition("/")[0] + "/pid:[1]"
        _row(db, "container", host=me.host, boot=other_ns, pid=me.pid, start=1,
             beat=time.time())
    shown = dict(zip(*store.runs()[["run_id", "status"]].to_dict("list").values(), strict=True))
    assert shown["me"] == "running"
    if me.start is not None:
        assert shown["reused-pid"] == "interrupted"
    assert shown["exited"] == "interrupted"
    if me.boot is not None:
        assert shown["rebooted"] == "interrupted"
        assert shown["container"] == "running"
    store.close()


def test_other_hosts_and_ownerless_rows_go_by_heartbeat(tmp_path: Path):
    db = tmp_path / "runs.db"
    store = RunStore(db)
    now = time.time()
    stale = liveness.STALE_SECONDS
    _row(db, "fresh", host="elsewhere", pid=1, beat=now - stale / 2, started_at=now - 3 * stale)
    _row(db, "stale", host="elsewhere", pid=1, beat=now - 2 * stale, started_at=now - 3 * stale)
    _row(db, "old-unknown", started_at=now - 2 * stale)
    _row(db, "new-unknown", started_at=now)
    assert {r: store.run(r)["status"] for r in ("fresh", "stale", "old-unknown",
                                                "new-unknown")} == {
        "fresh": "running", "stale": "interrupted", "old-unknown": "interrupted",
        "new-unknown": "running"}
    store.close()


@cellwire.node_type("test-interrupted-hold")
async def _hold(ctx):
    """Waits until the test lets it go (the event in its config's ``gate``)."""
    await _gates[ctx.config.model_extra["gate"]].wait()
    return cellwire.NodeResult(outputs={"ok": True})


_gates: dict[str, asyncio.Event] = {}


async def test_a_long_run_keeps_its_heartbeat_fresh(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(liveness, "HEARTBEAT_SECONDS", 0.05)
    db = tmp_path / "runs.db"
    store = RunStore(db)
    _gates["g"] = asyncio.Event()
    wf = cellwire.Workflow("held")
    wf.add_node("start", "start")
    wf.add_node("hold", "test-interrupted-hold", after="start", gate="g")
    task = asyncio.ensure_future(wf.arun(store=store))

    def beats() -> tuple[float, float] | None:
        with sqlite3.connect(db) as conn:
            row = conn.execute("SELECT started_at, heartbeat_at FROM runs").fetchone()
        return row if row and row[1] > row[0] else None

    started, first = await asyncio.to_thread(wait_for, beats, "a heartbeat")
    later = await asyncio.to_thread(
        wait_for, lambda: (b := beats()) and b[1] > first and b, "another heartbeat")
    assert later[1] > first > started
    _gates["g"].set()
    result = await task
    assert result.ok
    # The run has ended: its heartbeat thread ends too.
    await asyncio.to_thread(wait_for, lambda: store.sink._heartbeat._thread is None,
                            "the heartbeat thread to end")
    store.close()


def test_prune_spares_a_live_run_and_deletes_it_once_interrupted(slow_run):
    proc, db, run_id = slow_run
    spared = cellwire_cli("runs", "prune", "--keep", "0", "--db", db)
    assert spared.returncode == 0, spared.stderr
    assert spared.stdout.startswith("deleted 0 run(s)")
    assert f"kept 1 run(s) still running: {run_id}" in spared.stdout
    assert listed_status(db, run_id) == "running"
    proc.kill()
    proc.wait()
    pruned = cellwire_cli("runs", "prune", "--keep", "0", "--db", db, "--json")
    assert json.loads(pruned.stdout)["run_ids"] == [run_id]
    with RunStore(db) as store:
        assert store.runs().empty
        assert store.pragma("integrity_check") == "ok"
