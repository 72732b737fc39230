"""Monitoring from the run store: traces, runs, costs and latency as DataFrames, and charts.

Every number is read from the store (``store=``: a :class:`RunStore`, a path, or the default
store at ``$CELLWIRE_HOME/runs.db``). Charts are matplotlib Figures, so they show as images
and stay in exported notebooks.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, Literal

from cellwire.engine import RunResult
from cellwire.store import RunStore, default_store, open_store

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

StoreArg = RunStore | str | os.PathLike[str] | None
CostBy = Literal["model", "node", "node_type", "workflow", "day"]
LatencyBy = Literal["node", "node_type", "model", "workflow"]

TRACE_VIEW = [
    "node_id", "node_type", "title", "status", "parent_id", "round", "started_at",
    "finished_at", "elapsed_ms", "retries", "cache_hit", "stale", "model", "prompt_tokens",
    "completion_tokens", "total_tokens", "cost", "error",
]
_FAILED = ("failed", "exception")


def _store(store: StoreArg) -> RunStore:
    if store is None:
        return default_store()
    return store if isinstance(store, RunStore) else open_store(store)


def _model(metadata: Any) -> str | None:
    return metadata.get("model") if isinstance(metadata, dict) else None


def _cache_hit(metadata: Any) -> bool:
    return bool(isinstance(metadata, dict) and (metadata.get("cache_hit")
                                                or metadata.get("cached")))


def _stale(metadata: Any) -> bool:
    """The node ran because it changed since the last run (``--stale``)."""
    return bool(isinstance(metadata, dict) and metadata.get("stale"))


def _with_derived(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame["model"] = frame["metadata"].map(_model)
    frame["cache_hit"] = frame["metadata"].map(_cache_hit)
    frame["stale"] = frame["metadata"].map(_stale)
    return frame


def trace(run: RunResult | str | None = None, *, store: StoreArg = None,
          full: bool = False) -> pd.DataFrame:
    """A row per node execution of ``run`` (a result, a run id or its prefix; default: the
    newest stored run): status, times, latency, retries, cache hit, whether it ran because it
    was stale (``--stale``), model, tokens, cost.

    ``full=True`` keeps every stored column (inputs, outputs, process data, metadata).
    """
    source = _store(store)
    if run is None:
        newest = source.runs(limit=1)
        if newest.empty:
            raise LookupError(f"no runs in {source.path}; run a workflow first")
        run = str(newest["run_id"].iloc[0])
    run_id = run.run_id if isinstance(run, RunResult) else run
    try:
        frame = source.trace(run_id)
    except KeyError:
        if not isinstance(run, RunResult):
            raise
        frame = run.trace  # a run made with store=False
    frame = _with_derived(frame)
    return frame if full else frame[TRACE_VIEW]


#: What :func:`compare` puts side by side for each node execution.
COMPARED = ("status", "outputs", "error", "elapsed_ms", "total_tokens", "cost", "model")


def compare(run_a: RunResult | str, run_b: RunResult | str, *,
            store: StoreArg = None) -> pd.DataFrame:
    """Two runs side by side, a row per node execution (a node inside an iteration or loop
    has a row per time it ran, matched in order): each of :data:`COMPARED` as ``<name>_a``
    and ``<name>_b``, and ``same_outputs``/``same_status`` saying where they differ.

    ``run_a`` and ``run_b`` are results or stored run ids (a prefix will do), e.g. a run and
    its replay with an edited prompt.
    """
    a, b = (_keyed(trace(run, store=store, full=True)) for run in (run_a, run_b))
    merged = a.merge(b, on=["node_id", "occurrence"], how="outer", suffixes=("_a", "_b"),
                     sort=False, indicator=True)
    merged["node_type"] = merged["node_type_a"].fillna(merged["node_type_b"])
    merged["title"] = merged["title_a"].fillna(merged["title_b"])
    merged["same_status"] = merged["status_a"] == merged["status_b"]
    merged["same_outputs"] = [
        kind == "both" and _canonical(x) == _canonical(y)
        for x, y, kind in zip(merged["outputs_a"], merged["outputs_b"], merged["_merge"],
                              strict=True)
    ]
    columns = ["node_id", "occurrence", "node_type", "title", "same_status", "same_outputs"]
    for name in COMPARED:
        columns += [f"{name}_a", f"{name}_b"]
    order = merged["order_a"].fillna(merged["order_b"] + len(a))
    return merged.assign(_order=order).sort_values("_order")[columns].reset_index(drop=True)


def _keyed(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.reset_index(drop=True)
    frame["occurrence"] = frame.groupby("node_id").cumcount()
    frame["order"] = range(len(frame))
    keep = ["node_id", "occurrence", "order", "node_type", "title", *COMPARED]
    return frame[keep]


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def runs(limit: int | None = None, workflow: str | None = None, status: str | None = None, *,
         store: StoreArg = None) -> pd.DataFrame:
    """Stored runs, newest first; a run whose process died shows as ``interrupted``."""
    return _store(store).runs(limit=limit, workflow=workflow, status=status)


def node_executions(workflow: str | None = None, *, store: StoreArg = None,
                    limit: int | None = None) -> pd.DataFrame:
    """Every stored node execution (skipped nodes left out) with its run's workflow and day."""
    import pandas as pd

    source = _store(store)
    run_frame = source.runs(limit=limit, workflow=workflow)
    frames = []
    for run_id, name in zip(run_frame["run_id"], run_frame["workflow"], strict=True):
        frame = source.trace(run_id)
        frame["workflow"] = name
        frames.append(frame)
    if not frames:
        from cellwire.engine.result import TRACE_COLUMNS

        empty = pd.DataFrame(columns=[*TRACE_COLUMNS, "workflow"])
        return _with_derived(empty).assign(day=pd.Series(dtype="object"))
    frame = pd.concat(frames, ignore_index=True)
    frame = frame[frame["status"] != "skipped"]
    frame = _with_derived(frame)
    frame["day"] = frame["started_at"].dt.strftime("%Y-%m-%d")
    return frame.reset_index(drop=True)


_KEYS = {"model": "model", "node": "node_id", "node_type": "node_type",
         "workflow": "workflow", "day": "day"}


def _key(by: str, allowed: tuple[str, ...]) -> str:
    if by not in allowed:
        raise ValueError(f"by={by!r}: choose one of {', '.join(allowed)}")
    return _KEYS[by]


def costs(by: CostBy = "model", *, workflow: str | None = None,
          store: StoreArg = None) -> pd.DataFrame:
    """Tokens and cost summed by model, node, node type, workflow or day; costliest first.

    Columns: runs (distinct runs), calls (node executions), prompt/completion/total tokens,
    cost. Executions without a model (code, templates) count under model ``None`` -> "-".
    """
    key = _key(by, ("model", "node", "node_type", "workflow", "day"))
    frame = node_executions(workflow, store=store)
    frame[key] = frame[key].fillna("-")
    grouped = frame.groupby(key, sort=False).agg(
        runs=("run_id", "nunique"), calls=("node_id", "size"),
        prompt_tokens=("prompt_tokens", "sum"), completion_tokens=("completion_tokens", "sum"),
        total_tokens=("total_tokens", "sum"), cost=("cost", "sum"),
    )
    return grouped.sort_values(["cost", "total_tokens"], ascending=False)


def latency(by: LatencyBy = "node", *, workflow: str | None = None,
            store: StoreArg = None) -> pd.DataFrame:
    """Latency in ms (mean, p50, p95, p99, max) and error rate by node, node type, model or,
    for whole runs, workflow. Errors are failed or exception executions (failed, stopped or
    interrupted runs; an interrupted run has no latency, only an error)."""
    key = _key(by, ("node", "node_type", "model", "workflow"))
    if by == "workflow":
        frame = runs(workflow=workflow, store=store)
        frame = frame[frame["status"] != "running"].assign(
            failed=lambda f: f["status"].isin(("failed", "stopped", "interrupted")),
            # All None (only interrupted runs) would be an object column, with no quantiles.
            elapsed_ms=lambda f: f["elapsed_ms"].astype(float))
    else:
        frame = node_executions(workflow, store=store)
        frame[key] = frame[key].fillna("-")
        frame = frame.assign(failed=frame["status"].isin(_FAILED))
    grouped = frame.groupby(key, sort=False)
    ms = grouped["elapsed_ms"]
    out = ms.size().to_frame("count")
    out["errors"] = grouped["failed"].sum().astype(int)
    out["error_rate"] = out["errors"] / out["count"]
    out["mean_ms"] = ms.mean()
    out["p50_ms"] = ms.quantile(0.50)
    out["p95_ms"] = ms.quantile(0.95)
    out["p99_ms"] = ms.quantile(0.99)
    out["max_ms"] = ms.max()
    return out.sort_values("p95_ms", ascending=False)


# -- charts ----------------------------------------------------------------------------------


def _figure(width: float, height: float) -> tuple[Figure, Any]:
    from matplotlib.figure import Figure

    # A bare Figure, not pyplot: it is shown once (as the cell's value), never twice.
    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot()


def timeline(run: RunResult | str | None = None, *, store: StoreArg = None) -> Figure:
    """A waterfall of the run's node spans: a bar per execution from its start to its end,
    so parallel branches show as overlapping bars."""
    import pandas as pd

    from .display import STATUS_COLORS

    frame = trace(run, store=store)
    frame = frame[frame["status"] != "skipped"].dropna(subset=["started_at"])
    frame = frame.sort_values("started_at").reset_index(drop=True)
    fig, ax = _figure(8, 0.6 + 0.3 * max(len(frame), 1))
    if frame.empty:
        ax.set_title("no node executions")
        return fig
    t0 = frame["started_at"].min()
    start = (frame["started_at"] - t0).dt.total_seconds() * 1000
    width = (frame["finished_at"] - frame["started_at"]).dt.total_seconds() * 1000
    colors = [STATUS_COLORS.get(s, "#6e7781") for s in frame["status"]]
    labels = [f"{n}" + (f" #{int(r)}" if pd.notna(r) else "")
              for n, r in zip(frame["node_id"], frame["round"], strict=True)]
    y = range(len(frame))
    ax.barh(list(y), width.clip(lower=0.5), left=start, color=colors)
    ax.set_yticks(list(y), labels)
    ax.invert_yaxis()
    ax.set_xlabel("ms since the first node started")
    ax.set_title("run timeline")
    return fig


def cost_chart(workflow: str | None = None, *, store: StoreArg = None,
               limit: int | None = 200) -> Figure:
    """Cost (and tokens) per run, oldest to newest."""
    frame = runs(limit=limit, workflow=workflow, store=store).iloc[::-1]
    fig, ax = _figure(8, 3)
    ax.bar(range(len(frame)), frame["total_cost"], color="#0969da")
    ax.set_xlabel("run (oldest to newest)")
    ax.set_ylabel("cost (USD)")
    ax.set_title(f"cost per run{' of ' + workflow if workflow else ''}")
    twin = ax.twinx()
    twin.plot(range(len(frame)), frame["total_tokens"], color="#9a6700", marker=".")
    twin.set_ylabel("tokens")
    return fig


def latency_chart(workflow: str | None = None, *, by: LatencyBy = "node",
                  store: StoreArg = None) -> Figure:
    """The latency distribution per node (or node type / model) as box plots."""
    key = _key(by, ("node", "node_type", "model"))
    frame = node_executions(workflow, store=store)
    frame[key] = frame[key].fillna("-")
    groups = [(name, g["elapsed_ms"].to_numpy()) for name, g in frame.groupby(key)]
    fig, ax = _figure(8, 0.8 + 0.35 * max(len(groups), 1))
    if groups:
        ax.boxplot([g for _, g in groups], orientation="horizontal", tick_labels=[n for n, _ in groups])
    ax.set_xlabel("latency (ms)")
    ax.set_title(f"latency by {by}")
    return fig
