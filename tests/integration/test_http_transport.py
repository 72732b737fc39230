"""HTTP through httpx everywhere: the providers over a client or transport of the caller's
choosing (a forward proxy and a CONNECT tunnel on loopback, TLS with a test CA), and the
fast transport's own guarantees (verify, header injection, body cap), against real servers
on 127.0.0.1."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator

import cloudpickle
import httpx
import pytest
import trustme
from llm_server import llm_server
from loopback_http import loopback_server
from loopback_proxy import loopback_proxy, tls_front

import cellwire
from cellwire.engine import Runtime
from cellwire.services.http import FastTransport, HeaderInjection, ResponseTooLarge, SharedHTTP
from cellwire.services.llm import ChatMessage, ChatRequest, ProviderError
from cellwire.services.llm.openai import OpenAIProvider
from cellwire.services.llm.ratelimit import RateLimits

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def https_llm(ca: trustme.CA) -> Iterator[str]:
    """The test LLM server behind TLS with a certificate of the test CA: its https base URL."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    with llm_server("openai") as server, tls_front(int(server.url.rsplit(":", 1)[1]),
                                                   context) as front:
        yield front.url + "/v1"


def ask(text: str = "hi") -> ChatRequest:
    return ChatRequest("m", [ChatMessage("user", text)])


def trusting(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


# -- a provider over the caller's httpx client ----------------------------------------------


async def test_a_provider_reaches_its_server_through_a_plain_forward_proxy():
    with llm_server("openai") as server, loopback_proxy() as proxy:
        async with httpx.AsyncClient(proxy=proxy.url, trust_env=False) as client:
            p = OpenAIProvider(base_url=server.base_url, client=client,
                               rate_limits=RateLimits())
            assert (await p.chat(ask("via proxy"))).text == "echo: via proxy"
            chunks = [c.text async for c in p.stream(ask("streamed"))]
            assert "".join(chunks) == "echo: streamed"
            await p.aclose()
            assert not client.is_closed  # the caller's client: closed by its owner
    assert proxy.seen == [f"POST {server.base_url}/chat/completions"] * 2


async def test_https_through_a_connect_tunnel_with_the_callers_ca(https_llm, ca):
    with loopback_proxy() as proxy:
        async with httpx.AsyncClient(proxy=proxy.url, verify=trusting(ca),
                                     trust_env=False) as client:
            p = OpenAIProvider(base_url=https_llm, client=client, rate_limits=RateLimits())
            assert (await p.chat(ask("tunnelled"))).text == "echo: tunnelled"
    authority = https_llm.removeprefix("https://").removesuffix("/v1")
    assert proxy.seen == [f"CONNECT {authority}"]


async def test_tls_with_a_private_ca_through_client_verify_and_refused_without_it(
        https_llm, ca):
    async with httpx.AsyncClient(verify=trusting(ca), trust_env=False) as client:
        p = OpenAIProvider(base_url=https_llm, client=client, rate_limits=RateLimits())
        assert (await p.chat(ask("trusted"))).text == "echo: trusted"
    async with httpx.AsyncClient(trust_env=False) as client:  # certifi's roots only
        p = OpenAIProvider(base_url=https_llm, client=client, rate_limits=RateLimits())
        with pytest.raises(ProviderError, match="CERTIFICATE_VERIFY_FAILED") as info:
            await p.chat(ask())
        assert not info.value.retryable and "verify=" in info.value.hint


async def test_the_fast_transport_verifies_with_a_ca_file_and_refuses_without(
        https_llm, ca, tmp_path):
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    p = OpenAIProvider(base_url=https_llm, verify=str(bundle), rate_limits=RateLimits())
    assert (await p.chat(ask("fast and verified"))).text == "echo: fast and verified"
    await p.aclose()
    p = OpenAIProvider(base_url=https_llm, rate_limits=RateLimits(),
                       retry={"retries": 3, "sleep": sleep})
    with pytest.raises(ProviderError, match="certificate verify failed|CERTIFICATE_VERIFY"):
        await p.chat(ask())
    assert sleeps == []  # a certificate that fails fails again: not resent
    await p.aclose()


async def test_a_provider_over_httpx_own_transport():
    with llm_server("openai") as server:
        transport = httpx.AsyncHTTPTransport(retries=0)
        p = OpenAIProvider(base_url=server.base_url, transport=transport,
                           rate_limits=RateLimits())
        assert (await p.chat(ask("httpcore"))).text == "echo: httpcore"
        assert "".join([c.text async for c in p.stream(ask("s"))]) == "echo: s"
        await p.aclose()
    with pytest.raises(ValueError, match="client= or transport="):
        OpenAIProvider(client=httpx.AsyncClient(), transport=transport)


# -- the fast transport's own guarantees -----------------------------------------------------


async def test_line_breaks_in_header_names_or_values_are_refused_before_sending():
    with loopback_server() as server:
        async with httpx.AsyncClient(transport=FastTransport()) as client:
            for headers in ({"X-Note": "a\r\nX-Injected: 1"}, {"X-Note": "a\nb"},
                            {"X-Note": "nul\0"}):
                with pytest.raises(HeaderInjection, match="X-Note"):
                    await client.get(server.url + "/h", headers=headers)
            assert (await client.get(server.url + "/ok")).status_code == 200
        assert [r.path for r in server.requests] == ["/ok"]  # nothing else left the client
        p = OpenAIProvider(base_url=server.url, headers={"X-Team": "a\r\nEvil: 1"},
                           rate_limits=RateLimits())
        with pytest.raises(ProviderError, match="refused before sending") as info:
            await p.chat(ask())
        assert not info.value.retryable
        await p.aclose()


async def test_a_body_over_the_cap_is_refused_and_its_connection_closed():
    with loopback_server() as server:
        server.answer(200, b"x" * 5000, Content_Type="text/plain")
        server.answer(200, b"small", Content_Type="text/plain")
        async with httpx.AsyncClient(transport=FastTransport(max_body=1000)) as client:
            with pytest.raises(ResponseTooLarge, match="larger than 1000 bytes"):
                await client.get(server.url + "/big")
            assert (await client.get(server.url + "/small")).text == "small"


def test_shared_clients_are_per_loop_and_close_with_their_loop():
    with loopback_server() as server:
        service = SharedHTTP()
        clients: list[httpx.AsyncClient] = []

        async def use() -> int:
            client = service.client()
            assert service.client() is client  # one per loop
            assert service.client(verify=False) is not client
            clients.append(client)
            return (await client.get(server.url + "/x")).status_code

        assert asyncio.run(use()) == 200
        assert asyncio.run(use()) == 200
        assert clients[0] is not clients[1] and all(c.is_closed for c in clients)
        assert len(service) == 0


async def test_http_request_nodes_share_the_runs_client_and_honour_ssl_verify(https_llm, ca):
    wf = cellwire.Workflow("tls")
    wf.add_node("start", "start")
    wf.add_node("insecure", "http-request", after="start", url=https_llm + "/models",
                ssl_verify=False)
    wf.add_node("strict", "http-request", after="insecure", url=https_llm + "/models",
                retry=0)
    service = SharedHTTP()
    result = await wf.arun(runtime=Runtime(http=service), store=False)
    # The self-signed server: reached without checks, refused with them.
    assert result.status == "failed" and "strict" in result.error
    assert "CERTIFICATE_VERIFY_FAILED" in result.error or "certificate" in result.error
    ok = [e for e in result.events if getattr(e, "node_id", None) == "insecure"
          and type(e).__name__ == "NodeSucceeded"]
    assert ok and ok[0].outputs["status_code"] == 200
    assert len(service) == 2  # the verifying and the non-verifying client of this loop
    await service.aclose()


def test_a_provider_travels_to_another_process_without_its_connections():
    with llm_server("openai") as server:
        p = OpenAIProvider(base_url=server.base_url, verify=False, rate_limits=RateLimits())
        copy = cloudpickle.loads(cloudpickle.dumps(p))  # as Dask sends it
        assert copy.transport is not p.transport and copy.client is not p.client
        assert asyncio.run(p.chat(ask("here"))).text == "echo: here"
        assert asyncio.run(copy.chat(ask("there"))).text == "echo: there"
        with pytest.raises(TypeError, match="client= of its own"):
            cloudpickle.dumps(OpenAIProvider(base_url=server.base_url,
                                             client=httpx.AsyncClient()))
