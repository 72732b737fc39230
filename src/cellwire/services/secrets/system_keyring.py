"""The system keyring, through the ``keyring`` package when it is installed.

cellwire does not depend on ``keyring``: it is imported only when a grant names
``keyring:``, and its absence is an error that says how to install it.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import SecretError


def _keyring(variable: str) -> Any:
    try:
        return importlib.import_module("keyring")
    except ImportError:
        raise SecretError(f"secret {variable}: keyring: needs the keyring package, which is "
                          "not installed (fix: pip install keyring, or grant it from "
                          "env: or file:)") from None


def keyring_value(variable: str, service: str, user: str) -> str | None:
    """The keyring's password of ``user`` at ``service`` for ``variable`` (None: no entry)."""
    keyring = _keyring(variable)
    errors = importlib.import_module("keyring.errors")
    try:
        value = keyring.get_password(service, user)
    except errors.KeyringError as exc:
        raise SecretError(f"secret {variable}: the system keyring cannot be read: "
                          f"{type(exc).__name__}: {exc} (fix: set up a keyring backend, see "
                          "the keyring package's documentation, or grant it from env: or "
                          "file:)") from None
    return value if isinstance(value, str) else None


__all__ = ["keyring_value"]
