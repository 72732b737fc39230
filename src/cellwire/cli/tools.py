"""``cellwire tools``: list the tools a run would bind to."""

from __future__ import annotations

import json
from collections.abc import Sequence

import click

from cellwire.cli.app import cli
from cellwire.cli.tool_options import load_cli_tools, tool_options


@cli.command("tools")
@tool_options
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
def tools_command(tool_sources: Sequence[str], mcp_configs: Sequence[str],
                  tool_map: str | None, as_json: bool) -> None:
    """List the tools a run binds to: built-ins, plugins, and those of --tools and --mcp."""
    from cellwire.services.tools import default_registry, describe_tools

    load_cli_tools(tool_sources, mcp_configs, tool_map)
    rows = describe_tools(default_registry())
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False))
        return
    for row in rows:
        click.echo(f"{row['provider']}/{row['name']} ({row['kind']}): {row['description']}"
                   f" [{', '.join(row['arguments'])}]")
