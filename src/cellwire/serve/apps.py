"""The apps a server serves: every workflow file in a file or folder, by name.

A served workflow comes from a file, so its code nodes run in the sandbox unless the server
was started trusting its files (``cellwire serve --trust``), as ``cellwire run`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cellwire.model import Workflow, WorkflowError
from cellwire.nodes.start import StartConfig, StartVariable

#: The file names a folder is searched for (what ``cellwire.formats.load`` reads).
PATTERNS = ("*.yml", "*.yaml", "*.json")

#: Dify app modes a workflow can be served as.
CHAT_MODES = frozenset({"advanced-chat", "chat", "agent-chat"})


class AppLoadError(ValueError):
    """A file could not be served; the message names the file and what is wrong."""


@dataclass(frozen=True)
class ServedApp:
    """One served workflow: its name (the app's key in URLs and headers) and where from."""

    name: str
    workflow: Workflow
    #: The file it was read from (None: a notebook's own workflow).
    source: Path | None = None

    @property
    def mode(self) -> str:
        """Dify's app mode: ``workflow`` or ``advanced-chat``."""
        return "advanced-chat" if self.workflow.mode in CHAT_MODES else "workflow"

    @property
    def is_chat(self) -> bool:
        return self.mode == "advanced-chat"

    def start_variables(self) -> list[StartVariable]:
        """The variables the start node declares (none without a start node)."""
        for node in self.workflow.children(None):
            if node.type == "start":
                return StartConfig.model_validate(node.config).variables
        return []

    def user_input_form(self) -> list[dict[str, Any]]:
        """The start variables as Dify's ``/parameters`` lists them: ``[{type: {...}}]``."""
        form: list[dict[str, Any]] = []
        for var in self.start_variables():
            entry: dict[str, Any] = {"variable": var.variable, "label": var.label or var.variable,
                                     "required": var.required, "default": var.default or ""}
            if var.max_length is not None:
                entry["max_length"] = var.max_length
            if var.type == "select":
                entry["options"] = list(var.options)
            form.append({var.type: entry})
        return form


def load_apps(path: str | Path, *, trust: bool = False) -> dict[str, ServedApp]:
    """Every workflow in the file or folder ``path`` (not its subfolders), by app name.

    The name is the workflow's name, else the file's stem; two files with one name are an
    error naming both. ``trust`` marks the files trusted (their code runs unsandboxed)."""
    from cellwire.formats import load

    root = Path(path)
    if root.is_dir():
        files = sorted({f for pattern in PATTERNS for f in root.glob(pattern) if f.is_file()})
        if not files:
            raise AppLoadError(f"{root}: no workflow file (*.yml, *.yaml, *.json) to serve")
    elif root.is_file():
        files = [root]
    else:
        raise AppLoadError(f"{root}: no such file or folder")
    apps: dict[str, ServedApp] = {}
    for file in files:
        try:
            workflow = load(file, trusted=trust)
        except OSError as exc:
            raise AppLoadError(f"{file}: cannot read the file: {exc.strerror or exc}") from None
        except WorkflowError as exc:
            problems = "; ".join(str(p) for p in exc.problems)
            raise AppLoadError(f"{file}: {problems}") from None
        name = workflow.name or file.stem
        if name in apps:
            raise AppLoadError(f"{file} and {apps[name].source} both define app {name!r}: "
                               "rename one workflow (its name: field)")
        apps[name] = ServedApp(name, workflow, file)
    return apps


__all__ = ["CHAT_MODES", "PATTERNS", "AppLoadError", "ServedApp", "load_apps"]
