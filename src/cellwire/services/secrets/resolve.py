"""Grant specs to values: what the CLI's ``--secret``, the magics and ``secrets=`` call."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from .errors import SecretError
from .secrets_file import read_secrets, secrets_path
from .spec import SYNTAX, Grant, parse_grant
from .system_keyring import keyring_value

#: What ``secrets=`` accepts: values by workflow variable name, or grant specs.
Secrets = Mapping[str, str] | Iterable[str] | str


def resolve_grants(specs: Iterable[str], *, environ: Mapping[str, str] | None = None,
                   path: Path | None = None) -> dict[str, str]:
    """The values ``specs`` grant, by workflow variable name.

    ``environ`` (default: the process environment) serves ``env:`` and bare specs, ``path``
    (default: :func:`~.secrets_file.secrets_path`) the secrets file. A source without a
    value raises :class:`SecretError` naming the variable, the source and the fix.
    """
    env = os.environ if environ is None else environ
    grants = [parse_grant(spec) for spec in specs]
    entries: dict[str, str] | None = None
    values: dict[str, str] = {}
    for grant in grants:
        if grant.source in ("default", "file") and entries is None:
            entries = read_secrets(path)
        values[grant.variable] = _value(grant, env, entries or {}, path)
    return values


def grant_values(secrets: Secrets | None, *, environ: Mapping[str, str] | None = None,
                 path: Path | None = None) -> dict[str, str] | None:
    """``secrets=`` of the Python API as values: a mapping is taken as it is (name ->
    value), a spec or a list of specs is resolved (:func:`resolve_grants`); None stays None
    (nothing granted)."""
    if secrets is None:
        return None
    if isinstance(secrets, Mapping):
        for name, value in secrets.items():
            if not isinstance(name, str) or not isinstance(value, str):
                raise SecretError(f"secrets={{...}}: the entry {str(name)[:60]!r} is not "
                                  "name -> text (fix: give str values, or grant specs "
                                  f"such as {SYNTAX})")
        return dict(secrets)
    return resolve_grants([secrets] if isinstance(secrets, str) else secrets,
                          environ=environ, path=path)


def _value(grant: Grant, env: Mapping[str, str], entries: Mapping[str, str],
           path: Path | None) -> str:
    name, key = grant.variable, grant.key
    where = secrets_path() if path is None else path
    if grant.source == "default":
        value = entries.get(key) or env.get(key)
        if not value:
            raise SecretError(
                f"secret {name}: neither your secrets file ({where}) has an entry {key} nor "
                f"is the environment variable {key} set (fix: `cellwire secret set {key}`, "
                f"or export {key}=..., or grant it as {name}=env:OTHER / "
                f"{name}=keyring:SERVICE/USER)")
        return value
    if grant.source == "env":
        value = env.get(key)
        if not value:
            raise SecretError(f"secret {name}: the environment variable {key} is not set or "
                              f"is empty (fix: export {key}=... before running)")
        return value
    if grant.source == "file":
        value = entries.get(key)
        if not value:
            raise SecretError(f"secret {name}: your secrets file ({where}) has no entry "
                              f"{key} (fix: `cellwire secret set {key}`)")
        return value
    service, user = grant.keyring_entry
    found = keyring_value(name, service, user)
    if not found:
        raise SecretError(f"secret {name}: the system keyring has no password for user "
                          f"{user!r} at service {service!r} (fix: keyring set {service} "
                          f"{user})")
    return found


__all__ = ["Secrets", "grant_values", "resolve_grants"]
