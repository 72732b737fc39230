"""Where cellwire keeps its files.

Runs, caches and files go to ``home()``: ``.cellwire/`` in the current folder, or
``$CELLWIRE_HOME``. What belongs to the *user* rather than to a project (trusted files, the
secrets file, provider configuration) goes to ``config_dir()``: never a folder that a cloned
repository could ship.

What cellwire creates for itself is private to the user, whatever the umask: folders 0700,
files 0600 (the run store, and with it its ``-wal`` and ``-shm`` files, which SQLite creates
with the database's mode). Folders and files that already exist keep their modes: a folder
may be shared on purpose, and the files cellwire puts in it are private anyway.
"""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

HOME_ENV = "CELLWIRE_HOME"
HOME_DIR = ".cellwire"
RUNS_DB = "runs.db"
CONFIG_ENV = "CELLWIRE_CONFIG_DIR"
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600

_warned: set[Path] = set()


def home(*, create: bool = False) -> Path:
    """The folder for runs, caches and files; read from the environment on every call.
    ``create`` makes it (private, 0700) when it does not exist."""
    configured = os.environ.get(HOME_ENV)
    path = Path(configured).expanduser() if configured else Path.cwd() / HOME_DIR
    if create:
        private_dir(path)
    return path.resolve()


def runs_db_path() -> Path:
    """The default run store: ``<home>/runs.db``."""
    return home() / RUNS_DB


def config_dir(*, create: bool = False) -> Path:
    """The user's cellwire configuration folder: ``$CELLWIRE_CONFIG_DIR``, else
    ``$XDG_CONFIG_HOME/cellwire``, else ``~/.config/cellwire`` (created private, 0700)."""
    configured = os.environ.get(CONFIG_ENV)
    if configured:
        path = Path(configured).expanduser()
    else:
        xdg = os.environ.get("XDG_CONFIG_HOME")
        path = (Path(xdg).expanduser() if xdg else Path.home() / ".config") / "cellwire"
    if create:
        private_dir(path)
    return path.resolve()


def private_dir(path: Path) -> None:
    """Make ``path`` and its missing parents as folders only the user can open (0700).

    ``mkdir`` with 0700 is never more open than that; the mode is set again only to undo a
    umask that took the user's own bits. Existing folders are left as they are.
    """
    missing: list[Path] = []
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing.append(folder)
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=PRIVATE_DIR)
        except FileExistsError:
            continue  # made meanwhile by someone else: theirs, left as it is
        os.chmod(folder, PRIVATE_DIR)
    if not path.is_dir():
        path.mkdir()  # raises the error that explains why (a file is in the way)


def private_file(path: Path) -> bool:
    """Create ``path`` empty and readable only by the user (0600) if it does not exist; True
    when this call created it. An existing file keeps its mode, with a warning (once per file
    and process) when other users can read it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, PRIVATE_FILE)
    except FileExistsError:
        _warn_if_shared(path)
        return False
    try:
        os.fchmod(fd, PRIVATE_FILE)  # the umask may have taken the user's own bits
    finally:
        os.close(fd)
    return True


def _warn_if_shared(path: Path) -> None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return
    if mode & 0o077 and path not in _warned:
        _warned.add(path)
        warnings.warn(f"{path} can be read by other users (mode {mode:o}); run `chmod 600 "
                      f"{path}` to make it private", stacklevel=3)
