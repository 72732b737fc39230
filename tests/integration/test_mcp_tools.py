"""MCP servers as tools: a real MCP server (notebooks/data/mcp_server.py, the official SDK)
started by the test over stdio and over streamable HTTP on 127.0.0.1, its tools listed,
bound to tool and agent nodes and called."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import cellwire
from cellwire.services.llm import LLMRouter
from cellwire.services.llm.openai import OpenAIProvider
from cellwire.services.llm.ratelimit import RateLimits
from cellwire.services.tools import (
    MCPConfigError,
    MCPServer,
    ToolError,
    ToolRegistry,
    load_mcp_config,
    mcp_tools,
)

sys.path.insert(0, str(Path(__file__).parent))
from llm_server import llm_server

pytestmark = pytest.mark.timeout(90)

# The tutorial's MCP server (shipped with the notebooks, so `make lab`'s copy has it).
SERVER = str(Path(__file__).parents[2] / "notebooks" / "data" / "mcp_server.py")


@pytest.fixture
def http_server():
    """The MCP server over streamable HTTP, requiring the header X-Token."""
    process = subprocess.Popen([sys.executable, SERVER, "--http", "--token", "tok-5678"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("PORT "), line
        yield f"http://127.0.0.1:{int(line.split()[1])}/mcp"
    finally:
        process.terminate()
        process.wait(10)


#: Servers a test opened sessions of on the runner's loop (which outlives the test).
_opened: list[MCPServer] = []


@pytest.fixture(autouse=True)
def _close_sessions():
    """Each test closes the MCP sessions its runs opened: left open, their connections are
    reclaimed unclosed by the garbage collector in some later test."""
    yield
    from cellwire.runner import background

    while _opened:
        background.call(_opened.pop().aclose())


def opened(server: MCPServer) -> MCPServer:
    _opened.append(server)
    return server


def stdio() -> MCPServer:
    return opened(MCPServer("weather", command=sys.executable, args=[SERVER]))


def tool_workflow(tool: str, **parameters) -> cellwire.Workflow:
    wf = cellwire.Workflow("mcp")
    wf.add_node("start", "start", variables=[{"variable": "city", "type": "text-input"}])
    wf.add_node("t", "tool", after="start", provider_id="weather", provider_type="mcp",
                tool_name=tool, tool_parameters=parameters)
    wf.add_node("end", "end", after="t", outputs=[
        {"variable": "text", "value_selector": ["t", "text"]},
        {"variable": "json", "value_selector": ["t", "json"]}])
    return wf


def test_stdio_server_tools_are_listed_with_their_schemas():
    tools = {t.name: t for t in stdio().tools()}
    assert set(tools) == {"forecast", "add", "pid", "broken", "report"}
    assert all(t.provider == "weather" and t.kind == "mcp" for t in tools.values())
    assert tools["add"].parameters["required"] == ["a", "b"]
    assert tools["add"].parameters["properties"]["a"]["type"] == "integer"
    assert tools["forecast"].description == "Tomorrow's weather in a city."


def test_stdio_tools_run_in_tool_nodes_over_one_session():
    server = stdio()
    registry = ToolRegistry(server.tools())
    wf = tool_workflow("forecast", city={"type": "variable", "value": ["start", "city"]})
    result = wf.run({"city": "Oslo"}, runtime=cellwire.Runtime(tools=registry), store=False)
    assert result.ok, result.error
    assert result.outputs["text"] == "Tomorrow in Oslo: light rain, 14 C"
    structured = tool_workflow("add", a={"type": "constant", "value": 2},
                               b={"type": "constant", "value": 40})
    done = structured.run({"city": "-"}, runtime=cellwire.Runtime(tools=registry), store=False)
    # As Dify's MCP tool: a JSON object's text goes to json, the structured content to
    # variables of the node.
    assert done.outputs == {"text": "", "json": [{"sum": 42}]}
    row = done.trace[done.trace.node_id == "t"].iloc[0]
    assert row.outputs["sum"] == 42
    # The runner's loop keeps one session, so one server process answers every call.
    pids = [tool_workflow("pid").run({"city": "-"}, runtime=cellwire.Runtime(tools=registry),
                                     store=False).outputs["text"] for _ in range(2)]
    assert pids[0] == pids[1] and pids[0].isdigit()


def test_content_blocks_become_text_and_json_as_in_dify():
    registry = ToolRegistry(stdio().tools())
    # An empty parameter is left out, as Dify does for MCP tools: the server's default holds.
    wf = tool_workflow("report", city={"type": "constant", "value": "Oslo"},
                       units={"type": "mixed", "value": ""})
    result = wf.run({"city": "-"}, runtime=cellwire.Runtime(tools=registry), store=False)
    assert result.ok, result.error
    # Text blocks join as they are; JSON objects (and lists of them) are json; a list of
    # anything else is text; an embedded text resource is text.
    assert result.outputs == {"text": "Report for Oslo (metric). [1, 2]Radar: clear.", "json": [
        {"city": "Oslo", "rain_mm": 4}, {"day": 1}, {"day": 2}]}
    row = result.trace[result.trace.node_id == "t"].iloc[0]
    # The image cannot be kept (no tool files yet): the node says so rather than drop it.
    assert row.process_data["notes"] == [
        "image content (image/png) was left out: cellwire tools do not return files yet"]


def test_a_failing_mcp_tool_fails_its_node_with_the_servers_message():
    registry = ToolRegistry(stdio().tools())
    result = tool_workflow("broken").run({"city": "-"}, runtime=cellwire.Runtime(
        tools=registry), store=False)
    assert not result.ok
    assert "MCP tool weather/broken failed" in result.error
    assert "the forecast backend is unreachable" in result.error


def test_streamable_http_server_with_headers(http_server):
    server = opened(MCPServer("weather", url=http_server, headers={"X-Token": "tok-5678"}))
    registry = ToolRegistry(server.tools())
    wf = tool_workflow("forecast", city={"type": "mixed", "value": "{{#start.city#}}"})
    result = wf.run({"city": "Rome"}, runtime=cellwire.Runtime(tools=registry), store=False)
    assert result.ok, result.error
    assert result.outputs["text"] == "Tomorrow in Rome: light rain, 14 C"


def test_a_server_that_refuses_the_connection_is_named_in_the_error(http_server):
    with pytest.raises(ToolError, match=r"cannot connect to the MCP server 'weather' \(URL "
                       r"http://127\.0\.0\.1:\d+/mcp\)") as caught:
        MCPServer("weather", url=http_server, timeout=10).tools()
    assert "mcpServers" in caught.value.hint
    with pytest.raises(ToolError, match="command 'no-such-mcp-server-x'"):
        MCPServer("gone", command="no-such-mcp-server-x", timeout=10).tools()


def test_mcp_servers_config_file(tmp_path, http_server):
    config = tmp_path / "servers.json"
    config.write_text(json.dumps({"mcpServers": {
        "weather": {"command": sys.executable, "args": [SERVER]},
        "remote": {"url": http_server, "headers": {"X-Token": "tok-5678"}}}}))
    servers = load_mcp_config(config)
    assert [(s.name, bool(s.command), bool(s.url)) for s in servers] == [
        ("weather", True, False), ("remote", False, True)]
    keys = {t.key for t in mcp_tools(config)}
    assert {"weather/forecast", "remote/forecast"} <= keys
    # Two servers with a 'forecast': a Dify reference binds by its provider.
    registry = ToolRegistry(mcp_tools(config))
    assert registry.find("forecast", "remote").provider == "remote"
    assert registry.find("forecast") is None
    assert "2 registered tools are named 'forecast'" in registry.why_unbound("forecast")
    (tmp_path / "bad.json").write_text('{"servers": {}}')
    with pytest.raises(MCPConfigError, match="no 'mcpServers' mapping"):
        load_mcp_config(tmp_path / "bad.json")
    with pytest.raises(MCPConfigError, match="either 'command'"):
        load_mcp_config({"mcpServers": {"x": {}}})


def test_an_agent_uses_mcp_tools_over_the_wire():
    with llm_server() as llm:
        llm.tool_plan = lambda body: [] if any(m["role"] == "tool" for m in body["messages"]) \
            else [{"name": "forecast", "arguments": {"city": "Bergen"}}]
        llm.reply = lambda body: next(m for m in body["messages"] if m["role"] == "tool")["content"]
        router = LLMRouter([OpenAIProvider("openai", base_url=llm.base_url, api_key="sk-test",
                                           rate_limits=RateLimits())])
        wf = cellwire.Workflow("mcp-agent", mode="advanced-chat")
        wf.add_node("start", "start")
        wf.add_node("agent", "agent", after="start", agent_strategy_name="function_calling",
                    agent_parameters={
                        "model": {"type": "constant", "value": {"provider": "openai",
                                                                "model": "gpt-4o-mini"}},
                        "tools": {"type": "constant", "value": [
                            {"provider_name": "weather", "tool_name": "forecast"}]},
                        "query": {"type": "constant", "value": "{{#sys.query#}}"}})
        wf.add_node("answer", "answer", after="agent", answer="{{#agent.text#}}")
        wf.tools = stdio().tools()
        result = wf.run({"sys.query": "rain in Bergen?"}, runtime=cellwire.Runtime(llm=router),
                        store=False)
        assert result.ok, result.error
        assert result.answer == "Tomorrow in Bergen: light rain, 14 C"
        offered = llm.chat_requests()[0]["tools"][0]["function"]
        assert offered["name"] == "forecast"
        assert offered["parameters"]["required"] == ["city"]
