"""Tables as a reader sees them in a notebook: what matters first, rounded, nothing empty.

The dashboards (:mod:`cellwire.jupyter.dashboards`) return the data; the magics show it through
these views. A trace is read node by node (what ran, how it ended, how long, what it cost), so
those columns come first, times are milliseconds from the run's start instead of nanosecond
timestamps, and columns with nothing in them are dropped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

#: The columns a trace is read by, in this order; the rest follow as they come.
TRACE_FIRST = ["node_id", "node_type", "status", "elapsed_ms", "total_tokens", "cost"]

#: Columns that say nothing when every row holds their default.
_QUIET_DEFAULTS: dict[str, object] = {
    "retries": 0, "cache_hit": False, "stale": False, "prompt_tokens": 0,
    "completion_tokens": 0,
}


def readable_trace(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (a trace) ordered for reading: rows in the order nodes started (a container
    before what ran inside it), and node, type, status, time, tokens, cost as the first columns;
    ``start_ms`` (from the run's first node) instead of timestamps; floats rounded; columns
    with nothing in them left out."""
    frame = frame.copy()
    if "started_at" in frame:
        # Start order, not finish order: an agent or an iteration comes before the steps it
        # ran (their rows name it as parent_id). A skipped node never started: its finish.
        when = frame["started_at"].fillna(frame.get("finished_at", frame["started_at"]))
        frame = frame.iloc[when.argsort(kind="stable")]
        started = frame["started_at"]
        origin = started.min()
        frame["start_ms"] = ((started - origin).dt.total_seconds() * 1000).round(1)
        frame = frame.drop(columns=[c for c in ("started_at", "finished_at") if c in frame])
    frame = _drop_empty(frame)
    first = [c for c in (*TRACE_FIRST, "start_ms") if c in frame]
    frame = frame[first + [c for c in frame.columns if c not in first]]
    return rounded(frame).reset_index(drop=True)


def rounded(frame: pd.DataFrame) -> pd.DataFrame:
    """Floats rounded for reading: costs to 6 decimals (a fraction of a cent), the rest to 1."""
    frame = frame.copy()
    for column in frame.columns:
        if frame[column].dtype.kind != "f":
            continue
        frame[column] = frame[column].round(6 if "cost" in str(column) else 1)
    return frame


def _drop_empty(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=[c for c in frame.columns
                               if c not in TRACE_FIRST and _says_nothing(c, frame[c])])


def _says_nothing(column: str, values: pd.Series) -> bool:
    if values.isna().all() or (values.astype(str) == "").all():
        return True
    return column in _QUIET_DEFAULTS and bool((values == _QUIET_DEFAULTS[column]).all())
