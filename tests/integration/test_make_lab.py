"""``make lab``'s launcher (scripts/lab.sh): JupyterLab starts on the tutorials and the last
line printed is a URL that opens them, token included; Ctrl-C stops the server."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).parents[2]
pytestmark = pytest.mark.skipif(shutil.which("jupyter-lab", path=str(Path(sys.executable).parent))
                                is None, reason="JupyterLab is not installed in this venv")


def test_make_lab_prints_the_url_to_open_last_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "notebooks", tmp_path / "tutorials")
    env = {**os.environ, "CELLWIRE_HOME": str(tmp_path / "home"), "JUPYTER_CONFIG_DIR":
           str(tmp_path / "jupyter"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    env.pop("CELLWIRE_DEFAULT_MODEL", None)
    proc = subprocess.Popen(
        ["bash", str(ROOT / "scripts/lab.sh"), sys.executable, str(tmp_path / "tutorials"),
         str(tmp_path / "lab.log")], stdout=subprocess.PIPE, text=True, env=env,
        start_new_session=True)
    try:
        assert proc.stdout is not None
        lines = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if line.startswith("open "):
                break
        assert lines and lines[-1].startswith("open http://127.0.0.1:"), lines
        assert lines[0].startswith("cellwire: llm nodes without a provider of their own run on")
        url = lines[-1].removeprefix("open ")
        assert "/lab/tree/00-index.ipynb?token=" in url
        page = httpx.get(url, timeout=30)
        assert page.status_code == 200 and "JupyterLab" in page.text
        base, token = url.split("/lab/")[0], url.split("token=")[1]
        listing = httpx.get(f"{base}/api/contents", params={"token": token}, timeout=30).json()
        assert "00-index.ipynb" in {item["name"] for item in listing["content"]}
        assert httpx.get(f"{base}/api/contents", timeout=30).status_code == 403  # no token
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) is not None
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{base}/api/status", timeout=5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
