"""Stored rows as pandas DataFrames and dicts, times as UTC datetimes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cellwire.engine.result import TRACE_COLUMNS, trace_frame

from .codec import from_json
from .schema import NODE_JSON, RUN_COLUMNS, RUN_JSON

if TYPE_CHECKING:
    import pandas as pd

_RUN_JSON_AT = [RUN_COLUMNS.index(c) for c in RUN_JSON]
_NODE_JSON_AT = [TRACE_COLUMNS.index(c) for c in NODE_JSON]


def _decoded(row: Sequence[Any], json_at: list[int], blobs: Mapping[str, str]) -> list[Any]:
    values = list(row)
    for i in json_at:
        values[i] = from_json(values[i], blobs)
    return values


def trace_frame_from_rows(rows: Sequence[Sequence[Any]], blobs: Mapping[str, str]) -> pd.DataFrame:
    """Rows selected in ``TRACE_COLUMNS`` order, as :attr:`RunResult.trace` builds them."""
    return trace_frame(
        [dict(zip(TRACE_COLUMNS, _decoded(r, _NODE_JSON_AT, blobs), strict=True)) for r in rows]
    )


def runs_frame(rows: Sequence[Sequence[Any]], blobs: Mapping[str, str]) -> pd.DataFrame:
    """Rows selected in ``RUN_COLUMNS`` order; started_at / finished_at become UTC datetimes."""
    import pandas as pd

    frame = pd.DataFrame([_decoded(r, _RUN_JSON_AT, blobs) for r in rows], columns=RUN_COLUMNS)
    for column in ("started_at", "finished_at"):
        frame[column] = pd.to_datetime(frame[column], unit="s", utc=True)
    return frame


def run_dict(row: Sequence[Any], blobs: Mapping[str, str]) -> dict[str, Any]:
    """One run as a dict; times are timezone-aware UTC datetimes."""
    run = dict(zip(RUN_COLUMNS, _decoded(row, _RUN_JSON_AT, blobs), strict=True))
    for key in ("started_at", "finished_at"):
        if run[key] is not None:
            run[key] = datetime.fromtimestamp(run[key], tz=UTC)
    return run
