"""The agent node on the wire: its function-calling loop against the OpenAI-compatible and
Anthropic test servers (real HTTP on 127.0.0.1), its ReAct loop against a model that only
writes text, and what each step leaves in the trace."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

import cellwire
from cellwire.services.llm import LLMRouter
from cellwire.services.llm.anthropic import AnthropicProvider
from cellwire.services.llm.openai import OpenAIProvider
from cellwire.services.llm.ratelimit import RateLimits
from cellwire.services.tools import ToolRegistry

sys.path.insert(0, str(Path(__file__).parent))
from anthropic_server import anthropic_server
from llm_server import llm_server

pytestmark = pytest.mark.timeout(60)


def weather(city: str) -> str:
    """The weather in a city.

    Args:
        city: the city's name
    """
    return f"sunny in {city}"


def explode(reason: str) -> str:
    """A tool that always fails."""
    raise RuntimeError(f"the weather service is down ({reason})")


def agent_workflow(model: dict, *, tools: list[str], strategy: str = "function_calling",
                   iterations: int = 5, instruction: str = "Answer with the tools.") -> cellwire.Workflow:
    entries = [{"enabled": True, "provider_name": "python", "tool_name": name, "type": "builtin",
                "parameters": {}, "settings": {}} for name in tools]
    wf = cellwire.Workflow("agent", mode="advanced-chat")
    wf.add_node("start", "start")
    wf.add_node("agent", "agent", after="start",
                agent_strategy_provider_name="langgenius/agent/agent",
                agent_strategy_name=strategy,
                agent_parameters={
                    "model": {"type": "constant", "value": model},
                    "tools": {"type": "constant", "value": entries},
                    "instruction": {"type": "constant", "value": instruction},
                    "query": {"type": "constant", "value": "{{#sys.query#}}"},
                    "maximum_iterations": {"type": "constant", "value": iterations}})
    wf.add_node("answer", "answer", after="agent", answer="{{#agent.text#}}")
    return wf


OPENAI_MODEL = {"provider": "langgenius/openai/openai", "model": "gpt-4o-mini", "mode": "chat"}
ANTHROPIC_MODEL = {"provider": "langgenius/anthropic/anthropic",
                   "model": "claude-3-5-haiku-20241022", "mode": "chat"}


@pytest.fixture
def openai():
    with llm_server() as server:
        provider = OpenAIProvider("openai", base_url=server.base_url, api_key="sk-test",
                                  rate_limits=RateLimits())
        yield server, LLMRouter([provider])


def tool_results(body: dict) -> list[dict]:
    return [m for m in body["messages"] if m["role"] == "tool"]


def run(wf, router, tools, query="What is the weather in Oslo and Rome?"):
    runtime = cellwire.Runtime(llm=router, tools=ToolRegistry(tools))
    return wf.run({"sys.query": query}, runtime=runtime, store=False)


def test_parallel_tool_calls_run_and_come_back_as_tool_messages(openai):
    server, router = openai

    def plan(body):
        if tool_results(body):
            return []
        return [{"name": "weather", "arguments": {"city": "Oslo"}},
                {"name": "weather", "arguments": {"city": "Rome"}}]

    server.tool_plan = plan
    server.reply = lambda body: " / ".join(m["content"] for m in tool_results(body))
    result = run(agent_workflow(OPENAI_MODEL, tools=["weather"]), router, [weather])
    assert result.ok, result.error
    assert result.answer == "sunny in Oslo / sunny in Rome"
    first, second = server.chat_requests()
    # The tool is offered with its schema from the signature and docstring.
    [offered] = first["tools"]
    assert offered["function"]["name"] == "weather"
    assert offered["function"]["parameters"]["properties"]["city"] == {
        "type": "string", "description": "the city's name"}
    assert first["messages"][0] == {"role": "system", "content": "Answer with the tools."}
    # Both results answer their own call ids, after the assistant message that asked.
    assistant = second["messages"][2]
    assert [c["id"] for c in assistant["tool_calls"]] == ["call_0abc", "call_1abc"]
    assert [(m["tool_call_id"], m["content"]) for m in tool_results(second)] == [
        ("call_0abc", "sunny in Oslo"), ("call_1abc", "sunny in Rome")]


def test_each_model_and_tool_call_is_a_row_nested_under_the_agent(openai):
    server, router = openai
    server.tool_plan = lambda body: [] if tool_results(body) else [
        {"name": "weather", "arguments": {"city": "Oslo"}},
        {"name": "weather", "arguments": {"city": "Rome"}}]
    server.reply = "done"
    result = run(agent_workflow(OPENAI_MODEL, tools=["weather"]), router, [weather])
    trace = result.trace
    steps = trace[trace.parent_id == "agent"]
    assert list(steps.node_type) == ["llm", "tool", "tool", "llm"]
    assert list(steps.node_id) == ["agent/1", "agent/2", "agent/3", "agent/4"]
    agent_row = trace[trace.node_id == "agent"].iloc[0]
    assert set(steps.execution_id.str.rsplit("/", n=1).str[0]) == {agent_row.execution_id}
    # Tokens are counted once: on the model calls, and they add up to the run's.
    calls = steps[steps.node_type == "llm"]
    assert (calls.total_tokens > 0).all()
    # Priced from the price table (gpt-4o-mini): each call's cost on its row, adding up.
    assert (calls.cost > 0).all()
    assert trace.cost.sum() == pytest.approx(result.total_cost)
    assert agent_row.outputs["usage"]["total_price"] == pytest.approx(result.total_cost)
    assert agent_row.total_tokens == 0
    assert trace.total_tokens.sum() == result.usage.total_tokens
    assert agent_row.outputs["usage"]["total_tokens"] == result.usage.total_tokens
    tools = steps[steps.node_type == "tool"]
    assert list(tools.outputs.map(lambda o: o["text"])) == ["sunny in Oslo", "sunny in Rome"]
    assert agent_row.outputs["json"][0]["tool_calls"][1]["arguments"] == {"city": "Rome"}


def test_a_failing_tool_and_malformed_arguments_are_handed_back_to_the_model(openai):
    server, router = openai
    server.tool_plan = lambda body: [] if tool_results(body) else [
        {"name": "explode", "arguments": {"reason": "maintenance"}},
        {"name": "weather", "arguments": '{"city": "Oslo"'},
        {"name": "nowhere", "arguments": {}}]
    server.reply = lambda body: "saw: " + " | ".join(m["content"] for m in tool_results(body))
    result = run(agent_workflow(OPENAI_MODEL, tools=["weather", "explode"]), router,
                 [weather, explode])
    assert result.ok, result.error
    failed, malformed, unknown = tool_results(server.chat_requests()[1])
    assert "RuntimeError: the weather service is down (maintenance)" in failed["content"]
    assert failed["content"].startswith("Error: ")
    assert "not a valid JSON object" in malformed["content"]
    assert "there is no tool named 'nowhere'" in unknown["content"]
    assert "use one of weather, explode" in unknown["content"]
    steps = result.trace[result.trace.node_type == "tool"].sort_values("node_id")
    assert list(steps.status) == ["exception", "exception", "exception"]
    assert "RuntimeError" in steps.iloc[0].error


def test_the_step_limit_ends_the_loop_with_a_note(openai):
    server, router = openai
    # A model that asks for a tool whenever it may: the last round offers none.
    server.tool_plan = lambda body: [{"name": "weather", "arguments": {"city": "Oslo"}}]
    server.reply = "best guess: sunny"
    result = run(agent_workflow(OPENAI_MODEL, tools=["weather"], iterations=3), router,
                 [weather])
    assert result.ok, result.error
    requests = server.chat_requests()
    assert len(requests) == 3
    assert [bool(r.get("tools")) for r in requests] == [True, True, False]
    assert result.answer == "best guess: sunny"
    row = result.trace[result.trace.node_id == "agent"].iloc[0]
    assert "reached maximum_iterations (3)" in row.process_data["notes"][0]


def test_a_model_that_keeps_calling_tools_past_the_limit_stops_with_a_clear_note():
    with anthropic_server(api_key="sk-ant-test") as server:
        # This server answers as scripted, tools offered or not: the last round (no tools
        # offered) still asks for one.
        for _ in range(2):
            server.reply("", tools=[{"name": "weather", "input": {"city": "Oslo"}}])
        provider = AnthropicProvider(name="anthropic", base_url=server.url,
                                     api_key="sk-ant-test", rate_limits=RateLimits())
        result = run(agent_workflow(ANTHROPIC_MODEL, tools=["weather"], iterations=2),
                     LLMRouter([provider]), [weather])
        assert result.ok, result.error
        assert "tools" not in server.requests[1]
        assert result.answer.startswith("[stopped at maximum_iterations (2) with the model "
                                        "still asking for tools (weather)")


def test_tool_calls_on_the_anthropic_wire():
    with anthropic_server(api_key="sk-ant-test") as server:
        server.reply("Let me check.", tools=[
            {"id": "toolu_a", "name": "weather", "input": {"city": "Oslo"}},
            {"id": "toolu_b", "name": "weather", "input": {"city": "Rome"}}])
        server.reply("Oslo and Rome are sunny.")
        provider = AnthropicProvider(name="anthropic", base_url=server.url,
                                     api_key="sk-ant-test", rate_limits=RateLimits())
        result = run(agent_workflow(ANTHROPIC_MODEL, tools=["weather"]),
                     LLMRouter([provider]), [weather])
        assert result.ok, result.error
        # Every round's text streams to the answer, as Dify's function-calling agent does.
        assert result.answer == "Let me check.Oslo and Rome are sunny."
        first, second = server.requests
        assert first["tools"][0]["name"] == "weather"
        assert first["tools"][0]["input_schema"]["required"] == ["city"]
        assert first["system"] == "Answer with the tools." or \
            first["system"][0]["text"] == "Answer with the tools."
        results = second["messages"][-1]["content"]
        assert [(b["tool_use_id"], b["content"]) for b in results] == [
            ("toolu_a", "sunny in Oslo"), ("toolu_b", "sunny in Rome")]
        calls = result.trace[(result.trace.parent_id == "agent")
                             & (result.trace.node_type == "llm")]
        assert list(calls.prompt_tokens > 0) == [True, True]


def test_a_failing_tool_and_malformed_arguments_on_the_anthropic_wire():
    with anthropic_server(api_key="sk-ant-test") as server:
        # A tool_use input that is a JSON string, not an object, streams as input_json_delta
        # pieces that join into '"city=Oslo"'.
        server.reply("", tools=[
            {"id": "toolu_a", "name": "explode", "input": {"reason": "maintenance"}},
            {"id": "toolu_b", "name": "weather", "input": "city=Oslo"},
            {"id": "toolu_c", "name": "nowhere", "input": {}}])
        server.reply("I could not find out.")
        provider = AnthropicProvider(name="anthropic", base_url=server.url,
                                     api_key="sk-ant-test", rate_limits=RateLimits())
        result = run(agent_workflow(ANTHROPIC_MODEL, tools=["weather", "explode"]),
                     LLMRouter([provider]), [weather, explode])
        assert result.ok, result.error
        assert result.answer == "I could not find out."
        blocks = server.requests[1]["messages"][-1]["content"]
        by_id = {b["tool_use_id"]: b["content"] for b in blocks}
        assert set(by_id) == {"toolu_a", "toolu_b", "toolu_c"}
        assert by_id["toolu_a"].startswith("Error: tool 'explode' raised RuntimeError: the "
                                           "weather service is down (maintenance)")
        assert "not a valid JSON object (a JSON object is needed, got str)" in by_id["toolu_b"]
        assert "there is no tool named 'nowhere'" in by_id["toolu_c"]
    steps = result.trace[result.trace.node_type == "tool"].sort_values("node_id")
    assert list(steps.status) == ["exception", "exception", "exception"]


def test_react_drives_a_model_without_tool_calling(openai):
    server, router = openai
    replies = iter([
        ('Thought: I need the weather.\nAction:\n```\n{"action": "weather", '
        '"action_input": {"city": "Oslo"}}\n```'),
        ('Thought: and the arithmetic\nAction:\n```\n{"action": "calculate", '
        '"action_input": "6 * 7"}\n```'),
        ('Thought: I know what to respond\nAction:\n```\n{"action": "Final Answer", '
        '"action_input": "Oslo is sunny; 6*7 is 42."}\n```')])
    seen: list[dict] = []

    def reply(body):
        seen.append(body)
        return next(replies)

    server.reply = reply
    from cellwire.services.tools import BUILTINS

    wf = agent_workflow(OPENAI_MODEL, tools=["weather", "calculate"], strategy="ReAct")
    result = run(wf, router, [weather, *BUILTINS])
    assert result.ok, result.error
    assert result.answer == "Oslo is sunny; 6*7 is 42."
    # No tools go over the wire: they are described in the prompt.
    assert all("tools" not in body for body in seen)
    system = seen[0]["messages"][0]["content"]
    assert '"name": "weather"' in system and 'Valid "action" values' in system
    assert "Answer with the tools." in system
    assert seen[0]["stop"] == ["Observation:"]
    assert seen[1]["messages"][-1] == {"role": "user", "content": "Observation: sunny in Oslo"}
    # A bare action input goes to the tool's one argument.
    assert seen[2]["messages"][-1]["content"] == "Observation: 42"


def test_react_stops_at_the_step_limit_with_a_note(openai):
    server, router = openai
    server.reply = ('Thought: again\nAction:\n```\n{"action": "weather", "action_input": '
                    '{"city": "Oslo"}}\n```')
    wf = agent_workflow(OPENAI_MODEL, tools=["weather"], strategy="react", iterations=2)
    result = run(wf, router, [weather])
    assert result.ok
    assert result.answer.startswith("[stopped at maximum_iterations (2)")
    assert len(server.chat_requests()) == 2


def test_blocking_tools_run_off_the_event_loop(openai):
    server, router = openai
    started = threading.Event()
    release = threading.Event()

    def slow(name: str) -> str:
        """Waits until the other call has started: both must run at once."""
        started.set() if name == "a" else None
        if name == "b":
            assert started.wait(10)
            release.set()
            return "b"
        assert release.wait(10), "the other tool never ran: the loop was blocked"
        return "a"

    server.tool_plan = lambda body: [] if tool_results(body) else [
        {"name": "slow", "arguments": {"name": "a"}}, {"name": "slow", "arguments": {"name": "b"}}]
    server.reply = lambda body: ",".join(m["content"] for m in tool_results(body))
    result = run(agent_workflow(OPENAI_MODEL, tools=["slow"]), router, [slow])
    assert result.ok, result.error
    assert result.answer == "a,b"


def test_an_unbound_agent_tool_fails_naming_it_and_the_fix(openai):
    server, router = openai
    result = run(agent_workflow(OPENAI_MODEL, tools=["ddgo_search"]), router, [weather])
    assert not result.ok
    assert result.error_node == "agent"
    assert "the tool 'python/ddgo_search' is not registered" in result.error
    assert "agent_parameters.tools[0]" in result.error
    assert server.chat_requests() == []


def test_the_final_answer_streams_as_an_llm_node_streams(openai):
    server, router = openai
    server.tool_plan = lambda body: [] if tool_results(body) else [
        {"name": "weather", "arguments": {"city": "Oslo"}}]
    server.reply = "It is sunny in Oslo today"
    wf = agent_workflow(OPENAI_MODEL, tools=["weather"])
    chunks: list[str] = []
    runtime = cellwire.Runtime(llm=router, tools=ToolRegistry([weather]))

    finals: list[bool] = []

    def sink(event):
        if type(event).__name__ == "StreamChunk" and event.node_type == "agent":
            assert event.selector == ("agent", "text")
            if event.text:
                chunks.append(event.text)
            finals.append(event.is_final)

    runtime.subscribe(sink)
    result = wf.run({"sys.query": "weather?"}, runtime=runtime, store=False)
    assert result.ok
    assert "".join(chunks) == "It is sunny in Oslo today"
    # One end of the stream, after the last round: not one per model call.
    assert finals.count(True) == 1 and finals[-1] is True
    assert result.answer == "It is sunny in Oslo today"
