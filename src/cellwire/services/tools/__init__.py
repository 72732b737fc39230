"""The tool registry: Python functions, OpenAPI operations, MCP servers and built-ins as
tools with JSON Schemas, bound to tool and agent nodes by provider and name."""

from .builtins import BUILTINS, evaluate
from .context import ToolContext
from .loading import (
    ENTRY_POINTS,
    ToolLoadError,
    describe_tools,
    entry_point_tools,
    load_tools,
    register_tools,
)
from .mcp import MCPConfigError, MCPServer, load_mcp_config, mcp_tools
from .openapi import Auth, OpenAPIError, openapi_tools
from .registry import (
    ToolOutput,
    ToolRegistry,
    default_registry,
    load_renames,
    run_registry,
    to_output,
)
from .tool import PYTHON, Tool, ToolError, from_function, parse_docstring, tool

__all__ = [
    "BUILTINS", "ENTRY_POINTS", "PYTHON", "Auth", "MCPConfigError", "MCPServer",
    "OpenAPIError", "Tool", "ToolContext", "ToolError", "ToolLoadError", "ToolOutput",
    "ToolRegistry", "default_registry", "describe_tools", "entry_point_tools", "evaluate", "from_function",
    "load_mcp_config", "load_renames", "load_tools", "mcp_tools", "openapi_tools", "parse_docstring",
    "register_tools", "run_registry", "to_output", "tool",
]
