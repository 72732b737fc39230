"""The ``--tools``, ``--mcp`` and ``--tool-map`` options of ``run``, ``validate``, ``import``
and ``tools``, and loading what they name.

A file or module named with ``--tools`` is the user's own code: it is imported into this
process, as they asked. Its tools still get only the secrets granted with ``--secret``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from cellwire.cli.common import fail

F = TypeVar("F", bound=Callable[..., Any])


def tool_options(command: F) -> F:
    """Add ``--tools``, ``--mcp`` and ``--tool-map`` to ``command``."""
    command = click.option(
        "--tool-map", "tool_map", type=click.Path(dir_okay=False), metavar="FILE",
        help="A YAML/JSON mapping of Dify tools to registered ones, e.g. "
             "'time/current_time: now' or 'web_search: acme/search'.")(command)
    command = click.option(
        "--mcp", "mcp_configs", multiple=True, type=click.Path(dir_okay=False),
        metavar="CONFIG.json",
        help="Tools of the MCP servers in CONFIG.json ({\"mcpServers\": {name: {command, "
             "args} or {url}}}). Repeatable.")(command)
    return click.option(
        "--tools", "tool_sources", multiple=True, metavar="FILE.py|MODULE",
        help="Register the tools (@cellwire.tool functions, a TOOLS list) of a Python file "
             "or module; it runs in this process, as your own code. Repeatable.")(command)


def load_cli_tools(sources: Sequence[str], mcp_configs: Sequence[str],
                   tool_map: str | None) -> dict[str, str]:
    """Register the tools of ``sources`` and the MCP servers of ``mcp_configs`` for this
    process; return the renames of ``tool_map``. Exit 2 naming what could not be loaded."""
    if not (sources or mcp_configs or tool_map):
        return {}  # the tool service (and httpx with it) loads when a workflow needs it
    from cellwire.services.tools import ToolLoadError, default_registry, register_tools

    try:
        return register_tools(default_registry(), sources, mcp_configs, tool_map)
    except ToolLoadError as exc:
        fail([f"error: {exc}"])


def tool_secrets() -> set[str]:
    """The secrets the registered tools may read (what ``--secret`` may grant them)."""
    from cellwire.services.tools import default_registry

    return {name for tool in default_registry() for name in tool.secrets}


