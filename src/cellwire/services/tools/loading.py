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
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

from .registry import ToolRegistry
from .tool import Tool, ToolError, from_function

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


def register_tools(registry: ToolRegistry, sources: Sequence[str] = (),
                   mcp_configs: Sequence[str] = (), tool_map: str | None = None, *,
                   map_option: str = "--tool-map") -> dict[str, str]:
    """Add to ``registry`` the tools of ``sources`` (files or modules) and of the MCP servers
    of ``mcp_configs``, and the renames of ``tool_map``; return those renames. What the
    ``--tools``/``--mcp``/``--tool-map`` options and ``%workflow tools`` do. Anything that
    cannot be loaded is a :class:`ToolLoadError` naming the option, the file and why."""
    from .mcp import MCPConfigError, load_mcp_config
    from .registry import load_renames

    for source in sources:
        registry.extend(load_tools(source))
    for config in mcp_configs:
        try:
            for server in load_mcp_config(config):
                registry.extend(server.tools())
        except (MCPConfigError, ToolError) as exc:
            hint = f" (fix: {exc.hint})" if isinstance(exc, ToolError) and exc.hint else ""
            raise ToolLoadError(f"--mcp {config}: {exc}{hint}") from None
    if tool_map is None:
        return {}
    try:
        renames = load_renames(tool_map)
    except ValueError as exc:
        raise ToolLoadError(f"{map_option} {exc}") from None
    registry.renames.update(renames)
    return renames


def describe_tools(tools: ToolRegistry) -> list[dict[str, Any]]:
    """A row per tool: provider, name, kind, description and its arguments' names (what
    ``cellwire tools`` and ``%workflow tools`` list)."""
    return [{"provider": t.provider, "name": t.name, "kind": t.kind,
             "description": t.description,
             "arguments": list(t.parameters.get("properties") or {})} for t in tools]


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
