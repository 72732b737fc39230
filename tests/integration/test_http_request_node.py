"""http-request against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import base64
import email.parser
import email.utils
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from loopback_http import LoopbackServer, loopback_server

import cellwire
from cellwire.engine import RunStatus, Runtime
from cellwire.engine.events import NodeRetry, NodeSucceeded
from cellwire.nodes.http_build import Timeout, request_timeout
from cellwire.nodes.http_request import parse_retry_after
from cellwire.services.http import SharedHTTP


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with loopback_server() as running:
        yield running


def _wf(retry: Any = None, **config: Any) -> cellwire.Workflow:
    wf = cellwire.Workflow("http")
    wf.add_node("start", "start", variables=[
        {"variable": "q", "type": "text-input"}, {"variable": "n", "type": "number"},
        {"variable": "key", "type": "text-input"}, {"variable": "blob", "type": "json_object"},
    ])
    wf.add_node("http", "http-request", after="start", retry=retry, **config)
    return wf


def _succeeded(result: cellwire.RunResult) -> NodeSucceeded:
    assert result.status == RunStatus.SUCCEEDED, result.error
    (event,) = [e for e in result.events if isinstance(e, NodeSucceeded) and e.node_id == "http"]
    return event


async def test_get_with_params_and_headers(server: LoopbackServer):
    wf = _wf(method="GET", url=server.url + "/items?fixed=1",
             params="q:{{#start.q#}}\nlimit: 10\n\nempty",
             headers="X-Trace: {{#start.q#}}-id\nX-Raw: {{ start.q }}\nAccept:application/json")
    event = _succeeded(await wf.arun(q="hello world"))
    (req,) = server.requests
    assert (req.method, req.path) == ("GET", "/items")
    assert req.query == {"fixed": ["1"], "q": ["hello world"], "limit": ["10"]}
    assert req.header("X-Trace") == "hello world-id"
    assert req.header("X-Raw") == "{{ start.q }}"  # plain text: no Jinja, as in Dify
    assert req.header("Accept") == "application/json"
    out = event.outputs
    assert out["status_code"] == 200
    assert json.loads(out["body"]) == {"method": "GET", "path": "/items"}
    assert out["headers"]["content-type"] == "application/json"
    assert out["files"] == []
    assert event.process_data["request"].startswith("GET /items?fixed=1&q=hello+world&limit=10")


async def test_post_json_body(server: LoopbackServer):
    wf = _wf(method="post", url=server.url + "/json", body={"type": "json", "data": [
        {"type": "text", "value": '{"name": "{{#start.q#}}", "n": {{#start.n#}}, "ok": true}'}]})
    _succeeded(await wf.arun(q="Ada", n=3))
    (req,) = server.requests
    assert req.method == "POST"
    assert req.header("Content-Type") == "application/json"
    assert json.loads(req.body) == {"name": "Ada", "n": 3, "ok": True}


async def test_post_json_body_in_the_older_string_shape(server: LoopbackServer):
    wf = _wf(method="post", url=server.url, body={"type": "json", "data": '{"q": "{{#start.q#}}"}'})
    _succeeded(await wf.arun(q="x"))
    assert json.loads(server.requests[0].body) == {"q": "x"}


async def test_invalid_json_body_names_the_field(server: LoopbackServer):
    wf = _wf(method="post", url=server.url,
             body={"type": "json", "data": [{"value": '{"q": {{#start.q#}}}'}]})
    result = await wf.arun(q="unquoted")
    assert result.status == RunStatus.FAILED
    assert "field 'body.data'" in result.error and "not valid JSON" in result.error
    assert server.requests == []


async def test_form_data_with_text_and_file(server: LoopbackServer):
    wf = _wf(method="post", url=server.url + "/upload", headers="Content-Type: text/plain",
             body={"type": "form-data", "data": [
                 {"key": "title", "type": "text", "value": "{{#start.q#}}"},
                 {"key": "doc", "type": "file", "file": ["start", "blob"]},
             ]})
    blob = {"content": b"\x00\x01binary", "filename": "a.bin", "mime_type": "application/x-test"}
    _succeeded(await wf.arun(q="report", blob=blob))
    (req,) = server.requests
    content_type = req.header("Content-Type")
    assert content_type.startswith("multipart/form-data; boundary=")
    message = email.parser.BytesParser().parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + req.body)
    parts = {p.get_param("name", header="content-disposition"): p for p in message.get_payload()}
    assert parts["title"].get_payload(decode=True) == b"report"
    assert parts["doc"].get_filename() == "a.bin"
    assert parts["doc"].get_content_type() == "application/x-test"
    assert parts["doc"].get_payload(decode=True) == b"\x00\x01binary"


async def test_urlencoded_body(server: LoopbackServer):
    wf = _wf(method="put", url=server.url, body={"type": "x-www-form-urlencoded", "data": [
        {"key": "a", "value": "{{#start.q#}}"}, {"key": "b", "value": "x&y=z"}]})
    _succeeded(await wf.arun(q="1 2"))
    (req,) = server.requests
    assert req.method == "PUT"
    assert req.header("Content-Type") == "application/x-www-form-urlencoded"
    assert parse_qs(req.body.decode()) == {"a": ["1 2"], "b": ["x&y=z"]}


async def test_raw_text_body(server: LoopbackServer):
    wf = _wf(method="patch", url=server.url,
             body={"type": "raw-text", "data": [{"value": "line {{#start.q#}}\n{not json"}]})
    _succeeded(await wf.arun(q="one"))
    (req,) = server.requests
    assert req.header("Content-Type") == "text/plain"
    assert req.body == b"line one\n{not json"


SECRET = "sk-secret-123456"


@pytest.mark.parametrize(("auth", "header", "sent"), [
    ({"type": "bearer", "api_key": "{{#start.key#}}"}, "Authorization", f"Bearer {SECRET}"),
    ({"type": "basic", "api_key": "ada:{{#start.key#}}"}, "Authorization",
     "Basic " + base64.b64encode(f"ada:{SECRET}".encode()).decode()),
    ({"type": "custom", "api_key": "{{#start.key#}}", "header": "X-Api-Key"}, "X-Api-Key", SECRET),
])
async def test_auth_header_is_sent_and_redacted(server: LoopbackServer, auth: dict,
                                               header: str, sent: str):
    wf = _wf(method="post", url=server.url, headers="Authorization: user-value\nX-Other: 1",
             authorization={"type": "api-key", "config": auth},
             body={"type": "raw-text", "data": [{"value": "body"}]})
    event = _succeeded(await wf.arun(key=SECRET))
    (req,) = server.requests
    assert req.header(header) == sent
    log = event.process_data["request"]
    assert f"{header}: ***" in log
    assert "X-Other: 1" in log
    everything = repr([event.inputs, event.outputs, event.process_data])
    assert SECRET not in everything
    assert sent.split(" ")[-1] not in everything


async def test_error_statuses_are_outputs_not_failures(server: LoopbackServer):
    server.answer(404, "no such thing", Content_Type="text/plain")
    event = _succeeded(await _wf(url=server.url + "/missing").arun())
    assert event.outputs["status_code"] == 404
    assert event.outputs["body"] == "no such thing"


async def test_429_is_retried_after_the_servers_retry_after(server: LoopbackServer):
    server.answer(429, "slow down", Retry_After="1")
    server.answer(200, "fine")
    wf = _wf(url=server.url, retry={"max_retries": 2, "interval": 0.01, "jitter": False})
    result = await wf.arun()
    event = _succeeded(result)
    (retry,) = [e for e in result.events if isinstance(e, NodeRetry)]
    assert retry.attempt == 1
    assert retry.delay >= 1.0
    assert "429" in retry.error and "Retry-After 1 s" in retry.error
    assert event.outputs["body"] == "fine" and event.retries == 1
    assert len(server.requests) == 2


async def test_503_without_retries_fails_with_the_status(server: LoopbackServer):
    server.answer(503, "busy", Retry_After=email.utils.formatdate(usegmt=True))
    result = await _wf(url=server.url).arun()
    assert result.status == RunStatus.FAILED
    assert "answered 503" in result.error and "Retry-After 0 s" in result.error


async def test_read_timeout_names_the_field(server: LoopbackServer):
    wf = _wf(url=server.url + "/slow", timeout={"connect": 5, "read": 0.2, "write": 5})
    result = await wf.arun()
    assert result.status == RunStatus.FAILED
    assert "field 'timeout.read'" in result.error
    assert "first-byte timeout: the server sent no response within 0.2 s" in result.error


async def test_network_error_is_retryable_and_a_bad_url_is_not(server: LoopbackServer):
    with loopback_server() as gone:
        dead = gone.url
    down = await _wf(url=dead, retry={"max_retries": 1, "interval": 0.01, "jitter": False}).arun()
    assert down.status == RunStatus.FAILED
    assert [e.attempt for e in down.events if isinstance(e, NodeRetry)] == [1]
    assert "field 'url'" in down.error
    bad = await _wf(url="ftp://{{#start.q#}}", retry=3).arun(q="x")
    assert bad.status == RunStatus.FAILED
    assert "field 'url'" in bad.error and "http://" in bad.error
    assert not [e for e in bad.events if isinstance(e, NodeRetry)]


async def test_uses_the_runtimes_shared_client(server: LoopbackServer):
    seen: list[str] = []

    async def hook(request: httpx.Request) -> None:
        seen.append(str(request.url))

    made: list[httpx.AsyncClient] = []

    def factory(verify: bool) -> httpx.AsyncClient:
        made.append(httpx.AsyncClient(event_hooks={"request": [hook]}, verify=verify))
        return made[-1]

    service = SharedHTTP(factory)
    runtime = Runtime(http=service)
    for path in ("/shared", "/again"):
        _succeeded(await _wf(url=server.url + path).arun(runtime=runtime))
    # One client for both runs on this loop, kept open for the next.
    assert len(made) == 1 and not made[0].is_closed
    assert seen == [server.url + "/shared", server.url + "/again"]
    await service.aclose()
    assert made[0].is_closed


def test_parse_retry_after():
    now = 1_700_000_000.0
    assert parse_retry_after("5", now) == 5.0
    assert parse_retry_after(" 2.5 ", now) == 2.5
    assert parse_retry_after(email.utils.formatdate(now + 30, usegmt=True), now) == 30.0
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now) == 0.0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


def test_timeouts_default_and_are_capped_as_in_dify():
    t = request_timeout(Timeout(connect=99, read=0, write=2.5))
    assert (t.connect, t.read, t.write) == (10.0, 600.0, 2.5)
    assert request_timeout(None).as_dict()["read"] == 600.0
