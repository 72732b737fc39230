"""Imported Dify apps with tool and agent nodes, run end to end by `cellwire run` in a fresh
process with tools from a `--tools` file (and MCP servers from `--mcp`), the agent's model
the OpenAI-compatible test server on 127.0.0.1; and what `validate` and `import` say about
tools nothing binds to."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import cellwire as cellwire_package
from cellwire.store import RunStore

sys.path.insert(0, str(Path(__file__).parent))
from llm_server import llm_server

pytestmark = pytest.mark.timeout(120)

CORPUS = Path("/work/shared/corpora/dify-dsl")
TIME_APP = CORPUS / ("langgenius__dify/api__tests__fixtures__workflow__"
                     "chatflow_time_tool_static_output_workflow.yml")
AGENT_APP = CORPUS / "svcvit__Awesome-Dify-Workflow/DSL__Agent工具调用.yml"
MCP_SERVER = Path(__file__).parents[2] / "notebooks" / "data" / "mcp_server.py"

TOOLS = textwrap.dedent('''
    """The user's own tools for the imported apps."""
    import cellwire


    @cellwire.tool(provider="time")
    def current_time(format: str = "%Y-%m-%d %H:%M:%S", timezone: str = "UTC") -> str:
        """A fixed clock, so the test knows the answer."""
        return f"2030-01-02 03:04:05 {timezone}"


    @cellwire.tool(provider="duckduckgo")
    def ddgo_search(query: str, max_results: int = 5, require_summary: bool = False) -> str:
        """Search the web (here: a canned answer)."""
        return f"{max_results} results for {query!r}: cellwire runs Dify apps"
''')


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    # The child imports the cellwire under test, whatever folder it runs in.
    source = str(Path(cellwire_package.__file__).parents[1])
    path = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "CELLWIRE_HOME": str(tmp_path / "home"),
            "CELLWIRE_CONFIG_DIR": str(tmp_path / "config")}


def cellwire(*args: str | Path, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cellwire.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=100, env=env, cwd=cwd,
                          check=False)


def trace_of(db: Path, run_id: str):
    with RunStore(db) as store:
        return store.trace(run_id)


@pytest.mark.skipif(not TIME_APP.exists(), reason="the Dify DSL corpus is not here")
def test_a_dify_tool_node_runs_with_a_tool_from_a_tools_file(tmp_path, env):
    tools = tmp_path / "tools.py"
    tools.write_text(TOOLS)
    db = tmp_path / "runs.db"
    done = cellwire("run", TIME_APP, "--tools", tools, "--query", "what time is it?",
                    "--db", db, "--json", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["answer"] == "hello, dify!"
    trace = trace_of(db, shown["run_id"])
    row = trace[trace.node_type == "tool"].iloc[0]
    assert row.status == "succeeded"
    assert row.outputs["text"] == "2030-01-02 03:04:05 UTC"
    # The node's configuration ({type: constant, value: UTC}) reached the tool.
    assert row.inputs == {"format": "%Y-%m-%d %H:%M:%S", "timezone": "UTC"}


@pytest.mark.skipif(not AGENT_APP.exists(), reason="the Dify DSL corpus is not here")
def test_a_dify_agent_app_runs_with_its_tools_bound_from_a_tools_file(tmp_path, env):
    tools = tmp_path / "tools.py"
    tools.write_text(TOOLS)
    db = tmp_path / "runs.db"
    with llm_server() as server:
        def plan(body):
            if any(m["role"] == "tool" for m in body["messages"]):
                return []
            return [{"name": "ddgo_search", "arguments": {"query": "what is cellwire?"}},
                    {"name": "current_time", "arguments": {}}]

        server.tool_plan = plan
        server.reply = lambda body: " | ".join(m["content"] for m in body["messages"]
                                               if m["role"] == "tool")
        done = cellwire("run", AGENT_APP, "--tools", tools, "--query", "what is cellwire?",
                        "--db", db, "--json",
                        env={**env, "OPENAI_API_KEY": "sk-test",
                             "OPENAI_BASE_URL": server.base_url}, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        shown = json.loads(done.stdout)
        assert shown["answer"] == ("5 results for 'what is cellwire?': cellwire runs Dify apps"
                                   " | 2030-01-02 03:04:05 UTC")
        first = server.chat_requests()[0]
        # The app's model, instruction and enabled tools (the disabled 'weather' is left out).
        assert first["model"] == "gpt-4o-mini"
        assert first["messages"][0]["content"] == "根据用户的需求，调用不同工具，回复用的内容。"
        offered = {t["function"]["name"]: t["function"] for t in first["tools"]}
        assert set(offered) == {"current_time", "ddgo_search"}
        # Settings fixed in the app are not the model's to choose.
        assert set(offered["ddgo_search"]["parameters"]["properties"]) == {"query"}
        assert offered["current_time"]["parameters"]["properties"] == {}
    trace = trace_of(db, shown["run_id"])
    agent = trace[trace.node_type == "agent"].iloc[0]
    steps = trace[trace.parent_id == agent.node_id]
    assert sorted(steps.node_type) == ["llm", "llm", "tool", "tool"]
    search = steps[steps.title == "ddgo_search"].iloc[0]
    # The app's settings (max_results: 5, require_summary: 0) went with the model's query.
    assert search.inputs["arguments"] == {"query": "what is cellwire?"}
    assert agent.outputs["usage"]["total_tokens"] == shown["total_tokens"] > 0


@pytest.mark.skipif(not AGENT_APP.exists(), reason="the Dify DSL corpus is not here")
def test_validate_and_import_name_unbound_tools_and_how_to_bind_them(tmp_path, env):
    done = cellwire("validate", AGENT_APP, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "valid" in done.stdout
    assert ("field 'agent_parameters.tools[1]': agent node 'Agent' uses the tool "
            "'langgenius/duckduckgo/duckduckgo/ddgo_search', which is not registered") \
        in done.stdout
    assert "--tools tools.py" in done.stdout
    # The built-in time/current_time binds; nothing is said about it.
    assert "current_time" not in done.stdout
    renames = tmp_path / "renames.yaml"
    renames.write_text("duckduckgo/ddgo_search: builtin/fetch_url\n")
    mapped = cellwire("validate", AGENT_APP, "--tool-map", renames, env=env, cwd=tmp_path)
    assert "ddgo_search" not in mapped.stdout
    out = tmp_path / "app.yaml"
    imported = cellwire("import", AGENT_APP, "-o", out, env=env, cwd=tmp_path)
    assert imported.returncode == 0 and out.exists()
    assert "ddgo_search', which is not registered" in imported.stderr
    tools = tmp_path / "tools.py"
    tools.write_text(TOOLS)
    bound = cellwire("import", AGENT_APP, "-o", out, "--tools", tools, env=env, cwd=tmp_path)
    assert "not registered" not in bound.stderr
    bad = cellwire("run", AGENT_APP, "--tools", tmp_path / "missing.py", env=env, cwd=tmp_path)
    assert bad.returncode == 2 and "--tools" in bad.stderr and "no such file" in bad.stderr


def test_run_with_mcp_servers_from_a_config_file(tmp_path, env):
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"weather": {
        "command": sys.executable, "args": [str(MCP_SERVER)]}}}))
    app = tmp_path / "app.yaml"
    app.write_text(textwrap.dedent("""
        cellwire: 1
        name: mcp-forecast
        nodes:
          - {id: start, type: start, variables: [{variable: city, type: text-input}]}
          - id: t
            type: tool
            provider_id: weather
            provider_type: mcp
            tool_name: forecast
            tool_parameters: {city: {type: mixed, value: "{{#start.city#}}"}}
          - {id: end, type: end, outputs: [{variable: text, value_selector: [t, text]}]}
        edges:
          - {source: start, target: t}
          - {source: t, target: end}
    """))
    done = cellwire("run", app, "--mcp", config, "-i", "city=Tromsø", "--json", env=env,
                    cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["outputs"] == {"text": "Tomorrow in Tromsø: light rain, 14 C"}
    listed = cellwire("tools", "--mcp", config, "--json", env=env, cwd=tmp_path)
    keys = {(t["provider"], t["name"]) for t in json.loads(listed.stdout)}
    assert {("weather", "forecast"), ("time", "current_time"), ("builtin", "calculate")} <= keys
    broken = tmp_path / "broken.json"
    broken.write_text('{"mcpServers": {"x": {"command": "no-such-mcp-binary"}}}')
    failed = cellwire("run", app, "--mcp", broken, env=env, cwd=tmp_path)
    assert failed.returncode == 2
    assert "cannot connect to the MCP server 'x'" in failed.stderr


def test_an_openapi_tools_key_comes_only_from_a_grant(tmp_path, env):
    from loopback_http import loopback_server

    with loopback_server() as server:
        spec = {"openapi": "3.0.3", "info": {"title": "acme", "version": "1"},
                "servers": [{"url": server.url}],
                "components": {"securitySchemes": {"key": {"type": "apiKey", "in": "header",
                                                           "name": "X-API-Key"}}},
                "paths": {"/stock/{sku}": {"get": {"operationId": "stock", "parameters": [
                    {"name": "sku", "in": "path", "required": True,
                     "schema": {"type": "string"}}]}}}}
        (tmp_path / "acme.json").write_text(json.dumps(spec))
        tools = tmp_path / "acme_tools.py"
        tools.write_text(textwrap.dedent(f'''
            from cellwire.services.tools import Auth, openapi_tools

            TOOLS = openapi_tools({str(tmp_path / "acme.json")!r}, auth=Auth(secret="ACME_KEY"))
        '''))
        app = tmp_path / "app.yaml"
        app.write_text(textwrap.dedent("""
            cellwire: 1
            name: stock
            nodes:
              - {id: start, type: start, variables: [{variable: sku, type: text-input}]}
              - id: t
                type: tool
                provider_id: acme
                tool_name: stock
                tool_parameters: {sku: {type: variable, value: [start, sku]}}
              - {id: end, type: end, outputs: [{variable: json, value_selector: [t, json]}]}
            edges:
              - {source: start, target: t}
              - {source: t, target: end}
        """))
        key = "acme-live-key-93f1c2"
        # The file is not trusted: its tools reach loopback only where allowed, as its HTTP
        # nodes would.
        port = server.url.rsplit(":", 1)[1]
        environment = {**env, "MY_ACME_KEY": key, "CELLWIRE_HTTP_ALLOW": f"127.0.0.1:{port}"}
        refused = cellwire("run", app, "--tools", tools, "-i", "sku=A1", "--json",
                           env=environment, cwd=tmp_path)
        assert refused.returncode == 1
        assert "needs the secret 'ACME_KEY', which was not granted" in \
            json.loads(refused.stdout)["error"]
        assert server.requests == []  # nothing was sent without the key
        server.answer(200, json.dumps({"sku": "A1", "units": 7}), Content_Type="application/json")
        db = tmp_path / "runs.db"
        done = cellwire("run", app, "--tools", tools, "-i", "sku=A1", "--json", "--db", db,
                        "--secret", "ACME_KEY=env:MY_ACME_KEY", env=environment, cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads(done.stdout)["outputs"] == {"json": [{"sku": "A1", "units": 7}]}
        assert server.requests[-1].header("X-API-Key") == key
        assert server.requests[-1].path == "/stock/A1"
        assert key not in done.stdout + done.stderr
        assert key.encode() not in db.read_bytes()


def test_tools_from_several_files_and_a_package_module(tmp_path, env):
    (tmp_path / "shout_tools.py").write_text(TOOL_FILE.format(name="shout", op="upper"))
    package = tmp_path / "acme"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "text_tools.py").write_text(TOOL_FILE.format(name="whisper", op="lower"))
    app = tmp_path / "app.yaml"
    app.write_text(textwrap.dedent("""
        cellwire: 1
        name: two-sources
        nodes:
          - {id: start, type: start, variables: [{variable: t, type: text-input}]}
          - {id: a, type: tool, tool_name: shout, tool_parameters: {text: "{{#start.t#}}"}}
          - {id: b, type: tool, provider_id: python, tool_name: whisper,
             tool_parameters: {text: {type: variable, value: [a, text]}}}
          - {id: end, type: end, outputs: [{variable: out, value_selector: [b, text]}]}
        edges:
          - {source: start, target: a}
          - {source: a, target: b}
          - {source: b, target: end}
    """))
    sources = ["--tools", "shout_tools.py", "--tools", "acme.text_tools"]
    listed = cellwire("tools", *sources, "--json", env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    keys = {f"{t['provider']}/{t['name']}" for t in json.loads(listed.stdout)}
    assert {"python/shout", "python/whisper", "builtin/search_knowledge"} <= keys
    done = cellwire("run", app, *sources, "-i", "t=MiXeD", "--json", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["outputs"] == {"out": "mixed"}
    alone = cellwire("run", app, "--tools", "shout_tools.py", "-i", "t=x", "--json", env=env,
                     cwd=tmp_path)
    assert alone.returncode == 1
    assert "the tool 'python/whisper' is not registered" in json.loads(alone.stdout)["error"]


TOOL_FILE = '''
import cellwire


@cellwire.tool
def {name}(text: str) -> str:
    """Change a text's case."""
    return text.{op}()
'''
