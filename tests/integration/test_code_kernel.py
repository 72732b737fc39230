"""Trusted code runs in the kernel, and still can never exit or hang the engine: whatever
it raises fails its node, and a node that timed out or was stopped leaves no thread that
keeps the process alive (checked on real processes: the CLI and a script)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import cellwire
from cellwire.engine import RunStatus

SRC = Path(__file__).resolve().parents[2] / "src"

LOOP_FOREVER = "def main():\n    while True:\n        pass\n"


def code_wf(code: str, max_time: float | None = None) -> cellwire.Workflow:
    wf = cellwire.Workflow("kernel")
    wf.add_node("start", "start")
    wf.add_node("c", "code", after="start", code=code, max_time=max_time)
    return wf


@pytest.mark.parametrize(("code", "expected", "hint"), [
    ("def main():\n    raise SystemExit(0)\n",
     "SystemExit: 0 (line 2, in main: raise SystemExit(0))", "a code node cannot exit"),
    ("import sys\ndef main():\n    sys.exit('bye')\n", "SystemExit: bye (line 3, in main",
     "a code node cannot exit"),
    ("raise SystemExit(1)\ndef main():\n    return {}\n",
     "SystemExit: 1 (line 1, in <module>: raise SystemExit(1))", "a code node cannot exit"),
    ("def main():\n    raise KeyboardInterrupt\n", "KeyboardInterrupt (line 2, in main",
     "cannot interrupt the run"),
    ("def main():\n    raise GeneratorExit\n", "GeneratorExit (line 2, in main",
     "GeneratorExit escaped main()"),
])
async def test_whatever_main_raises_fails_the_node(code: str, expected: str, hint: str):
    result = await code_wf(code).arun(store=False)
    assert result.status == RunStatus.FAILED
    assert f"field 'code': {expected}" in result.error
    assert hint in result.error


async def test_a_timed_out_node_leaves_no_thread_behind():
    before = set(threading.enumerate())
    result = await code_wf(LOOP_FOREVER, max_time=1).arun(store=False)
    assert "field 'max_time': timed out after 1 s" in result.error
    left = [t for t in threading.enumerate() if t not in before and t.name == "cellwire-code"]
    for _ in range(200):  # the interrupt lands at the loop's next bytecode
        if not any(t.is_alive() for t in left):
            break
        await asyncio.sleep(0.05)
    assert [t for t in left if t.is_alive()] == []


def _wait_for(path: Path, process: subprocess.Popen[str]) -> None:
    for _ in range(600):
        if path.exists() or process.poll() is not None:
            return
        time.sleep(0.05)


@pytest.mark.parametrize("trust", [["--trust"], []], ids=["trusted", "untrusted"])
def test_cellwire_run_of_a_looping_node_exits_1(tmp_path: Path, trust: list[str]):
    # Trusted, the code runs in the kernel; untrusted, wherever the runner puts untrusted code:
    # either way the process ends when the node times out.
    flow = tmp_path / "loop.yaml"
    flow.write_text(textwrap.dedent("""\
        cellwire: 1
        name: looper
        nodes:
          - {id: start, type: start}
          - id: spin
            type: code
            max_time: 2
            code: |
              def main():
                  while True:
                      pass
        edges:
          - {source: start, target: spin}
    """))
    env = {**os.environ, "PYTHONPATH": str(SRC), "CELLWIRE_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "-m", "cellwire.cli", "run", str(flow), *trust],
                          capture_output=True, text=True, timeout=60, env=env, check=False,
                          cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "node 'spin' failed" in done.stderr and "timed out after 2 s" in done.stderr


def test_ctrl_c_ends_a_script_whose_code_node_loops(tmp_path: Path):
    started = tmp_path / "started"
    script = textwrap.dedent(f"""\
        import cellwire
        wf = cellwire.Workflow("looper")
        wf.add_node("start", "start")
        wf.add_node("spin", "code", after="start", code=(
            "def main():\\n    open({str(started)!r}, 'w').close()\\n"
            "    while True:\\n        pass\\n"))
        wf.run(store=False)
    """)
    env = {**os.environ, "PYTHONPATH": str(SRC), "CELLWIRE_HOME": str(tmp_path / "home")}
    process = subprocess.Popen([sys.executable, "-c", script], env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for(started, process)
        assert started.exists(), process.communicate(timeout=5)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode != 0
    assert "KeyboardInterrupt" in stderr
