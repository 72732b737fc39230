"""Safe HTTP: the http-request node under a network policy, against real servers on
127.0.0.1. Addresses are checked after resolution and on every redirect hop, connections go
to the checked address only, bodies are capped while they stream, and a server that never
answers fails at the node's timeout and is reported while the wait lasts."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from loopback_http import LoopbackServer, loopback_server
from raw_http import endless, half_body, headers_only, raw_server, silent

import cellwire
from cellwire.engine import RunStatus, Runtime
from cellwire.engine.events import NodeFailed, NodeRetry, NodeSucceeded
from cellwire.services.http import NetworkPolicy, SharedHTTP
from cellwire.services.http.guard import ALLOW_ENV, BINARY_SIZE_ENV, TEXT_SIZE_ENV

UNTRUSTED = NetworkPolicy.untrusted([], environ={})
TRUSTED = NetworkPolicy.trusted(environ={})


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with loopback_server() as running:
        yield running


@pytest.fixture
def other() -> Iterator[LoopbackServer]:
    with loopback_server() as running:
        yield running


def _wf(url: str, retry: Any = None, **config: Any) -> cellwire.Workflow:
    wf = cellwire.Workflow("http")
    wf.add_node("start", "start")
    wf.add_node("http", "http-request", after="start", url=url,
                retry={"max_retries": 2, "interval": 0.0} if retry is None else retry, **config)
    return wf


async def _run(url: str, network: Any = None, **config: Any) -> cellwire.RunResult:
    return await _wf(url, **config).arun(runtime=Runtime(network=network), store=False)


def _failed(result: cellwire.RunResult) -> NodeFailed:
    assert result.status == RunStatus.FAILED
    (event,) = [e for e in result.events if isinstance(e, NodeFailed)]
    return event


def _refused(result: cellwire.RunResult) -> str:
    """The error of a run whose request the policy refused: fatal, so never retried."""
    event = _failed(result)
    assert event.error_type == "AddressRefused"
    assert not [e for e in result.events if isinstance(e, NodeRetry)]
    assert result.error is not None and "node 'http'" in result.error
    assert "field 'url'" in result.error
    return result.error


def _ok(result: cellwire.RunResult) -> dict[str, Any]:
    assert result.status == RunStatus.SUCCEEDED, result.error
    (event,) = [e for e in result.events if isinstance(e, NodeSucceeded) and e.node_id == "http"]
    return event.outputs


def _port(url: str) -> int:
    port = httpx.URL(url).port
    assert port is not None
    return port


async def test_loopback_is_refused_for_untrusted_runs_and_reached_by_trusted_ones(server):
    error = _refused(await _run(server.url + "/data", UNTRUSTED))
    assert server.requests == []  # nothing was sent
    assert "127.0.0.1, a loopback address" in error and "untrusted workflow" in error
    # The fix names both ways out, exactly.
    assert "cellwire trust FILE" in error
    assert f"{ALLOW_ENV}=127.0.0.1:{_port(server.url)}" in error

    assert _ok(await _run(server.url + "/data", TRUSTED))["status_code"] == 200
    # No policy on the runtime is the trusted default, not "anything goes" (see metadata).
    assert _ok(await _run(server.url + "/data"))["status_code"] == 200
    assert len(server.requests) == 2


async def test_a_name_that_resolves_to_loopback_is_refused(server):
    port = _port(server.url)
    error = _refused(await _run(f"http://localhost:{port}/", UNTRUSTED))
    assert "localhost resolves to" in error and "loopback" in error

    async def resolver(host: str, port: int) -> list[str]:
        return {"api.example.com": ["127.0.0.1"]}[host]

    url = f"http://api.example.com:{port}/v1"
    untrusted = NetworkPolicy.untrusted([], environ={}, resolver=resolver)
    error = _refused(await _run(url, untrusted))
    assert "api.example.com resolves to 127.0.0.1" in error
    assert server.requests == []
    # Trusted, the same name reaches the server: the connection went to the address the
    # policy resolved and checked (no resolver on this machine knows api.example.com).
    trusted = NetworkPolicy.trusted(environ={}, resolver=resolver)
    assert _ok(await _run(url, trusted))["status_code"] == 200
    (request,) = server.requests
    assert request.header("Host") == f"api.example.com:{port}"


async def test_a_name_rebound_to_loopback_between_check_and_connect_is_caught(server):
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])

    async def rebinding(host: str, port: int) -> list[str]:
        return next(answers)  # public when checked, loopback when connecting

    policy = NetworkPolicy.untrusted([], environ={}, resolver=rebinding)
    error = _refused(await _run(f"http://rebind.example:{_port(server.url)}/", policy))
    assert "rebind.example resolves to 127.0.0.1" in error
    assert server.requests == []


async def test_every_redirect_hop_is_checked(server, other):
    allowed = NetworkPolicy.untrusted([f"127.0.0.1:{_port(server.url)}"], environ={})
    server.answer(302, Location=other.url + "/inner")
    error = _refused(await _run(server.url + "/outer", allowed))
    assert f"{server.url}/outer redirected to {other.url}/inner" in error
    assert len(server.requests) == 1 and other.requests == []

    both = NetworkPolicy.untrusted([f"127.0.0.1:{_port(server.url)}",
                                    f"127.0.0.1:{_port(other.url)}"], environ={})
    server.answer(307, Location=other.url + "/inner")
    assert _ok(await _run(server.url + "/outer", both))["status_code"] == 200
    assert [r.path for r in other.requests] == ["/inner"]

    for target in ("http://169.254.169.254/latest/meta-data/iam/",
                   "http://[::ffff:169.254.169.254]/latest/", "http://127.0.0.1:9/"):
        server.answer(302, Location=target)
        error = _refused(await _run(server.url + "/outer", allowed))
        assert "redirected to http://" in error and "refused" in error
    # Metadata stays out of reach after a redirect in a trusted run too.
    server.answer(301, Location="http://169.254.169.254/latest/meta-data/")
    error = _refused(await _run(server.url + "/outer", TRUSTED))
    assert "link-local" in error and "never reachable" in error


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/", "http://metadata.google.internal/v1/",
    "http://[fd00:ec2::254]/latest/", "http://100.100.100.200/latest/meta-data/",
    "http://[::ffff:a9fe:a9fe]/", "http://[fe80::1]/",
])
async def test_metadata_is_refused_even_when_trusted(url):
    for network in (None, TRUSTED,
                    NetworkPolicy.untrusted(["169.254.0.0/16", "100.100.100.200",
                                             "metadata.google.internal", "fd00::/8"],
                                            environ={})):
        error = _refused(await _run(url, network))
        assert "no workflow may reach" in error and "never reachable" in error


async def test_the_allow_list_lets_named_servers_through(server):
    port = _port(server.url)
    for entries in ([f"127.0.0.1:{port}"], ["127.0.0.0/8"], ["127.0.0.1"]):
        policy = NetworkPolicy.untrusted(entries, environ={})
        assert _ok(await _run(server.url + "/", policy))["status_code"] == 200
    by_name = NetworkPolicy.untrusted(environ={ALLOW_ENV: f"localhost:{port}"})
    assert _ok(await _run(f"http://localhost:{port}/", by_name))["status_code"] == 200
    assert len(server.requests) == 4
    elsewhere = NetworkPolicy.untrusted([f"127.0.0.1:{port + 1}"], environ={})
    _refused(await _run(server.url + "/", elsewhere))


async def test_the_policy_holds_over_a_transport_of_your_own(server):
    # httpx's own transport (HTTP/2, SOCKS ...) cannot be pinned, but each hop is checked.
    service = SharedHTTP(lambda verify: httpx.AsyncClient(verify=verify))
    wf = _wf(server.url + "/")
    error = _refused(await wf.arun(runtime=Runtime(http=service, network=UNTRUSTED),
                                   store=False))
    assert "loopback" in error and server.requests == []
    server.answer(302, Location="http://169.254.169.254/")
    error = _refused(await wf.arun(runtime=Runtime(http=service), store=False))
    assert "redirected to http://169.254.169.254/" in error
    await service.aclose()


async def test_text_and_binary_bodies_are_capped(server):
    server.answer(200, "x" * (1024 * 1024 + 1), Content_Type="text/plain")
    event = _failed(await _run(server.url + "/"))
    assert event.error_type == "ResponseSizeError"
    assert "larger than the 1048576-byte cap on text responses" in event.error
    assert "declares 1048577 bytes" in event.error and TEXT_SIZE_ENV in event.error
    # Binary answers get Dify's 10 MiB.
    server.answer(200, b"\0" * (2 * 1024 * 1024), Content_Type="application/octet-stream")
    _ok(await _run(server.url + "/"))
    small = NetworkPolicy.trusted(environ={TEXT_SIZE_ENV: "1000"})
    server.answer(200, "y" * 1001, Content_Type="application/json")
    assert "1000-byte cap on text" in _failed(await _run(server.url + "/", small)).error


async def test_a_body_without_end_is_given_up_while_it_streams():
    policy = NetworkPolicy.trusted(environ={BINARY_SIZE_ENV: str(1024 * 1024)})
    with raw_server(endless("application/octet-stream")) as endless_server:
        event = _failed(await _run(endless_server.url + "/", policy))
        assert event.error_type == "ResponseSizeError"
        assert "1048576-byte cap on binary responses" in event.error
        assert BINARY_SIZE_ENV in event.error
    # Given up at the cap, not after reading everything (the socket buffers hold a little).
    assert endless_server.sent < 16 * 1024 * 1024


@pytest.mark.parametrize(("behaviour", "said"), [
    (silent, "first-byte timeout: the server sent no response within 0.6 s"),
    (headers_only, "first-byte timeout: the server sent its headers but no body within 0.6 s"),
    (half_body, "read timeout: the server stopped sending for 0.6 s"),
])
async def test_a_server_that_does_not_answer_fails_at_the_timeout(behaviour, said, caplog):
    caplog.set_level(logging.WARNING, logger="cellwire.http")
    with raw_server(behaviour) as quiet:
        result = await _run(quiet.url + "/", retry=0,
                            timeout={"connect": 5, "read": 0.6, "write": 5})
    event = _failed(result)
    assert said in event.error and "field 'timeout.read'" in str(result.error)
    assert event.error_type == "HTTPTimeout" and event.elapsed >= 0.6
    notices = [r.getMessage() for r in caplog.records if r.name == "cellwire.http"]
    if behaviour is half_body:
        assert notices == []  # bytes came: the wait for the first one was not late
    else:
        # Said while it lasted: the wait, its limit and the setting that bounds it.
        assert notices == [(f"http-request node 'http': GET {quiet.url}/: nothing received "
                            "for 0.3 s; still waiting, up to 0.6 s (timeout.read)")]
