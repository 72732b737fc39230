"""Secret environment variables: filled from the process environment, never shown.

Files never hold secret values (``dump`` writes ``value: null``); a run reads each one from
the environment variable of the same name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from cellwire.model import Workflow

REDACTED = "***"


def fill_secrets(workflow: Workflow, environ: Mapping[str, str] | None = None,
                 ) -> tuple[Workflow, list[str]]:
    """A copy of ``workflow`` whose unset secrets come from ``environ`` (``os.environ``).

    Returns the copy and the names of secrets found neither in the workflow nor in ``environ``.
    """
    environ = os.environ if environ is None else environ
    filled = workflow.model_copy(deep=True)
    missing = []
    for var in filled.environment:
        if var.value_type != "secret" or var.value not in (None, ""):
            continue
        if var.name in environ:
            var.value = environ[var.name]
        else:
            missing.append(var.name)
    return filled, missing


def secret_values(workflow: Workflow) -> list[str]:
    """The workflow's non-empty secret values, longest first (so redaction covers overlaps)."""
    found = {str(v.value) for v in workflow.environment
             if v.value_type == "secret" and v.value not in (None, "")}
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
