"""Where tools come from besides a notebook cell: a Python file or module the user names
(``--tools tools.py``, ``--tools package.module``, ``%workflow tools module``) and the
``cellwire.tools`` entry points of installed plugins.

A file or module named this way is the user's own code, run in this process as they asked:
it is imported, not sandboxed. Its tools still get only the secrets granted to a run.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

from .tool import Tool, from_function

#: The entry point group plugins list their tools in: a Tool, a function, a list of them,
#: or a callable returning such a list.
ENTRY_POINTS = "cellwire.tools"


class ToolLoadError(ImportError):
    """A tools file or module could not be loaded; the message says which and why."""


def load_tools(source: str | Path) -> list[Tool]:
    """The tools of a Python file (``tools.py``) or an importable module
    (``package.module``): its ``@tool`` functions, and the tools its ``TOOLS`` list holds."""
    module = _import(str(source))
    return module_tools(module)


def module_tools(module: ModuleType) -> list[Tool]:
    found: dict[str, Tool] = {}
    for value in vars(module).values():
        if isinstance(value, Tool):
            found[value.key] = value
    for item in getattr(module, "TOOLS", None) or []:
        made = item if isinstance(item, Tool) else from_function(item)
        found[made.key] = made
    return list(found.values())


def _import(source: str) -> ModuleType:
    path = Path(source)
    if source.endswith(".py") or path.is_file():
        if not path.is_file():
            raise ToolLoadError(f"--tools {source}: no such file")
        name = f"cellwire_tools_{path.stem}_{abs(hash(str(path.resolve()))) % 10**8}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ToolLoadError(f"--tools {source}: not a Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise ToolLoadError(f"--tools {source}: importing it raised "
                                f"{type(exc).__name__}: {exc}") from exc
        return module
    try:
        return importlib.import_module(source)
    except ModuleNotFoundError as exc:
        raise ToolLoadError(f"--tools {source}: no file or module of that name ({exc})") \
            from None
    except Exception as exc:
        raise ToolLoadError(f"--tools {source}: importing it raised "
                            f"{type(exc).__name__}: {exc}") from exc


def entry_point_tools() -> list[Tool]:
    """The tools of the installed ``cellwire.tools`` entry points. One that fails to load
    is skipped with a warning naming it; it never stops the others."""
    import warnings

    tools: list[Tool] = []
    for point in entry_points(group=ENTRY_POINTS):
        try:
            tools.extend(_as_tools(point.load()))
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break runs
            warnings.warn(f"cellwire tools plugin {point.name!r} ({point.value}) failed to "
                          f"load: {type(exc).__name__}: {exc}", stacklevel=2)
    return tools


def _as_tools(value: Any) -> list[Tool]:
    if isinstance(value, Tool):
        return [value]
    if isinstance(value, ModuleType):
        return module_tools(value)
    if isinstance(value, (list, tuple)):
        return [v if isinstance(v, Tool) else from_function(v) for v in value]
    if callable(value):
        try:
            return [from_function(value)] if _is_tool_function(value) else _as_tools(value())
        except TypeError:
            return [from_function(value)]
    raise TypeError(f"a {type(value).__name__} is not a tool")


def _is_tool_function(value: Any) -> bool:
    import inspect

    try:
        return bool(inspect.signature(value).parameters)
    except (TypeError, ValueError):
        return False
