"""Human input: the form a paused run waits on, the answer that continues it.

A ``human-input`` node that has no answer yet raises :class:`PauseRequested` with its
:class:`Form`: the node pauses, the rest of the run goes on as far as it can, and the run ends
``paused``. Answering the form (:func:`check_answer` says whether an answer fits it) and
resuming the run runs the node again; this time it finds its :class:`Answer` and leaves
through the chosen action's handle. A form whose deadline has passed unanswered leaves
through :data:`TIMEOUT_HANDLE` instead, as in Dify.

A form holds what a person is shown: its content is rendered when the run pauses, from values
already redacted of the run's secrets, so it may be stored and displayed.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

#: The handle a form leaves through when nobody answered it in time (Dify's).
TIMEOUT_HANDLE = "__timeout"

#: The input types a form field may have (Dify's; ``text-input`` is the older spelling).
TEXT_TYPES = frozenset({"text_input", "text-input", "paragraph"})
FIELD_TYPES = TEXT_TYPES | {"select", "file", "file-list"}


@dataclass(frozen=True, slots=True)
class FormField:
    """One input of a form: its output variable, type, default and (for select) options."""

    name: str
    type: str = "paragraph"
    default: Any = None
    options: list[str] | None = None


@dataclass(frozen=True, slots=True)
class FormAction:
    """A button of a form: its id is the handle the node leaves through."""

    id: str
    title: str = ""
    button_style: str = "default"


@dataclass(frozen=True, slots=True)
class Form:
    """What a paused ``human-input`` node asks of a person."""

    run_id: str
    node_id: str
    title: str
    #: The credential that answers this form over REST (``/v1/form/human_input/{token}``).
    token: str
    #: Markdown with the run's values filled in; ``{{#$output.NAME#}}`` marks where the
    #: answer's values go.
    content: str
    fields: tuple[FormField, ...] = ()
    actions: tuple[FormAction, ...] = ()
    created_at: float = 0.0
    #: When an unanswered form leaves through :data:`TIMEOUT_HANDLE`; None: never.
    expires_at: float | None = None

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def to_dict(self) -> dict[str, Any]:
        """The form as JSON-safe data (what the store keeps and a client is shown)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Form:
        return cls(
            run_id=data["run_id"], node_id=data["node_id"], title=data.get("title", ""),
            token=data["token"], content=data.get("content", ""),
            fields=tuple(FormField(**f) for f in data.get("fields") or ()),
            actions=tuple(FormAction(**a) for a in data.get("actions") or ()),
            created_at=float(data.get("created_at") or 0.0),
            expires_at=None if data.get("expires_at") is None else float(data["expires_at"]))

    def describe(self) -> str:
        """The form as text for a terminal: its content, fields and actions."""
        lines = [f"Run {self.run_id} waits for input at node '{self.node_id}' ({self.title}):"]
        lines += ["  " + line for line in self.content.splitlines() or [""]]
        for f in self.fields:
            extra = f" one of {', '.join(f.options)}" if f.options else ""
            default = "" if f.default is None else f" (default {f.default!r})"
            lines.append(f"  input {f.name}: {f.type}{extra}{default}")
        lines.append("  actions: " + ", ".join(
            f"{a.id} ({a.title})" if a.title and a.title != a.id else a.id
            for a in self.actions))
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Answer:
    """A person's answer to a form: the action chosen and the values given."""

    action: str
    values: dict[str, Any] = field(default_factory=dict)
    answered_at: float = 0.0


class PauseRequested(Exception):
    """Raised by a node that waits for a person: the run pauses at it with ``form``."""

    def __init__(self, form: Form):
        self.form = form
        super().__init__(f"node '{form.node_id}' waits for input")


class FormError(ValueError):
    """An answer that does not fit its form; the message names the field and the fix."""


class FormExpired(FormError):
    """The form's deadline passed before it was answered."""


def new_token() -> str:
    return secrets.token_urlsafe(18)


def check_answer(form: Form, action: str, values: Mapping[str, Any] | None) -> dict[str, Any]:
    """The values of an answer to ``form``, defaults filled in; :class:`FormError` naming the
    action or field and the fix when the answer does not fit."""
    ids = [a.id for a in form.actions]
    if action not in ids:
        raise FormError(f"node '{form.node_id}': action {action!r} is not one of the form's "
                        f"actions ({', '.join(ids) or 'none'}); answer with one of them")
    given = dict(values or {})
    fields = {f.name: f for f in form.fields}
    unknown = sorted(set(given) - set(fields))
    if unknown:
        raise FormError(f"node '{form.node_id}': the form has no input {', '.join(unknown)}; "
                        f"its inputs are {', '.join(fields) or 'none'}")
    checked: dict[str, Any] = {}
    for name, spec in fields.items():
        value = given.get(name, spec.default)
        if value is None:
            raise FormError(f"node '{form.node_id}': input {name!r} is missing; give it "
                            f"(--input {name}=VALUE, or values={{{name!r}: ...}})")
        checked[name] = _checked(form.node_id, spec, value)
    return checked


def _checked(node_id: str, spec: FormField, value: Any) -> Any:
    where = f"node '{node_id}': input {spec.name!r}"
    if spec.type in TEXT_TYPES or spec.type == "select":
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise FormError(f"{where} takes text, not {type(value).__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise FormError(f"{where} takes text, not {value}")
        text = value if isinstance(value, str) else str(value)
        if spec.type == "select" and spec.options is not None and text not in spec.options:
            raise FormError(f"{where} is {text!r}, not one of its options "
                            f"({', '.join(spec.options)}); pick one of them")
        return text
    if spec.type == "file":
        if not isinstance(value, Mapping):
            raise FormError(f"{where} takes a file (an object with its url or path)")
        return dict(value)
    if spec.type == "file-list":
        if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
            raise FormError(f"{where} takes a list of files (objects with their url or path)")
        return [dict(v) for v in value]
    return value


def filled(form: Form, values: Mapping[str, Any]) -> str:
    """The form's content with the answer's values where ``{{#$output.NAME#}}`` marks them
    (files as ``[file]`` and ``[N files]``, as Dify shows them)."""
    text = form.content
    types = {f.name: f.type for f in form.fields}
    for name, value in values.items():
        kind = types.get(name)
        if kind == "file":
            shown = "[file]"
        elif kind == "file-list":
            shown = f"[{len(value) if isinstance(value, list) else 0} files]"
        else:
            shown = "" if value is None else str(value)
        text = text.replace("{{#$output." + name + "#}}", shown)
    return text


__all__ = ["TIMEOUT_HANDLE", "Answer", "Form", "FormAction", "FormError", "FormExpired",
           "FormField", "PauseRequested", "check_answer", "filled", "new_token"]
