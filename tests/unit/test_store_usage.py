"""Usage sums in the run store (store/usage.py): unknown costs are never counted as 0."""

from __future__ import annotations

from pathlib import Path

from cellwire.store import RunStore
from cellwire.store.usage import percentile, workflow_usage


def _run(store: RunStore, run_id: str, workflow: str, status: str, tokens: int,
         cost: float | None, elapsed: float | None) -> None:
    with store._lock:
        store._conn.execute(
            "INSERT INTO runs (run_id, workflow, status, started_at, elapsed_ms, total_tokens, "
            "total_cost) VALUES (?, ?, ?, 0, ?, ?, ?)",
            (run_id, workflow, status, elapsed, tokens, cost))


def test_unpriced_runs_are_counted_apart(tmp_path: Path) -> None:
    with RunStore(tmp_path / "runs.db") as store:
        _run(store, "a", "w", "succeeded", 10, 0.5, 100.0)
        _run(store, "b", "w", "failed", 5, None, 300.0)  # an unpriced model
        _run(store, "c", "w", "partial-succeeded", 1, 0.25, 200.0)
        _run(store, "d", "w", "running", 0, 0.0, None)
        _run(store, "e", "other", "succeeded", 99, 9.0, 1.0)
        [usage] = workflow_usage(store, ["w", "missing"])
    assert (usage.runs, usage.succeeded, usage.failed, usage.total_tokens) == (4, 2, 1, 16)
    assert usage.total_cost == 0.75 and usage.unpriced_runs == 1
    assert (usage.latency_p50_ms, usage.latency_p95_ms) == (200.0, 300.0)
    assert usage.latency_mean_ms == 200.0


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([1.0], 95) == 1.0
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 95)) == (50.0, 95.0)
