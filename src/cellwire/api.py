"""Running workflows from Python: thin functions over the process's runner
(:func:`cellwire.runner.default_runner`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from cellwire import runner
from cellwire.durable import replay, respond, resume
from cellwire.engine import RunResult
from cellwire.engine.forms import Form
from cellwire.engine.layers import Layer
from cellwire.engine.runtime import Sink
from cellwire.model import Workflow
from cellwire.model.workflow import provide
from cellwire.runner import RUN_OPTIONS, StoreOption, default_runner, resolve_store
from cellwire.store import default_store

if TYPE_CHECKING:
    import pandas as pd


async def arun(workflow: Workflow, inputs: Mapping[str, Any] | None = None,
               **kwargs: Any) -> RunResult:
    """Run ``workflow``; options (``concurrency``, ``max_steps``, ``max_time``, ``run_id``,
    ``store``, ``model``, ``cache``, ``runtime``, ``layers``) go to the runner, every other
    keyword is an input.

    ``store`` persists the run: left out, to the runner's store (``<home>/runs.db`` unless
    ``%config WorkflowMagics.store`` or ``Runner.configure`` says otherwise); ``True`` to
    ``<home>/runs.db``, a path or a :class:`~cellwire.store.RunStore` to that store,
    ``False`` or ``None`` nowhere. A ``runtime`` of your
    own keeps its services and gets the store's layer unless it already has one.

    ``model`` (``'provider/model'``) routes every llm node of the run to that model.
    ``cache=True`` answers every LLM call of the run from the store's response cache when it
    holds the same request (nodes with ``cache: true`` use it either way).

    ``stale=True`` executes only what changed since the workflow's last run (:func:`stale`
    lists it), reusing that run's results for the rest; missing inputs are that run's. When
    nothing changed, nothing runs and the last run's result is returned.
    """
    return await runner.arun(workflow, inputs, **kwargs)


def run(workflow: Workflow, inputs: Mapping[str, Any] | None = None, **kwargs: Any) -> RunResult:
    """Blocking :func:`arun`, on the runner's long-lived loop (also inside a notebook)."""
    return runner.run(workflow, inputs, **kwargs)


def watch(workflow: Workflow, layer: Layer | Sink) -> None:
    """Feed ``layer`` the events of every later run of ``workflow`` (``wf.run``, ``%workflow
    run``, the editor): open editors watch their workflow this way."""
    default_runner().watch(workflow, layer)


def unwatch(workflow: Workflow, layer: Layer | Sink) -> None:
    default_runner().unwatch(workflow, layer)


async def amap(workflow: Workflow, inputs: Any, **kwargs: Any) -> pd.DataFrame:
    """Run ``workflow`` once per row of ``inputs``: :func:`cellwire.scale.amap`."""
    from cellwire.scale import amap as map_rows

    return await map_rows(workflow, inputs, **kwargs)


def map(workflow: Workflow, inputs: Any, **kwargs: Any) -> pd.DataFrame:
    """Blocking :func:`amap`: :func:`cellwire.scale.map`."""
    from cellwire.scale import map as map_rows

    return map_rows(workflow, inputs, **kwargs)


def evaluate(workflows: Any, data: Any, **kwargs: Any) -> Any:
    """Run ``workflows`` over the rows of ``data`` and score their outputs:
    :func:`cellwire.evaluation.evaluate`."""
    from cellwire.evaluation import evaluate as score_rows

    return score_rows(workflows, data, **kwargs)


def widget(workflow: Workflow) -> Any:
    """The visual editor of ``workflow`` (a :class:`cellwire.jupyter.widget.WorkflowWidget`)."""
    from cellwire.jupyter.widget import WorkflowWidget

    return WorkflowWidget(workflow)


def stale(workflow: Workflow, inputs: Mapping[str, Any] | None = None, *,
          model: str | None = None) -> list[str]:
    """The nodes of ``workflow`` a run would execute again: those edited since its last run
    (config, type, retry, time limit, error strategy, model, or what they read), those that
    failed or never ran, those reading an input that differs in ``inputs``, and everything
    downstream of them. All of them before its first run; none once it is up to date."""
    return list(default_runner().stale(workflow, inputs, model=model).nodes)


def runs(limit: int | None = None, workflow: str | None = None,
         status: str | None = None) -> pd.DataFrame:
    """Runs in the default store, newest first (see :meth:`RunStore.runs`)."""
    return default_store().runs(limit=limit, workflow=workflow, status=status)


def forms(run_id: str | None = None) -> list[Form]:
    """The forms paused runs in the default store wait on (of run ``run_id`` only, when
    given), oldest first: answer one with :func:`respond` or ``RunResult.respond``."""
    return default_store().forms(run_id)


def compare(run_a: RunResult | str, run_b: RunResult | str) -> pd.DataFrame:
    """Two runs side by side, node by node, from the default store (results of runs made
    without a store compare too): :func:`cellwire.jupyter.dashboards.compare`."""
    from cellwire.jupyter.dashboards import compare as side_by_side

    return side_by_side(run_a, run_b)


# Workflow.run/arun/map/amap/widget call these: the model imports no layer above it.
provide(run=run, arun=arun, map=map, amap=amap, widget=widget)


__all__ = [
    "RUN_OPTIONS", "StoreOption", "amap", "arun", "compare", "evaluate", "forms", "map",
    "replay", "resolve_store", "respond", "resume",
    "run", "runs", "stale", "unwatch", "watch", "widget",
]
