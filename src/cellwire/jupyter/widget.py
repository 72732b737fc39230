"""The visual graph editor: an anywidget over one :class:`Workflow`, edited in place.

Sync (panel-reactflow's model): the ``nodes`` and ``edges`` traits are the graph, always
replaced, never mutated; React Flow's interaction state (selection, drags, viewport) stays in
the browser, which sends semantic edit messages (``connect``, ``delete``, ``update_config``,
``add_node``, ``move``, ...). Each edit changes ``widget.workflow`` at once and the traits are
recomputed from it. A change made from Python or a magic cell shows after the cell finishes
(a ``post_run_cell`` hook), or at once with :meth:`WorkflowWidget.refresh`.

Run status travels as small ``status`` messages, one per node event, never resending the
graph; the ``status`` trait holds the whole picture at run start and end, for views opened
later.
"""

from __future__ import annotations

import asyncio
import pathlib
import threading
import weakref
from collections.abc import Mapping
from typing import Any

import anywidget
import traitlets

from cellwire import api
from cellwire.engine import CompiledWorkflow, Execution
from cellwire.engine.events import RUN_END_EVENTS, Event, RunFailed, RunStarted
from cellwire.model import Workflow

from . import widget_protocol as proto

STATIC = pathlib.Path(__file__).parent.parent / "static"
MAX_HISTORY = 100

_MISSING_BUNDLE = """
export default { render({ el }) {
  el.innerHTML = '<pre>cellwire: the editor bundle is not built (src/cellwire/static/widget.js'
    + ' is missing); run `make install` or `npm ci && npm run build` in js/.</pre>';
} };
"""

_live: weakref.WeakSet[WorkflowWidget] = weakref.WeakSet()
_hook_installed = False


class WorkflowWidget(anywidget.AnyWidget):
    """An editor for ``workflow``; edits change that very object (``widget.workflow is wf``)."""

    _esm = STATIC / "widget.js" if (STATIC / "widget.js").exists() else _MISSING_BUNDLE
    _css = STATIC / "widget.css" if (STATIC / "widget.css").exists() else ""

    nodes = traitlets.List(traitlets.Dict()).tag(sync=True)
    edges = traitlets.List(traitlets.Dict()).tag(sync=True)
    #: node id -> {status, elapsed, tokens, cost, error, inputs, outputs}
    status = traitlets.Dict().tag(sync=True)
    problems = traitlets.List(traitlets.Dict()).tag(sync=True)
    node_types = traitlets.List(traitlets.Dict()).tag(sync=True)
    running = traitlets.Bool(False).tag(sync=True)
    can_undo = traitlets.Bool(False).tag(sync=True)
    can_redo = traitlets.Bool(False).tag(sync=True)
    height = traitlets.Int(560).tag(sync=True)
    name = traitlets.Unicode("").tag(sync=True)
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
        self._lock = threading.Lock()
        self.execution: Execution | None = None
        self.run_task: asyncio.Future[Any] | None = None
        self.refresh()
        self.on_msg(self._on_custom)
        api.watch(workflow, self.on_event)
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
        if self.name != self.workflow.name:
            self.name = self.workflow.name

    def handle(self, msg: Mapping[str, Any]) -> dict[str, Any] | None:
        """Carry out one message from the browser; returns the reply to send, if any."""
        kind = msg.get("type")
        if kind in ("undo", "redo"):
            self._step_history(kind == "undo")
            return None
        if kind == "run":
            self.start_run(msg.get("inputs"))
            return None
        if kind == "stop":
            if self.execution is not None:
                self.execution.stop()
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

    def start_run(self, inputs: Mapping[str, Any] | None = None) -> None:
        """Run the workflow with this widget watching; a task on the kernel's event loop."""
        if self.execution is not None and self.running:
            self.send({"type": "refused", "reason": "a run of this workflow is in progress",
                       "request": {"type": "run"}})
            return
        runtime = api.default_runtime()
        if self.run_model:
            runtime.model_override = self.run_model
        runtime.subscribe(self.on_event)
        try:
            compiled = CompiledWorkflow(self.workflow)
        except Exception as exc:  # noqa: BLE001 - an invalid workflow says why in the editor
            self.send({"type": "refused", "reason": " ".join(str(exc).split())[:500],
                       "request": {"type": "run"}})
            return
        self.execution = Execution(compiled, {**self.inputs, **(inputs or {})}, runtime)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            self.run_task = loop.create_task(self.execution.run())
        else:
            threading.Thread(target=asyncio.run, args=(self.execution.run(),),
                             daemon=True).start()

    def on_event(self, event: Event) -> None:
        """A run sink: turn node events into status messages (any thread)."""
        with self._lock:
            if isinstance(event, RunStarted):
                self._live_status = {}
                self.running = True
                self.send({"type": "status_reset"})
                self.status = {}
                return
            patch = proto.status_patch(event)
            if patch:
                self._live_status = proto.merge_status(self._live_status, patch)
                self.send({"type": "status", "patch": patch})
            elif isinstance(event, RUN_END_EVENTS):
                if isinstance(event, RunFailed) and event.node_id and \
                        event.node_id not in self._live_status:
                    # A run that fails before the node starts (bad config) still marks it.
                    patch = {event.node_id: {"status": "failed", "error": event.error}}
                    self._live_status = proto.merge_status(self._live_status, patch)
                    self.send({"type": "status", "patch": patch})
                self.running = False
                self.status = dict(self._live_status)

    def close(self) -> None:
        api.unwatch(self.workflow, self.on_event)
        super().close()


def _install_hook() -> None:
    global _hook_installed
    if _hook_installed:
        return
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
