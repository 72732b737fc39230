"""Which local files a run may read: implementations of
:class:`cellwire.engine.services.FilePolicy`.

A node that reads a file an input names (an llm node's image, say) asks ``runtime.files``
first and reads only the path it returns. :class:`FolderPolicy` grants the files inside some
folders; :class:`NoLocalFiles` grants none, as does a runtime whose ``files`` is None. A
notebook, the CLI and the Python API read the current working folder by default
(:func:`working_folder`); a served run reads nothing local unless configured.
"""

from __future__ import annotations

import os
from pathlib import Path

from cellwire.engine.services import FileAccessDenied

# How the messages name the policy a user grants folders with.
_POLICY = "cellwire.services.files.FolderPolicy"


class FolderPolicy:
    """Files inside ``folders`` (and their subfolders) only.

    A path is resolved before it is checked: ``~`` is expanded, ``..`` and symlinks are
    followed, and a relative path is taken from the first folder. So ``../x`` or a symlink
    that leads out of the folders is refused like any path outside them.
    """

    __slots__ = ("folders",)

    def __init__(self, *folders: str | os.PathLike[str]):
        if not folders:
            raise ValueError("FolderPolicy needs at least one folder; use NoLocalFiles() to "
                             "let a run read no local files")
        #: The granted folders, resolved.
        self.folders: tuple[Path, ...] = tuple(
            Path(folder).expanduser().resolve() for folder in folders)

    def check(self, path: str | os.PathLike[str]) -> Path:
        """The resolved ``path`` when it is inside a granted folder; else
        :class:`FileAccessDenied` naming the folders and how to grant more."""
        given = Path(path).expanduser()
        resolved = (given if given.is_absolute() else self.folders[0] / given).resolve()
        if any(resolved.is_relative_to(folder) for folder in self.folders):
            return resolved
        allowed = ", ".join(str(folder) for folder in self.folders)
        grant = ", ".join(repr(str(folder)) for folder in (*self.folders, resolved.parent))
        via = f" (it leads to {str(resolved)!r})" if str(resolved) != str(path) else ""
        raise FileAccessDenied(
            f"{str(path)!r}{via} is outside the folder{'s' if len(self.folders) > 1 else ''} "
            f"this run may read: {allowed}. To read it, copy it into that folder, or grant "
            f"its folder too: run with cellwire.Runtime(files={_POLICY}({grant}))")

    def __repr__(self) -> str:
        return f"FolderPolicy({', '.join(repr(str(f)) for f in self.folders)})"


class NoLocalFiles:
    """No local file at all: what a served run gets unless configured."""

    __slots__ = ()

    def check(self, path: str | os.PathLike[str]) -> Path:
        """Always :class:`FileAccessDenied`, saying how to grant a folder."""
        raise FileAccessDenied(
            f"{str(path)!r} is a local file, and this run may read no local files. To read "
            f"it, grant its folder: run with cellwire.Runtime(files={_POLICY}('<folder>'))")

    def __repr__(self) -> str:
        return "NoLocalFiles()"


def working_folder() -> FolderPolicy:
    """The default of notebooks, the CLI and the Python API: the current working folder."""
    return FolderPolicy(Path.cwd())


__all__ = ["FileAccessDenied", "FolderPolicy", "NoLocalFiles", "working_folder"]
