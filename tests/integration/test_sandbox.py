"""The sandbox as a code executor: real bubblewrap jails running code nodes of real runs.

Python and JavaScript, allowed packages, limits, isolation between runs, a pool that
recovers when a worker is killed, concurrent nodes, several event loops, the process-wide
shared sandbox, and the refusal where no sandbox can run.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import cellwire
from cellwire.engine import RunStatus, Runtime
from cellwire.engine.services import CodeFailed
from cellwire.services.sandbox import (
    DEFAULT_PACKAGES,
    ENV_VAR,
    Limits,
    PackageNotFound,
    Sandbox,
    sandbox_unavailable,
    shared_sandbox,
)

SRC = Path(__file__).resolve().parents[2] / "src"
needs_sandbox = pytest.mark.skipif(sandbox_unavailable() is not None,
                                   reason=f"no sandbox here: {sandbox_unavailable()}")
needs_node = pytest.mark.skipif(not os.path.exists("/usr/bin/node"), reason="no Node.js here")


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox() as box:
        yield box


def code_wf(code: str, *, language: str = "python3", outputs: dict[str, Any] | None = None,
            max_time: float | None = 10, **inputs: Any) -> cellwire.Workflow:
    wf = cellwire.Workflow("sandboxed")
    wf.add_node("start", "start", variables=[
        {"variable": k, "type": "number" if isinstance(v, int) else "json_object"
         if isinstance(v, dict) else "paragraph"} for k, v in inputs.items()])
    wf.add_node("c", "code", after="start", code=code, code_language=language,
                max_time=max_time, outputs=outputs or {},
                variables=[{"variable": k, "value_selector": ["start", k]} for k in inputs])
    return wf


async def run_code(executor: Any, code: str, **kwargs: Any) -> cellwire.RunResult:
    inputs = {k: v for k, v in kwargs.items() if k not in ("language", "outputs", "max_time")}
    wf = code_wf(code, **kwargs)
    return await wf.arun(runtime=Runtime(code=executor), store=False, **inputs)


def node(result: cellwire.RunResult, node_id: str = "c") -> Any:
    return result.trace.set_index("node_id").loc[node_id]


# -- Python --------------------------------------------------------------------------------


@needs_sandbox
async def test_python_runs_main_and_keeps_what_it_printed(sandbox: Sandbox):
    code = ("def main(a, b):\n    print('adding', a, b)\n"
            "    return {'sum': a + b, 'text': json.dumps({'a': a}),\n"
            "            'raw': b64decode('aGk=').decode()}\n")
    result = await run_code(sandbox, code, a=2, b=40,
                            outputs={"sum": {"type": "number"}, "text": {"type": "string"},
                                     "raw": {"type": "string"}})
    assert result.status == RunStatus.SUCCEEDED, result.error
    row = node(result)
    assert row.outputs == {"sum": 42, "text": '{"a": 2}', "raw": "hi"}
    assert row.process_data == {"stdout": "adding 2 40\n"}


@needs_sandbox
async def test_declared_outputs_are_checked_for_sandboxed_code(sandbox: Sandbox):
    result = await run_code(sandbox, "def main():\n    return {'n': 'seven'}\n",
                            outputs={"n": {"type": "number"}})
    assert result.status == RunStatus.FAILED
    assert "output 'n' should be number, got str 'seven'" in result.error


@needs_sandbox
async def test_the_standard_library_is_there_and_the_machine_is_not(sandbox: Sandbox):
    code = textwrap.dedent("""\
        import decimal, os, sqlite3, zoneinfo
        from datetime import datetime

        def main():
            db = sqlite3.connect("/tmp/scratch.db")
            db.execute("create table t (x)")
            when = datetime(2024, 1, 1, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
            return {"uid": os.getuid(), "cwd": os.getcwd(), "env": dict(os.environ),
                    "root": sorted(os.listdir("/")), "tz": when.utcoffset().seconds,
                    "sum": str(decimal.Decimal("0.1") + decimal.Decimal("0.2"))}
    """)
    result = await run_code(sandbox, code)
    assert result.status == RunStatus.SUCCEEDED, result.error
    out = node(result).outputs
    assert (out["uid"], out["cwd"], out["env"], out["tz"], out["sum"]) == (
        65534, "/tmp", {}, 3600, "0.3")
    assert "etc" not in out["root"] and "home" not in out["root"] and "work" not in out["root"]


@needs_sandbox
async def test_no_run_sees_what_an_earlier_run_left(tmp_path: Path):
    leave = textwrap.dedent("""\
        import json, os, subprocess

        def main():
            json.left_behind = True
            os.environ["LEFT"] = "1"
            open("/tmp/left", "w").write("secret of an earlier run")
            subprocess.Popen(["sleep", "60"])
            return {"ns": os.readlink("/proc/self/ns/pid")}
    """)
    look = textwrap.dedent("""\
        import json, os

        def main():
            others = [p for p in os.listdir("/proc")
                      if p.isdigit() and int(p) not in (1, 2, os.getpid())]
            return {"ns": os.readlink("/proc/self/ns/pid"), "others": others,
                    "attr": hasattr(json, "left_behind"), "env": dict(os.environ),
                    "tmp": os.listdir("/tmp")}
    """)
    with Sandbox(size=1) as one:
        first = await run_code(one, leave)
        second = await run_code(one, look)
    assert first.status == second.status == RunStatus.SUCCEEDED, (first.error, second.error)
    seen = node(second).outputs
    assert seen["ns"] == node(first).outputs["ns"]  # the same worker served both
    assert (seen["others"], seen["attr"], seen["env"], seen["tmp"]) == ([], False, {}, [])


@needs_sandbox
async def test_an_exception_names_the_users_line(sandbox: Sandbox):
    code = "def helper(x):\n    return 1 / x\n\ndef main(a):\n    y = helper(a)\n    return {}\n"
    result = await run_code(sandbox, code, a=0)
    assert result.status == RunStatus.FAILED
    assert ("field 'code': ZeroDivisionError: division by zero "
            "(line 2, in helper: return 1 / x)") in result.error


@needs_sandbox
async def test_values_that_are_not_json_fail_clearly(sandbox: Sandbox):
    outputs = await run_code(sandbox, "def main():\n    return {'s': {1, 2}}\n")
    assert "main() returned a value that is not JSON" in outputs.error
    with pytest.raises(CodeFailed, match="input 'gate' cannot be sent to the sandbox") as info:
        await sandbox.run("python3", "def main(gate):\n    return {}\n",
                          {"gate": threading.Event()})
    assert info.value.field == "variables"


# -- allowed packages ----------------------------------------------------------------------


@needs_sandbox
async def test_default_packages_import_and_others_fail_naming_the_fix(sandbox: Sandbox):
    assert {"dateutil", "yaml", "jinja2"} <= set(DEFAULT_PACKAGES)
    ok = await run_code(sandbox, textwrap.dedent("""\
        import yaml, jinja2
        from dateutil.relativedelta import relativedelta

        def main():
            return {"y": yaml.safe_load("a: 1"), "t": jinja2.Template("{{ x }}!").render(x=2),
                    "d": str(relativedelta(months=1))}
    """))
    assert node(ok).outputs == {"y": {"a": 1}, "t": "2!", "d": "relativedelta(months=+1)"}

    denied = await run_code(sandbox, "import sortedcontainers\ndef main():\n    return {}\n")
    assert ("ModuleNotFoundError: No module named 'sortedcontainers' "
            "(line 1, in <module>: import sortedcontainers)") in denied.error
    assert f"allow it with {ENV_VAR}=sortedcontainers" in denied.error
    missing = await run_code(sandbox, "import no_such_pkg_x\ndef main():\n    return {}\n")
    assert "'no_such_pkg_x' is not installed: pip install it" in missing.error
    # The interpreter's own site-packages are masked: installed there is not allowed.
    masked = await run_code(sandbox, "import IPython\ndef main():\n    return {}\n")
    assert "No module named 'IPython'" in masked.error


@needs_sandbox
async def test_an_allowed_package_imports():
    with Sandbox(packages=[*DEFAULT_PACKAGES, "sortedcontainers"]) as box:
        result = await run_code(box, "from sortedcontainers import SortedList\n"
                                     "def main():\n    return {'s': list(SortedList([3, 1, 2]))}\n")
    assert node(result).outputs == {"s": [1, 2, 3]}


def test_a_package_that_is_not_installed_cannot_be_allowed():
    with pytest.raises(PackageNotFound, match="'no_such_pkg_x' is not installed"):
        Sandbox(packages=["no_such_pkg_x"])


# -- limits --------------------------------------------------------------------------------


@needs_sandbox
async def test_a_node_without_max_time_gets_the_sandboxs_timeout():
    with Sandbox(limits=Limits(timeout=1)) as box:
        result = await run_code(box, "def main():\n    while True:\n        pass\n",
                                max_time=None)
    assert "field 'max_time': timed out after 1 s: the sandbox stopped the code" in result.error


@needs_sandbox
async def test_the_cpu_limit_stops_a_busy_run_before_its_time_limit():
    with Sandbox(limits=Limits(cpu_seconds=1)) as box:
        result = await run_code(box, "def main():\n    while True:\n        pass\n",
                                max_time=30)
    assert "the code used up its CPU time and was stopped" in result.error


@needs_sandbox
async def test_reply_and_printed_output_are_capped():
    with Sandbox(limits=Limits(max_output_bytes=10_000, max_stdout=100)) as box:
        big = await run_code(box, "def main():\n    return {'s': 'x' * 20000}\n")
        chatty = await run_code(box, "def main():\n    print('y' * 150)\n    return {}\n")
    assert "more than the sandbox allows" in big.error
    assert node(chatty).process_data == {"stdout": "y" * 100 + "\n[51 more characters not kept]"}


# -- the pool ------------------------------------------------------------------------------


def _jails() -> list[int]:
    """The bubblewrap processes this test process started."""
    found = []
    for task in Path("/proc/self/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "bwrap":
                    found.append(int(pid))
            except OSError:
                pass
    return found


@needs_sandbox
async def test_the_pool_recovers_when_its_workers_are_killed():
    with Sandbox(size=1) as box:
        assert node(await run_code(box, "def main():\n    return {'n': 1}\n")).outputs == {"n": 1}
        jails = _jails()
        assert jails
        for pid in jails:
            os.kill(pid, signal.SIGKILL)
        again = await run_code(box, "def main():\n    return {'n': 2}\n")
        assert again.status == RunStatus.SUCCEEDED, again.error
        # A run that kills its own worker fails; the next run gets a new one.
        await run_code(box, "import os\ndef main():\n    os.kill(os.getppid(), 9)\n")
        after = await run_code(box, "def main():\n    return {'n': 3}\n")
        assert node(after).outputs == {"n": 3}


@needs_sandbox
async def test_workers_are_recycled_after_max_runs():
    code = "import os\ndef main():\n    return {'ns': os.readlink('/proc/self/ns/pid')}\n"
    with Sandbox(size=1, max_runs=2) as box:
        seen = [node(await run_code(box, code)).outputs["ns"] for _ in range(3)]
    assert seen[0] == seen[1] != seen[2]


@needs_sandbox
async def test_code_nodes_run_at_once():
    wf = cellwire.Workflow("parallel")
    wf.add_node("start", "start")
    nap = "import time\ndef main():\n    t0 = time.time()\n    time.sleep(0.5)\n" \
          "    return {'t0': t0, 't1': time.time()}\n"
    for i in range(4):
        wf.add_node(f"c{i}", "code", after="start", code=nap, max_time=20)
    with Sandbox(size=4) as box:
        result = await wf.arun(runtime=Runtime(code=box), store=False)
    assert result.status == RunStatus.SUCCEEDED, result.error
    spans = [node(result, f"c{i}").outputs for i in range(4)]
    assert max(s["t0"] for s in spans) < min(s["t1"] for s in spans)  # all four overlapped


@needs_sandbox
def test_one_sandbox_serves_runs_on_many_loops_and_threads(sandbox: Sandbox):
    code = "def main(n):\n    return {'n': n * 10}\n"
    got: dict[int, Any] = {}

    def on_own_loop(n: int) -> None:
        got[n] = asyncio.run(sandbox.run("python3", code, {"n": n})).outputs

    threads = [threading.Thread(target=on_own_loop, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert got == {n: {"n": n * 10} for n in range(4)}


# -- JavaScript ----------------------------------------------------------------------------


@needs_sandbox
@needs_node
async def test_javascript_main_gets_an_object_and_returns_one(sandbox: Sandbox):
    code = "function main({a, b}) {\n  console.log('adding', a, b);\n  return {sum: a + b};\n}\n"
    result = await run_code(sandbox, code, language="javascript", a=2, b=40,
                            outputs={"sum": {"type": "number"}})
    assert result.status == RunStatus.SUCCEEDED, result.error
    assert node(result).outputs == {"sum": 42}
    assert node(result).process_data == {"stdout": "adding 2 40\n"}
    later = await run_code(sandbox, "async function main({s}) { return {up: s.toUpperCase()} }",
                           language="javascript", s="dify")
    assert node(later).outputs == {"up": "DIFY"}


@needs_sandbox
@needs_node
@pytest.mark.parametrize(("code", "expected"), [
    ("function main() {\n  return {x: missing};\n}",
     "ReferenceError: missing is not defined (line 2, in main: return {x: missing};)"),
    ("function main( {", "syntax error on line 1"),
    ("function main() { return [1] }", "main() returned an array, not an object"),
    ("const x = 1;", "the code defines no main() function"),
    ("function main() { process.exit(0) }", "the code ended its process (exit code 0)"),
    ("function main() { return {n: 10n} }", "main() returned a value that is not JSON"),
])
async def test_javascript_failures_are_clear(sandbox: Sandbox, code: str, expected: str):
    result = await run_code(sandbox, code, language="javascript")
    assert result.status == RunStatus.FAILED
    assert expected in result.error, result.error


@needs_sandbox
@needs_node
async def test_javascript_runs_in_the_same_jail(sandbox: Sandbox):
    code = textwrap.dedent("""\
        const fs = require('fs');
        function main() {
          let etc = 'missing';
          try { fs.readdirSync('/etc'); etc = 'visible'; } catch (e) { etc = e.code; }
          return {uid: process.getuid(), env: process.env, etc, root: fs.readdirSync('/')};
        }
    """)
    result = await run_code(sandbox, code, language="javascript")
    out = node(result).outputs
    assert (out["uid"], out["env"], out["etc"]) == (65534, {}, "ENOENT")
    assert "home" not in out["root"] and "work" not in out["root"]
    loop = await run_code(sandbox, "function main() { while (true) {} }", language="javascript",
                          max_time=2)
    assert "timed out after 2 s" in loop.error


# -- no sandbox ----------------------------------------------------------------------------


@pytest.mark.parametrize("bwrap", ["/nonexistent/bwrap", "/bin/false"])
async def test_without_a_working_bubblewrap_untrusted_code_is_refused(bwrap: str):
    reason = sandbox_unavailable(bwrap)
    assert reason is not None and bwrap.rsplit("/", 1)[-1] in reason
    with Sandbox(bwrap=bwrap) as box:
        result = await run_code(box, "def main():\n    return {'ran': True}\n")
    assert result.status == RunStatus.FAILED
    assert "this code came from a file and is untrusted" in result.error
    assert reason in result.error
    assert "apt-get install bubblewrap" in result.error
    assert "cellwire trust FILE" in result.error and "trusted=True" in result.error
    assert node(result).status == "failed" and not node(result).outputs


# -- the shared sandbox --------------------------------------------------------------------


@needs_sandbox
async def test_the_shared_sandbox_is_one_per_process():
    box = shared_sandbox()
    assert box is shared_sandbox() and isinstance(box, Sandbox)
    result = await box.run("python3", "def main():\n    return {'ok': True}\n", {})
    assert result.outputs == {"ok": True}


def _python(script: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(SRC), **env},
                          check=False)


@needs_sandbox
def test_the_shared_sandbox_kills_its_jails_when_the_process_exits():
    script = textwrap.dedent("""\
        import asyncio, json, pathlib
        from cellwire.services.sandbox import shared_sandbox
        asyncio.run(shared_sandbox().run("python3", "def main():\\n    return {}\\n", {}))
        pids = [int(p) for t in pathlib.Path("/proc/self/task").iterdir()
                for p in (t / "children").read_text().split()]
        print(json.dumps(pids))
    """)
    done = _python(script)
    assert done.returncode == 0, done.stderr
    pids = json.loads(done.stdout)
    assert pids  # the jail was running before the exit

    def alive(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/comm").read_text().strip() == "bwrap"
        except OSError:
            return False

    assert [pid for pid in pids if alive(pid)] == []


def test_a_shared_sandbox_with_a_bad_package_list_refuses_saying_so():
    script = textwrap.dedent("""\
        import asyncio
        from cellwire.services.sandbox import shared_sandbox
        try:
            asyncio.run(shared_sandbox().run("python3", "def main():\\n    return {}\\n", {}))
        except Exception as exc:
            print(exc, "|", exc.hint)
    """)
    done = _python(script, **{ENV_VAR: "no_such_pkg_x"})
    if sandbox_unavailable() is None:
        assert f"${ENV_VAR} is wrong: the allowed package 'no_such_pkg_x'" in done.stdout
    else:
        assert "this code came from a file and is untrusted" in done.stdout
