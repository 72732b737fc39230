"""What the HTTP providers share: an httpx client, its timeouts, the one retry they make
themselves, and what a failed request means to a provider.

Every request goes through httpx's API. The default client sends through the fast HTTP/1.1
transport (:class:`cellwire.services.http.FastTransport`: one pool of connections per origin
and event loop, closed with the loop); ``client=`` or ``transport=`` brings httpx's own
(proxies of every kind, mTLS, HTTP/2, truststore).

Retries: the provider resends a request only when no connection could be opened (nothing
reached the server, so sending again is safe), as :class:`RetryPolicy` allows. Everything
later (429, 5xx, timeouts, a dropped connection) raises a :class:`RetryableProviderError`
carrying the server's ``Retry-After``, and the node's retry policy decides, so each retry
shows as a ``NodeRetry`` event and retries are never multiplied.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

import cellwire
from cellwire.services.http import FIRST_BYTE, FastTransport, ReadTimeout, ResponseTooLarge
from cellwire.services.http.progress import LateNotice

from .base import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    ProviderError,
    ProviderTimeout,
    RetryableProviderError,
)
from .ratelimit import RATE_LIMITS, RateLimits
from .resilience import RetryPolicy

#: How much of a server's text an error message quotes.
SNIPPET = 200
#: The most a reply's body may hold, streamed or not (bytes): far above any model's reply,
#: low enough that a runaway body cannot exhaust memory or CPU.
MAX_REPLY = 64 * 1024 * 1024
#: How much of an error answer's body is read for its message (bytes).
MAX_ERROR_BODY = 64 * 1024
#: Where a late first byte is said while the wait lasts.
LOG = logging.getLogger("cellwire.llm")
#: The first bytes of a body that speaks Server-Sent Events (a field, or a comment).
_SSE_STARTS = (b"data:", b"event:", b"id:", b"retry:", b":")
#: How long to read on after a stream's last event for the end of the body (keeps the
#: connection for the next request).
DRAIN_SECONDS = 1.0


@dataclass(slots=True)
class Timeouts:
    """Seconds: ``first_byte`` bounds the wait for the response headers and for the first
    bytes of a stream (a model's time to first token; on the fast transport only, httpx's
    own bounds that wait by ``read``); ``read`` each later read; ``write`` sending the
    request; ``pool`` the wait for a free connection."""

    connect: float = 10.0
    read: float = 300.0
    write: float = 30.0
    pool: float = 30.0
    first_byte: float = 60.0

def provider_error(exc: BaseException, *, server: str, timeouts: Timeouts, provider: str,
                   model: str | None, waiting_for: str = "headers",
                   scrub: Callable[[str], str] = lambda text: text) -> ProviderError:
    """The provider error for a failed request (retryable where another attempt may
    succeed); ``server`` names the server in the message, ``waiting_for`` what was due when
    a read timed out (``headers``, ``body`` or ``more``), ``scrub`` cleans what the exception
    says (of an API key)."""
    if isinstance(exc, ProviderError):
        return exc
    where: dict[str, Any] = {"provider": provider, "model": model}
    detail = scrub(str(exc)) or type(exc).__name__
    if isinstance(exc, httpx.ConnectTimeout):
        return ProviderTimeout(f"could not connect to {server} within {timeouts.connect:g} s",
                               **where)
    if isinstance(exc, httpx.PoolTimeout):
        return ProviderTimeout(f"no free connection to {server}: {detail}", **where,
                               hint="raise max_connections or timeouts.pool")
    if isinstance(exc, httpx.ReadTimeout):
        waiting_for = exc.waiting_for if isinstance(exc, ReadTimeout) else waiting_for
        if waiting_for == "headers":
            return ProviderTimeout(f"{server} sent no response within "
                                   f"{timeouts.first_byte:g} s", **where,
                                   hint="raise timeouts.first_byte, or retry")
        if waiting_for == "body":
            return ProviderTimeout(f"{server} started a stream but sent nothing within "
                                   f"{timeouts.first_byte:g} s", **where,
                                   hint="raise timeouts.first_byte, or retry")
        return ProviderTimeout(f"{server} stopped sending for {timeouts.read:g} s", **where,
                               hint="raise timeouts.read, or retry")
    if isinstance(exc, httpx.TimeoutException):
        return ProviderTimeout(f"request to {server} timed out: {detail}", **where,
                               hint="raise timeouts.write, or retry")
    if isinstance(exc, httpx.ConnectError):
        reason = scrub(getattr(exc, "reason", "") or str(exc))
        if _certificate_failure(exc):
            return ProviderError(f"could not connect to {server}: {reason}", **where,
                                 hint="give the provider verify= the server's CA bundle")
        return RetryableProviderError(f"could not connect to {server}: {reason}", **where,
                                      hint="is the server running?")
    if isinstance(exc, ResponseTooLarge):
        return ProviderError(f"{server} sent too much: {detail}", **where,
                             hint="raise the transport's max_body, or ask for less")
    if isinstance(exc, httpx.LocalProtocolError):
        return ProviderError(f"request to {server} refused before sending: {detail}", **where,
                             hint="check the provider's headers")
    if isinstance(exc, httpx.TransportError):
        return RetryableProviderError(f"the connection to {server} dropped: {detail}",
                                      **where)
    return ProviderError(f"request to {server} failed: {detail}", **where)


def _certificate_failure(exc: BaseException) -> bool:
    """A TLS certificate that did not verify: sending again cannot help."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError) \
                or "CERTIFICATE_VERIFY_FAILED" in str(cause):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def resendable(exc: BaseException) -> bool:
    """No connection was made, so nothing reached the server: safe to send again."""
    return isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)) \
        and not _certificate_failure(exc)


def body_pieces(response: httpx.Response) -> AsyncIterator[bytes]:
    """One iterator over a response's body as it arrives: the transport's own stream when the
    server honoured ``Accept-Encoding: identity`` (no decoder or generator to pass through),
    else httpx's decoding. The caller closes the response."""
    # The raw header list: httpx's case-insensitive lookup costs more than the rest here.
    if any(name.lower() == b"content-encoding" for name, _ in response.headers.raw):
        return aiter(response.aiter_bytes())
    return aiter(response.stream)  # type: ignore[arg-type]


async def drain(pieces: AsyncIterator[bytes]) -> None:
    """Read a response's body to its end, briefly, so its connection goes back to the pool;
    closing it unread would cost a new connection for the next request."""
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            async for _ in pieces:
                pass
    except (TimeoutError, httpx.HTTPError):
        pass


def snippet(text: str) -> str:
    """The start of what a server sent, quoted, for an error message (scrub secrets out of
    ``text`` first: a secret cut in two would not be found in the quote)."""
    text = text.strip()
    return repr(text[:SNIPPET] + ("..." if len(text) > SNIPPET else ""))


def media_type(response: httpx.Response) -> str:
    """The response's content type without parameters, in lower case ('' if none)."""
    return response.headers.get("content-type", "").split(";")[0].strip().lower()


def is_json_type(kind: str) -> bool:
    return kind == "application/json" or kind.endswith("+json")


def broken_off(error: ProviderError, delivered: int) -> ProviderError:
    """``error`` of a stream, as no retry's business once ``delivered`` characters of the
    reply went out: a retry would stream them a second time."""
    if not delivered or not error.retryable:
        return error
    return ProviderError(
        f"{error}, after {delivered} characters of the reply had been streamed (not retried: "
        "a retry would stream them again)", provider=error.provider, model=error.model,
        status=error.status, hint=error.hint or "run it again, or check the server and any "
                                               "proxy in between for a limit on replies")


def stream_event(payload: str, *, server: str, provider: str, model: str,
                 scrub: Callable[[str], str], wire: str) -> dict[str, Any]:
    """One stream event's JSON object; a clear, non-retried error when it is not one
    (``wire`` names the format the server should speak)."""
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise ProviderError(f"{server} sent malformed JSON in its stream: {exc}: "
                            f"{scrub(snippet(payload))}", provider=provider, model=model,
                            hint=f"the server's stream is not {wire}") from None
    if not isinstance(event, dict):
        raise ProviderError(f"{server} sent a stream event that is not an object: "
                            f"{scrub(snippet(payload))}", provider=provider, model=model)
    return event


class HTTPProvider(abc.ABC):
    """What the HTTP providers share: a name and server, an API key kept out of every message,
    timeouts, a retry policy, the process-wide rate limits, and an httpx client.

    ``rpm`` / ``tpm`` limit every model of the provider; ``model_limits`` maps a model to
    ``(rpm, tpm)``. Mappings for ``timeouts`` and ``retry`` come from config files
    (providers.yaml: ``timeouts: {first_byte: 30}``). ``retry`` resends a request only when
    no connection could be opened; the node's retry policy owns every later failure.

    The requests go through ``client`` (an ``httpx.AsyncClient`` you own and close) or, by
    default, a client of the provider's own over ``transport`` (an
    ``httpx.AsyncBaseTransport``; by default the fast HTTP/1.1 one with ``verify``, ``cert``,
    ``proxy`` and ``max_connections`` per origin). Subclasses give the headers their server
    wants on every request (:meth:`_pool_headers`).

    Replies are checked before they are believed: a body larger than ``max_body`` bytes is
    given up while it is read, a 200 that is not the JSON or event stream asked for fails
    quoting its start (scrubbed of the API key), and a wait for the first byte is logged on
    ``cellwire.llm`` while it lasts.
    """

    def __init__(self, name: str, *, base_url: str, api_key: str | None,
                 timeouts: Timeouts | Mapping[str, float] | None,
                 retry: RetryPolicy | Mapping[str, Any] | None, rpm: float | None,
                 tpm: float | None,
                 model_limits: Mapping[str, tuple[float | None, float | None]] | None,
                 rate_limits: RateLimits | None, max_connections: int,
                 client: httpx.AsyncClient | None = None,
                 transport: httpx.AsyncBaseTransport | None = None,
                 verify: bool | str | ssl.SSLContext = True,
                 cert: str | tuple[str, str] | None = None, proxy: str | None = None,
                 max_body: int = MAX_REPLY):
        if client is not None and transport is not None:
            raise ValueError(f"provider {name!r}: give client= or transport=, not both "
                             "(configure the client with the transport instead)")
        self.name = name
        self.base_url = base_url
        self._api_key = api_key or None
        self.timeouts = Timeouts(**timeouts) if isinstance(timeouts, Mapping) else (
            timeouts or Timeouts())
        self.retry = RetryPolicy(**retry) if isinstance(retry, Mapping) else (
            retry or RetryPolicy())
        self._limits = RATE_LIMITS if rate_limits is None else rate_limits
        if rpm is not None or tpm is not None:
            self._limits.configure(name, rpm=rpm, tpm=tpm)
        for model, (model_rpm, model_tpm) in (model_limits or {}).items():
            self._limits.configure(name, rpm=model_rpm, tpm=model_tpm, model=model)
        self.max_connections = max_connections
        #: The most a reply's body may hold (bytes), given up while it is read.
        self.max_body = max_body
        self._own_client = client is None
        if client is None:
            if transport is None:
                transport = FastTransport(verify=verify, cert=cert, proxy=proxy,
                                          max_connections=max_connections)
            client = httpx.AsyncClient(transport=transport)
        #: The client every request goes through.
        self.client = client
        #: The transport of the provider's own client (None for a client brought in).
        self.transport = transport
        t = self.timeouts
        self._timeout = httpx.Timeout(connect=t.connect, read=t.read, write=t.write,
                                      pool=t.pool)
        self._extensions = {"timeout": self._timeout.as_dict(), FIRST_BYTE: t.first_byte}
        # The provider's own client adds nothing a request needs (no auth, cookies, redirects
        # or hooks), so its requests go to its transport directly: a third of the client CPU
        # of a streamed call. A client brought in sends them, with all it adds.
        self._direct = transport if self._own_client else None
        self._headers: dict[bool, httpx.Headers] = {}
        self._urls: dict[str, httpx.URL] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Sent to another process (Dask workers): the provider's own client is made again
        # there around its transport; a client brought in cannot travel.
        if not self._own_client:
            raise TypeError(f"provider {self.name!r} has a client= of its own, which cannot be "
                            "sent to another process; give it transport= (or verify=, cert=, "
                            "proxy=) instead")
        state = self.__dict__.copy()
        state["client"] = state["_direct"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.client = httpx.AsyncClient(transport=self.transport)
        self._direct = self.transport

    def __repr__(self) -> str:  # no key in reprs
        return f"{type(self).__name__}(name={self.name!r}, base_url={self.base_url!r})"

    @property
    def server(self) -> str:
        """How errors name the server."""
        return f"{self.name} ({self.base_url})"

    async def aclose(self) -> None:
        """Close this event loop's connections of the provider's own client (a client
        brought in with ``client=`` is its owner's to close)."""
        if self._own_client and self.transport is not None:
            await self.transport.aclose()

    async def chat(self, request: ChatRequest) -> ChatResponse:
        """The whole reply (one attempt: the node's retry policy owns retries)."""
        return await self._chat_once(request)

    def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        """The reply as chunks (one attempt: the node's retry policy owns retries)."""
        return self._stream_once(request)

    @abc.abstractmethod
    async def _chat_once(self, request: ChatRequest) -> ChatResponse:
        """One attempt at the whole reply."""

    @abc.abstractmethod
    def _stream_once(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        """One attempt at the reply as chunks."""

    def _pool_headers(self) -> dict[str, str]:
        return {}

    async def _send(self, method: str, path: str, body: bytes | None,
                    model: str | None) -> httpx.Response:
        """Send a request (a ``body`` is JSON) and return its response once the headers
        arrived (body unread); a connection that could not be opened is tried again as
        :attr:`retry` allows."""
        json_body = body is not None
        headers = self._headers.get(json_body)
        if headers is None:
            headers = self._headers[json_body] = httpx.Headers({
                "Accept": "application/json", "Accept-Encoding": "identity",
                "User-Agent": f"cellwire/{cellwire.__version__}", **self._pool_headers(),
                **({"Content-Type": "application/json"} if json_body else {})})
        url = self._urls.get(path)
        if url is None:
            url = self._urls[path] = httpx.URL(f"{self.base_url}/{path}")
        direct = self._direct
        if direct is not None:
            # A ready stream and complete headers: httpx then adds none and encodes nothing.
            complete = httpx.Headers(headers)
            complete["Host"] = url.netloc.decode("ascii")
            if body is not None:
                complete["Content-Length"] = str(len(body))
            request = httpx.Request(method, url, headers=complete,
                                    stream=httpx.ByteStream(body or b""),
                                    extensions=self._extensions)
        else:
            request = self.client.build_request(method, url, content=body, headers=headers,
                                                timeout=self._timeout,
                                                extensions={FIRST_BYTE: self.timeouts.first_byte})
        tries = 0
        while True:
            try:
                if direct is not None:
                    return await direct.handle_async_request(request)
                return await self.client.send(request, stream=True)
            except httpx.HTTPError as exc:
                wait = self.retry.delay(tries + 1) if resendable(exc) else None
                if wait is None:
                    raise self._transport_error(exc, model) from None
                tries += 1
            await self.retry.sleep(wait)

    def _scrub(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key and text else text

    def _quote(self, content: bytes | str) -> str:
        """The start of a body, scrubbed of the API key, quoted for an error message."""
        text = content.decode("utf-8", "replace") if isinstance(content, bytes) else content
        return snippet(self._scrub(text))

    def _late(self, model: str | None) -> LateNotice:
        """A notice, logged while the first byte of a reply is late."""
        what = f"{self.server}" + (f", model {model}" if model else "")
        return LateNotice(what, self.timeouts.first_byte, "timeouts.first_byte", logger=LOG)

    async def _read_reply(self, response: httpx.Response, model: str | None) -> bytes:
        """A whole body, given up (:meth:`_too_large`) once it passes :attr:`max_body`."""
        parts: list[bytes] = []
        size = 0
        try:
            async for piece in body_pieces(response):
                size += len(piece)
                if size > self.max_body:
                    raise self._too_large(model)
                parts.append(piece)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, model, "body") from None
        return b"".join(parts)

    async def _error_text(self, response: httpx.Response) -> str:
        """The start of an error answer's body (enough for its message), read no further."""
        parts: list[bytes] = []
        size = 0
        try:
            async for piece in body_pieces(response):
                parts.append(piece)
                size += len(piece)
                if size >= MAX_ERROR_BODY:
                    break
        except httpx.HTTPError:
            pass
        finally:
            await response.aclose()
        return b"".join(parts)[:MAX_ERROR_BODY].decode("utf-8", "replace")

    def _too_large(self, model: str | None) -> ProviderError:
        return ProviderError(f"{self.server} sent a reply larger than {self.max_body} bytes; "
                             "the rest was not read", provider=self.name, model=model,
                             hint="ask for less (max_tokens), or raise the provider's "
                                  "max_body (bytes)")

    def _json_reply(self, response: httpx.Response, content: bytes, model: str | None) -> Any:
        """The JSON of a 200's body; a clear error quoting its start when it is not JSON (an
        HTML login page of a proxy, a truncated document)."""
        kind = media_type(response)
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError as exc:
            said = (f"sent malformed JSON ({exc})" if is_json_type(kind) or not kind else
                    f"answered HTTP {response.status_code} with {kind}, not JSON")
            raise ProviderError(f"{self.server} {said}: {self._quote(content)}",
                                provider=self.name, model=model, status=response.status_code,
                                hint=f"check that base_url ({self.base_url}) points at the "
                                     "API itself, not at a web page or a proxy's sign-in "
                                     "page") from None

    def _stream_start(self, response: httpx.Response, first: bytes,
                      model: str | None) -> None:
        """Raise unless a 200 whose body starts with ``first`` is an event stream (its
        content type says so, or it starts as one where the type says nothing better)."""
        kind = media_type(response)
        if kind == "text/event-stream":
            return
        if kind in ("", "text/plain", "application/octet-stream") \
                and first.lstrip().startswith(_SSE_STARTS):
            return
        raise ProviderError(f"{self.server} answered a streamed request with "
                            f"{kind or 'no content type'}, not an event stream: "
                            f"{self._quote(first)}", provider=self.name, model=model,
                            status=response.status_code,
                            hint=f"check that base_url ({self.base_url}) points at the API "
                                 "itself, not at a web page or a proxy's sign-in page")

    def _no_events(self, start: bytes, model: str | None) -> ProviderError:
        """A stream's body that held no event at all."""
        return ProviderError(f"{self.server} sent a stream without any event: "
                             f"{self._quote(start) if start else 'an empty body'}",
                             provider=self.name, model=model,
                             hint="check the server: its reply is not an event stream")

    def _transport_error(self, exc: BaseException, model: str | None,
                         waiting_for: str = "headers") -> ProviderError:
        return provider_error(exc, server=self.server, timeouts=self.timeouts,
                              provider=self.name, model=model, waiting_for=waiting_for,
                              scrub=self._scrub)
