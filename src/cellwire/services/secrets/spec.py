"""The grant spec: which workflow variable gets which source's value.

``VAR``                  the secrets file's entry VAR, else the environment variable VAR
``VAR=env:NAME``         the environment variable NAME (``env:`` alone: VAR)
``VAR=file:ENTRY``       the secrets file's entry ENTRY (``file:`` alone: VAR)
``VAR=keyring:SERVICE/USER``  the system keyring's password of USER at SERVICE (split at
                         the last ``/``; ``keyring:USER`` is service ``cellwire``; ``keyring:``
                         alone: user VAR)

A value itself never goes in a spec: command lines end up in shell histories and process
lists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from .errors import SecretError

Source = Literal["default", "env", "file", "keyring"]
SOURCES: tuple[Source, ...] = ("env", "file", "keyring")
#: The keyring service of ``keyring:USER``.
KEYRING_SERVICE = "cellwire"
#: Workflow variable names, as Dify allows them.
VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SYNTAX = "VAR, VAR=env:NAME, VAR=file:ENTRY or VAR=keyring:SERVICE/USER"


@dataclass(frozen=True, slots=True)
class Grant:
    """One parsed spec: ``variable`` gets the value of ``key`` in ``source``."""

    variable: str
    source: Source
    key: str

    @property
    def keyring_entry(self) -> tuple[str, str]:
        """(service, user) of a keyring grant."""
        service, _, user = self.key.rpartition("/")
        return service or KEYRING_SERVICE, user

    def __str__(self) -> str:
        return self.variable if self.source == "default" else \
            f"{self.variable}={self.source}:{self.key}"


def parse_grant(spec: str) -> Grant:
    """The :class:`Grant` that ``spec`` writes; :class:`SecretError` says what is wrong."""
    variable, has_source, source_text = spec.strip().partition("=")
    variable = variable.strip()
    if not VARIABLE.fullmatch(variable):
        # The spec is not quoted: a value typed here by mistake stays out of the message.
        raise SecretError("a grant does not start with a variable name (letters, digits and "
                          f"'_', not starting with a digit) (fix: write {SYNTAX})")
    if not has_source:
        return Grant(variable, "default", variable)
    source, colon, key = source_text.strip().partition(":")
    if not colon or source not in SOURCES:
        raise SecretError(
            f"secret {variable}: the text after '=' is not a source (env:, file: or "
            "keyring:); a value never goes in a grant, since command lines are kept in "
            f"shell histories (fix: write {SYNTAX}, or `cellwire secret set {variable}`)")
    return Grant(variable, source, key.strip() or variable)


__all__ = ["KEYRING_SERVICE", "SOURCES", "SYNTAX", "VARIABLE", "Grant", "Source", "parse_grant"]
