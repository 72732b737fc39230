"""In a real ipykernel, `%workflow run` returns at once: while the run awaits a slow node, the
kernel executes other cells."""

from __future__ import annotations

import os
import sys

import pytest

jupyter_client = pytest.importorskip("jupyter_client")

SETUP = '''
import asyncio, cellwire
%load_ext cellwire
gate = asyncio.Event()

@cellwire.node_type("test-slow")
async def slow(ctx):
    await gate.wait()          # the "slow LLM call": ends only when a later cell says so
    return cellwire.NodeResult(outputs={"text": "done"})
'''

DEFINE = [
    ("w start --type start", "[]"),
    ("w slow --type test-slow --after start", "{}"),
    ("w end --type end", "text: slow.text"),
]


@pytest.fixture
def kernel(tmp_path):
    manager = jupyter_client.KernelManager(kernel_name="python3")
    env = {"CELLWIRE_HOME": str(tmp_path), "PYTHONPATH": ":".join(sys.path)}
    manager.start_kernel(env={**os.environ, **env}, cwd=str(tmp_path))
    client = manager.client()
    client.start_channels()
    client.wait_for_ready(timeout=60)
    yield client
    client.stop_channels()
    manager.shutdown_kernel(now=True)


def execute(client, code: str) -> dict:
    """Run ``code``; return its status and its text output (errors as 'Name: value')."""
    msg_id = client.execute(code, store_history=True)
    reply = client.get_shell_msg(timeout=60)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = client.get_shell_msg(timeout=60)
    out: list[str] = []
    while True:
        msg = client.get_iopub_msg(timeout=60)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            out.append(content["text"])
        elif kind in ("execute_result", "display_data", "update_display_data"):
            out.append(content["data"].get("text/plain", ""))
        elif kind == "error":
            out.append(f"{content['ename']}: {content['evalue']}")
        elif kind == "status" and content["execution_state"] == "idle":
            break
    return {"status": reply["content"]["status"], "output": "".join(out)}


def test_a_cell_runs_while_a_workflow_awaits_a_slow_node(kernel):
    assert execute(kernel, SETUP)["status"] == "ok"
    for line, body in DEFINE:
        result = execute(kernel, f"%%workflow {line}\n{body}\n")
        assert result["status"] == "ok", result
    started = execute(kernel, "%workflow run w")
    assert started["status"] == "ok", started
    # The run is in flight, stuck in the slow node, and yet this cell executes.
    probe = execute(kernel, "h = cellwire.jupyter.last_run(); print(h.status, h.done, 6 * 7)")
    assert probe["output"].strip() == "running False 42", probe
    execute(kernel, "gate.set()")
    done = execute(kernel, "r = await cellwire.jupyter.last_run(); print(r.status, r.outputs)")
    assert done["output"].strip() == "succeeded {'text': 'done'}", done
    costs = execute(kernel, "print(len(cellwire.jupyter.runs()))")
    assert costs["output"].strip() == "1"
