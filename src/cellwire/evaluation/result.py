"""The result of an evaluation: rows, scores, a summary with bootstrap confidence intervals,
a chart, the rows where the workflows disagree, and its place in the store."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from cellwire.store.batches import StoredEvaluation, list_evaluations, load_evaluation

if TYPE_CHECKING:
    import pandas as pd

    from cellwire.store import RunStore

#: Resamples of a bootstrap confidence interval, and its seed (the same data, the same CI).
BOOTSTRAP = 2000
SEED = 0
#: The columns of :attr:`Evaluation.summary`.
SUMMARY_COLUMNS = ["workflow", "scorer", "mean", "ci_low", "ci_high", "pass_rate", "n",
                   "failed_runs", "cost", "judge_cost", "total_cost", "total_tokens",
                   "judge_tokens", "p50_latency", "p95_latency"]


def bootstrap_ci(values: Sequence[float], *, level: float = 0.95,
                 resamples: int = BOOTSTRAP, seed: int = SEED) -> tuple[float, float]:
    """The percentile bootstrap confidence interval of the mean of ``values`` (NaN left out)."""
    data = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if data.size == 0:
        return math.nan, math.nan
    if data.size == 1 or np.all(data == data[0]):
        return float(data[0]), float(data[0])
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def summarize(rows: pd.DataFrame, scores: pd.DataFrame, workflows: Sequence[str],
              scorers: Sequence[str]) -> pd.DataFrame:
    """One row per workflow and scorer: the mean score and its 95% bootstrap CI, the pass
    rate, and the workflow's runs: failed, cost (of the runs and, apart, of the judge),
    tokens, p50/p95 latency (s)."""
    import pandas as pd

    records = []
    for wf in workflows:
        latency = rows[f"{wf}:latency"].dropna()
        facts = {
            "failed_runs": int(rows[f"{wf}:status"].isin(["failed", "stopped"]).sum()),
            "cost": float(rows[f"{wf}:cost"].sum()),
            # NaN when the judge's model has no known price: unknown, never 0.
            "judge_cost": float(rows[f"{wf}:judge_cost"].sum(skipna=False)),
            "total_tokens": int(rows[f"{wf}:total_tokens"].sum()),
            "judge_tokens": int(rows[f"{wf}:judge_tokens"].sum()),
            "p50_latency": float(latency.quantile(0.5)) if len(latency) else math.nan,
            "p95_latency": float(latency.quantile(0.95)) if len(latency) else math.nan,
        }
        facts["total_cost"] = facts["cost"] + facts["judge_cost"]
        for name in scorers:
            mine = scores[(scores["workflow"] == wf) & (scores["scorer"] == name)]
            values = [float(v) for v in mine["score"]]
            known = [v for v in values if not math.isnan(v)]
            low, high = bootstrap_ci(values)
            records.append({
                "workflow": wf, "scorer": name,
                "mean": float(np.mean(known)) if known else math.nan,
                "ci_low": low, "ci_high": high,
                "pass_rate": float(mine["passed"].mean()) if len(mine) else math.nan,
                "n": len(known), **facts})
    return pd.DataFrame.from_records(records, columns=SUMMARY_COLUMNS)


@dataclass
class Evaluation:
    """What :func:`cellwire.evaluate` returns.

    ``rows``: one row per input row: its inputs, ``expected``, and per workflow ``W``:
    ``W:output``, ``W:status``, ``W:run_id``, ``W:latency`` (s), ``W:total_tokens``,
    ``W:cost``, ``W:judge_tokens``, ``W:judge_cost`` and ``W:<scorer>`` (the score).
    ``scores``: one row per input row, workflow and scorer (``score``, ``passed``,
    ``reason``). ``summary``: see :func:`summarize`.
    """

    eval_id: str
    workflows: list[str]
    scorers: list[str]
    rows: pd.DataFrame
    scores: pd.DataFrame
    summary: pd.DataFrame
    name: str | None = None
    created_at: float = 0.0
    expected: str = "expected"
    #: The store it is kept in (None: not stored).
    store_path: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        shown = self.summary[["workflow", "scorer", "mean", "ci_low", "ci_high", "pass_rate",
                              "total_cost", "p50_latency", "p95_latency"]]
        return (f"Evaluation {self.eval_id} ({len(self.rows)} rows, "
                f"{', '.join(self.workflows)})\n{shown.to_string(index=False)}")

    def _repr_html_(self) -> str:
        return (f"<b>Evaluation {self.eval_id}</b> ({len(self.rows)} rows)"
                + self.summary.to_html(index=False))

    # -- reading --------------------------------------------------------------------------

    def below(self, min_score: float) -> pd.DataFrame:
        """The summary rows whose mean score is below ``min_score`` (or unknown)."""
        mean = self.summary["mean"]
        return self.summary[(mean < min_score) | mean.isna()]

    def passed(self, min_score: float) -> bool:
        """Whether every workflow's mean score on every scorer is at least ``min_score``."""
        return self.below(min_score).empty

    def disagreements(self, scorer: str | None = None, *, by: str = "passed") -> pd.DataFrame:
        """The rows where the workflows disagree: ``by="passed"`` (default) a scorer's
        verdict differs between them (only ``scorer``'s, if given); ``by="output"`` their
        outputs differ. With one workflow, none."""
        if by not in ("passed", "output"):
            raise ValueError(f"by={by!r}: use 'passed' or 'output'")
        if scorer is not None and scorer not in self.scorers:
            raise KeyError(f"no scorer {scorer!r} in this evaluation ({', '.join(self.scorers)})")
        if len(self.workflows) < 2:
            return self.rows.iloc[0:0]
        if by == "output":
            outputs = self.rows[[f"{w}:output" for w in self.workflows]].astype(str)
            differ = outputs.nunique(axis=1) > 1
        else:
            chosen = self.scores if scorer is None else \
                self.scores[self.scores["scorer"] == scorer]
            verdicts = chosen.groupby(["row", "scorer"])["passed"].nunique()
            split = verdicts[verdicts > 1].index.get_level_values("row").unique()
            return self.rows[self.rows.index.isin(split)]
        return self.rows[differ]

    def compare(self, baseline: Evaluation) -> pd.DataFrame:
        """This evaluation's summary beside ``baseline``'s (an earlier one, say), per workflow
        and scorer: ``mean_base``, ``mean``, ``mean_change``, and the same for ``pass_rate``
        and ``total_cost``."""
        keys = ["workflow", "scorer"]
        cols = [*keys, "mean", "pass_rate", "total_cost"]
        joined = baseline.summary[cols].merge(self.summary[cols], on=keys, how="outer",
                                              suffixes=("_base", ""))
        for column in ("mean", "pass_rate", "total_cost"):
            joined[f"{column}_change"] = joined[column] - joined[f"{column}_base"]
        return joined[[*keys, "mean_base", "mean", "mean_change", "pass_rate_base",
                       "pass_rate", "pass_rate_change", "total_cost_base", "total_cost",
                       "total_cost_change"]]

    def chart(self, ax: Any = None) -> Any:
        """A bar chart of the mean score per scorer, a bar per workflow, with the 95% CI as
        error bars (matplotlib); returns the figure."""
        try:
            import matplotlib.pyplot as plt
        except ImportError as exc:
            raise ImportError("Evaluation.chart() needs matplotlib: pip install matplotlib "
                              "(or cellwire[lab])") from exc
        if ax is None:
            fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(self.scorers) * len(self.workflows)
                                            ** 0.5, 3.2))
        else:
            fig = ax.figure
        width = 0.8 / max(len(self.workflows), 1)
        places = np.arange(len(self.scorers))
        for i, wf in enumerate(self.workflows):
            mine = self.summary[self.summary["workflow"] == wf].set_index("scorer") \
                .reindex(self.scorers)
            means = mine["mean"].to_numpy(dtype=float)
            errors = np.vstack([means - mine["ci_low"].to_numpy(dtype=float),
                                mine["ci_high"].to_numpy(dtype=float) - means])
            ax.bar(places + (i - (len(self.workflows) - 1) / 2) * width, means, width,
                   yerr=np.nan_to_num(errors), capsize=3, label=wf)
        ax.set_xticks(places, self.scorers)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("mean score (95% CI)")
        ax.set_title(self.name or f"evaluation {self.eval_id[:8]}")
        ax.legend(loc="lower right", fontsize="small")
        fig.tight_layout()
        plt.close(fig)  # shown by returning it, not twice by pyplot
        return fig

    # -- the store -------------------------------------------------------------------------

    def stored(self) -> StoredEvaluation:
        rows = self.rows.reset_index(names="__index__")
        return StoredEvaluation(
            self.eval_id, self.name, self.created_at, list(self.workflows),
            [{str(k): v for k, v in r.items()} for r in self.summary.to_dict("records")],
            [{"expected": self.expected, "scorers": list(self.scorers),
              "rows": rows.to_dict("records"),
              "scores": self.scores.to_dict("records")}])

    @classmethod
    def of_stored(cls, found: StoredEvaluation, store_path: str | None = None) -> Evaluation:
        import pandas as pd

        body = found.rows[0]
        rows = pd.DataFrame.from_records(body["rows"]).set_index("__index__")
        rows.index.name = None
        return cls(found.eval_id, list(found.workflows), list(body["scorers"]), rows,
                   pd.DataFrame.from_records(body["scores"]),
                   pd.DataFrame.from_records(found.summary, columns=SUMMARY_COLUMNS),
                   found.name, found.created_at, body["expected"], store_path)

    @classmethod
    def load(cls, eval_id: str, store: Any = True) -> Evaluation:
        """A stored evaluation by id (a unique prefix is enough)."""
        found = _store(store)
        return cls.of_stored(load_evaluation(found, eval_id), str(found.path))


def _store(store: Any) -> RunStore:
    from cellwire.runner import resolve_store

    found = resolve_store(store)
    if found is None:
        raise ValueError("evaluations are read from a store; pass store= (a path or True)")
    return found


def evaluations(store: Any = True) -> pd.DataFrame:
    """The stored evaluations, newest first: id, name, when, workflows."""
    import pandas as pd

    rows = list_evaluations(_store(store))
    frame = pd.DataFrame(rows, columns=["eval_id", "name", "created_at", "workflows"])
    frame["created_at"] = pd.to_datetime(frame["created_at"], unit="s", utc=True)
    return frame


__all__ = ["SUMMARY_COLUMNS", "Evaluation", "bootstrap_ci", "evaluations", "summarize"]
