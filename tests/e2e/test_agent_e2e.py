"""An agent node in the graph editor, in a real JupyterLab driven by Chromium: its panel lists
the tools it names (bound or not, updated when a later cell registers one), and a run started
with the editor's Run button shows each model call and tool call as a step of the agent.

The agent's model is the OpenAI-wire test server (tests/integration/llm_server.py), started
on 127.0.0.1 inside the notebook's kernel and configured there as a provider, as a user
configures a real one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

from .test_widget_e2e import BUNDLE, kernel_json, node, show

INTEGRATION = Path(__file__).resolve().parents[1] / "integration"

# The model asks for two tools at once in its first round (one of them fails), then answers
# from what came back.
AGENT = f"""\
import sys
sys.path.insert(0, {str(INTEGRATION)!r})
from llm_server import LLMServer

server = LLMServer().start()
cellwire.configure_provider("wire", "openai", base_url=server.base_url, api_key="sk-test")

def plan(body):
    if any(m["role"] == "tool" for m in body["messages"]):
        return []
    return [{{"name": "add", "arguments": {{"a": 2, "b": 40}}}},
            {{"name": "lookup", "arguments": {{"city": "Oslo"}}}}]

server.tool_plan = plan
server.reply = lambda body: "the tools said: " + " | ".join(
    m["content"] for m in body["messages"] if m["role"] == "tool")

@cellwire.tool(register=False)
def add(a: int, b: int) -> int:
    \"\"\"Add two numbers.\"\"\"
    return a + b

@cellwire.tool(register=False)
def lookup(city: str) -> str:
    \"\"\"Look a city up (it always fails here).\"\"\"
    raise RuntimeError(f"no data for {{city}}")

wf = cellwire.Workflow("agent-e2e")
wf.add_node("start", "start", variables=[{{"variable": "q", "type": "text-input", "label": "q"}}])
wf.add_node("agent", "agent", after="start", agent_strategy_name="function_calling",
            agent_parameters={{
                "model": {{"type": "constant", "value": {{"provider": "wire",
                                                        "model": "gpt-4o-mini"}}}},
                "tools": {{"type": "constant", "value": [
                    {{"provider_name": "python", "tool_name": "add"}},
                    {{"provider_name": "python", "tool_name": "lookup"}}]}},
                "query": {{"type": "constant", "value": "{{{{#start.q#}}}}"}},
                "maximum_iterations": {{"type": "constant", "value": 3}}}})
wf.add_node("end", "end", after="agent",
            outputs=[{{"variable": "text", "value_selector": ["agent", "text"]}}])
wf.tools = [add]  # 'lookup' is not given to the workflow yet
"""


@pytest.fixture(autouse=True)
def _bundle_built() -> None:
    if not BUNDLE.exists():
        pytest.fail(f"{BUNDLE} is missing: build the editor (make install, or npm ci && "
                    "npm run build in js/)", pytrace=False)


def test_the_agents_panel_lists_its_tools_and_shows_each_step_of_a_run(notebook):
    editor = show(notebook, AGENT, display='w = WorkflowWidget(wf, inputs={"q": "2 + 40?"})\nw')
    try:
        node(editor, "agent").click()
        panel = editor.get_by_test_id("cw-panel")
        tools = panel.get_by_test_id("cw-tools")
        add_tool, lookup_tool = tools.get_by_test_id("cw-tool-add"), tools.get_by_test_id(
            "cw-tool-lookup")
        expect(add_tool).to_have_attribute("data-bound", "yes")
        expect(add_tool).to_contain_text("python/add(a, b) Add two numbers.")
        expect(lookup_tool).to_have_attribute("data-bound", "no")
        expect(lookup_tool).to_contain_text("not registered: no registered tool is named "
                                            "'lookup'")
        expect(lookup_tool).to_contain_text("@cellwire.tool(name='lookup', provider='python')")

        # A later cell gives the workflow the tool; the open panel shows it bound.
        notebook.run("wf.tools = [add, lookup]")
        expect(lookup_tool).to_have_attribute("data-bound", "yes")
        expect(lookup_tool).to_contain_text("python/lookup(city)")

        editor.get_by_test_id("cw-run").click()
        expect(node(editor, "end")).to_have_attribute("data-status", "succeeded")
        steps = panel.get_by_test_id("cw-steps")
        expect(steps.locator("[data-testid^='cw-step-']")).to_have_count(4)
        first, added, failed, last = (steps.get_by_test_id(f"cw-step-{i}") for i in range(1, 5))
        expect(first).to_have_attribute("data-type", "llm")
        expect(first).to_contain_text(re.compile(r"1\. model wire/gpt-4o-mini \(\d+ tokens\)"))
        expect(added).to_have_attribute("data-type", "tool")
        expect(added).to_have_attribute("data-status", "succeeded")
        expect(added).to_contain_text("2. tool add")
        expect(added).to_contain_text("42")
        expect(failed).to_have_attribute("data-status", "failed")
        expect(failed).to_contain_text("3. tool lookup")
        expect(failed).to_contain_text("RuntimeError: no data for Oslo")
        expect(last).to_have_attribute("data-type", "llm")
        expect(last).to_contain_text("4. model wire/gpt-4o-mini")

        # The kernel ran what the panel shows: the model read both results, the failure too.
        done = kernel_json(notebook, "await run_end(w)\nprint(json.dumps([w.last_run.outputs, "
                                     "[(s['step'], s['type'], s['title'], s['status']) "
                                     "for s in w.status['agent']['steps']]]))")
        outputs, kernel_steps = done
        assert outputs["text"].startswith("the tools said: 42 | Error: tool 'lookup' raised "
                                          "RuntimeError: no data for Oslo")
        assert sorted(map(tuple, kernel_steps)) == [
            (1, "llm", "wire/gpt-4o-mini", "succeeded"), (2, "tool", "add", "succeeded"),
            (3, "tool", "lookup", "failed"), (4, "llm", "wire/gpt-4o-mini", "succeeded")]
    finally:
        notebook.run("server.stop()")

