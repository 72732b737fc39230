"""Running workflows from Python: the defaults a user gets without configuring anything."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import os
import sqlite3
import warnings
import weakref
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import cellwire.nodes  # noqa: F401 - registers the built-in node types
from cellwire.engine import Execution, RunResult, Runtime, compile_workflow
from cellwire.model import Workflow
from cellwire.services.files import working_folder
from cellwire.services.llm import default_router
from cellwire.services.llm.cache import open_cache
from cellwire.store import RunStore, StoreSink, default_store, open_store

if TYPE_CHECKING:
    import pandas as pd

T = TypeVar("T")

#: ``True``: the default store in the home folder; ``False``/``None``: none; a path or a store.
StoreOption = bool | str | os.PathLike[str] | RunStore | None


def resolve_store(store: StoreOption = True) -> RunStore | None:
    """The run store a ``store=`` option names."""
    if store is True:
        try:
            return default_store()
        except (OSError, sqlite3.Error) as exc:
            # The default must never stop a run (a read-only folder, say); an explicit store may.
            warnings.warn(f"cellwire runs are not stored: {exc} (set CELLWIRE_HOME to a "
                          "writable folder, or pass store=False)", RuntimeWarning, stacklevel=3)
            return None
    if store is False or store is None:
        return None
    if isinstance(store, RunStore):
        return store
    return open_store(store)


#: Sinks every default runtime also feeds (``cellwire.telemetry.enable_otel`` adds one).
default_sinks: list[Callable[[Any], None]] = []


def default_runtime(store: StoreOption = True) -> Runtime:
    """A runtime with the built-in services, persisting runs to ``store``, which also keeps
    the conversations' chat memory and the LLM response cache. Nodes may read local files in
    the current working folder (:func:`cellwire.services.files.working_folder`)."""
    runtime = _with_store(Runtime(llm=default_router(), files=working_folder()), store)
    for sink in default_sinks:
        runtime.subscribe(sink)
    return runtime


def _with_store(runtime: Runtime, store: StoreOption) -> Runtime:
    """``runtime`` recording its runs in ``store`` (a runtime with a store sink keeps it), with
    that store as its chat memory and response cache where it has none."""
    present = next((s.store for s in runtime.sinks if isinstance(s, StoreSink)), None)
    found = present if present is not None else resolve_store(store)
    if found is None:
        return runtime
    # A copy, so the caller's runtime is left as it was.
    return dataclasses.replace(
        runtime,
        sinks=runtime.sinks if present is not None else [*runtime.sinks, found.sink],
        memory=runtime.memory if runtime.memory is not None else found,
        cache=runtime.cache if runtime.cache is not None else open_cache(found.path),
    )


async def arun(workflow: Workflow, inputs: Mapping[str, Any] | None = None, *,
               runtime: Runtime | None = None, store: StoreOption = True,
               model: str | None = None, cache: bool = False, **kwargs: Any) -> RunResult:
    """Run ``workflow``; options (``concurrency``, ``max_steps``, ``max_time``, ``run_id``) go
    to the executor, every other keyword is an input.

    ``store`` persists the run: ``True`` (the default) to ``<home>/runs.db``, a path or a
    :class:`RunStore` to that store, ``False`` nowhere. A ``runtime`` that already has a store
    sink keeps it and gets no second one.

    ``model`` (``'provider/model'``) routes every llm node of the run to that model.
    ``cache=True`` answers every LLM call of the run from the store's response cache when it
    holds the same request (nodes with ``cache: true`` use it either way).
    """
    options = {k: kwargs.pop(k) for k in RUN_OPTIONS if k in kwargs}
    all_inputs = {**(inputs or {}), **kwargs}
    compiled = compile_workflow(workflow)
    runtime = with_watchers(run_runtime(runtime, store=store, model=model, cache=cache),
                            workflow)
    return await Execution(compiled, all_inputs, runtime, **options).run()


def run_runtime(runtime: Runtime | None, *, store: StoreOption = True, model: str | None = None,
                cache: bool = False) -> Runtime:
    """The runtime a run gets from the options of :func:`arun`: ``runtime`` (or the default
    one) with the ``store``'s sink, every llm node routed to ``model``, and the response
    cache when ``cache``. Batch runs build theirs here too."""
    runtime = default_runtime(store) if runtime is None else _with_store(runtime, store)
    if model is not None:
        runtime = dataclasses.replace(runtime, model_override=model)
    if cache and not runtime.cache_all:
        runtime = dataclasses.replace(runtime, cache_all=True)
    return runtime


# Sinks that follow every run of one workflow object (open editor widgets), by id(workflow).
_watchers: dict[int, tuple[weakref.ref[Workflow], list[Callable[[Any], None]]]] = {}


def watch(workflow: Workflow, sink: Callable[[Any], None]) -> None:
    """Call ``sink`` with the events of every later run of ``workflow`` started through
    :func:`arun`/:func:`run` or ``%workflow run``."""
    entry = _watchers.get(id(workflow))
    if entry is None or entry[0]() is not workflow:
        entry = _watchers[id(workflow)] = (weakref.ref(workflow), [])
    if sink not in entry[1]:
        entry[1].append(sink)


def unwatch(workflow: Workflow, sink: Callable[[Any], None]) -> None:
    entry = _watchers.get(id(workflow))
    if entry is not None and sink in entry[1]:
        entry[1].remove(sink)


def with_watchers(runtime: Runtime, workflow: Workflow) -> Runtime:
    """``runtime``, or a copy that also feeds the sinks watching ``workflow``."""
    entry = _watchers.get(id(workflow))
    if entry is None or entry[0]() is not workflow:
        return runtime
    extra = [s for s in entry[1] if s not in runtime.sinks]
    return dataclasses.replace(runtime, sinks=[*runtime.sinks, *extra]) if extra else runtime


async def amap(workflow: Workflow, inputs: Any, **kwargs: Any) -> pd.DataFrame:
    """Run ``workflow`` once per row of ``inputs``: :func:`cellwire.scale.amap`."""
    from cellwire.scale import amap as map_rows

    return await map_rows(workflow, inputs, **kwargs)


def map(workflow: Workflow, inputs: Any, **kwargs: Any) -> pd.DataFrame:
    """Blocking :func:`amap`: :func:`cellwire.scale.map`."""
    from cellwire.scale import map as map_rows

    return map_rows(workflow, inputs, **kwargs)


def widget(workflow: Workflow) -> Any:
    """The visual editor of ``workflow`` (a :class:`cellwire.jupyter.widget.WorkflowWidget`)."""
    from cellwire.jupyter.widget import WorkflowWidget

    return WorkflowWidget(workflow)


def runs(limit: int | None = None, workflow: str | None = None,
         status: str | None = None) -> pd.DataFrame:
    """Runs in the default store, newest first (see :meth:`RunStore.runs`)."""
    return default_store().runs(limit=limit, workflow=workflow, status=status)


#: The keywords of :func:`arun` that are options of the run, not inputs.
RUN_OPTIONS = ("concurrency", "max_steps", "max_time", "run_id", "conversation", "start_at",
               "previous")


def run(workflow: Workflow, inputs: Mapping[str, Any] | None = None, **kwargs: Any) -> RunResult:
    """Blocking :func:`arun`. Inside a running loop (a notebook) it runs on a helper thread."""
    return run_blocking(arun(workflow, inputs, **kwargs))


def run_blocking(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` to its end from synchronous code: on a loop of its own, or on a helper
    thread's loop when this thread already runs one (a notebook cell)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(work)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="cellwire-run") as pool:
        return pool.submit(asyncio.run, work).result()
