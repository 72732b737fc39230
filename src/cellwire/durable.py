"""Resuming a run whose process died (or that failed, was stopped, or paused for input).

The run keeps its id. It runs the version of the workflow it recorded (never the current
file), from its checkpoint: its inputs and ``sys`` values, and the outputs and edge decisions
of its finished top-level nodes, which are not run again; the nodes that were in flight run
again, and so does an iteration or loop that had not finished, from its start. A resumed run
is granted its secrets again (their values were never stored), and its code runs sandboxed
unless ``trust`` says otherwise: the store file is data, not a trusted source of code.

A run paused by a human-input node resumes once its form is answered (:func:`respond`), or
once the form's deadline passed (it then leaves through the ``__timeout`` branch).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from cellwire.engine import RunResult, RunStatus, compile_workflow
from cellwire.engine.checkpoint import Restored
from cellwire.engine.forms import Form, FormError, FormExpired, check_answer
from cellwire.engine.result import provide_respond
from cellwire.engine.run_state import RunState
from cellwire.formats.native import load_native
from cellwire.model import Workflow
from cellwire.runner import DEFAULT, Runner, StoreOption, default_runner, resolve_store
from cellwire.store import RunStore
from cellwire.store.checkpoints import FINISHED, NotResumable, SavedRun, still_running
from cellwire.store.codec import to_json
from cellwire.store.seal import sealer
from cellwire.store.versions import version_of


def prepare_resume(run_id: str, *, runner: Runner | None = None, store: StoreOption = DEFAULT,
                   secrets: Mapping[str, str] | Sequence[str] | None = None,
                   trust: bool = False, durability: str | None = None,
                   workflow: Workflow | None = None,
                   **options: Any) -> tuple[Workflow, dict[str, Any]]:
    """The recorded workflow of run ``run_id`` (a unique prefix is enough) and the options
    that resume it with ``runner.run``/``runner.arun``; raises :class:`NotResumable` saying
    why it cannot be resumed. ``workflow`` resumes with that object instead of a copy read
    from the store (so what watches it sees the run): it must be the version recorded."""
    runner = runner or default_runner()
    found, saved, recorded = _recorded(run_id, runner, store)
    restored = saved.restored
    full = restored.run_id
    if saved.status in FINISHED:
        raise NotResumable(f"run {full} has already {saved.status}: nothing to resume")
    waiting = _waiting(saved, time.time())
    answered = [n for n in restored.answers if n not in restored.nodes]
    if waiting and len(waiting) == len(_waiting(saved, None)) and not answered:
        # Nothing to go on with: no answer, and no deadline passed.
        form = waiting[0]
        raise NotResumable(
            f"run {full} waits for input at node '{form.node_id}' until "
            f"{_when(form.expires_at)}: answer its form (cellwire respond {full} --action "
            f"{form.actions[0].id if form.actions else 'ID'}; run.respond(...) in Python); "
            "the run then resumes by itself")
    for handle in runner.runs():
        if handle.run_id == full and not handle.done:
            raise NotResumable(f"run {full} is running in this process: stop it first "
                               f"(cellwire.runner.default_runner().stop({full!r}))")
    if saved.status == "running" and still_running(saved.process):
        raise NotResumable(f"run {full} is still running in process {saved.process[0]}: "
                           "wait for it, or stop that process first")
    _check_grants(restored, runner, secrets)
    if workflow is None:
        workflow = recorded.mark_origin(recorded.origin, trusted=trust)
    elif version_of(compile_workflow(workflow))[0] != saved.version:
        raise NotResumable(f"run {full} ran another version of workflow '{workflow.name}' "
                           f"({saved.version[:12]}): resume it without workflow=, from the "
                           "version it recorded")
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


def _check_grants(restored: Restored, runner: Runner,
                  secrets: Mapping[str, str] | Sequence[str] | None) -> None:
    """NotResumable unless every secret the run was granted is granted again."""
    granted = runner._grants(secrets) or {}
    missing = [name for name in restored.secrets if name not in granted]
    if missing:
        full = restored.run_id
        flags = " ".join(f"--secret {name}" for name in missing)
        raise NotResumable(
            f"run {full} was granted the secret(s) {', '.join(missing)}, whose values are "
            f"never stored: grant them again to resume it (cellwire resume {full} {flags}; "
            f"secrets={missing!r} in Python)")


def answer(run_id: str, action: str, values: Mapping[str, Any] | None = None, *,
           node: str | None = None, store: StoreOption = DEFAULT,
           runner: Runner | None = None) -> Form:
    """Record the answer to the form paused run ``run_id`` waits on (without resuming it):
    ``action`` is one of its user actions, ``values`` its inputs (defaults fill those left
    out); returns the form answered. :class:`FormError` says what does not fit, and
    :class:`FormExpired` that the deadline passed (resuming the run then continues it
    through its ``__timeout`` branch)."""
    found, saved, _ = _recorded(run_id, runner or default_runner(), store)
    return _record(found, saved, action, values, node)


def _record(found: RunStore, saved: SavedRun, action: str, values: Mapping[str, Any] | None,
            node: str | None) -> Form:
    form = _form_to_answer(saved, node)
    now = time.time()
    full = saved.restored.run_id
    if form.expired(now):
        raise FormExpired(
            f"node '{form.node_id}': the form expired at {_when(form.expires_at)} and takes no "
            f"answer; resume the run to continue through its __timeout branch (cellwire "
            f"resume {full})")
    checked = check_answer(form, action, values)
    text = to_json(checked) or "{}"
    if saved.sealed is not None:
        # A run granted secrets keeps every value sealed, a person's answer too.
        text = sealer().seal(text, f"{full}/{form.node_id}/answer")
    if not found.record_answer(full, form.node_id, action, text, now):
        raise FormError(f"node '{form.node_id}': the form of run {full} was answered "
                        "meanwhile; see the run with cellwire runs")
    return form


async def respond(run_id: str, action: str, values: Mapping[str, Any] | None = None, *,
                  node: str | None = None, store: StoreOption = DEFAULT,
                  secrets: Mapping[str, str] | Sequence[str] | None = None,
                  trust: bool = False, workflow: Workflow | None = None,
                  **options: Any) -> RunResult:
    """Answer the form paused run ``run_id`` waits on (:func:`answer`), then resume the run;
    returns the resumed run's result (``paused`` again when other forms still wait).

    ``node`` picks the form when the run waits on several. ``secrets``, ``trust`` and the
    run options are those of :func:`resume`; ``workflow`` resumes with that object (the
    version the run recorded), so what watches it (an editor) sees the run go on.
    """
    runner = default_runner()
    wf, run_options = prepare_respond(run_id, action, values, node=node, runner=runner,
                                      store=store, secrets=secrets, trust=trust,
                                      workflow=workflow, **options)
    return await runner.arun(wf, None, **run_options)


def prepare_respond(run_id: str, action: str, values: Mapping[str, Any] | None = None, *,
                    node: str | None = None, runner: Runner | None = None,
                    store: StoreOption = DEFAULT,
                    secrets: Mapping[str, str] | Sequence[str] | None = None,
                    trust: bool = False, workflow: Workflow | None = None,
                    **options: Any) -> tuple[Workflow, dict[str, Any]]:
    """Record the answer to run ``run_id``'s form and return what resumes the run, as
    :func:`prepare_resume` does; nothing is recorded when the run could not resume (a
    secret it was granted is not granted again)."""
    runner = runner or default_runner()
    found, saved, _ = _recorded(run_id, runner, store)
    _check_grants(saved.restored, runner, secrets)
    form = _record(found, saved, action, values, node)
    return prepare_resume(form.run_id, runner=runner, store=found, secrets=secrets,
                          trust=trust, workflow=workflow, **options)


def _form_to_answer(saved: SavedRun, node: str | None) -> Form:
    full = saved.restored.run_id
    if saved.status != "paused":
        raise FormError(f"run {full} is {saved.status}, not paused for input: there is no form "
                        "to answer")
    waiting = _waiting(saved, None)
    if node is not None:
        for form in waiting:
            if form.node_id == node:
                return form
        raise FormError(f"run {full} has no unanswered form at node {node!r}; its waiting "
                        f"forms are at {', '.join(f.node_id for f in waiting) or 'no node'}")
    if not waiting:
        raise FormError(f"run {full} has no unanswered form: resume it (cellwire resume {full})")
    if len(waiting) > 1:
        raise FormError(f"run {full} waits on forms at {', '.join(f.node_id for f in waiting)}:"
                        " say which one (--node ID; node= in Python)")
    return waiting[0]


def _waiting(saved: SavedRun, now: float | None) -> list[Form]:
    """The forms of a paused run still waiting for an answer (and, given ``now``, still in
    time to get one)."""
    if saved.status != "paused":
        return []
    restored = saved.restored
    return [f for n, f in restored.forms.items()
            if n not in restored.answers and (now is None or not f.expired(now))]


def _when(at: float | None) -> str:
    if at is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def _respond_to(result: RunResult, action: str, values: Mapping[str, Any] | None = None,
                **options: Any) -> Any:
    """``RunResult.arespond``: answer ``result``'s form in the store it was run with."""
    stored_in = getattr(result.checkpointer, "store", None)
    if stored_in is not None:
        options.setdefault("store", stored_in)
    return respond(result.run_id, action, values, **options)


def _respond_blocking(result: RunResult, action: str, values: Mapping[str, Any] | None = None,
                      **options: Any) -> RunResult:
    from cellwire.runner import background

    outcome: RunResult = background.call(_respond_to(result, action, values, **options))
    return outcome


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


provide_respond(_respond_blocking, _respond_to)


__all__ = ["NotResumable", "answer", "prepare_respond", "prepare_resume", "replay", "respond", "resume",
           "stored_result"]
