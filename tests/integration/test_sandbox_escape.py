"""The escape suite: sandboxed code tries to get out, and fails the node clearly.

Each attempt is a real run of a workflow with two branches: the attempt in a code node (its
error strategy ``default-value``, so the run carries on), and a good code node beside it,
both run by one real :class:`Sandbox` (bubblewrap jails). Every attempt must fail its node
with a clear error within its time limit; the good node must still give its output; and the
test process (the engine) must come through untouched.
"""

from __future__ import annotations

import os
import socket
import socketserver
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import cellwire
from cellwire.engine import RunStatus, Runtime
from cellwire.services.sandbox import Limits, Sandbox, sandbox_unavailable

pytestmark = pytest.mark.skipif(sandbox_unavailable() is not None,
                                reason=f"no sandbox here: {sandbox_unavailable()}")

SECRET_NAME = "CELLWIRE_ESCAPE_SECRET"
SECRET_VALUE = "hunter2-3f9c1e"
MAX_TIME = 5.0


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with pytest.MonkeyPatch.context() as mp:
        # In the engine's environment before any worker starts: a jail must not inherit it.
        mp.setenv(SECRET_NAME, SECRET_VALUE)
        box = Sandbox(limits=Limits(memory_mb=256, processes=16))
        yield box
        box.close()


class Listener:
    """A real TCP and UDP server on 127.0.0.1 that counts what reaches it."""

    def __init__(self) -> None:
        counts = self.counts = {"tcp": 0, "udp": 0}

        class TCP(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                counts["tcp"] += 1

        self.tcp = socketserver.ThreadingTCPServer(("127.0.0.1", 0), TCP)
        self.port = self.tcp.server_address[1]
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", self.port))
        self.udp.settimeout(0.2)
        threading.Thread(target=self.tcp.serve_forever, daemon=True).start()

    def datagrams(self) -> int:
        try:
            while self.udp.recv(100):
                self.counts["udp"] += 1
        except TimeoutError:
            pass
        return self.counts["udp"]

    def close(self) -> None:
        self.tcp.shutdown()
        self.tcp.server_close()
        self.udp.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


def _home_file() -> Path:
    return next(p for p in Path.home().iterdir() if p.is_file())


READ_HOME = """\
import os

def main(home):
    found = [open(os.path.join(home, n)).read() for n in os.listdir(home)
             if os.path.isfile(os.path.join(home, n))]
    if not found:
        raise FileNotFoundError(f"nothing readable in {home}")
    return {"found": found}
"""

READ_ENV = f"""\
import glob, os

def main():
    seen = [os.environ.get("{SECRET_NAME}", "")]
    for path in glob.glob("/proc/*/environ"):
        try:
            seen.append(open(path, "rb").read().decode(errors="replace"))
        except OSError:
            pass
    if any("{SECRET_VALUE}" in s for s in seen):
        return {{"leaked": seen}}
    raise LookupError("{SECRET_NAME} is not visible")
"""

SOCKETS = """\
import socket

def main(port):
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.sendto(b"leak", ("127.0.0.1", port))
    tcp = socket.create_connection(("127.0.0.1", port), timeout=2)
    tcp.sendall(b"leak")
    return {"sent": True}
"""

INTERNET = """\
import socket

def main():
    socket.create_connection(("1.1.1.1", 53), timeout=2)
    return {"online": True}
"""

FORK_BOMB = """\
import os

def main():
    while True:
        os.fork()
"""

WRITE_OUTSIDE = """\
def main(project):
    errors = []
    for path in ("/usr/escape", "/escape", "/sandbox/lib/boot.py", project + "/escape"):
        try:
            open(path, "w").write("x")
        except OSError as exc:
            errors.append(f"{path}: {exc.strerror}")
    raise PermissionError("; ".join(errors))
"""

PTRACE_ENGINE = """\
import ctypes, os

def main(engine):
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.ptrace(16, engine, 0, 0) != 0:  # PTRACE_ATTACH
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return {"traced": True}
"""

# name: (code, what the node's error must say)
ESCAPES: dict[str, tuple[str, str]] = {
    "read /etc/shadow": ("def main():\n    return {'x': open('/etc/shadow').read()}\n",
                         "FileNotFoundError"),
    "read the home folder": (READ_HOME, "FileNotFoundError"),
    "read the project's store": ("def main(db):\n    return {'x': open(db, 'rb').read(9)}\n",
                                 "FileNotFoundError"),
    "read the environment": (READ_ENV, f"LookupError: {SECRET_NAME} is not visible"),
    "open sockets on loopback": (SOCKETS, "ConnectionRefusedError"),
    "reach the internet": (INTERNET, "Network is unreachable"),
    "fork-bomb": (FORK_BOMB, "BlockingIOError"),
    "allocate 10 GB": ("def main():\n    b = bytearray(10 * 1024**3)\n    return {}\n",
                       "MemoryError"),
    "loop forever": ("def main():\n    while True:\n        pass\n",
                     f"timed out after {MAX_TIME:g} s"),
    "write outside its folder": (WRITE_OUTSIDE, "Read-only file system"),
    "kill the engine": ("import os\ndef main(engine):\n    os.kill(engine, 9)\n    return {}\n",
                        "ProcessLookupError"),
    "trace the engine": (PTRACE_ENGINE, "No such process"),
    "kill its parent": ("import os\ndef main():\n    os.kill(os.getppid(), 9)\n    return {}\n",
                        "killed by SIGKILL"),
    "kill every process (kill -1)": (
        "import os\ndef main():\n    os.kill(-1, 9)\n    return {'alive': True}\n",
        "killed by SIGKILL"),
    "raise SystemExit": ("def main():\n    raise SystemExit(0)\n", "SystemExit: 0"),
    "call sys.exit(3)": ("import sys\ndef main():\n    sys.exit(3)\n", "SystemExit: 3"),
    "call os._exit": ("import os\ndef main():\n    os._exit(0)\n", "exit code 0"),
    "raise KeyboardInterrupt": ("def main():\n    raise KeyboardInterrupt\n",
                                "KeyboardInterrupt"),
}


def two_branches(bad_code: str, **inputs: Any) -> cellwire.Workflow:
    """start -> bad (the attempt, default-value on error) and good, both -> end."""
    wf = cellwire.Workflow("escape")
    wf.add_node("start", "start", variables=[
        {"variable": k, "type": "number" if isinstance(v, int) else "paragraph"}
        for k, v in inputs.items()])
    wf.add_node("bad", "code", after="start", code=bad_code, max_time=MAX_TIME,
                error_strategy="default-value", default_value={},
                variables=[{"variable": k, "value_selector": ["start", k]} for k in inputs])
    wf.add_node("good", "code", after="start", max_time=MAX_TIME,
                code="def main():\n    return {'double': 21 * 2}\n",
                outputs={"double": {"type": "number"}})
    wf.add_node("end", "end", after=["bad", "good"], outputs=[
        {"variable": "double", "value_selector": ["good", "double"]},
        {"variable": "error", "value_selector": ["bad", "error_message"]},
    ])
    return wf


@pytest.mark.parametrize("attempt", list(ESCAPES))
async def test_every_escape_fails_its_node_and_the_run_carries_on(
        attempt: str, sandbox: Sandbox, listener: Listener, tmp_path: Path):
    code, expected = ESCAPES[attempt]
    db = tmp_path / "runs.db"
    with sqlite3.connect(db) as connection:
        connection.execute("create table runs (id text)")
    assert _home_file().is_file()  # there is something to steal
    values = {"home": str(Path.home()), "db": str(db), "port": listener.port,
              "engine": os.getpid(), "project": str(tmp_path)}
    wanted = {k: v for k, v in values.items() if f"main({k})" in code}
    wf = two_branches(code, **wanted)

    result = await wf.arun(runtime=Runtime(code=sandbox), store=False, **wanted)

    assert result.status == RunStatus.PARTIAL_SUCCEEDED, result.error
    assert result.outputs["double"] == 42
    error = result.outputs["error"]
    assert expected in error, error
    assert SECRET_VALUE not in repr(result.outputs)
    bad = result.trace.set_index("node_id").loc["bad"]
    assert bad.status == "exception"
    assert bad.elapsed_ms < 2 * MAX_TIME * 1000  # ended by its own time limit at the latest
    assert (listener.counts["tcp"], listener.datagrams()) == (0, 0)


async def test_a_failing_node_with_the_fail_strategy_fails_the_run_with_its_error(
        sandbox: Sandbox):
    wf = cellwire.Workflow("escape")
    wf.add_node("start", "start")
    wf.add_node("bad", "code", after="start",
                code="def main():\n    return {'x': open('/etc/shadow').read()}\n")
    result = await wf.arun(runtime=Runtime(code=sandbox), store=False)
    assert result.status == RunStatus.FAILED
    assert result.error_node == "bad"
    assert "No such file or directory: '/etc/shadow' (line 2, in main" in result.error
    assert "field 'code'" in result.error
