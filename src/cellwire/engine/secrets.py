"""Secret environment variables: read from the environment at run time, never shown.

Files never hold secret values. A run reads each unset secret from the process environment
variable of the same name, and every event it emits (so the trace, the store, the notebook
and the CLI) has those values replaced by ``***``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from cellwire.model import Workflow

from .events import Event

REDACTED = "***"
# Event fields that can carry user data; ids, names and numbers never hold a secret.
_DATA_FIELDS = ("inputs", "outputs", "process_data", "metadata", "error", "text")


def environment_values(workflow: Workflow, environ: Mapping[str, str] | None = None
                       ) -> dict[str, Any]:
    """``env.*`` for a run: declared values, with unset secrets taken from ``environ``."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for var in workflow.environment:
        value = var.value
        if var.value_type == "secret" and value in (None, ""):
            value = environ.get(var.name)
        values[var.name] = value
    return values


def missing_secrets(workflow: Workflow, environ: Mapping[str, str] | None = None) -> list[str]:
    """Names of secrets set neither in the workflow nor in ``environ``."""
    values = environment_values(workflow, environ)
    return [v.name for v in workflow.environment
            if v.value_type == "secret" and values[v.name] in (None, "")]


def secret_values(workflow: Workflow, env: Mapping[str, Any]) -> list[str]:
    """The run's secret values, longest first so overlapping ones are fully covered."""
    found = {str(env[v.name]) for v in workflow.environment
             if v.value_type == "secret" and env.get(v.name) not in (None, "")}
    return sorted(found, key=len, reverse=True)


def redact(value: Any, secrets: list[str]) -> Any:
    """``value`` with every occurrence of a secret, in any string inside it, replaced."""
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, Mapping):
        return {redact(k, secrets): redact(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(item, secrets) for item in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool) and str(value) in secrets:
        return REDACTED
    return value


def redact_event(event: Event, secrets: list[str]) -> Event:
    """A copy of ``event`` whose data fields hold no secret."""
    changes = {
        name: redact(getattr(event, name), secrets)
        for name in _DATA_FIELDS
        if hasattr(event, name)
    }
    return dataclasses.replace(event, **changes) if changes else event
