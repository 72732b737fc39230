"""MCP servers as tools, through the official ``mcp`` SDK: stdio (a command the user named)
and streamable HTTP, configured in the usual ``mcpServers`` form.

Each server keeps one session per event loop, opened on first use by a task of its own (the
SDK's transports must be entered and left by the same task) and reused by every call.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .context import ToolContext
from .sync import run_sync
from .tool import Tool, ToolError


class MCPConfigError(ValueError):
    """An ``mcpServers`` entry that cannot be used; the message names it and the fix."""


@dataclass
class MCPServer:
    """One MCP server: ``command`` + ``args`` (+ ``env``, ``cwd``) over stdio, or ``url``
    (+ ``headers``) over streamable HTTP. Its tools have the provider ``name``."""

    name: str
    command: str | None = None
    args: list[str] = field(default_factory=list)
    env: dict[str, str] | None = None
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    #: Seconds to wait for the server to start and list its tools.
    timeout: float = 30.0
    _sessions: dict[int, _Session] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        if bool(self.command) == bool(self.url):
            raise MCPConfigError(f"MCP server {self.name!r}: give either 'command' (stdio) or "
                                 "'url' (streamable HTTP)")

    @classmethod
    def from_config(cls, name: str, entry: Mapping[str, Any]) -> MCPServer:
        """An entry of an ``mcpServers`` mapping (Claude Desktop / Cursor / Dify form)."""
        if not isinstance(entry, Mapping):
            raise MCPConfigError(f"mcpServers.{name}: must be a mapping with 'command' or 'url'")
        kind = str(entry.get("type") or entry.get("transport") or "")
        if kind == "sse":
            raise MCPConfigError(f"mcpServers.{name}: the SSE transport is deprecated; use the "
                                 "server's streamable HTTP endpoint ('url', usually .../mcp)")
        args = entry.get("args") or []
        if not isinstance(args, list):
            raise MCPConfigError(f"mcpServers.{name}.args: must be a list of strings")
        return cls(name, command=entry.get("command"), args=[str(a) for a in args],
                   env={str(k): str(v) for k, v in (entry.get("env") or {}).items()} or None,
                   cwd=entry.get("cwd"), url=entry.get("url") or entry.get("serverUrl"),
                   headers={str(k): str(v) for k, v in (entry.get("headers") or {}).items()},
                   timeout=float(entry.get("timeout", 30.0)))

    # -- sessions ------------------------------------------------------------------------------

    def _client(self) -> tuple[Any, Any]:
        """An MCP client for this server, and the HTTP client it was given (None when it made
        its own): the SDK leaves a given HTTP client open, so its session closes it."""
        from mcp import Client
        from mcp.client.stdio import StdioServerParameters, stdio_client

        if self.command:
            params = StdioServerParameters(command=self.command, args=self.args, env=self.env,
                                           cwd=self.cwd)
            return Client(stdio_client(params, errlog=_errlog()), mode="legacy"), None
        if self.headers:
            import httpx2
            from mcp.client.streamable_http import streamable_http_client

            http = httpx2.AsyncClient(headers=self.headers, timeout=self.timeout)
            return (Client(streamable_http_client(str(self.url), http_client=http),
                           mode="legacy"), http)
        return Client(str(self.url), mode="legacy"), None

    def _session(self) -> _Session:
        loop = asyncio.get_running_loop()
        with self._lock:
            session = self._sessions.get(id(loop))
            # A closed loop's id may be reused by a new one: its session is not this loop's.
            if session is None or session.closed or session.loop is not loop:
                session = self._sessions[id(loop)] = _Session(self)
            return session

    async def list_tools(self) -> list[Tool]:
        """The server's tools as :class:`Tool` s (provider: the server's name)."""
        listed = await self._session().request("list", None)
        return [self._tool(t) for t in listed]

    async def call(self, name: str, arguments: dict[str, Any]) -> Any:
        return await self._session().request("call", (name, arguments))

    async def aclose(self) -> None:
        """Close this loop's session (and stop a stdio server)."""
        with self._lock:
            session = self._sessions.pop(id(asyncio.get_running_loop()), None)
        if session is not None:
            await session.close()

    def tools(self) -> list[Tool]:
        """:meth:`list_tools` from synchronous code (a fresh loop on a thread of its own;
        the server is stopped again, and calls open a session of their own)."""

        async def listed() -> list[Tool]:
            try:
                return await self.list_tools()
            finally:
                await self.aclose()

        return run_sync(listed)

    def _tool(self, listed: Any) -> Tool:
        server, name = self, str(listed.name)
        schema = dict(listed.input_schema or {"type": "object", "properties": {}})

        async def invoke(arguments: dict[str, Any], context: ToolContext) -> Any:
            # As Dify does: an empty parameter is left out, so the server's default holds.
            sent = {k: v for k, v in arguments.items()
                    if v is not None and not (isinstance(v, str) and not v.strip())}
            result = await server.call(name, sent)
            if result.is_error:
                texts = [str(getattr(b, "text", "")) for b in result.content
                         if getattr(b, "type", "") == "text"]
                raise ToolError(f"MCP tool {server.name}/{name} failed: "
                                f"{' '.join(texts) or 'no message'}", kind="ToolInvokeError")
            return mcp_output(result)

        return Tool(name, str(listed.description or ""), schema, invoke, provider=self.name,
                    kind="mcp")


def mcp_output(result: Any) -> Any:
    """An MCP tool's result as Dify's MCP tool hands it to a tool node: text blocks joined
    into ``text``, except those holding a JSON object (or a list of objects), which go to
    ``json``; an embedded text resource is text; ``structured_content`` becomes variables.
    Images, audio and binary resources would be Dify's files, which cellwire's tools do not
    return yet: each is named in ``notes`` instead of vanishing."""
    from .registry import ToolOutput

    text, data, notes = "", [], []
    for block in result.content:
        kind = getattr(block, "type", "")
        if kind == "text":
            value = _json_text(str(block.text))
            if isinstance(value, dict):
                data.extend([value] if value else [])
            elif isinstance(value, list):
                if all(isinstance(item, dict) for item in value):
                    data.extend(item for item in value if item)
                else:
                    text += str(value)  # as Dify does: the Python form of the list
            else:
                text += str(block.text)
        elif kind == "resource" and isinstance(getattr(block.resource, "text", None), str):
            text += block.resource.text
        else:
            mime = getattr(block, "mime_type", None) or getattr(
                getattr(block, "resource", None), "mime_type", None) or "unknown type"
            notes.append(f"{kind or 'unknown'} content ({mime}) was left out: cellwire tools "
                         "do not return files yet")
    structured = result.structured_content
    variables = dict(structured) if isinstance(structured, Mapping) else {}
    return ToolOutput(text, [], data, variables, tuple(notes))


def _json_text(text: str) -> Any:
    """The JSON value of ``text`` when it looks like an object or array (Dify's test)."""
    stripped = text.strip()
    if stripped and stripped[0] in "{[" and stripped[-1] in "}]":
        try:
            return json.loads(stripped)
        except ValueError:
            return None
    return None


class _Session:
    """One open MCP client, owned by a task that serves requests from a queue."""

    def __init__(self, server: MCPServer):
        self.server = server
        self.queue: asyncio.Queue[tuple[str, Any, asyncio.Future[Any]] | None] = asyncio.Queue()
        self.closed = False
        self.loop = asyncio.get_running_loop()
        self.task = self.loop.create_task(self._serve(), name=f"mcp:{server.name}")

    async def request(self, kind: str, payload: Any) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.closed:
            raise ToolError(f"the MCP server {self.server.name!r} has stopped",
                            kind="ToolInvokeError")
        await self.queue.put((kind, payload, future))
        return await future

    async def close(self) -> None:
        # Ends the serving task, or the one that answers requests after a failed start.
        await self.queue.put(None)
        await asyncio.gather(self.task, return_exceptions=True)

    async def _serve(self) -> None:
        server = self.server
        pending: list[asyncio.Future[Any]] = []
        opening, http = server._client()
        try:
            async with asyncio.timeout(server.timeout):
                client = await opening.__aenter__()
        except BaseException as exc:  # noqa: BLE001 - every caller hears why
            self.closed = True
            if http is not None:
                await http.aclose()
            error = _start_error(server, exc)
            while not self.queue.empty():
                item = self.queue.get_nowait()
                if item is not None and not item[2].done():
                    item[2].set_exception(error)
            self._fail_later(error)
            return
        try:
            while True:
                item = await self.queue.get()
                if item is None:
                    break
                kind, payload, future = item
                pending.append(future)
                try:
                    if kind == "list":
                        result: Any = (await client.list_tools()).tools
                    else:
                        result = await client.call_tool(payload[0], payload[1])
                except Exception as exc:  # noqa: BLE001 - handed to the caller
                    if not future.done():
                        future.set_exception(ToolError(
                            f"MCP server {server.name!r}: {type(exc).__name__}: {exc}",
                            kind="ToolInvokeError"))
                else:
                    if not future.done():
                        future.set_result(result)
                pending.remove(future)
        finally:
            self.closed = True
            try:
                await client.__aexit__(None, None, None)
            except Exception:  # noqa: BLE001, S110 - the server is gone either way
                pass
            if http is not None:
                await http.aclose()

    def _fail_later(self, error: Exception) -> None:
        # Requests queued after the failure hear it too.
        async def drain() -> None:
            while True:
                item = await self.queue.get()
                if item is None:
                    return
                if not item[2].done():
                    item[2].set_exception(error)

        self.task = asyncio.get_running_loop().create_task(drain())


def _errlog() -> Any:
    """Where a stdio server's stderr goes: ours, or the process's own when ours is not a
    file (a notebook's), else nowhere."""
    for stream in (sys.stderr, sys.__stderr__):
        try:
            if stream is not None:
                stream.fileno()
                return stream
        except (OSError, ValueError, AttributeError):
            continue
    return open(os.devnull, "w")  # lives as long as the server


def _start_error(server: MCPServer, exc: BaseException) -> ToolError:
    if isinstance(exc, TimeoutError):
        why = f"it did not start within {server.timeout:g} s"
    else:
        why = f"{type(exc).__name__}: {exc}"
        while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
            exc = exc.exceptions[0]
            why = f"{type(exc).__name__}: {exc}"
    where = (f"command {server.command!r}" if server.command else f"URL {server.url}")
    return ToolError(f"cannot connect to the MCP server {server.name!r} ({where}): {why}",
                     hint="check the mcpServers entry: the command runs, or the URL answers",
                     kind="MCPConnectError")


def load_mcp_config(source: str | Path | Mapping[str, Any]) -> list[MCPServer]:
    """The servers of an ``{"mcpServers": {name: {...}}}`` document (a file or a mapping)."""
    if isinstance(source, Mapping):
        data: Any = source
        where = "the MCP config"
    else:
        where = str(source)
        try:
            data = json.loads(Path(source).read_text(encoding="utf-8"))
        except OSError as exc:
            raise MCPConfigError(f"{where}: cannot read it: {exc.strerror or exc}") from None
        except json.JSONDecodeError as exc:
            raise MCPConfigError(f"{where}: not JSON: {exc}") from None
    servers = data.get("mcpServers") if isinstance(data, Mapping) else None
    if not isinstance(servers, Mapping):
        raise MCPConfigError(f"{where}: no 'mcpServers' mapping (the usual form: "
                             '{"mcpServers": {"name": {"command": ..., "args": [...]}}})')
    return [MCPServer.from_config(str(name), entry) for name, entry in servers.items()]


def mcp_tools(source: str | Path | Mapping[str, Any] | MCPServer) -> list[Tool]:
    """The tools of one MCP server, or of every server of an ``mcpServers`` config (each
    server is started, listed and stopped again; calls open a session of their own)."""
    servers = [source] if isinstance(source, MCPServer) else load_mcp_config(source)
    tools: list[Tool] = []
    for server in servers:
        tools.extend(server.tools())
    return tools
