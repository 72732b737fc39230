"""cellwire's run events as Dify's stream events, with Dify's fields.

Field names follow Dify's ``api/core/app/entities/task_entities.py`` (the ``*StreamResponse``
models) and its generate-response converters: every event carries ``event``, ``task_id`` and
``workflow_run_id`` (chat apps add ``conversation_id``, ``message_id`` and ``created_at``),
and its payload under ``data``. Times are Unix seconds, elapsed times seconds.
"""

from __future__ import annotations

from typing import Any

from cellwire.engine import events as ev
from cellwire.model import Workflow

#: Dify's ``StreamEvent`` values cellwire sends.
WORKFLOW_EVENTS = (
    "workflow_started", "node_started", "node_finished", "node_retry", "iteration_started",
    "iteration_next", "iteration_completed", "loop_started", "loop_next", "loop_completed",
    "text_chunk", "workflow_paused", "human_input_required", "workflow_finished", "message",
    "message_end", "error", "ping",
)

_END_STATUS = {
    ev.RunSucceeded: "succeeded", ev.RunPartialSucceeded: "partial-succeeded",
    ev.RunFailed: "failed", ev.RunStopped: "stopped",
}
_NODE_STATUS = {
    ev.NodeSucceeded: "succeeded", ev.NodeException: "exception", ev.NodeFailed: "failed",
    ev.NodeStopped: "stopped", ev.NodePaused: "paused",
}


class DifyStream:
    """Turns one run's events (across its resumptions) into Dify's stream events.

    ``mode`` is ``workflow`` or ``advanced-chat``: chat apps stream the answer as ``message``
    events and end with ``message_end``; workflow apps stream ``text_chunk``.
    """

    def __init__(self, run_id: str, workflow: Workflow, *, mode: str, user: str,
                 conversation_id: str | None = None):
        self.run_id = run_id
        self.task_id = run_id
        self.workflow = workflow
        self.mode = mode
        self.user = user
        self.conversation_id = conversation_id
        self.started_at = 0.0
        self.steps = 0
        self.tokens = 0
        self.answer: list[str] = []

    @property
    def chat(self) -> bool:
        return self.mode == "advanced-chat"

    def envelope(self, event: str, data: dict[str, Any] | None = None, *,
                 at: float | None = None) -> dict[str, Any]:
        """A stream event of this run; chat apps' events name the conversation and message."""
        out: dict[str, Any] = {"event": event, "task_id": self.task_id,
                               "workflow_run_id": self.run_id}
        if self.chat:
            out.update(conversation_id=self.conversation_id, message_id=self.run_id,
                       created_at=int(at if at is not None else self.started_at))
        if data is not None:
            out["data"] = data
        return out

    def convert(self, event: ev.Event) -> list[dict[str, Any]]:
        """The Dify events one cellwire event becomes (none for those Dify has no word for)."""
        if isinstance(event, ev.RunStarted):
            if event.reason == "initial" or not self.started_at:
                self.started_at = event.time
            return [self.envelope("workflow_started", {
                "id": self.run_id, "workflow_id": self.workflow.name,
                "inputs": event.inputs, "created_at": int(self.started_at),
                "reason": "resumption" if event.reason != "initial" else "initial"})]
        if isinstance(event, ev.NodeStarted):
            return [self.envelope("node_started", {
                **self._node(event), "index": event.index,
                "predecessor_node_id": event.predecessor_id, "inputs": None,
                "inputs_truncated": False, "created_at": int(event.time), "extras": {}})]
        if isinstance(event, ev.NodeRetry):
            return [self.envelope("node_retry", {
                **self._node(event), "index": 0, "predecessor_node_id": None, "inputs": None,
                "process_data": None, "outputs": None, "status": "retry",
                "error": event.error, "elapsed_time": 0.0, "execution_metadata": None,
                "created_at": int(event.time), "finished_at": int(event.time), "files": [],
                "retry_index": event.attempt})]
        if isinstance(event, ev.NodeFinished):
            return self._node_finished(event)
        if isinstance(event, ev.StreamChunk):
            return self._chunk(event)
        if isinstance(event, ev.ContainerStarted | ev.ContainerNext | ev.ContainerCompleted):
            return [self._container(event)]
        if isinstance(event, ev.RunPaused):
            return self._paused(event)
        status = _END_STATUS.get(type(event))
        if status is not None:
            return self._finished(event, status)
        return []

    # -- nodes ------------------------------------------------------------------------------

    def _node(self, event: ev.NodeEvent) -> dict[str, Any]:
        node = self.workflow.nodes.get(event.node_id)
        parent = self.workflow.nodes.get(event.parent_id) if event.parent_id else None
        inside = parent.type if parent is not None else None
        return {"id": event.execution_id, "node_id": event.node_id,
                "node_type": event.node_type, "title": node.title if node is not None
                and getattr(node, "title", None) else event.node_id,
                "iteration_id": event.parent_id if inside == "iteration" else None,
                "loop_id": event.parent_id if inside == "loop" else None,
                "parallel_run_id": None, "agent_strategy": None}

    def _node_finished(self, event: ev.NodeFinished) -> list[dict[str, Any]]:
        if event.parent_id is None:
            self.steps += 1
        self.tokens += event.total_tokens
        error = getattr(event, "error", None)
        data = {**self._node(event), "index": event.index, "predecessor_node_id": None,
                "inputs": event.inputs, "inputs_truncated": False,
                "process_data": event.process_data, "process_data_truncated": False,
                "outputs": event.outputs, "outputs_truncated": False,
                "status": _NODE_STATUS.get(type(event), "succeeded"), "error": error,
                "elapsed_time": round(event.elapsed, 6),
                "execution_metadata": {"total_tokens": event.total_tokens,
                                       "total_price": event.cost, "currency": "USD"},
                "created_at": int(event.started_at or event.time),
                "finished_at": int(event.time), "files": []}
        return [self.envelope("node_finished", data)]

    def _chunk(self, event: ev.StreamChunk) -> list[dict[str, Any]]:
        if not event.text:
            return []
        if self.chat:
            self.answer.append(event.text)
            return [{**self.envelope("message", at=event.time), "id": self.run_id,
                     "answer": event.text, "from_variable_selector": list(event.selector)}]
        return [self.envelope("text_chunk", {"text": event.text,
                                             "from_variable_selector": list(event.selector)})]

    def _container(self, event: ev.ContainerStarted | ev.ContainerNext | ev.ContainerCompleted
                   ) -> dict[str, Any]:
        kind = event.kind if event.kind in ("iteration", "loop") else "iteration"
        base = {**self._node(event), "created_at": int(event.time), "extras": {}}
        if isinstance(event, ev.ContainerStarted):
            return self.envelope(f"{kind}_started", {**base, "inputs": {},
                                                     "metadata": {"iterator_length": event.total}})
        if isinstance(event, ev.ContainerNext):
            return self.envelope(f"{kind}_next", {**base, "index": event.index})
        return self.envelope(f"{kind}_completed", {
            **base, "inputs": {}, "outputs": {}, "status": "succeeded", "error": None,
            "elapsed_time": 0.0, "total_tokens": 0, "execution_metadata": {},
            "finished_at": int(event.time), "steps": event.rounds})

    # -- run ends ---------------------------------------------------------------------------

    def _summary(self, event: ev.Event, status: str) -> dict[str, Any]:
        return {"id": self.run_id, "workflow_id": self.workflow.name, "status": status,
                "elapsed_time": round(max(0.0, event.time - self.started_at), 6),
                "total_tokens": self.tokens, "total_steps": self.steps,
                "created_by": {"id": self.user, "user": self.user},
                "created_at": int(self.started_at), "finished_at": int(event.time)}

    def _finished(self, event: ev.Event, status: str) -> list[dict[str, Any]]:
        outputs = getattr(event, "outputs", None)
        error = getattr(event, "error", None) or getattr(event, "reason", None) \
            if status in ("failed", "stopped") else None
        data = {**self._summary(event, status), "outputs": outputs, "error": error,
                "exceptions_count": getattr(event, "exceptions_count", 0), "files": []}
        out = [self.envelope("workflow_finished", data)]
        if self.chat:
            if status in ("succeeded", "partial-succeeded"):
                out.append({**self.envelope("message_end", at=event.time), "id": self.run_id,
                            "metadata": {"usage": self.usage()}, "files": []})
            else:
                # Dify's CompletionRequestError: 400, after the run's own end event.
                out.append(self.error(error or status, status=400,
                                      code="completion_request_error"))
        return out

    def _paused(self, event: ev.RunPaused) -> list[dict[str, Any]]:
        out = []
        for form in event.forms:
            node = self.workflow.nodes.get(form["node_id"])
            out.append(self.envelope("human_input_required", human_input_data(
                form, node.title if node is not None else form["node_id"])))
        reasons = [{"type": "human_input_required", "form_id": f["token"],
                    "node_id": f["node_id"]} for f in event.forms]
        out.append(self.envelope("workflow_paused", {
            **self._summary(event, "paused"), "workflow_run_id": self.run_id,
            "paused_nodes": [f["node_id"] for f in event.forms], "outputs": event.outputs,
            "reasons": reasons}))
        return out

    def usage(self) -> dict[str, Any]:
        return {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": self.tokens,
                "total_price": "0", "currency": "USD", "latency": 0.0}

    def error(self, message: str, *, status: int = 500,
              code: str = "internal_server_error") -> dict[str, Any]:
        """Dify's ``error`` stream event."""
        out = {"event": "error", "task_id": self.task_id, "workflow_run_id": self.run_id,
               "status": status, "code": code, "message": message}
        if self.chat:
            out.update(conversation_id=self.conversation_id, message_id=self.run_id)
        return out


def human_input_data(form: dict[str, Any], title: str) -> dict[str, Any]:
    """``human_input_required.data``: the form as Dify streams it (its token answers it)."""
    fields = form.get("fields") or []
    return {
        "form_id": form["token"], "node_id": form["node_id"], "node_title": title,
        "form_content": form.get("content", ""),
        "inputs": [form_input(f) for f in fields],
        "actions": [{"id": a["id"], "title": a.get("title") or a["id"],
                     "button_style": a.get("button_style", "default")}
                    for a in form.get("actions") or []],
        "display_in_ui": True, "form_token": form["token"],
        "resolved_default_values": {f["name"]: "" if f.get("default") is None
                                    else str(f["default"]) for f in fields},
        "expiration_time": int(form["expires_at"]) if form.get("expires_at") else None,
    }


def form_input(field: dict[str, Any]) -> dict[str, Any]:
    """One form field as Dify's ``FormInputConfig``."""
    out = {"type": field.get("type", "paragraph"), "output_variable_name": field["name"],
           "default": None if field.get("default") is None else
           {"type": "constant", "value": field["default"]}}
    if field.get("options"):
        out["options"] = list(field["options"])
    return out


def ping() -> dict[str, Any]:
    return {"event": "ping"}


__all__ = ["WORKFLOW_EVENTS", "DifyStream", "form_input", "human_input_data", "ping"]
