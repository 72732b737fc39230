"""Retention: delete old runs from a store, then give the space back to the disk.

:func:`prune` deletes the runs it is asked to (older than a duration, beyond the newest N, or
both), everything keyed by their run id (node executions, and any other table with a
``run_id`` column), the conversation variables of conversations no run is left of, and then
every blob no row references any more. A run still running in a live process is never
deleted (:mod:`cellwire.store.liveness`); an interrupted one is. The deletion is one
transaction; then ``VACUUM`` rewrites the file without the freed pages, and
``wal_checkpoint(TRUNCATE)`` before and after it empties the write-ahead log, so the sizes of
both files really go down. ``VACUUM`` holds the write lock while it copies the database and
needs as much free disk as the pruned database takes.
"""

from __future__ import annotations

import math
import re
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from .codec import BLOB_PREFIX
from .liveness import owner_alive

#: A duration as ``prune`` takes it: seconds, a timedelta, or text such as ``30d``.
Duration = float | int | timedelta | str

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)


def parse_duration(value: Duration) -> float:
    """Seconds in ``value``: a number of seconds, a timedelta, or a number followed by one of
    s, m, h, d, w (``90m``, ``12h``, ``30d``, ``1.5h``)."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(f"{value!r} is not a duration; write a number and a unit: "
                             "90m, 12h, 30d (s, m, h, d or w)")
        seconds = float(match[1]) * _UNITS[match[2].lower()]
    else:
        seconds = float(value)
    if not seconds >= 0 or math.isinf(seconds):  # also refuses NaN
        raise ValueError(f"a duration must be a finite number of seconds >= 0, not {value!r}")
    return seconds


@dataclass(frozen=True, slots=True)
class PruneReport:
    """What :func:`prune` deleted (or would delete, with ``dry_run``) and the file sizes."""

    #: Rows deleted per table: runs, node_executions, conversations, blobs, and any other
    #: table keyed by run id.
    deleted: dict[str, int]
    #: Runs that matched but run in a live process, so were kept.
    spared: tuple[str, ...]
    #: Bytes of the database file and its write-ahead log, before and after.
    size_before: int
    size_after: int
    dry_run: bool
    #: True when a reader in another process kept the write-ahead log from being emptied;
    #: its space comes back at a later checkpoint.
    wal_busy: bool = False
    run_ids: tuple[str, ...] = field(default=(), repr=False)

    @property
    def runs(self) -> int:
        """How many runs were deleted."""
        return self.deleted.get("runs", 0)

    def as_dict(self) -> dict[str, object]:
        return {"dry_run": self.dry_run, "deleted": dict(self.deleted),
                "spared": list(self.spared), "size_before": self.size_before,
                "size_after": self.size_after, "wal_busy": self.wal_busy,
                "run_ids": list(self.run_ids)}


def prune(path: str | Path, *, older_than: Duration | None = None, keep: int | None = None,
          workflow: str | None = None, dry_run: bool = False,
          timeout: float = 300.0) -> PruneReport:
    """Delete the runs of the store at ``path`` that started more than ``older_than`` ago
    and/or are not among the ``keep`` newest, then shrink the file.

    ``keep`` counts the runs of the whole store, or of ``workflow`` when it is given
    (``workflow`` also limits ``older_than`` to that workflow's runs); with both criteria a
    run must meet both to go. ``dry_run`` reports what would go and changes nothing. Waits up
    to ``timeout`` seconds for a database another process holds locked.
    """
    if older_than is None and keep is None:
        raise ValueError("say what to prune: older_than (e.g. '30d') and/or keep (a count)")
    if keep is not None and (isinstance(keep, bool) or int(keep) != keep or keep < 0):
        raise ValueError(f"keep must be a whole number of runs >= 0, not {keep!r}")
    cutoff = None if older_than is None else time.time() - parse_duration(older_than)
    path = Path(path)
    before = _size(path)
    conn = sqlite3.connect(path, isolation_level=None, timeout=timeout)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            ids, spared = _chosen(conn, cutoff, keep, workflow)
            deleted = _delete(conn, ids)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("ROLLBACK" if dry_run else "COMMIT")
        busy = False
        if not dry_run and (ids or conn.execute("PRAGMA freelist_count").fetchone()[0]):
            busy = _shrink(conn)
    finally:
        conn.close()
    return PruneReport(deleted, tuple(spared), before, _size(path), dry_run, busy, tuple(ids))


def _chosen(conn: sqlite3.Connection, cutoff: float | None, keep: int | None,
            workflow: str | None) -> tuple[list[str], list[str]]:
    """The runs to delete, and the live runs spared among those that matched."""
    where: list[str] = []
    params: list[str | float | int] = []
    if workflow is not None:
        where.append("workflow = ?")
        params.append(workflow)
    if cutoff is not None:
        where.append("started_at < ?")
        params.append(cutoff)
    sql = ("SELECT run_id, status, owner_host, owner_boot, owner_pid, owner_start, "
           "heartbeat_at, started_at FROM runs")
    if keep is not None:
        # The newest `keep` of the scope stay whatever their age.
        scope = "WHERE workflow = ?" if workflow is not None else ""
        where.append(f"run_id NOT IN (SELECT run_id FROM runs {scope} "
                     "ORDER BY started_at DESC, rowid DESC LIMIT ?)")
        params.extend([workflow, keep] if workflow is not None else [keep])
    if where:
        sql += " WHERE " + " AND ".join(where)
    ids: list[str] = []
    spared: list[str] = []
    for run_id, status, host, boot, pid, start, beat, started_at in conn.execute(sql, params):
        if status == "running" and owner_alive(host, boot, pid, start, beat, started_at):
            spared.append(run_id)
        else:
            ids.append(run_id)
    return ids, spared


def _delete(conn: sqlite3.Connection, ids: list[str]) -> dict[str, int]:
    deleted: dict[str, int] = {}
    if ids:
        conn.execute("CREATE TEMP TABLE pruned (run_id TEXT PRIMARY KEY)")
        conn.executemany("INSERT OR IGNORE INTO temp.pruned VALUES (?)", [(i,) for i in ids])
        # Children first, the runs last; any table keyed by run id goes with its runs.
        tables = [t for t in _tables(conn) if t != "runs" and "run_id" in _columns(conn, t)]
        for table in [*tables, "runs"]:
            deleted[table] = conn.execute(
                f'DELETE FROM "{table}" WHERE run_id IN (SELECT run_id FROM temp.pruned)'
            ).rowcount
        # A conversation's variables go once no run of it is left.
        deleted["conversations"] = conn.execute(
            "DELETE FROM conversations WHERE NOT EXISTS (SELECT 1 FROM runs WHERE "
            "runs.workflow = conversations.workflow AND "
            "runs.conversation_id = conversations.conversation_id)").rowcount
        conn.execute("DROP TABLE temp.pruned")
    deleted["blobs"] = _collect_blobs(conn)
    return {table: count for table, count in deleted.items() if count}


def _collect_blobs(conn: sqlite3.Connection) -> int:
    """Delete the blobs no row references: a reference is a whole ``@<hash>`` text value in
    any text column of any table (codec.py), so a new table's packed columns count too."""
    refs = []
    for table in _tables(conn):
        if table == "blobs":
            continue
        for column, kind in _columns(conn, table).items():
            if kind == "" or "TEXT" in kind or "CHAR" in kind or "CLOB" in kind:
                refs.append(f'SELECT substr("{column}", {len(BLOB_PREFIX) + 1}) FROM "{table}" '
                            f'WHERE "{column}" LIKE \'{BLOB_PREFIX}%\'')
    if not refs:
        return int(conn.execute("DELETE FROM blobs").rowcount)
    return int(conn.execute(
        f"DELETE FROM blobs WHERE hash NOT IN ({' UNION '.join(refs)})").rowcount)


def _tables(conn: sqlite3.Connection) -> list[str]:
    return [row[0] for row in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name")]


def _columns(conn: sqlite3.Connection, table: str) -> dict[str, str]:
    return {row[1]: str(row[2]).upper() for row in conn.execute(f'PRAGMA table_info("{table}")')}


def _shrink(conn: sqlite3.Connection) -> bool:
    """Empty the log into the file, rewrite the file without free pages, and empty the log
    again (VACUUM in WAL mode writes through it); True when a reader kept it from emptying."""
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("VACUUM")
    busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
    return bool(busy)


def _size(path: Path) -> int:
    total = 0
    for file in (path, path.with_name(path.name + "-wal")):
        try:
            total += file.stat().st_size
        except FileNotFoundError:
            pass
    return total


__all__ = ["Duration", "PruneReport", "parse_duration", "prune"]
