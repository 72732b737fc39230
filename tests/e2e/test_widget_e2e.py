"""The graph editor in a real JupyterLab, driven by Chromium: each test acts in the widget and
then checks both the page and what the kernel's Workflow holds (a cell prints it)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from playwright.sync_api import expect

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "src" / "cellwire" / "static" / "widget.js"
#: The docs' picture of the editor; the screenshot test writes it when this is set to 1 (a
#: test run leaves the checkout as it was otherwise).
SHOT = ROOT / "docs" / "images" / "editor-1280.png"
UPDATE_SHOTS = os.environ.get("CELLWIRE_UPDATE_SCREENSHOTS") == "1"

# Node types for the run tests: a node that waits until a later cell opens its gate (so
# "running" lasts as long as the test needs), and one that always fails.
SETUP = """\
import asyncio, json
import cellwire
from cellwire.jupyter.widget import WorkflowWidget

gate = {"open": False}

@cellwire.node_type("e2e-gate")
async def e2e_gate(ctx):
    while not gate["open"]:
        await asyncio.sleep(0.02)
    return cellwire.NodeResult(outputs={"text": "opened"})

async def run_end(w):
    while w.running:
        await asyncio.sleep(0.05)

@cellwire.node_type("e2e-broken")
async def e2e_broken(ctx):
    raise cellwire.NodeError("the e2e node broke on purpose", hint="nothing to fix")

async def until(check, timeout=10.0):
    # Widget messages reach the kernel on a subshell (JupyterLab 4.6, ipykernel 7), so a
    # cell may run before an edit made just earlier in the editor has been applied.
    for _ in range(int(timeout / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    print("until: timed out")

def show_edges(wf):
    print(json.dumps(sorted([e.source, e.source_handle, e.target] for e in wf.edges)))
"""

# start -> ask (llm) ; end is not connected yet; check (if-else) has branches "big" and "false".
GRAPH = """\
wf = cellwire.Workflow("demo")
wf.add_node("start", "start", variables=[{"variable": "x", "type": "number", "label": "x"}])
wf.add_node("ask", "llm", after="start", model={"provider": "scripted", "name": "echo"},
            prompt_template=[{"role": "user", "text": "Say {{#start.x#}}"}])
wf.add_node("end", "end", outputs=[{"variable": "answer", "value_selector": ["ask", "text"]}])
"""

# start -> check: x > 5 goes to slow (the gate) -> done; otherwise to never (skipped here).
BRANCHING = """\
wf = cellwire.Workflow("branching")
wf.add_node("start", "start", variables=[{"variable": "x", "type": "number", "label": "x"}])
wf.add_node("check", "if-else", after="start", cases=[{"case_id": "big", "conditions": [
    {"variable_selector": ["start", "x"], "comparison_operator": ">", "value": "5"}]}])
wf.add_node("slow", "e2e-gate", after=[("check", "big")])
wf.add_node("done", "end", after="slow",
            outputs=[{"variable": "text", "value_selector": ["slow", "text"]}])
wf.add_node("never", "end", after=[("check", "false")], outputs=[])
"""

BROKEN = """\
wf = cellwire.Workflow("broken")
wf.add_node("start", "start", variables=[])
wf.add_node("bad", "e2e-broken", after="start")
wf.add_node("end", "end", after="bad", outputs=[])
"""


# -- helpers ---------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _bundle_built() -> None:
    if not BUNDLE.exists():
        pytest.fail(f"{BUNDLE} is missing: build the editor (make install, or npm ci && "
                    "npm run build in js/)", pytrace=False)


def show(notebook, graph: str, display: str = "w = WorkflowWidget(wf)\nw") -> object:
    """Define the node types and ``graph`` in the kernel and display the editor; return the
    editor's locator (inside that cell's output)."""
    assert "Error" not in notebook.run(SETUP)
    index = notebook.add_cell()
    notebook.type_code(index, graph + display)
    notebook.execute(index)
    editor = notebook.output_area(index).get_by_test_id("cw-editor")
    expect(editor).to_be_visible()
    # The whole editor on screen: a drag to an element below the fold would scroll mid-drag.
    editor.evaluate("el => el.scrollIntoView({block: 'start'})")
    return editor


def node(editor, node_id: str):
    return editor.get_by_test_id(f"cw-node-{node_id}")


def handle(editor, node_id: str, handle_id: str):
    return editor.locator(f'.react-flow__handle[data-nodeid="{node_id}"]'
                          f'[data-handleid="{handle_id}"]')


def kernel_json(notebook, code: str):
    """Run ``code`` (which prints one JSON value) in a new cell; return the value."""
    out = notebook.run(code)
    try:
        return json.loads(out)
    except json.JSONDecodeError:
        raise AssertionError(f"the kernel printed no JSON: {out!r}") from None


def record_statuses(notebook) -> None:
    """Record every data-status each node of the page shows, in order, from now on."""
    notebook.page.evaluate("""() => {
      window.__cwSeen = {};
      const scan = () => {
        for (const el of document.querySelectorAll('[data-testid^="cw-node-"][data-status]')) {
          const id = el.dataset.testid.slice('cw-node-'.length);
          const seen = (window.__cwSeen[id] = window.__cwSeen[id] || []);
          if (seen[seen.length - 1] !== el.dataset.status) seen.push(el.dataset.status);
        }
      };
      scan();
      new MutationObserver(scan).observe(document.body,
        {subtree: true, childList: true, attributes: true, attributeFilter: ['data-status']});
    }""")


def seen_statuses(notebook) -> dict[str, list[str]]:
    return notebook.page.evaluate("() => window.__cwSeen")


# -- tests -----------------------------------------------------------------------------------

def test_dragging_from_a_handle_to_a_target_adds_the_edge_in_the_kernel(notebook):
    editor = show(notebook, GRAPH)
    assert notebook.run("print(w.workflow is wf)") == "True"
    expect(editor.locator(".react-flow__edge")).to_have_count(1)

    handle(editor, "ask", "source").drag_to(handle(editor, "end", "target"))

    expect(editor.locator(".react-flow__edge")).to_have_count(2)
    assert kernel_json(notebook, "await until(lambda: len(wf.edges) == 2)\nshow_edges(wf)") == [
        ["ask", "source", "end"], ["start", "source", "ask"]]


def test_dragging_from_a_branch_handle_keeps_the_branch_name(notebook):
    editor = show(notebook, BRANCHING + "wf.disconnect('check', 'never')\n")
    expect(handle(editor, "check", "false")).to_be_visible()

    handle(editor, "check", "false").drag_to(handle(editor, "never", "target"))

    expect(editor.locator(".react-flow__edge")).to_have_count(4)
    edges = kernel_json(notebook, "await until(lambda: len(wf.edges) == 4)\nshow_edges(wf)")
    assert ["check", "false", "never"] in edges


def test_backspace_deletes_the_selected_node_and_no_notebook_cell(notebook):
    editor = show(notebook, GRAPH + "wf.connect('ask', 'end')\n", display="wf.widget()")
    cells = notebook.cell_count()

    # Notebook shortcuts that would add or cut cells do nothing while a node has the focus.
    node(editor, "ask").click()
    for key in ("a", "b", "x"):
        notebook.page.keyboard.press(key)
    node(editor, "end").click()
    notebook.page.keyboard.press("Backspace")

    expect(node(editor, "end")).to_have_count(0)
    expect(node(editor, "ask")).to_have_count(1)
    assert notebook.cell_count() == cells
    state = kernel_json(notebook, "await until(lambda: 'end' not in wf.nodes)\n"
                                  "print(json.dumps([sorted(wf.nodes), len(wf.edges)]))")
    assert state == [["ask", "start"], 1]


def test_delete_key_also_deletes_a_node(notebook):
    editor = show(notebook, GRAPH, display="wf.widget()")
    cells = notebook.cell_count()
    node(editor, "end").click()
    notebook.page.keyboard.press("Delete")
    expect(node(editor, "end")).to_have_count(0)
    assert notebook.cell_count() == cells
    assert kernel_json(notebook, "await until(lambda: 'end' not in wf.nodes)\n"
                                 "print(json.dumps(sorted(wf.nodes)))") == ["ask", "start"]


def test_a_prompt_edited_in_the_panel_reaches_the_kernel(notebook):
    editor = show(notebook, GRAPH)
    widget_cell = notebook.cell_count() - 1
    runs_before = notebook.cell(widget_cell).locator(".jp-InputArea-prompt").inner_text()

    node(editor, "ask").click()
    panel = editor.get_by_test_id("cw-panel")
    field = panel.get_by_test_id("cw-field-prompt_template.0.text")
    expect(field).to_have_value("Say {{#start.x#}}")

    # Committed by Ctrl+Enter, which must not run the notebook cell.
    field.fill("Tell me about {{#start.x#}}")
    field.press("Control+Enter")
    text = "wf.nodes['ask'].config['prompt_template'][0]['text']"
    read = f"await until(lambda: {text} != {{old!r}})\nprint(json.dumps({text}))"
    assert kernel_json(notebook, read.format(old="Say {{#start.x#}}")) \
        == "Tell me about {{#start.x#}}"
    assert notebook.cell(widget_cell).locator(".jp-InputArea-prompt").inner_text() == runs_before

    # Committed on blur.
    field.fill("Explain {{#start.x#}} briefly")
    editor.locator(".react-flow__pane").click(position={"x": 5, "y": 5})
    assert kernel_json(notebook, read.format(old="Tell me about {{#start.x#}}")) \
        == "Explain {{#start.x#}} briefly"


def test_node_colours_follow_a_run(notebook):
    editor = show(notebook, BRANCHING + "w = WorkflowWidget(wf, inputs={'x': 7})\n", display="w")
    for node_id in ("start", "check", "slow", "done", "never"):
        expect(node(editor, node_id)).to_have_attribute("data-status", "pending")
    record_statuses(notebook)

    editor.get_by_test_id("cw-run").click()

    # The gate holds "slow" running; the branch not taken is skipped.
    expect(node(editor, "slow")).to_have_attribute("data-status", "running")
    expect(node(editor, "start")).to_have_attribute("data-status", "succeeded")
    expect(node(editor, "check")).to_have_attribute("data-status", "succeeded")
    expect(node(editor, "never")).to_have_attribute("data-status", "skipped")
    expect(node(editor, "done")).to_have_attribute("data-status", "pending")
    assert notebook.run("print(w.running)") == "True"

    notebook.run("gate['open'] = True")

    expect(node(editor, "done")).to_have_attribute("data-status", "succeeded")
    expect(node(editor, "slow")).to_have_attribute("data-status", "succeeded")
    seen = seen_statuses(notebook)
    assert seen["slow"] == ["pending", "running", "succeeded"], seen
    assert seen["never"] == ["pending", "skipped"], seen
    assert seen["done"][-1] == "succeeded" and "failed" not in seen["done"], seen
    final = kernel_json(notebook, "await run_end(w)\n"
                                  "print(json.dumps({k: v['status'] for k, v in w.status.items()}))")
    assert final == {"start": "succeeded", "check": "succeeded", "slow": "succeeded",
                     "done": "succeeded", "never": "skipped"}


def test_a_run_started_by_the_magic_colours_the_widget(notebook):
    """A run started from a cell (``%workflow run``) streams its status to the editor too."""
    editor = show(notebook, BRANCHING + "%load_ext cellwire\n"
                  "cellwire.jupyter.session().workflows['branching'] = wf\n",
                  display="%workflow show branching")
    notebook.run("%workflow run branching x=9")
    expect(node(editor, "slow")).to_have_attribute("data-status", "running")
    notebook.run("gate['open'] = True")
    expect(node(editor, "done")).to_have_attribute("data-status", "succeeded")
    expect(node(editor, "never")).to_have_attribute("data-status", "skipped")


def test_a_node_error_shows_its_message_in_the_badge(notebook):
    editor = show(notebook, BROKEN)
    editor.get_by_test_id("cw-run").click()

    expect(node(editor, "bad")).to_have_attribute("data-status", "failed")
    badge = editor.get_by_test_id("cw-error-bad")
    expect(badge).to_contain_text("the e2e node broke on purpose")
    expect(editor.get_by_test_id("cw-error-start")).to_have_count(0)
    expect(node(editor, "start")).to_have_attribute("data-status", "succeeded")
    expect(node(editor, "end")).not_to_have_attribute("data-status", re.compile("succeeded"))
    seen = kernel_json(notebook, "await run_end(w)\n"
                                 "print(json.dumps([w.status['bad']['status'],"
                                 " w.status['bad']['error']]))")
    assert seen[0] == "failed" and "the e2e node broke on purpose" in seen[1]


def test_backspace_in_the_panel_edits_text_and_deletes_no_node(notebook):
    """Typing in the properties panel must not delete the selected node."""
    editor = show(notebook, GRAPH)
    node(editor, "ask").click()
    field = editor.get_by_test_id("cw-panel").get_by_test_id("cw-field-prompt_template.0.text")
    field.click()
    field.press("End")
    field.press("Backspace")
    expect(field).to_have_value("Say {{#start.x#}")
    expect(node(editor, "ask")).to_have_count(1)
    assert kernel_json(notebook, "print(json.dumps(sorted(wf.nodes)))") == ["ask", "end", "start"]


def test_a_run_started_in_the_widget_runs_on_the_notebooks_event_loop(notebook):
    """JupyterLab 4.6 sends widget messages on an ipykernel 7 subshell (a thread with its own
    loop); the widget hands them to the notebook's loop, so a cell can await the run."""
    editor = show(notebook, BRANCHING + "w = WorkflowWidget(wf, inputs={'x': 7})\n", display="w")
    editor.get_by_test_id("cw-run").click()
    expect(node(editor, "slow")).to_have_attribute("data-status", "running")
    same = notebook.run("print(w.run_handle.task.get_loop() is asyncio.get_running_loop())")
    assert same == "True"
    notebook.run("gate['open'] = True")
    result = kernel_json(notebook, "r = await w.run_handle\nprint(json.dumps(r.outputs))")
    assert result == {"text": "opened"}


def test_run_from_here_reruns_the_selected_node_and_what_follows(notebook):
    graph = """\
wf = cellwire.Workflow("again")
wf.add_node("start", "start", variables=[{"variable": "x", "type": "number", "label": "x"}])
wf.add_node("t", "template-transform", after="start", template="first {{ x }}",
            variables=[{"variable": "x", "value_selector": ["start", "x"]}])
wf.add_node("end", "end", after="t", outputs=[{"variable": "out", "value_selector": ["t", "output"]}])
w = WorkflowWidget(wf, inputs={"x": 3})
"""
    editor = show(notebook, graph, display="w")
    editor.get_by_test_id("cw-run").click()
    expect(node(editor, "end")).to_have_attribute("data-status", "succeeded")
    assert kernel_json(notebook, "await run_end(w)\nprint(json.dumps(w.last_run.outputs))") \
        == {"out": "first 3"}

    notebook.run("wf.nodes['t'].config['template'] = 'second {{ x }}'")
    record_statuses(notebook)
    node(editor, "t").click()
    editor.get_by_test_id("cw-panel").get_by_test_id("cw-run-from").click()

    expect(editor.get_by_test_id("cw-panel").get_by_test_id("cw-io")).to_contain_text("second 3")
    expect(node(editor, "end")).to_have_attribute("data-status", "succeeded")
    out = kernel_json(notebook, "await until(lambda: w.last_run.outputs != {'out': 'first 3'})\n"
                                "r = await w.run_handle\n"
                                "print(json.dumps([r.outputs, [e.node_id for e in r.events "
                                "if type(e).__name__ == 'NodeStarted']]))")
    assert out == [{"out": "second 3"}, ["t", "end"]]
    seen = seen_statuses(notebook)
    assert seen["start"] == ["succeeded"], seen  # reused: never reset nor run again
    assert seen["t"][-1] == "succeeded" and seen["end"][-1] == "succeeded", seen


def test_run_this_node_reruns_only_the_selected_node(notebook):
    graph = """\
wf = cellwire.Workflow("one")
wf.add_node("start", "start", variables=[{"variable": "x", "type": "number", "label": "x"}])
wf.add_node("t", "template-transform", after="start", template="first {{ x }}",
            variables=[{"variable": "x", "value_selector": ["start", "x"]}])
wf.add_node("end", "end", after="t", outputs=[{"variable": "out", "value_selector": ["t", "output"]}])
w = WorkflowWidget(wf, inputs={"x": 3})
"""
    editor = show(notebook, graph, display="w")
    panel = editor.get_by_test_id("cw-panel")
    node(editor, "t").click()
    panel.get_by_test_id("cw-run-node").click()  # no run yet to take start's value from
    expect(editor.get_by_test_id("cw-message")).to_contain_text("run the whole workflow first")

    editor.get_by_test_id("cw-run").click()
    expect(node(editor, "end")).to_have_attribute("data-status", "succeeded")
    assert kernel_json(notebook, "await run_end(w)\nprint(json.dumps(w.last_run.outputs))") \
        == {"out": "first 3"}

    notebook.run("wf.nodes['t'].config['template'] = 'second {{ x }}'")
    record_statuses(notebook)
    node(editor, "t").click()
    panel.get_by_test_id("cw-run-node").click()

    expect(panel.get_by_test_id("cw-io")).to_contain_text("second 3")
    out = kernel_json(notebook, "await until(lambda: 'second 3' in str(w.status['t']))\n"
                                "r = await w.run_handle\n"
                                "print(json.dumps([r.outputs, [e.node_id for e in r.events "
                                "if type(e).__name__ == 'NodeStarted']]))")
    assert out == [{"out": "first 3"}, ["t"]]  # end did not run again
    seen = seen_statuses(notebook)
    assert seen["start"] == ["succeeded"] and seen["end"] == ["succeeded"], seen
    assert seen["t"][-1] == "succeeded", seen


APPROVAL = """\
wf = cellwire.Workflow("approve-e2e")
wf.add_node("start", "start", variables=[{"variable": "topic", "type": "text-input",
                                          "label": "topic"}])
wf.add_node("review", "human-input", after="start", form_content="Publish {{#start.topic#}}?",
            inputs=[{"type": "paragraph", "output_variable_name": "note",
                     "default": {"type": "constant", "value": "ok"}}],
            user_actions=[{"id": "yes", "title": "Publish", "button_style": "primary"},
                          {"id": "no", "title": "Drop"}])
wf.add_node("done", "end", after=[("review", "yes")],
            outputs=[{"variable": "note", "value_selector": ["review", "note"]}])
wf.add_node("dropped", "end", after=[("review", "no")], outputs=[])
"""


def test_a_paused_run_shows_its_form_in_the_panel_and_an_answer_there_resumes_it(notebook):
    editor = show(notebook, APPROVAL, display='w = WorkflowWidget(wf, inputs={"topic": "owls"})\nw')
    editor.get_by_test_id("cw-run").click()
    expect(node(editor, "review")).to_have_attribute("data-status", "paused")
    assert kernel_json(notebook, "await run_end(w)\nprint(json.dumps(str(w.last_run.status)))") \
        == "paused"
    node(editor, "review").click()
    form = editor.get_by_test_id("cw-panel").get_by_test_id("cw-form")
    expect(form.get_by_test_id("cw-form-content")).to_have_text("Publish owls?")
    expect(form.get_by_test_id("cw-form-field-note")).to_have_value("ok")
    form.get_by_test_id("cw-form-field-note").fill("answered in the editor")
    form.get_by_test_id("cw-form-action-yes").click()
    expect(node(editor, "done")).to_have_attribute("data-status", "succeeded")
    expect(node(editor, "dropped")).to_have_attribute("data-status", "skipped")
    done = kernel_json(notebook, "await until(lambda: str(w.last_run.status) != 'paused')\n"
                                 "await run_end(w)\n"
                                 "print(json.dumps([str(w.last_run.status), w.last_run.outputs,"
                                 " w.last_run.run_id == w.run_handle.run_id]))")
    assert done == ["succeeded", {"note": "answered in the editor"}, True]


# Twelve nodes: a branch, a join, a fan-out and a side path, all runnable on the scripted model.
TWELVE = """\
wf = cellwire.Workflow("twelve")
m = {"provider": "scripted", "name": "echo"}
p = lambda text: [{"role": "user", "text": text}]
t = lambda template, **sel: dict(template=template, variables=[
    {"variable": k, "value_selector": v} for k, v in sel.items()])
wf.add_node("start", "start", variables=[{"variable": "topic", "type": "text-input", "label": "topic"}])
wf.add_node("route", "if-else", after="start", cases=[{"case_id": "long", "conditions": [
    {"variable_selector": ["start", "topic"], "comparison_operator": "contains", "value": " "}]}])
wf.add_node("outline", "llm", after=[("route", "long")], model=m, prompt_template=p("Outline {{#start.topic#}}"))
wf.add_node("draft", "llm", after="outline", model=m, prompt_template=p("Draft {{#outline.text#}}"))
wf.add_node("short", "llm", after=[("route", "false")], model=m, prompt_template=p("One line on {{#start.topic#}}"))
wf.add_node("merge", "variable-aggregator", after=["draft", "short"], output_type="string",
            variables=[["draft", "text"], ["short", "text"]])
wf.add_node("polish", "template-transform", after="merge", **t("{{ x }}", x=["merge", "output"]))
wf.add_node("check", "llm", after="polish", model=m, prompt_template=p("Check {{#polish.output#}}"))
wf.add_node("headline", "llm", after="polish", model=m, prompt_template=p("Title for {{#polish.output#}}"))
wf.add_node("notes", "template-transform", after="outline", **t("notes: {{ o }}", o=["outline", "text"]))
wf.add_node("combine", "template-transform", after=["check", "headline", "notes"],
            **t("{{ h }}: {{ c }}", h=["headline", "text"], c=["check", "text"]))
wf.add_node("end", "end", after="combine", outputs=[{"variable": "text", "value_selector": ["combine", "output"]}])
"""

BOXES = """els => els.map(e => { const r = e.getBoundingClientRect();
  return {name: e.dataset.testid || e.dataset.id || `${e.dataset.nodeid}.${e.dataset.handleid}`,
          left: r.left, top: r.top, right: r.right, bottom: r.bottom}; })"""


def _overlap(a: dict, b: dict) -> bool:
    return a["left"] < b["right"] and b["left"] < a["right"] and a["top"] < b["bottom"] \
        and b["top"] < a["bottom"]


def covered(page, editor, width: int, height: int) -> list[str]:
    """Every way a node or handle of ``editor`` is hidden: outside the viewport or the canvas,
    or under the palette, the panel, the toolbar, the zoom controls or the minimap."""
    parts = editor.locator(".react-flow__node, .react-flow__handle").evaluate_all(BOXES)
    covers = editor.locator('[data-testid="cw-palette"], [data-testid="cw-panel"], '
                            '.cw-toolbar, .react-flow__controls, .react-flow__minimap'
                            ).evaluate_all(BOXES)
    canvas = editor.get_by_test_id("cw-canvas").evaluate(f"e => ({BOXES})([e])[0]")
    screen = {"left": 0, "top": 0, "right": width, "bottom": height}
    found = []
    for part in parts:
        for name, outer in (("the viewport", screen), ("the canvas", canvas)):
            if part["left"] < outer["left"] - 0.5 or part["top"] < outer["top"] - 0.5 \
                    or part["right"] > outer["right"] + 0.5 or part["bottom"] > outer["bottom"] + 0.5:
                found.append(f"{part['name']} is outside {name}")
        found += [f"{part['name']} is under {c['name'] or 'a control'}" for c in covers
                  if _overlap(part, c)]
    return found


def save_small(shot: Path, target: Path) -> None:
    """``shot`` as a 256-colour PNG at ``target``: a third of the bytes, same picture."""
    from PIL import Image

    with Image.open(shot) as image:
        image.convert("RGB").quantize(colors=256, dither=Image.Dither.NONE).save(target, optimize=True)


def test_at_1280x800_a_12_node_graph_shows_every_node_and_handle_uncovered(notebook, tmp_path):
    """The docs' screenshot: the editor opened after a run, a node selected (its panel open),
    in a 1280x800 window; every node and handle is on screen and nothing covers it."""
    page = notebook.page
    page.set_viewport_size({"width": 1280, "height": 800})
    try:
        editor = show(notebook, TWELVE + "await wf.arun(topic='owls at night', store=False)\n")
        expect(editor.locator(".react-flow__node")).to_have_count(12)
        expect(node(editor, "end")).to_have_attribute("data-status", "succeeded")
        expect(node(editor, "short")).to_have_attribute("data-status", "skipped")
        expect(editor.get_by_test_id("cw-run-status")).to_contain_text("last run succeeded")
        node(editor, "polish").click()
        expect(editor.get_by_test_id("cw-panel")).to_be_visible()
        assert editor.locator(".react-flow__handle").count() >= 12
        problems: list[str] = ["not checked yet"]
        for _ in range(40):  # the view refits once the panel has taken its width
            problems = covered(page, editor, 1280, 800)
            if not problems:
                break
            page.wait_for_timeout(100)
        assert problems == []
        shot = tmp_path / "editor-1280.png"
        editor.screenshot(path=str(shot), animations="disabled")
        if UPDATE_SHOTS:
            save_small(shot, SHOT)
    finally:
        page.set_viewport_size({"width": 1600, "height": 1000})


def test_a_refused_connection_says_why(notebook):
    editor = show(notebook, GRAPH)
    handle(editor, "ask", "source").drag_to(handle(editor, "start", "target"))
    expect(editor.get_by_test_id("cw-message")).to_contain_text("ask -> start would make a cycle")
    expect(editor.locator(".react-flow__edge")).to_have_count(1)
    assert kernel_json(notebook, "show_edges(wf)") == [["start", "source", "ask"]]


def test_run_asks_for_the_start_inputs_and_runs_with_them_typed(notebook):
    editor = show(notebook, GRAPH + "wf.connect('ask', 'end')\n")
    editor.get_by_test_id("cw-run").click()
    form = editor.get_by_test_id("cw-run-form")
    expect(form).to_be_visible()
    assert notebook.run("print(w.running, w.run_handle)") == "False None"  # not run silently
    # Typed key by key: notebook shortcuts (a, b, x add and cut cells) stay out of the form,
    # and Enter runs.
    cells = notebook.cell_count()
    field = form.get_by_test_id("cw-input-x")
    field.click()
    field.press_sequentially("4")
    for key in ("a", "b", "x", "Backspace", "Backspace", "Backspace", "Backspace"):
        field.press(key)
    expect(field).to_have_value("")
    field.press_sequentially("4")
    field.press("Enter")
    expect(form).to_have_count(0)
    assert notebook.cell_count() == cells
    expect(node(editor, "end")).to_have_attribute("data-status", "succeeded")
    expect(editor.get_by_test_id("cw-run-status")).to_contain_text("last run succeeded")
    out = kernel_json(notebook, "r = await w.run_handle\n"
                                "print(json.dumps([r.inputs, r.outputs]))")
    assert out == [{"x": 4}, {"answer": "Say 4"}]


def test_an_editor_opened_after_a_run_shows_it_and_the_whole_error(notebook):
    editor = show(notebook, BROKEN + "await wf.arun(store=False)\n", display="wf.widget()")
    expect(node(editor, "start")).to_have_attribute("data-status", "succeeded")
    expect(node(editor, "bad")).to_have_attribute("data-status", "failed")
    expect(editor.get_by_test_id("cw-run-status")).to_contain_text("last run failed")
    expect(editor.get_by_test_id("cw-run-status")).to_contain_text("at bad")
    node(editor, "bad").click()
    expect(editor.get_by_test_id("cw-panel-error")).to_contain_text("the e2e node broke on purpose")


def test_nodes_added_from_the_palette_land_on_no_other_node(notebook):
    editor = show(notebook, GRAPH)
    for _ in range(3):
        count = editor.locator(".react-flow__node").count()
        editor.get_by_test_id("cw-palette-code").click()
        expect(editor.locator(".react-flow__node")).to_have_count(count + 1)
    boxes = editor.locator(".react-flow__node").evaluate_all(BOXES)
    assert len(boxes) == 6
    clashes = [(a["name"], b["name"]) for i, a in enumerate(boxes) for b in boxes[i + 1:]
               if _overlap(a, b)]
    assert clashes == []
    assert kernel_json(notebook, "await until(lambda: len(wf.nodes) == 6)\n"
                                 "print(json.dumps(sorted(wf.nodes)))") == \
        ["ask", "code_1", "code_2", "code_3", "end", "start"]


def test_a_connection_dropped_on_a_node_body_connects_to_its_input(notebook):
    editor = show(notebook, GRAPH)
    handle(editor, "ask", "source").drag_to(node(editor, "end"))
    expect(editor.locator(".react-flow__edge")).to_have_count(2)
    assert kernel_json(notebook, "await until(lambda: len(wf.edges) == 2)\nshow_edges(wf)") == [
        ["ask", "source", "end"], ["start", "source", "ask"]]
