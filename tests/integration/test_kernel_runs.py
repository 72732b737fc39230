"""In a real ipykernel, every way of starting a run goes through the one runner: the editor
follows the magics' store and concurrency settings, and ``%workflow run`` gets the response
cache of the store it writes to."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_kernel_nonblocking import execute, kernel  # noqa: F401 - the fixture

pytestmark = pytest.mark.timeout(120)

SETUP = '''
import asyncio, json, cellwire
from cellwire.jupyter.widget import WorkflowWidget
%load_ext cellwire
%config WorkflowMagics.store = 'notebook.db'
%config WorkflowMagics.concurrency = 1

active = {"now": 0, "peak": 0}

@cellwire.node_type("test-busy", outputs=["text"])
async def busy(ctx):
    active["now"] += 1
    active["peak"] = max(active["peak"], active["now"])
    await asyncio.sleep(0.05)
    active["now"] -= 1
    return cellwire.NodeResult(outputs={"text": "ok"})

wf = cellwire.Workflow("fan")
wf.add_node("start", "start")
for name in ("a", "b", "c"):
    wf.add_node(name, "test-busy", after="start")
wf.add_node("end", "end", after=["a", "b", "c"], outputs=[])

qa = cellwire.Workflow("qa")
qa.add_node("start", "start", variables=[{"variable": "q", "type": "paragraph"}])
qa.add_node("llm", "llm", after="start", cache=True,
            model={"provider": "scripted", "name": "echo"},
            prompt_template=[{"role": "user", "text": "{{#start.q#}}"}])
qa.add_node("end", "end", after="llm", outputs=[{"variable": "text",
                                                 "value_selector": ["llm", "text"]}])
cellwire.jupyter.session().workflows["qa"] = qa
'''


def test_the_editor_runs_with_the_magics_store_and_concurrency(kernel):  # noqa: F811
    assert execute(kernel, SETUP)["status"] == "ok"
    ran = execute(kernel, "w = WorkflowWidget(wf)\nw.handle({'type': 'run'})\n"
                          "r = await w.run_handle\n"
                          "stored = cellwire.store.open_store('notebook.db').runs()\n"
                          "print(json.dumps([str(r.status), r.run_id in set(stored.run_id), "
                          "active['peak']]))")
    assert ran["status"] == "ok", ran
    assert ran["output"].strip() == '["succeeded", true, 1]'


def test_workflow_run_uses_the_response_cache_of_its_store(kernel):  # noqa: F811
    assert execute(kernel, SETUP)["status"] == "ok"
    for _ in range(2):
        assert execute(kernel, "%workflow run qa q=hello --wait")["status"] == "ok"
    probe = execute(kernel, "h = cellwire.jupyter.last_run()\n"
                            "meta = h.result.trace.set_index('node_id').loc['llm', 'metadata']\n"
                            "print(json.dumps([meta.get('cache_hit'), meta.get('notes')]))")
    assert probe["status"] == "ok", probe
    assert probe["output"].strip().startswith("[true,"), probe


def test_cell_bodies_are_yaml_1_2_in_a_real_kernel(kernel):  # noqa: F811
    # YAML 1.1 reads `yes` as True: the if-else would compare a boolean with "yes".
    assert execute(kernel, "import cellwire\n%load_ext cellwire")["status"] == "ok"
    cells = [
        ("y start --type start", "[answer]"),
        ("y check --type if-else --after start",
         ("cases:\n  - case_id: agreed\n    conditions:\n"
         "      - {variable_selector: [start, answer], comparison_operator: is, value: yes}\n")),
        ("y said --type template-transform --after check:agreed", "agreed"),
        ("y end --type end", "said: said.output\n"),
    ]
    for line, body in cells:
        defined = execute(kernel, f"%%workflow {line}\n{body}")
        assert defined["status"] == "ok", defined
    ran = execute(kernel, "r = %workflow run y answer=yes --wait\nprint(r.status, r.outputs)")
    assert ran["output"].strip().endswith("succeeded {'said': 'agreed'}"), ran
