"""A real JupyterLab and Debian's Chromium, offline, for the widget's end-to-end tests and its
benchmark (tests/e2e/conftest.py loads this file by path: test code stays out of the package).

``LabServer`` starts ``jupyter lab`` on a free port of 127.0.0.1 with a token, a temporary
notebook folder, config, settings, workspaces and CELLWIRE_HOME, and everything that would
reach the network switched off. ``launch_chromium`` starts /usr/bin/chromium through
Playwright (never ``playwright install``). ``Notebook`` drives one notebook tab: add a cell,
type code into it, run it, read its output, count cells.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Self

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",  # the tests run as root
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
# The announcements toast ("would you like news?") can cover the notebook in headless runs.
SETTINGS_OVERRIDES = {
    "@jupyterlab/apputils-extension:notification": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is absent: install Debian's chromium (apt-get install chromium)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabServer:
    """``jupyter lab`` in a subprocess; use as a context manager."""

    def __init__(self, env: dict[str, str] | None = None, startup_timeout: float = 60.0):
        self.extra_env = env or {}
        self.startup_timeout = startup_timeout
        self.token = secrets.token_hex(16)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.root = Path()
        self.home = Path()

    def __enter__(self) -> Self:
        self._tmp = tempfile.TemporaryDirectory(prefix="cellwire-lab-")
        base = Path(self._tmp.name)
        self.root, self.home = base / "notebooks", base / "cellwire-home"
        settings = base / "app-settings"
        for d in (self.root, self.home, settings, base / "config", base / "user-settings"):
            d.mkdir()
        (settings / "overrides.json").write_text(json.dumps(SETTINGS_OVERRIDES))
        env = {
            **os.environ,
            "JUPYTER_CONFIG_DIR": str(base / "config"),
            "JUPYTER_DATA_DIR": str(base / "data"),
            "JUPYTER_RUNTIME_DIR": str(base / "runtime"),
            "JUPYTERLAB_SETTINGS_DIR": str(base / "user-settings"),
            "JUPYTERLAB_WORKSPACES_DIR": str(base / "workspaces"),
            "IPYTHONDIR": str(base / "ipython"),
            "CELLWIRE_HOME": str(self.home),
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        args = [
            sys.executable, "-m", "jupyter", "lab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={self.root}",
            f"--IdentityProvider.token={self.token}",
            "--ServerApp.allow_root=True",
            "--ServerApp.terminals_enabled=False",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",  # the default one queries PyPI
            f"--LabApp.app_settings_dir={settings}",
            "--LabApp.expose_app_in_browser=True",  # window.jupyterapp, to count cells
            "--LanguageServerManager.autodetect=False",
        ]
        self.log_path = base / "lab.log"
        self._log = open(self.log_path, "wb")  # closed in __exit__
        self._proc = subprocess.Popen(
            args, env=env, cwd=base, stdout=self._log, stderr=subprocess.STDOUT
        )
        try:
            self._wait_ready()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited:\n{self.log()}")
            try:
                self.api("GET", "/api/status")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        raise TimeoutError(f"jupyter lab did not answer within {self.startup_timeout}s:\n"
                           f"{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        self._log.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """Call the server's REST API; return the decoded JSON (None for an empty reply)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path, data=data, method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def new_notebook(self, name: str | None = None) -> str:
        """Create an empty Python 3 notebook (one empty code cell); return its path."""
        path = name or f"nb-{uuid.uuid4().hex[:8]}.ipynb"
        content = {
            "cells": [{"cell_type": "code", "source": "", "metadata": {}, "outputs": [],
                       "execution_count": None}],
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)",
                                        "language": "python"}},
            "nbformat": 4, "nbformat_minor": 5,
        }
        self.api("PUT", f"/api/contents/{path}",
                 {"type": "notebook", "format": "json", "content": content})
        return path

    def shutdown_kernels(self, notebook: str) -> None:
        """Stop the kernels of ``notebook``'s sessions (tests must not pile up kernels)."""
        for s in self.api("GET", "/api/sessions") or []:
            if s.get("path") == notebook:
                self.api("DELETE", f"/api/sessions/{s['id']}")

    def lab_url(self, notebook: str) -> str:
        return f"{self.url}/lab/tree/{notebook}?reset&token={self.token}"


def launch_chromium(playwright: Any, headless: bool = True) -> Any:
    """Debian's Chromium through Playwright's ``chromium`` driver."""
    exe = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    return playwright.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, headless=headless)


def open_lab(page: Any, server: LabServer, timeout: float = 60_000) -> None:
    """Load JupyterLab in ``page`` (once per page: notebooks then open as tabs)."""
    page.goto(f"{server.url}/lab?reset&token={server.token}")
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.started !== undefined",
                           timeout=timeout)
    page.evaluate("async () => { await window.jupyterapp.started; await window.jupyterapp.restored;"
                  " window.jupyterapp.shell.collapseLeft(); }")


_OPEN_JS = """async (path) => {
  const app = window.jupyterapp;
  const panel = await app.commands.execute('docmanager:open', {path, factory: 'Notebook'});
  await panel.context.ready;
  await panel.sessionContext.ready;
  window.__cwPanels = window.__cwPanels || {};
  window.__cwPanels[panel.id] = panel;
  return panel.id;
}"""
_IDLE_JS = """(id) => {
  const kernel = window.__cwPanels[id].sessionContext.session?.kernel;
  return kernel && kernel.status === 'idle';
}"""
_MODEL_JS = "(id) => window.__cwPanels[id].content.model.cells"


class Notebook:
    """One notebook, open as a tab of a JupyterLab page; its locators stay inside that tab."""

    def __init__(self, page: Any, server: LabServer, path: str, panel_id: str):
        self.page, self.server, self.path, self.panel_id = page, server, path, panel_id
        self.root = page.locator(f"#{panel_id}")
        self._fresh = True  # the new notebook's empty first cell is not used yet

    @classmethod
    def open(cls, page: Any, server: LabServer, path: str | None = None,
             timeout: float = 60_000) -> Notebook:
        """Create (unless given) and open a notebook in a loaded JupyterLab page; return when
        its kernel is idle."""
        path = path or server.new_notebook()
        panel_id = page.evaluate(_OPEN_JS, path)
        page.wait_for_function(_IDLE_JS, arg=panel_id, timeout=timeout)
        nb = cls(page, server, path, panel_id)
        nb.cells.first.wait_for(timeout=timeout)
        return nb

    def close(self) -> None:
        """Close the tab without the "save changes?" dialog."""
        self.page.evaluate("(id) => { window.__cwPanels[id].dispose();"
                           " delete window.__cwPanels[id]; }", self.panel_id)

    def js(self, body: str, arg: Any = None) -> Any:
        """Evaluate ``body`` (a JS expression over ``panel`` and ``arg``) in the page."""
        return self.page.evaluate(
            f"([id, arg]) => {{ const panel = window.__cwPanels[id]; return ({body}); }}",
            [self.panel_id, arg])

    @property
    def cells(self) -> Any:
        return self.root.locator(".jp-Notebook .jp-Cell")

    def cell(self, index: int) -> Any:
        return self.cells.nth(index)

    def cell_count(self) -> int:
        """Cells in the notebook's model; the page must show as many."""
        n = self.js("panel.content.model.cells.length")
        dom = self.cells.count()
        if n != dom:
            raise AssertionError(f"notebook model has {n} cells but the page shows {dom}")
        return n

    def wait_cell_count(self, n: int, timeout: float = 10_000) -> None:
        self.page.wait_for_function(
            "([id, n]) => window.__cwPanels[id].content.model.cells.length === n",
            arg=[self.panel_id, n], timeout=timeout)

    def add_cell(self) -> int:
        """Append a code cell below the last one; return its index.

        The empty first cell of a new notebook is used first. (JupyterLab's own command, not
        the key ``b``: the focus may be inside a widget that rightly swallows keys.)
        """
        if self._fresh:
            self._fresh = False
            return 0
        count = self.cell_count()
        self.page.evaluate("""async ([id, last]) => {
          const panel = window.__cwPanels[id];
          panel.content.activeCellIndex = last;
          panel.content.mode = 'command';
          await window.jupyterapp.commands.execute('notebook:insert-cell-below');
        }""", [self.panel_id, count - 1])
        self.wait_cell_count(count + 1)
        return count

    def type_code(self, index: int, code: str) -> None:
        """Type ``code`` into cell ``index`` (inserted as text: no auto-indent or brackets)."""
        self.cell(index).locator(".jp-InputArea-editor .cm-content").click()
        self.page.keyboard.insert_text(code)

    def execute(self, index: int, timeout: float = 60_000) -> str:
        """Run cell ``index`` in place (Ctrl+Enter); wait for it; return its output text."""
        cell = self.cell(index)
        cell.locator(".jp-InputArea-editor .cm-content").click()
        self.page.keyboard.press("Control+Enter")
        self.page.wait_for_function(
            "(el) => /\\[\\d+\\]/.test(el.textContent)",
            arg=cell.locator(".jp-InputArea-prompt").element_handle(), timeout=timeout)
        return self.output(index)

    def run(self, code: str, timeout: float = 60_000) -> str:
        """Add a cell with ``code``, run it, return its output text (errors included)."""
        index = self.add_cell()
        self.type_code(index, code)
        return self.execute(index, timeout=timeout)

    def output(self, index: int) -> str:
        return "\n".join(self.output_area(index).locator(".jp-OutputArea-output")
                         .all_inner_texts()).strip()

    def output_area(self, index: int) -> Any:
        return self.cell(index).locator(".jp-OutputArea")
