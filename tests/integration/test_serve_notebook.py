"""``%workflow serve NAME`` serves a notebook's workflow from a thread of the kernel (the
kernel stays free: the cell returns at once) until ``%workflow serve --stop``."""

from __future__ import annotations

import textwrap
from pathlib import Path

import httpx
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from serve_support import GREET
from traitlets.config import Config

from cellwire.formats import load
from cellwire.jupyter.magics import WorkflowMagics
from cellwire.jupyter.session import Session


@pytest.fixture
def shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CELLWIRE_HOME", str(tmp_path))
    ip = InteractiveShell(config=Config({"HistoryManager": {"enabled": False}}))
    magics = WorkflowMagics(ip, session=Session())
    ip.register_magics(magics)
    (tmp_path / "greet.yaml").write_text(textwrap.dedent(GREET))
    magics.session.workflows["greet"] = load(tmp_path / "greet.yaml", trusted=True)
    yield ip
    ip.run_line_magic("workflow", "serve --stop")


def test_serve_answers_while_the_kernel_is_free_then_stops(shell: InteractiveShell,
                                                           capsys: pytest.CaptureFixture[str]):
    server = shell.run_line_magic("workflow", "serve greet")
    assert f"serving greet at {server.url}" in capsys.readouterr().out
    assert server.key not in repr(server)
    headers = {"Authorization": f"Bearer {server.key}"}
    answer = httpx.post(f"{server.url}/workflows/run", headers=headers, timeout=30, json={
        "inputs": {"name": "Ada"}, "response_mode": "blocking", "user": "nb"})
    assert answer.json()["data"]["outputs"] == {"greeting": "Hello Ada"}
    assert httpx.get(f"{server.url}/info", timeout=10).status_code == 401
    shell.run_line_magic("workflow", "serve --stop")
    assert "stopped serving greet" in capsys.readouterr().out
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.url}/info", headers=headers, timeout=5)


def test_serve_needs_a_name(shell: InteractiveShell):
    with pytest.raises(UsageError, match="needs a workflow name"):
        shell.run_line_magic("workflow", "serve")
