"""Secrets granted to a workflow by the user: the grant sources and the secrets file.

A workflow names the secrets it needs; it gets a value only when the user grants one, from
the process environment (``env:``), the user's secrets file (``file:``) or the system keyring
(``keyring:``). :func:`resolve_grants` turns grant specs (:mod:`.spec`) into values for
``Execution(..., secrets=...)``; :func:`grant_values` is ``secrets=`` of the Python API.
:func:`set_secret`, :func:`list_secrets` and :func:`delete_secret` keep the secrets file.
"""

from .errors import SecretError
from .resolve import Secrets, grant_values, resolve_grants
from .secrets_file import delete_secret, list_secrets, read_secrets, secrets_path, set_secret
from .spec import Grant, parse_grant

__all__ = [
    "Grant", "SecretError", "Secrets", "delete_secret", "grant_values", "list_secrets",
    "parse_grant", "read_secrets", "resolve_grants", "secrets_path", "set_secret",
]
