"""The one error of the secrets service."""

from __future__ import annotations


class SecretError(ValueError):
    """A secret could not be granted or stored: the message names the variable, the source
    and the fix, and never holds a value."""


__all__ = ["SecretError"]
