"""The visual graph editor: an anywidget over one :class:`Workflow`, edited in place.

Sync (panel-reactflow's model): the ``nodes`` and ``edges`` traits are the graph, always
replaced, never mutated; React Flow's interaction state (selection, drags, viewport) stays in
the browser, which sends semantic edit messages (``connect``, ``delete``, ``update_config``,
``add_node``, ``move``, ...). Each edit changes ``widget.workflow`` at once and the traits are
recomputed from it. A change made from Python or a magic cell shows after the cell finishes
(a ``post_run_cell`` hook), or at once with :meth:`WorkflowWidget.refresh`.

Run status travels as small ``status`` messages, never resending the graph: the patches of
the node events of one event-loop tick go in one message, and while a run streams, one message
goes at most every :data:`STATUS_INTERVAL` (the browser draws one frame per ~16 ms, and each
message costs its main thread a task of its own: a 500-node run sent hundreds). The
``status`` trait holds the whole picture at run start and end, for views opened later.

Threads: JupyterLab 4.6 sends widget messages on an ipykernel 7 subshell, a thread with its own
event loop. Messages are handed to the loop the widget was created on (the notebook's), so edits
change the Workflow on the thread cells run on, and runs are tasks of the notebook's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import threading
import time
import weakref
from collections.abc import Mapping
from typing import Any

import anywidget
import traitlets

from cellwire.engine import RunResult
from cellwire.engine.events import (
    RUN_END_EVENTS,
    Event,
    RunFailed,
    RunStarted,
)
from cellwire.engine.layers import Layer
from cellwire.model import Workflow
from cellwire.runner import RunHandle, default_runner

from . import widget_protocol as proto

STATIC = pathlib.Path(__file__).parent.parent / "static"
MAX_HISTORY = 100
#: Seconds between two status messages at most; the run's end goes out at once.
STATUS_INTERVAL = 0.025

_MISSING_BUNDLE = """
export default { render({ el }) {
  el.innerHTML = '<pre>cellwire: the editor bundle is not built (src/cellwire/static/widget.js'
    + ' is missing); run `make install` or `npm ci && npm run build` in js/.</pre>';
} };
"""

_live: weakref.WeakSet[WorkflowWidget] = weakref.WeakSet()
_hook_installed = False


class RunRefused(ValueError):
    """A run the editor cannot start; the message says why (the editor shows it too)."""


class WorkflowWidget(anywidget.AnyWidget):
    """An editor for ``workflow``; edits change that very object (``widget.workflow is wf``)."""

    _esm = STATIC / "widget.js" if (STATIC / "widget.js").exists() else _MISSING_BUNDLE
    _css = STATIC / "widget.css" if (STATIC / "widget.css").exists() else ""

    nodes = traitlets.List(traitlets.Dict()).tag(sync=True)
    edges = traitlets.List(traitlets.Dict()).tag(sync=True)
    #: node id -> {status, elapsed, tokens, cost, error, inputs, outputs}
    status = traitlets.Dict().tag(sync=True)
    #: Nodes changed since the workflow's last run, and what follows them (stale badges).
    stale = traitlets.List(traitlets.Unicode()).tag(sync=True)
    problems = traitlets.List(traitlets.Dict()).tag(sync=True)
    #: Whether the workflow is trusted and where its code runs (``proto.trust_info``).
    trust = traitlets.Dict().tag(sync=True)
    node_types = traitlets.List(traitlets.Dict()).tag(sync=True)
    running = traitlets.Bool(False).tag(sync=True)
    can_undo = traitlets.Bool(False).tag(sync=True)
    can_redo = traitlets.Bool(False).tag(sync=True)
    height = traitlets.Int(560).tag(sync=True)
    name = traitlets.Unicode("").tag(sync=True)
    #: How the last run of the workflow ended (``proto.run_summary``): the status line.
    run_summary = traitlets.Dict().tag(sync=True)
    #: Inputs a run started from the widget gets; set from Python.
    inputs = traitlets.Dict().tag(sync=True)
    #: Route llm nodes of runs started here to this ``provider/model`` ('' = their own).
    run_model = traitlets.Unicode("").tag(sync=True)

    def __init__(self, workflow: Workflow, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.workflow = workflow
        self.node_types = proto.node_type_list()
        self._undo: list[dict[str, Any]] = []
        self._redo: list[dict[str, Any]] = []
        self._live_status: dict[str, Any] = {}
        self._lock = threading.RLock()
        self._pending: list[dict[str, Any]] = []
        self._sent_at = 0.0  # time.monotonic() of the last status message
        #: A run from a node: its run id and the statuses of the nodes it reuses, kept shown.
        self._kept: tuple[str, dict[str, Any]] | None = None
        #: The run this editor started last (its handle: status, stop, await).
        self.run_handle: RunHandle | None = None
        #: The last run this editor saw (its own, or one started from Python or a magic);
        #: "run from here" reuses its results for the nodes before the chosen one.
        self.last_run: RunResult | None = None
        self._thread = threading.get_ident()
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self.refresh()
        self._show_last_run()
        self.on_msg(self._on_custom)
        self._layer = _EditorLayer(self)
        default_runner().watch(workflow, self._layer)
        _live.add(self)
        _install_hook()

    # -- graph ---------------------------------------------------------------------------

    def refresh(self) -> None:
        """Show the workflow as it is now (after changes made from Python)."""
        nodes, edges = proto.graph_traits(self.workflow)
        if nodes != self.nodes:
            self.nodes = nodes
        if edges != self.edges:
            self.edges = edges
        problems = proto.problem_list(self.workflow)
        if problems != self.problems:
            self.problems = problems
        trust = proto.trust_info(self.workflow)
        if trust != self.trust:
            self.trust = trust
        self.refresh_stale()
        if self.name != self.workflow.name:
            self.name = self.workflow.name

    def _show_last_run(self) -> None:
        """An editor opened after a run shows how that run left each node, and how it
        ended; "run from here" can reuse it."""
        record = default_runner().ledger.get(self.workflow)
        if record is None:
            return
        self.last_run = record.result
        self._live_status = proto.status_of(record.result)
        self.status = dict(self._live_status)
        self.run_summary = proto.run_summary(record.result)

    def refresh_stale(self) -> None:
        """Show which nodes are stale now (after an edit, or a run of the workflow)."""
        try:
            stale = list(default_runner().stale(self.workflow,
                                                model=self.run_model or None).nodes)
        except Exception:  # noqa: BLE001 - an invalid workflow shows its problems instead
            stale = []
        if stale != self.stale:
            self.stale = stale

    def handle(self, msg: Mapping[str, Any]) -> dict[str, Any] | None:
        """Carry out one message from the browser; returns the reply to send, if any."""
        kind = msg.get("type")
        if kind in ("undo", "redo"):
            self._step_history(kind == "undo")
            return None
        if kind == "run":
            self.start_run(msg.get("inputs"))
            return None
        if kind == "run_from":
            self.run_from(str(msg.get("id") or ""), msg.get("inputs"))
            return None
        if kind == "run_node":
            with contextlib.suppress(RunRefused):  # the editor was told why
                self.run_node(str(msg.get("id") or ""), msg.get("inputs"))
            return None
        if kind == "respond":
            self.respond(str(msg.get("run_id") or ""), str(msg.get("action") or ""),
                         msg.get("values") if isinstance(msg.get("values"), Mapping) else None,
                         node=str(msg["node"]) if msg.get("node") else None)
            return None
        if kind == "stop":
            if self.run_handle is not None:
                self.run_handle.stop()
            return None
        if kind == "hello":
            return {"type": "status_snapshot", "status": self._live_status,
                    "running": self.running}
        before = self.workflow.model_dump()
        try:
            created = proto.apply(self.workflow, msg)
        except proto.EditRefused as exc:
            self._restore(before)
            return {"type": "refused", "reason": str(exc), "request": dict(msg)}
        self._undo = [*self._undo[-MAX_HISTORY + 1:], before]
        self._redo = []
        self._sync_history()
        self.refresh()
        return {"type": "created", "id": created} if created else None

    def _on_custom(self, _widget: Any, content: Any, _buffers: Any) -> None:
        if not isinstance(content, Mapping):
            return
        loop = self._loop
        if threading.get_ident() != self._thread and loop is not None and loop.is_running() \
                and not loop.is_closed():
            # A subshell's thread: carry the message out where cells run, in arrival order.
            loop.call_soon_threadsafe(self._reply, content)
            return
        self._reply(content)

    def _reply(self, content: Mapping[str, Any]) -> None:
        try:
            reply = self.handle(content)
        except Exception as exc:  # noqa: BLE001 - show the error in the editor, not nowhere
            reply = {"type": "refused", "reason": f"{type(exc).__name__}: {exc}",
                     "request": dict(content)}
        if reply is not None:
            self.send(reply)

    # -- undo -----------------------------------------------------------------------------

    def _restore(self, snapshot: Mapping[str, Any]) -> None:
        data = dict(snapshot)
        restored = Workflow(data.pop("name"), **data)
        for field in Workflow.model_fields:
            setattr(self.workflow, field, getattr(restored, field))

    def _step_history(self, undo: bool) -> None:
        source, target = (self._undo, self._redo) if undo else (self._redo, self._undo)
        if not source:
            return
        target.append(self.workflow.model_dump())
        self._restore(source.pop())
        self._sync_history()
        self.refresh()

    def _sync_history(self) -> None:
        self.can_undo, self.can_redo = bool(self._undo), bool(self._redo)

    # -- runs -------------------------------------------------------------------------------

    def start_run(self, inputs: Mapping[str, Any] | None = None, *,
                  start_at: str | None = None, single: bool = False) -> None:
        """Run the workflow with this widget watching; a task on the kernel's event loop.

        With ``start_at``, only that node and what follows it run (only that node, with
        ``single``); the nodes before it keep their results from :attr:`last_run`.
        """
        request: dict[str, Any] = {"type": "run"}
        if start_at is not None:
            request = {"type": "run_node" if single else "run_from", "id": start_at}
        if self.run_handle is not None and self.running:
            self.send({"type": "refused", "reason": "a run of this workflow is in progress",
                       "request": request})
            return
        previous = self.last_run if start_at is not None else None
        run_inputs = {**self.inputs, **(inputs or {})}
        if previous is not None and previous.state is not None:
            # The values the run had, not the redacted ones of its result.
            run_inputs = {**previous.state.inputs, **(inputs or {})}
        runner = default_runner()
        try:
            # The editor watches its workflow, so the runner feeds it this run's events.
            execution = runner.prepare(self.workflow, run_inputs, model=self.run_model or None,
                                       start_at=start_at, previous=previous, single=single)
        except Exception as exc:  # noqa: BLE001 - an invalid workflow says why in the editor
            self.send({"type": "refused", "reason": " ".join(str(exc).split())[:500],
                       "request": request})
            return
        if start_at is not None:
            again = {start_at} if single else proto.reachable(self.workflow, start_at)
            self._kept = (execution.run_id, {k: v for k, v in self._live_status.items()
                                             if _top(self.workflow, k) not in again})
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self.run_handle = runner.launch_background(execution)
        else:
            self.run_handle = runner.launch(execution)

    def respond(self, run_id: str, action: str, values: Mapping[str, Any] | None = None, *,
                node: str | None = None) -> None:
        """Answer the form paused run ``run_id`` waits on (at ``node``) and resume the run
        with this editor watching, as :func:`cellwire.respond` does; the editor shows why
        when the answer does not fit or the run cannot resume."""
        from cellwire.durable import prepare_respond
        from cellwire.runner import DEFAULT

        request = {"type": "respond", "run_id": run_id, "node": node, "action": action}
        if self.run_handle is not None and self.running:
            self.send({"type": "refused", "reason": "a run of this workflow is in progress",
                       "request": request})
            return
        last = self.last_run
        store = getattr(last.checkpointer, "store", None) if last is not None else None
        # The run's grants are in memory only: the run it resumes had them.
        secrets = last.state.secrets if last is not None and last.state is not None and \
            last.run_id == run_id else None
        runner = default_runner()
        try:
            workflow, options = prepare_respond(
                run_id, action, values, node=node, runner=runner,
                store=DEFAULT if store is None else store, secrets=secrets or None,
                workflow=self.workflow)
            execution = runner.prepare(workflow, None, **options)
        except Exception as exc:  # noqa: BLE001 - the editor says why, next to the form
            self.send({"type": "refused", "reason": " ".join(str(exc).split())[:500],
                       "request": request})
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self.run_handle = runner.launch_background(execution)
        else:
            self.run_handle = runner.launch(execution)

    def run_from(self, node_id: str, inputs: Mapping[str, Any] | None = None) -> None:
        """Run ``node_id`` and everything downstream of it again, reusing :attr:`last_run`
        for the nodes before it. A node inside an iteration or loop reruns its container."""
        wf = self.workflow
        refuse = {"type": "refused", "request": {"type": "run_from", "id": node_id}}
        if node_id not in wf.nodes:
            self.send({**refuse, "reason": f"no node {node_id!r}"})
            return
        if self.last_run is None:
            self.send({**refuse, "reason": "run the whole workflow first: 'run from here' "
                                           "reuses that run's results for the nodes before it"})
            return
        self.start_run(inputs, start_at=_top(wf, node_id))

    def run_node(self, node_id: str, inputs: Mapping[str, Any] | None = None) -> None:
        """Run ``node_id`` alone again, on the values the nodes before it had in
        :attr:`last_run`; the nodes after it keep their results. A node inside an iteration
        or loop reruns its container (alone).

        Raises :class:`RunRefused` (and the editor shows why) when there is no such run, or
        it did not reach the node's inputs, or a run is in progress.
        """
        wf = self.workflow
        reason = None
        if node_id not in wf.nodes:
            reason = f"no node {node_id!r}"
        elif self.last_run is None:
            reason = ("run the whole workflow first: 'run this node' takes the values of the "
                      "nodes before it from that run")
        elif self.run_handle is not None and self.running:
            reason = "a run of this workflow is in progress"
        else:
            reason = proto.unreached_inputs(wf, _top(wf, node_id), self.last_run.state)
        if reason is not None:
            self.send({"type": "refused", "reason": reason,
                       "request": {"type": "run_node", "id": node_id}})
            raise RunRefused(reason)
        self.start_run(inputs, start_at=_top(wf, node_id), single=True)

    def on_event(self, event: Event) -> None:
        """A run sink: turn node events into status messages (any thread)."""
        with self._lock:
            if isinstance(event, RunStarted):
                self._flush()
                kept = self._kept[1] if self._kept and self._kept[0] == event.run_id else {}
                if event.reason == "resume":
                    # A resumed run goes on from where it stopped: what finished stays shown.
                    kept = {k: v for k, v in self._live_status.items()
                            if v.get("status") != "paused"}
                self._live_status = dict(kept)
                self.running = True
                if kept:
                    self.send({"type": "status_snapshot", "status": kept})
                else:
                    self.send({"type": "status_reset"})
                self.status = dict(kept)
                return
            patch = proto.status_patch(event)
            if patch:
                self._live_status = proto.merge_status(self._live_status, patch)
                # The browser replaces what a patch names: a node's steps go whole.
                patch = {k: ({**v, "steps": self._live_status[k]["steps"]} if "steps" in v
                             else v) for k, v in patch.items()}
                self._queue(patch)
            elif isinstance(event, RUN_END_EVENTS):
                if isinstance(event, RunFailed) and event.node_id and \
                        event.node_id not in self._live_status:
                    # A run that fails before the node starts (bad config) still marks it.
                    patch = {event.node_id: {"status": "failed", "error": event.error}}
                    self._live_status = proto.merge_status(self._live_status, patch)
                    self._pending.append(patch)
                self._flush()
                self.running = False
                self.status = dict(self._live_status)

    def _queue(self, patch: dict[str, Any]) -> None:
        """Send ``patch`` with the others of this event-loop tick, or, within
        :data:`STATUS_INTERVAL` of the last message, with those until the interval is over."""
        first = not self._pending
        self._pending.append(patch)
        if not first:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop in this thread: nothing to wait for
            self._flush()
            return
        wait = self._sent_at + STATUS_INTERVAL - loop.time()
        if wait > 0:
            loop.call_later(wait, self._flush_locked)
        else:
            loop.call_soon(self._flush_locked)

    def _flush_locked(self) -> None:
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            patches, self._pending = self._pending, []
            self._sent_at = _now()
            self.send({"type": "status", "patches": patches})

    def close(self) -> None:
        default_runner().unwatch(self.workflow, self._layer)
        super().close()


def _now() -> float:
    """The running loop's clock (a test's virtual one), or the monotonic clock it keeps."""
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()


def _top(wf: Workflow, node_id: str) -> str:
    """The top-level node ``node_id`` is (or is inside, through iterations and loops)."""
    seen = {node_id}
    while node_id in wf.nodes and (parent := wf.nodes[node_id].parent) in wf.nodes \
            and parent not in seen:
        seen.add(node_id := str(parent))
    return node_id


class _EditorLayer(Layer):
    """What an editor sees of every run of its workflow: events turned into node statuses,
    and the finished run (with its state) kept for "run from here" and "run this node"."""

    __slots__ = ("editor",)

    def __init__(self, editor: WorkflowWidget):
        self.editor = editor

    def on_event(self, event: Event) -> None:
        self.editor.on_event(event)

    def on_run_end(self, result: RunResult) -> None:
        self.editor.run_summary = proto.run_summary(result)
        if result.state is not None:
            self.editor.last_run = result


def _recorded(workflow: Workflow) -> None:
    """A run of ``workflow`` was recorded: its editors redraw their stale badges."""
    for widget in list(_live):
        if widget.workflow is workflow:
            widget.refresh_stale()


def _install_hook() -> None:
    global _hook_installed
    if _hook_installed:
        return
    ledger = default_runner().ledger
    if _recorded not in ledger.listeners:
        ledger.listeners.append(_recorded)
    try:
        from IPython import get_ipython
    except ImportError:
        return
    ip = get_ipython()
    if ip is None:
        return
    ip.events.register("post_run_cell", _refresh_all)
    _hook_installed = True


def _refresh_all(*_: Any) -> None:
    """After each cell: show what Python or the magics changed in every open editor."""
    for widget in list(_live):
        try:
            widget.refresh()
        except Exception:  # noqa: BLE001, S112 - a broken workflow must not break every cell
            continue
