"""Whether the process that runs a ``running`` run is still there.

A run's row records its owner when it starts: the host name, the kernel's boot id and pid
namespace, the pid and the process's start time (clock ticks since boot, from ``/proc``), and a
heartbeat that the owner refreshes every :data:`HEARTBEAT_SECONDS` while the run lasts. A
reader decides:

- **same host** (same host name, boot id and pid namespace): the run is alive while a process
  with that pid and that start time exists and is not a zombie; a pid since reused by another
  process means it is gone;
- **same host name, another boot id**: the machine restarted since; the run is gone;
- **another host** (or another pid namespace: a container that shares the host's name), or a
  row that names no owner (stored before owners were recorded): the run is alive while its
  heartbeat (else its start) is younger than :data:`STALE_SECONDS`.

A ``running`` run whose owner is gone reads as ``interrupted``. Nothing is written on reading:
the row keeps ``running`` until its run is resumed (or pruned).
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import writer
from .writer import Write

if TYPE_CHECKING:
    from .sqlite import RunStore

#: Seconds between two heartbeats of a process's running runs.
HEARTBEAT_SECONDS = 30.0
#: A run on another host whose heartbeat is older than this reads as interrupted (five
#: heartbeats missed: a store locked for a while or clocks a little apart do not trip it).
STALE_SECONDS = 150.0

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


@dataclass(frozen=True, slots=True)
class Owner:
    """The process that runs a run. ``boot`` is ``<boot id>/<pid namespace>``; it and
    ``start`` are None where ``/proc`` is not."""

    host: str
    boot: str | None
    pid: int
    start: int | None


@functools.cache
def _owner_of(pid: int) -> Owner:
    return Owner(socket.gethostname(), _boot_id(), pid, _start_ticks(pid))


def this_process() -> Owner:
    """This process as the owner of the runs it starts (cached per pid: forks differ)."""
    return _owner_of(os.getpid())


def _boot_id() -> str | None:
    try:
        boot = _BOOT_ID.read_text().strip()
    except OSError:
        return None
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return f"{boot}/{namespace}"


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name; None: no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return []
    # The command name is in parentheses and may itself hold spaces or parentheses.
    return text[text.rfind(")") + 2:].split()


def _start_ticks(pid: int) -> int | None:
    fields = _stat(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def _pid_alive(pid: int, start: int | None) -> bool:
    if Path("/proc/self/stat").exists():
        fields = _stat(pid)
        if fields is None:
            return False
        if not fields:
            return True  # unreadable: assume it is there, never call a live run dead
        # A zombie has exited (SIGKILL, say) and only waits for its parent to reap it.
        if fields[0] in ("Z", "X"):
            return False
        return start is None or len(fields) <= 19 or int(fields[19]) == start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_alive(host: str | None, boot: str | None, pid: int | None, start: int | None,
                heartbeat_at: float | None, started_at: float | None, *,
                now: float | None = None) -> bool:
    """Whether the owner recorded in a ``running`` row still runs it (the module's rules)."""
    me = this_process()
    if pid is not None and host == me.host:
        if boot == me.boot:
            return _pid_alive(pid, start)
        if boot is not None and me.boot is not None and \
                boot.partition("/")[0] != me.boot.partition("/")[0]:
            return False  # the machine restarted since the run started
    beat = heartbeat_at if heartbeat_at is not None else started_at
    if beat is None:
        return False
    return (time.time() if now is None else now) - beat < STALE_SECONDS


def status_of(status: str, host: str | None, boot: str | None, pid: int | None,
              start: int | None, heartbeat_at: float | None, started_at: float | None) -> str:
    """The status a stored run shows: ``interrupted`` for a ``running`` row whose owner is
    gone, else the stored status."""
    if status == "running" and not owner_alive(host, boot, pid, start, heartbeat_at,
                                               started_at):
        return "interrupted"
    return status


class Heartbeat:
    """Refreshes ``heartbeat_at`` of this process's running runs in one store, from a daemon
    thread; one write per beat for all of them. The thread outlives the last run by
    :data:`~cellwire.store.writer.IDLE_SECONDS`, so back-to-back runs (a batch's rows, a
    benchmark) do not start a thread each."""

    def __init__(self, store: RunStore):
        self.store = store
        self._live: set[str] = set()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._pending: concurrent.futures.Future[None] | None = None

    def add(self, run_id: str) -> None:
        with self._cond:
            self._live.add(run_id)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._beat, daemon=True,
                    name=f"cellwire-heartbeat {self.store.path}")
                self._thread.start()

    def discard(self, run_id: str) -> None:
        with self._cond:
            self._live.discard(run_id)
            if not self._live:
                self._cond.notify()  # from the beat's wait to the idle one

    def _beat(self) -> None:
        # A run's start writes its first heartbeat_at: the first beat is one period later.
        while True:
            with self._cond:
                if self._live:
                    self._cond.wait(HEARTBEAT_SECONDS)
                else:
                    self._cond.wait(writer.IDLE_SECONDS)
                    if not self._live:
                        self._thread = None
                        return
                    continue
                live = sorted(self._live)
            if not live or (self._pending is not None and not self._pending.done()):
                continue  # no run left, or the store is locked: one queued beat is enough
            self._pending = concurrent.futures.Future()
            try:
                self.store.writer.submit(Write(
                    "", functools.partial(_write_beat, run_ids=live, at=time.time()),
                    time.monotonic() + HEARTBEAT_SECONDS, "heartbeat", self._pending))
            except RuntimeError:  # the store was closed: its runs cannot beat any more
                with self._cond:
                    self._live.clear()
                    self._thread = None
                return


def _write_beat(conn: sqlite3.Connection, run_ids: list[str], at: float) -> None:
    conn.executemany("UPDATE runs SET heartbeat_at = ? WHERE run_id = ? AND status = 'running'",
                     [(at, run_id) for run_id in run_ids])


__all__ = ["HEARTBEAT_SECONDS", "STALE_SECONDS", "Heartbeat", "Owner", "owner_alive",
           "status_of", "this_process"]
