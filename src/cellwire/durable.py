"""Resuming a run whose process died (or that failed or was stopped).

The run keeps its id. It runs the version of the workflow it recorded (never the current
file), from its checkpoint: its inputs and ``sys`` values, and the outputs and edge decisions
of its finished top-level nodes, which are not run again; the nodes that were in flight run
again, and so does an iteration or loop that had not finished, from its start. A resumed run
is granted its secrets again (their values were never stored), and its code runs sandboxed
unless ``trust`` says otherwise: the store file is data, not a trusted source of code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cellwire.engine import RunResult, RunStatus
from cellwire.engine.run_state import RunState
from cellwire.formats.native import load_native
from cellwire.model import Workflow
from cellwire.runner import DEFAULT, Runner, StoreOption, default_runner, resolve_store
from cellwire.store import RunStore
from cellwire.store.checkpoints import FINISHED, NotResumable, SavedRun, still_running


def prepare_resume(run_id: str, *, runner: Runner | None = None, store: StoreOption = DEFAULT,
                   secrets: Mapping[str, str] | Sequence[str] | None = None,
                   trust: bool = False, durability: str | None = None,
                   **options: Any) -> tuple[Workflow, dict[str, Any]]:
    """The recorded workflow of run ``run_id`` (a unique prefix is enough) and the options
    that resume it with ``runner.run``/``runner.arun``; raises :class:`NotResumable` saying
    why it cannot be resumed."""
    runner = runner or default_runner()
    found, saved, workflow = _recorded(run_id, runner, store)
    restored = saved.restored
    full = restored.run_id
    if saved.status in FINISHED:
        raise NotResumable(f"run {full} has already {saved.status}: nothing to resume")
    for handle in runner.runs():
        if handle.run_id == full and not handle.done:
            raise NotResumable(f"run {full} is running in this process: stop it first "
                               f"(cellwire.runner.default_runner().stop({full!r}))")
    if saved.status == "running" and still_running(saved.process):
        raise NotResumable(f"run {full} is still running in process {saved.process[0]}: "
                           "wait for it, or stop that process first")
    granted = runner._grants(secrets) or {}
    missing = [name for name in restored.secrets if name not in granted]
    if missing:
        flags = " ".join(f"--secret {name}" for name in missing)
        raise NotResumable(
            f"run {full} was granted the secret(s) {', '.join(missing)}, whose values are "
            f"never stored: grant them again to resume it (cellwire resume {full} {flags}; "
            f"secrets={missing!r} in Python)")
    workflow.mark_origin(workflow.origin, trusted=trust)
    run_options = dict(restored.options)
    if durability is not None:
        run_options["durability"] = durability
    run_options.update(options)
    return workflow, {**run_options, "store": found, "secrets": secrets, "resume": restored}


async def resume(run_id: str, *, store: StoreOption = DEFAULT,
                 secrets: Mapping[str, str] | Sequence[str] | None = None, trust: bool = False,
                 durability: str | None = None, **options: Any) -> RunResult:
    """Continue run ``run_id`` from its checkpoint in ``store`` (default: the runner's
    store); the run keeps its id, and its finished nodes are not run again.

    ``secrets`` grants the run's secrets again (grant specs or values by name, as for a run):
    a run that was granted secrets cannot resume without them. ``trust=True`` runs its code
    nodes in this process rather than the sandbox, as a trusted file's would. ``durability``
    and the other run options (``concurrency``, ``max_time``, ``layers``, ...) default to
    what the run was started with.
    """
    runner = default_runner()
    workflow, run_options = prepare_resume(run_id, runner=runner, store=store, secrets=secrets,
                                           trust=trust, durability=durability, **options)
    return await runner.arun(workflow, None, **run_options)


def _recorded(run_id: str, runner: Runner, store: StoreOption
              ) -> tuple[RunStore, SavedRun, Workflow]:
    """The store holding run ``run_id``, its checkpoint, and the workflow version it ran."""
    found = resolve_store(runner.options.store if store is DEFAULT else store)
    if found is None:
        raise NotResumable("resuming or replaying a run reads its checkpoints from its store: "
                           "give the store (store=PATH in Python, --db PATH on the command "
                           "line)")
    saved = found.checkpoints.load(run_id)
    workflow = load_native(saved.definition, source=f"run {saved.restored.run_id} (version "
                                                    f"{saved.version[:12]})")
    return found, saved, workflow


def stored_result(run_id: str, *, store: StoreOption = DEFAULT,
                  runner: Runner | None = None) -> tuple[RunStore, Workflow, RunResult]:
    """A stored run as a result a rerun can start from: its store, the workflow version it
    ran and its state (outputs, statuses and edge decisions of its finished top-level
    nodes), read from its checkpoints, never from its redacted trace."""
    found, saved, workflow = _recorded(run_id, runner or default_runner(), store)
    restored = saved.restored
    state = RunState(restored.run_id, restored.workflow, inputs=dict(restored.inputs))
    for node_id, (status, handle) in restored.nodes.items():
        state.pool.set_outputs(node_id, restored.outputs.get(node_id, {}))
        state.nodes[node_id] = status
        state.handles[node_id] = handle
    result = RunResult(restored.run_id, restored.workflow, RunStatus(saved.status),
                       dict(restored.inputs), {}, state=state)
    return found, workflow, result


async def replay(run_id: str, from_node: str, *, workflow: Workflow | None = None,
                 store: StoreOption = DEFAULT,
                 secrets: Mapping[str, str] | Sequence[str] | None = None, trust: bool = False,
                 **options: Any) -> RunResult:
    """Fork stored run ``run_id``: a new run that re-runs ``from_node`` and what follows it,
    and reuses the recorded outputs of the nodes before it (from the run's checkpoints).

    ``workflow`` is the edited workflow to run (an edited prompt, say; its node ids must
    match); without it, the version the run recorded. Compare the two runs with
    :func:`cellwire.compare`. The recorded version runs sandboxed unless ``trust=True``; an
    edited workflow keeps its own trust.
    """
    runner = default_runner()
    found, recorded, previous = stored_result(run_id, store=store, runner=runner)
    if workflow is None:
        workflow = recorded.mark_origin(recorded.origin, trusted=trust)
    top = [n for n, x in workflow.nodes.items() if x.parent is None]
    if from_node not in top:
        raise NotResumable(f"from_node={from_node!r} is not a top-level node of the workflow; "
                           f"use one of {', '.join(top)}")
    return await runner.arun(workflow, previous.inputs, previous=previous, start_at=from_node,
                             store=found, secrets=secrets, **options)


__all__ = ["NotResumable", "prepare_resume", "replay", "resume", "stored_result"]
