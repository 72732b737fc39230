"""The tool registry: tools from typed functions (schemas from signatures and docstrings),
binding Dify tool references, calls with timeouts and result caps, the built-ins, loading
tools from files, modules and entry points, and the tool node's parameter forms."""

from __future__ import annotations

import asyncio
import sys
import textwrap
import time
from typing import Literal

import pytest

import cellwire
from cellwire.nodes.tool import tool_problems
from cellwire.services.tools import (
    ToolError,
    ToolLoadError,
    ToolRegistry,
    entry_point_tools,
    evaluate,
    from_function,
    load_tools,
    parse_docstring,
    to_output,
)
from cellwire.services.tools.builtins import current_time, html_text


def lookup(city: str, days: int = 1, unit: Literal["C", "F"] = "C") -> dict:
    """Look up the forecast.

    Longer text that is not the summary.

    Args:
        city: the city's name
        days: how many days ahead,
            counting today
        unit: degrees
    """
    return {"city": city, "days": days, "unit": unit}


async def slow_echo(text: str) -> str:
    """Echo after a while."""
    await asyncio.sleep(0.05)
    return text


def test_schema_and_description_come_from_the_signature_and_docstring():
    tool = from_function(lookup)
    assert (tool.name, tool.provider, tool.kind) == ("lookup", "python", "python")
    assert tool.description == "Look up the forecast."
    assert tool.parameters == {
        "type": "object", "required": ["city"], "properties": {
            "city": {"type": "string", "description": "the city's name"},
            "days": {"type": "integer", "default": 1,
                     "description": "how many days ahead, counting today"},
            "unit": {"type": "string", "enum": ["C", "F"], "default": "C",
                     "description": "degrees"}},
        "additionalProperties": False}
    assert tool.function_schema()["function"]["name"] == "lookup"
    # The decorated function is still a function.
    assert tool("Oslo") == {"city": "Oslo", "days": 1, "unit": "C"}


@pytest.mark.parametrize("doc", [
    "Sum.\n\n:param a: first\n:param b: second\n:returns: the sum",
    "Sum.\n\nParameters\n----------\na : int\n    first\nb : int\n    second\n",
])
def test_rest_and_numpy_docstrings(doc):
    assert parse_docstring(doc) == ("Sum.", {"a": "first", "b": "second"})


def test_the_decorator_names_a_provider_and_registers_for_every_run():
    @cellwire.tool(provider="acme", name="acme_lookup", register=False)
    def fn(x: int) -> int:
        return x

    assert (fn.provider, fn.name, fn.key) == ("acme", "acme_lookup", "acme/acme_lookup")
    assert cellwire.services.tools.default_registry().find("acme_lookup") is None

    @cellwire.tool
    def registered_echo(text: str) -> str:
        """Echo."""
        return text

    try:
        assert registered_echo.provider == "python"
        assert cellwire.services.tools.default_registry().find(
            "registered_echo", "python") is registered_echo
        wf = cellwire.Workflow("uses-it")
        wf.add_node("start", "start")
        wf.add_node("echo", "tool", after="start", provider_id="python",
                    tool_name="registered_echo", tool_parameters={"text": "hi"})
        assert wf.run(store=False).trace.iloc[-1].outputs["text"] == "hi"
    finally:
        cellwire.services.tools.default_registry().remove("registered_echo")
    with pytest.raises(ValueError, match="1-64 letters"):
        from_function(lambda: 1)


async def test_arguments_are_checked_and_converted():
    registry = ToolRegistry([lookup])
    tool = registry.get("lookup")
    out = await registry.call(tool, {"city": "Oslo", "days": "3"})
    assert out.json == [{"city": "Oslo", "days": 3, "unit": "C"}]
    assert out.variables == {"city": "Oslo", "days": 3, "unit": "C"}
    with pytest.raises(ToolError, match="days: Input should be a valid integer") as bad:
        await registry.call(tool, {"city": "Oslo", "days": "many"})
    assert bad.value.kind == "ToolArgumentsError"
    assert "city: string, days?: integer" in bad.value.hint
    with pytest.raises(ToolError, match="colour: Extra inputs are not permitted"):
        await registry.call(tool, {"city": "Oslo", "colour": "red"})
    with pytest.raises(ToolError, match="city: Field required"):
        await registry.call(tool, {})


async def test_async_tools_and_timeouts():
    registry = ToolRegistry([slow_echo], timeout=5)
    assert (await registry.call(registry.get("slow_echo"), {"text": "hi"})).text == "hi"
    hasty = ToolRegistry([slow_echo], timeout=0.001)
    with pytest.raises(ToolError, match=r"did not answer within 0\.001 s") as late:
        await hasty.call(hasty.get("slow_echo"), {"text": "hi"})
    assert late.value.kind == "ToolTimeout" and "CELLWIRE_TOOL_TIMEOUT" in late.value.hint


async def test_blocking_tools_leave_the_event_loop_free():
    def block(seconds: float) -> str:
        time.sleep(seconds)
        return "done"

    registry = ToolRegistry([block])
    ticks = 0

    async def tick():
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        assert (await registry.call(registry.get("block"), {"seconds": 0.3})).text == "done"
    finally:
        ticker.cancel()
    assert ticks >= 5  # the loop kept running while the tool slept


async def test_results_larger_than_the_cap_are_refused():
    def big(n: int) -> str:
        return "x" * n

    registry = ToolRegistry([big], max_result=100)
    assert (await registry.call(registry.get("big"), {"n": 100})).text == "x" * 100
    with pytest.raises(ToolError, match="returned 101 characters, more than the 100") as large:
        await registry.call(registry.get("big"), {"n": 101})
    assert large.value.kind == "ToolResultTooLarge"


async def test_a_raising_tool_is_a_tool_error():
    def broken() -> str:
        raise KeyError("missing")

    registry = ToolRegistry([broken])
    with pytest.raises(ToolError, match="tool 'broken' raised KeyError: 'missing'"):
        await registry.call(registry.get("broken"), {})


def test_results_take_difys_shape():
    assert to_output("hi").text == "hi"
    assert to_output(None).text == ""
    assert to_output([{"a": 1}, {"a": 2}]).json == [{"a": 1}, {"a": 2}]
    assert to_output([1, 2]).json == [[1, 2]]
    assert to_output({"a": 1}).as_text() == '{"a": 1}'
    assert to_output(3.5).text == "3.5"


def test_binding_by_provider_and_name_alone_and_renames():
    def search(q: str) -> str:
        return q

    acme = from_function(search, provider="acme")
    other = from_function(search, provider="other")
    now = from_function(lambda: "now", name="now")
    registry = ToolRegistry([acme, other, now])
    # Dify's provider ids: 'langgenius/acme/acme', 'acme'.
    assert registry.find("search", "langgenius/acme/acme") is acme
    assert registry.find("search", "other") is other
    assert registry.find("search", "") is None  # two tools have that name
    assert registry.find("now", "time") is now  # the only one of its name
    assert registry.find("current_time", "time") is None
    assert "no registered tool is named 'current_time'" in registry.why_unbound("current_time")
    registry.renames.update({"time/current_time": "now", "web_search": "other/search"})
    assert registry.find("current_time", "langgenius/time/time") is now
    assert registry.find("web_search", "tavily") is other


def test_arithmetic_is_parsed_never_evaluated():
    assert evaluate("2 * (3 + 4) / 2") == 7.0
    assert evaluate("2 ** 10 - 24 // 5 % 3") == 1023
    assert evaluate("round(sqrt(2) * 100) + max(1, 2, 3) + pi * 0") == 144
    for bad, message in [("__import__('os')", "not allowed"),
                         ("().__class__", "not allowed"),
                         ("open('x')", "not allowed"),
                         ("9 ** 9 ** 9", "larger than 1000"),
                         ("1 / 0", "division by zero"),
                         ("2 +", "not an arithmetic expression"),
                         ("x" * 1001, "more than 1000 characters")]:
        with pytest.raises(ToolError, match=message):
            evaluate(bad)


async def test_current_time_in_a_timezone():
    registry = ToolRegistry([current_time])
    tool = registry.find("current_time", "langgenius/time/time")
    out = await registry.call(tool, {"format": "%Z", "timezone": "Asia/Tokyo"})
    assert out.text == "JST"
    with pytest.raises(ToolError, match="unknown timezone 'Mars/Base'"):
        await registry.call(tool, {"timezone": "Mars/Base"})


def test_html_pages_become_text():
    page = ("<html><head><style>p{}</style><script>var x=1;</script></head>"
            "<body><h1>Title</h1><p>One &amp; two</p></body></html>")
    assert html_text(page) == "Title One & two"


def test_tools_load_from_a_file_and_a_module(tmp_path, monkeypatch):
    (tmp_path / "my_tools.py").write_text(textwrap.dedent('''
        import cellwire

        @cellwire.tool(register=False)
        def shout(text: str) -> str:
            """Upper-case a text."""
            return text.upper()

        def whisper(text: str) -> str:
            """Lower-case a text."""
            return text.lower()

        TOOLS = [whisper]
    '''))
    names = {t.name for t in load_tools(str(tmp_path / "my_tools.py"))}
    assert names == {"shout", "whisper"}
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_tools", raising=False)
    assert {t.name for t in load_tools("my_tools")} == names
    with pytest.raises(ToolLoadError, match="no such file"):
        load_tools(str(tmp_path / "missing.py"))
    with pytest.raises(ToolLoadError, match="no file or module of that name"):
        load_tools("no_such_module_xyz")
    (tmp_path / "broken_tools.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ToolLoadError, match="importing it raised RuntimeError: boom"):
        load_tools(str(tmp_path / "broken_tools.py"))


def test_tools_come_from_the_cellwire_tools_entry_point_group(tmp_path, monkeypatch):
    (tmp_path / "acme_toolkit.py").write_text(textwrap.dedent('''
        def stock(sku: str) -> int:
            """Units in stock."""
            return 7

        TOOLS = [stock]
    '''))
    dist = tmp_path / "acme_toolkit-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-toolkit\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[cellwire.tools]\nacme = acme_toolkit:TOOLS\n"
                                           "broken = acme_toolkit:MISSING\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(UserWarning, match="plugin 'broken'"):
        tools = entry_point_tools()
    assert [t.name for t in tools] == ["stock"]


def tool_workflow(**config) -> cellwire.Workflow:
    wf = cellwire.Workflow("tools")
    wf.add_node("start", "start", variables=[{"variable": "city", "type": "text-input"},
                                             {"variable": "days", "type": "number"}])
    wf.add_node("t", "tool", after="start", **config)
    wf.add_node("end", "end", after="t", outputs=[
        {"variable": "json", "value_selector": ["t", "json"]},
        {"variable": "unit", "value_selector": ["t", "unit"]}])
    return wf


def test_the_tool_node_takes_difys_parameter_forms():
    wf = tool_workflow(provider_id="python", provider_type="builtin", tool_name="lookup",
                       tool_parameters={"city": {"type": "mixed", "value": "{{#start.city#}}!"},
                                        "days": {"type": "variable", "value": ["start", "days"]}},
                       tool_configurations={"unit": {"type": "constant", "value": "F"}})
    result = wf.run({"city": "Oslo", "days": 2}, runtime=cellwire.Runtime(
        tools=ToolRegistry([lookup])), store=False)
    assert result.ok, result.error
    assert result.outputs == {"json": [{"city": "Oslo!", "days": 2, "unit": "F"}], "unit": "F"}
    row = result.trace[result.trace.node_id == "t"].iloc[0]
    assert row.process_data == {"tool": "python/lookup", "tool_kind": "python"}
    # Older exports: bare values.
    old = tool_workflow(tool_name="lookup", tool_parameters={"city": "{{#start.city#}}"},
                        tool_configurations={"unit": "C", "days": 5})
    done = old.run({"city": "Rome", "days": 1}, runtime=cellwire.Runtime(
        tools=ToolRegistry([lookup])), store=False)
    assert done.outputs["json"] == [{"city": "Rome", "days": 5, "unit": "C"}]


def test_tool_errors_fail_the_node_naming_the_field():
    wf = tool_workflow(tool_name="lookup", tool_parameters={"city": {"type": "variable",
                                                                     "value": ["start", "nope"]}})
    result = wf.run({"city": "x", "days": 1}, runtime=cellwire.Runtime(
        tools=ToolRegistry([lookup])), store=False)
    assert "tool_parameters.city" in result.error
    bad = tool_workflow(tool_name="lookup", tool_parameters={"days": "soon"})
    result = bad.run({"city": "x", "days": 1}, runtime=cellwire.Runtime(
        tools=ToolRegistry([lookup])), store=False)
    assert "invalid arguments for tool 'lookup'" in result.error


def test_a_runs_tools_and_renames_and_the_workflows_own_tools():
    wf = tool_workflow(provider_id="langgenius/openweather/openweather", tool_name="forecast",
                       tool_parameters={"city": "{{#start.city#}}"})
    failed = wf.run({"city": "Oslo", "days": 1}, store=False)
    assert not failed.ok and "the tool 'langgenius/openweather/openweather/forecast' is not " \
        "registered" in failed.error
    # A rename to a tool given to this run only.
    done = wf.run({"city": "Oslo", "days": 1}, store=False, tools=[lookup],
                  tool_map={"openweather/forecast": "python/lookup"})
    assert done.ok, done.error
    assert done.outputs["json"] == [{"city": "Oslo", "days": 1, "unit": "C"}]
    # The workflow's own tools go with every run of it; the run's are added to them.
    @cellwire.tool(name="forecast", provider="openweather", register=False)
    def canned(city: str) -> dict:
        """A canned forecast."""
        return {"city": city, "unit": "K"}

    wf.tools = [canned]
    assert wf.run({"city": "Oslo", "days": 1}, store=False).outputs["unit"] == "K"
    assert "lookup" not in cellwire.services.tools.default_registry()


def test_unbound_tools_are_problems_and_the_workflow_still_exports():
    from cellwire.formats.dify import export_dify

    wf = tool_workflow(provider_id="langgenius/tavily/tavily", tool_name="tavily_search")
    wf.add_node("agent", "agent", after="start", agent_strategy_name="cot_plus",
                agent_parameters={"tools": {"type": "constant", "value": [
                    {"provider_name": "python", "tool_name": "lookup"},
                    {"provider_name": "wiki", "tool_name": "wiki_search"},
                    {"provider_name": "x", "tool_name": "off", "enabled": False}]}})
    problems = tool_problems(wf, ToolRegistry([lookup]))
    shown = [(p.node_id, p.field, p.level) for p in problems]
    assert shown == [("t", "tool_name", "warning"),
                     ("agent", "agent_strategy_name", "warning"),
                     ("agent", "agent_parameters.tools[1]", "warning")]
    assert "'langgenius/tavily/tavily/tavily_search', which is not registered" in \
        problems[0].message
    assert "@cellwire.tool(name='tavily_search', provider='tavily')" in problems[0].hint
    assert "--tool-map" in problems[0].hint
    assert cellwire.validate(wf) == []
    assert export_dify(wf)["workflow"]["graph"]["nodes"][1]["data"]["tool_name"] == \
        "tavily_search"


async def test_tools_see_only_the_granted_secrets_they_declare():
    from cellwire.services.tools import Tool, ToolContext

    seen = {}

    async def invoke(arguments, context):
        seen.update(context.secrets)
        return context.secret("A_KEY", tool="t")

    registry = ToolRegistry([Tool("t", "", {"type": "object"}, invoke, secrets=("A_KEY",))])
    context = ToolContext(secrets={"A_KEY": "value-a", "B_KEY": "value-b"})
    assert (await registry.call(registry.get("t"), {}, context)).text == "value-a"
    assert seen == {"A_KEY": "value-a"}
    with pytest.raises(ToolError, match="needs the secret 'A_KEY', which was not granted"):
        await registry.call(registry.get("t"), {}, ToolContext())


def test_the_tools_magic_registers_a_files_tools_for_every_later_run(tmp_path, monkeypatch):
    from IPython.core.error import UsageError
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    from cellwire.jupyter.magics import WorkflowMagics
    from cellwire.jupyter.session import Session
    from cellwire.services.tools import default_registry

    monkeypatch.setenv("CELLWIRE_HOME", str(tmp_path))
    (tmp_path / "shop_tools.py").write_text(textwrap.dedent('''
        import cellwire

        @cellwire.tool(provider="shop")
        def price_of(item: str) -> float:
            """The price of an item."""
            return {"tea": 3.5}.get(item, 0.0)
    '''))
    ip = InteractiveShell(config=Config({"HistoryManager": {"enabled": False}}))
    ip.register_magics(WorkflowMagics(ip, session=Session()))
    try:
        table = ip.run_line_magic("workflow", f"tools {tmp_path / 'shop_tools.py'}")
        assert ("shop", "price_of") in set(zip(table.provider, table.name, strict=True))
        assert table[table.name == "price_of"].arguments.iloc[0] == "item"
        wf = tool_workflow(provider_id="shop", tool_name="price_of",
                           tool_parameters={"item": "tea"})
        result = wf.run({"city": "-", "days": 1}, store=False)
        assert result.ok, result.error
        assert result.trace[result.trace.node_id == "t"].outputs.iloc[0]["text"] == "3.5"
        with pytest.raises(UsageError, match="no such file"):
            ip.run_line_magic("workflow", "tools missing_tools.py")
        # A bad renames file or MCP config is a usage error naming it, not a traceback.
        (tmp_path / "renames.yaml").write_text("- not a mapping\n")
        with pytest.raises(UsageError, match=r"--map .*renames.yaml: must map Dify tools"):
            ip.run_line_magic("workflow", f"tools --map {tmp_path / 'renames.yaml'}")
        (tmp_path / "servers.json").write_text('{"servers": {}}')
        with pytest.raises(UsageError, match=r"--mcp .*servers.json: "):
            ip.run_line_magic("workflow", f"tools --mcp {tmp_path / 'servers.json'}")
    finally:
        default_registry().remove("price_of", "shop")


def test_provider_settings_a_tool_does_not_take_are_left_out():
    def search(query: str) -> str:
        return f"found {query}"

    wf = tool_workflow(provider_id="duckduckgo", tool_name="search",
                       tool_parameters={"query": "{{#start.city#}}"},
                       tool_configurations={"max_results": 5, "region": "wt-wt"})
    result = wf.run({"city": "Oslo", "days": 1}, runtime=cellwire.Runtime(
        tools=ToolRegistry([search])), store=False)
    assert result.ok, result.error
    row = result.trace[result.trace.node_id == "t"].iloc[0]
    assert row.inputs == {"query": "Oslo"}
    assert row.process_data["ignored_configurations"] == ["max_results", "region"]
