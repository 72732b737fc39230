"""http-request form-data and binary bodies send Dify file objects given by URL (issue 15):
the file is fetched from a real server on 127.0.0.1, then sent, as Dify's executor does."""

from __future__ import annotations

import email.parser
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from loopback_http import LoopbackServer, loopback_server

import cellwire
from cellwire.engine import RunStatus


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with loopback_server() as running:
        yield running


def _wf(body: dict) -> cellwire.Workflow:
    wf = cellwire.Workflow("upload")
    wf.add_node("start", "start", variables=[{"variable": "doc", "type": "file"}])
    wf.add_node("http", "http-request", after="start", method="post", url="", body=body)
    return wf


async def test_form_data_file_field_takes_a_file_object_by_url(server: LoopbackServer):
    server.answer(200, b"%PDF-1.4 tiny", Content_Type="application/pdf")
    wf = _wf({"type": "form-data", "data": [
        {"key": "title", "type": "text", "value": "q3"},
        {"key": "doc", "type": "file", "file": ["start", "doc"]}]})
    wf.update_node("http", url=server.url + "/upload")
    result = await wf.arun(doc=server.url + "/files/report.pdf")
    assert result.status is RunStatus.SUCCEEDED, result.error
    fetch, upload = server.requests
    assert (fetch.method, fetch.path) == ("GET", "/files/report.pdf")
    content_type = upload.header("Content-Type")
    message = email.parser.BytesParser().parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + upload.body)
    parts = {p.get_param("name", header="content-disposition"): p for p in message.get_payload()}
    assert parts["doc"].get_filename() == "report.pdf"
    assert parts["doc"].get_payload(decode=True) == b"%PDF-1.4 tiny"
    assert parts["title"].get_payload(decode=True) == b"q3"


async def test_binary_body_takes_a_file_object_by_url(server: LoopbackServer):
    server.answer(200, b"\x89PNG raw", Content_Type="image/png")
    wf = _wf({"type": "binary", "data": [{"type": "file", "file": ["start", "doc"]}]})
    wf.update_node("http", url=server.url + "/put")
    result = await wf.arun(doc=server.url + "/img/logo.png")
    assert result.status is RunStatus.SUCCEEDED, result.error
    upload = server.requests[1]
    assert upload.body == b"\x89PNG raw"
    assert upload.header("Content-Type") == "image/png"


async def test_a_file_url_that_cannot_be_fetched_fails_the_node_naming_the_field(
        server: LoopbackServer):
    server.answer(404, b"gone")
    wf = _wf({"type": "binary", "data": [{"type": "file", "file": ["start", "doc"]}]})
    wf.update_node("http", url=server.url + "/put")
    result = await wf.arun(doc=server.url + "/missing.bin")
    assert result.status is RunStatus.FAILED
    assert result.error_node == "http" and "body.data[0].file" in result.error
    assert "404" in result.error


def _cli(*args: str, cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CELLWIRE_HOME": str(home),
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    return subprocess.run([sys.executable, "-m", "cellwire.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def test_cli_passes_a_file_input_by_url_or_by_path(server: LoopbackServer, tmp_path: Path):
    from cellwire.formats.dify import dump_dify

    wf = _wf({"type": "binary", "data": [{"type": "file", "file": ["start", "doc"]}]})
    wf.update_node("http", url=server.url + "/put")
    app = tmp_path / "upload.yml"
    app.write_text(dump_dify(wf), encoding="utf-8")
    home = tmp_path / "home"
    server.answer(200, b"by url", Content_Type="text/plain")
    by_url = _cli("run", str(app), "--trust", "--json", "--input",
                  f"doc={server.url}/notes.txt", cwd=tmp_path, home=home)
    assert by_url.returncode == 0, by_url.stderr
    assert json.loads(by_url.stdout)["status"] == "succeeded"
    assert server.requests[-1].body == b"by url"
    # A run reads local files under its working folder: the file is in the one it runs in.
    (tmp_path / "local.txt").write_bytes(b"by path")
    by_path = _cli("run", str(app), "--trust", "--json", "--input", "doc=@local.txt",
                   cwd=tmp_path, home=home)
    assert by_path.returncode == 0, by_path.stderr
    assert server.requests[-1].body == b"by path"
