"""A small MCP server for the tutorial (12-tools-and-agents) and the tests (the official
``mcp`` SDK's MCPServer).

Tools: ``forecast(city)`` (text), ``add(a, b)`` (structured), ``pid()`` (the server's
process id), ``broken()`` (always fails), ``report(city)`` (text, JSON text, an embedded
text resource and an image, as content blocks).
Over stdio by default; ``--http`` serves streamable HTTP at ``/mcp`` on 127.0.0.1 (a free
port, printed as ``PORT <n>`` on the first line of stdout), and with ``--token T`` refuses
requests without the header ``X-Token: T``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import (
    CallToolResult,
    EmbeddedResource,
    ImageContent,
    TextContent,
    TextResourceContents,
)

server = MCPServer("weather-mcp")


@server.tool()
def forecast(city: str) -> str:
    """Tomorrow's weather in a city."""
    return f"Tomorrow in {city}: light rain, 14 C"


@server.tool()
def add(a: int, b: int) -> dict[str, int]:
    """Add two whole numbers."""
    return {"sum": a + b}


@server.tool()
def pid() -> int:
    """The server's process id (one session per loop reuses one process)."""
    return os.getpid()


@server.tool()
def report(city: str, units: str = "metric") -> CallToolResult:
    """A weather report in several content blocks."""
    return CallToolResult(content=[
        TextContent(type="text", text=f"Report for {city} ({units}). "),
        TextContent(type="text", text=json.dumps({"city": city, "rain_mm": 4})),
        TextContent(type="text", text='[{"day": 1}, {"day": 2}]'),
        TextContent(type="text", text="[1, 2]"),
        EmbeddedResource(type="resource", resource=TextResourceContents(
            uri="memo://radar", text="Radar: clear.")),
        ImageContent(type="image", data="iVBORw0KGgo=", mime_type="image/png"),
    ])


@server.tool()
def broken() -> str:
    """A tool that always fails."""
    # The SDK's ToolError carries its message to the client (other exceptions do not).
    raise ToolError("the forecast backend is unreachable")


async def serve_http(token: str | None) -> None:
    import uvicorn
    from starlette.responses import PlainTextResponse

    app = server.streamable_http_app()
    inner = app

    async def guarded(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] == "http" and token is not None:
            headers = dict(scope.get("headers") or [])
            if headers.get(b"x-token", b"").decode() != token:
                await PlainTextResponse("missing or wrong X-Token", 401)(scope, receive, send)
                return
        await inner(scope, receive, send)

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    # The app's lifespan (passed through the guard) starts the MCP session manager.
    config = uvicorn.Config(guarded, log_level="warning", lifespan="on")
    await uvicorn.Server(config).serve(sockets=[sock])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", action="store_true")
    parser.add_argument("--token")
    args = parser.parse_args()
    if args.http:
        asyncio.run(serve_http(args.token))
    else:
        server.run("stdio")


if __name__ == "__main__":
    sys.exit(main())
