"""The user's secrets file: ``<config dir>/secrets.yaml``, a YAML mapping of entry -> value.

The config dir is the user's own (``$CELLWIRE_CONFIG_DIR``, else XDG's, see
:func:`cellwire.store.home.config_dir`), never a project folder a cloned repository could
ship. The file is created 0600 in a 0700 folder and replaced whole on every change (written
to a private temporary file, then renamed), under a lock so two writers lose nothing. A file
that other users can read or write, or that another user owns, is refused with the fix.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import yaml

from cellwire.engine.secrets import MIN_SECRET_LENGTH
from cellwire.model import WorkflowError
from cellwire.model.yaml12 import parse_yaml, read_text
from cellwire.store.home import config_dir

from .errors import SecretError

SECRETS_FILE = "secrets.yaml"
#: Entry names: what ``cellwire secret set NAME`` accepts.
ENTRY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def secrets_path() -> Path:
    """Where the secrets file is (it may not exist yet)."""
    return config_dir() / SECRETS_FILE


def read_secrets(path: Path | None = None) -> dict[str, str]:
    """The entries of the secrets file (none when it does not exist).

    Raises :class:`SecretError` when the file is open to other users or is not a mapping of
    names to text.
    """
    path = secrets_path() if path is None else path
    try:
        info = path.stat()
    except FileNotFoundError:
        return {}
    _check_private(path, info)
    try:
        data = parse_yaml(read_text(path), str(path))
    except WorkflowError as exc:
        raise SecretError(f"the secrets file {path} cannot be read: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SecretError(f"the secrets file {path} is not a mapping of names to values "
                          "(fix: write one `NAME: value` per line)")
    for name, value in data.items():
        if not isinstance(name, str) or not isinstance(value, str):
            # The value is not shown: it may be a secret that YAML read as a number.
            raise SecretError(f"the secrets file {path}: entry {str(name)[:60]!r} is not text "
                              f"(fix: quote it, or `cellwire secret set {name}` again)")
    return data


def list_secrets(path: Path | None = None) -> list[str]:
    """The names in the secrets file, sorted; never the values."""
    return sorted(read_secrets(path))


def set_secret(name: str, value: str, path: Path | None = None) -> Path:
    """Store ``value`` as the entry ``name`` (replacing it); returns the file's path."""
    if not ENTRY.fullmatch(name):
        raise SecretError(f"secret name {name[:60]!r}: use letters, digits, '_', '.' and '-'")
    if not isinstance(value, str) or len(value) < MIN_SECRET_LENGTH:
        raise SecretError(f"secret {name}: the value must be text of at least {MIN_SECRET_LENGTH} "
                          "characters (shorter ones could not be redacted from what runs show)")
    path = secrets_path() if path is None else path
    with _locked(path):
        entries = read_secrets(path)
        entries[name] = value
        _write(path, entries)
    return path


def delete_secret(name: str, path: Path | None = None) -> bool:
    """Remove the entry ``name``; False when there was none."""
    path = secrets_path() if path is None else path
    with _locked(path):
        entries = read_secrets(path)
        if entries.pop(name, None) is None:
            return False
        _write(path, entries)
    return True


def _check_private(path: Path, info: os.stat_result) -> None:
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise SecretError(f"the secrets file {path} belongs to another user; cellwire reads "
                          f"only your own (fix: chown $USER {path}, or remove it)")
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise SecretError(
            f"the secrets file {path} can be read or changed by other users (mode "
            f"{stat.S_IMODE(info.st_mode):03o}); cellwire does not use it so (fix: "
            f"chmod 600 {path})")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    folder = _private_folder(path.parent)
    fd = os.open(folder / f".{path.name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _private_folder(folder: Path) -> Path:
    if not folder.is_dir():
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


def _write(path: Path, entries: dict[str, str]) -> None:
    text = yaml.safe_dump(entries, default_flow_style=False, allow_unicode=True,
                          sort_keys=True) if entries else ""
    # mkstemp creates the file 0600: the values are never in a file others can read.
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


__all__ = ["SECRETS_FILE", "delete_secret", "list_secrets", "read_secrets", "secrets_path",
           "set_secret"]
