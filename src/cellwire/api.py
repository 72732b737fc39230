"""Running workflows from Python: the defaults a user gets without configuring anything."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Mapping
from typing import Any

import cellwire.nodes  # noqa: F401 - registers the built-in node types
from cellwire.engine import CompiledWorkflow, Execution, RunResult, Runtime
from cellwire.model import Workflow


def default_runtime() -> Runtime:
    """A runtime with the built-in services."""
    return Runtime()


async def arun(workflow: Workflow, inputs: Mapping[str, Any] | None = None, *,
               runtime: Runtime | None = None, **kwargs: Any) -> RunResult:
    """Run ``workflow``; options (``concurrency``, ``max_steps``, ``max_time``, ``run_id``) go
    to the executor, every other keyword is an input."""
    options = {k: kwargs.pop(k) for k in _OPTIONS if k in kwargs}
    all_inputs = {**(inputs or {}), **kwargs}
    compiled = CompiledWorkflow(workflow)
    return await Execution(compiled, all_inputs, runtime or default_runtime(), **options).run()


_OPTIONS = ("concurrency", "max_steps", "max_time", "run_id", "conversation")


def run(workflow: Workflow, inputs: Mapping[str, Any] | None = None, **kwargs: Any) -> RunResult:
    """Blocking :func:`arun`. Inside a running loop (a notebook) it runs on a helper thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(arun(workflow, inputs, **kwargs))
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="cellwire-run") as pool:
        return pool.submit(asyncio.run, arun(workflow, inputs, **kwargs)).result()
