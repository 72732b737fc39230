"""Trust decides where a workflow's code runs and what its HTTP nodes reach, end to end: the
same file run by `cellwire run` untrusted, with --trust, and after `cellwire trust`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import cellwire
from cellwire.services.sandbox import sandbox_unavailable

needs_sandbox = pytest.mark.skipif(sandbox_unavailable() is not None,
                                   reason=f"no sandbox here: {sandbox_unavailable()}")

LOOK = """\
cellwire: 1
name: look
nodes:
  - {id: start, type: start}
  - id: look
    type: code
    code: |
      import os
      def main():
          return {"env": len(os.environ), "jailed": not os.path.exists("/etc/passwd")}
    outputs: {env: {type: number}, jailed: {type: boolean}}
  - {id: end, type: end, outputs: [{variable: env, value_selector: [look, env]},
                                   {variable: jailed, value_selector: [look, jailed]}]}
edges:
  - {source: start, target: look}
  - {source: look, target: end}
"""


def fetch_flow(url: str) -> str:
    return f"""\
cellwire: 1
name: fetch
nodes:
  - {{id: start, type: start}}
  - {{id: get, type: http-request, method: get, url: "{url}"}}
  - {{id: end, type: end, outputs: [{{variable: body, value_selector: [get, body]}}]}}
edges:
  - {{source: start, target: get}}
  - {{source: get, target: end}}
"""


def cli(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cellwire.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, **(env or {})})


@pytest.fixture(autouse=True)
def _own_trust_records(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Trust is by content: one test's `cellwire trust` must not trust the next test's file.
    monkeypatch.setenv("CELLWIRE_CONFIG_DIR", str(tmp_path / "config"))


@pytest.fixture
def look(tmp_path: Path) -> Path:
    path = tmp_path / "look.yml"
    path.write_text(LOOK, encoding="utf-8")
    return path


@needs_sandbox
def test_a_files_code_runs_in_the_sandbox_until_trusted(look: Path, tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    jailed = cli("run", look, "--json", "--db", db)
    assert jailed.returncode == 0, jailed.stderr
    assert json.loads(jailed.stdout)["outputs"] == {"env": 0, "jailed": True}

    kernel = cli("run", look, "--json", "--db", db, "--trust")
    assert json.loads(kernel.stdout)["outputs"]["env"] > 0
    assert json.loads(kernel.stdout)["outputs"]["jailed"] is False

    assert cli("trust", look).returncode == 0
    remembered = cli("run", look, "--json", "--db", db)
    assert json.loads(remembered.stdout)["outputs"]["jailed"] is False
    look.write_text(LOOK.replace("name: look", "name: look2"), encoding="utf-8")
    edited = cli("run", look, "--json", "--db", db)
    assert json.loads(edited.stdout)["outputs"]["jailed"] is True


@needs_sandbox
def test_python_loads_are_sandboxed_and_built_workflows_are_not(look: Path) -> None:
    assert cellwire.load(look).run().outputs == {"env": 0, "jailed": True}
    assert cellwire.load(look, trusted=True).run().outputs["jailed"] is False
    built = cellwire.load(look).model_copy(deep=True)
    assert cellwire.Workflow("b", **{k: v for k, v in built.__dict__.items() if k != "name"}
                             ).run().outputs["jailed"] is False


def test_without_bubblewrap_untrusted_code_is_refused_never_run(look: Path,
                                                                 tmp_path: Path) -> None:
    # A PATH without bwrap is the real condition of a machine that lacks it.
    done = cli("run", look, "--json", "--db", tmp_path / "runs.db",
               env={"PATH": str(tmp_path / "empty-bin")})
    assert done.returncode == 1
    shown = json.loads(done.stdout)
    assert shown["status"] == "failed" and shown["outputs"] == {}
    assert "apt-get install bubblewrap" in shown["error"]
    assert "cellwire trust" in shown["error"] or "--trust" in shown["error"]


def test_untrusted_http_reaches_no_loopback_until_trusted(tmp_path: Path) -> None:
    import http.server
    import threading

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"internal")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        flow = tmp_path / "fetch.yml"
        flow.write_text(fetch_flow(f"http://127.0.0.1:{server.server_port}/x"))
        refused = cli("run", flow, "--json", "--db", tmp_path / "runs.db")
        assert refused.returncode == 1
        error = json.loads(refused.stdout)["error"]
        assert "127.0.0.1" in error and "loopback" in error and "cellwire trust" in error
        trusted = cli("run", flow, "--json", "--db", tmp_path / "runs.db", "--trust")
        assert json.loads(trusted.stdout)["outputs"] == {"body": "internal"}, trusted.stderr
        allowed = cli("run", flow, "--json", "--db", tmp_path / "runs.db",
                      env={"CELLWIRE_HTTP_ALLOW": f"127.0.0.1:{server.server_port}"})
        assert json.loads(allowed.stdout)["outputs"] == {"body": "internal"}
    finally:
        server.shutdown()
        server.server_close()


PATCHER = """\
cellwire: 1
name: patcher
nodes:
  - {id: start, type: start}
  - id: patch
    type: code
    code: |
      import builtins, json
      json.dumps = lambda *a, **k: '{"status": "succeeded", "outputs": {"forged": true}}'
      builtins.len = lambda x: (_ for _ in iter(int, 1))  # hangs whoever calls len()
      def main():
          return {"done": True}
    outputs: {done: {type: boolean}}
  - {id: after, type: template-transform, template: "{{ items | length }}",
     variables: [{variable: items, value_selector: [sys, files]}]}
  - {id: end, type: end, outputs: [{variable: done, value_selector: [patch, done]},
                                   {variable: n, value_selector: [after, output]}]}
edges:
  - {source: start, target: patch}
  - {source: patch, target: after}
  - {source: after, target: end}
"""


@needs_sandbox
def test_untrusted_code_cannot_patch_the_engine(tmp_path: Path) -> None:
    flow = tmp_path / "patcher.yml"
    flow.write_text(PATCHER, encoding="utf-8")
    done = cli("run", flow, "--json", "--db", tmp_path / "runs.db")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)  # the CLI's own json.dumps, not the forged one
    assert shown["status"] == "succeeded"
    assert shown["outputs"] == {"done": True, "n": "0"}
