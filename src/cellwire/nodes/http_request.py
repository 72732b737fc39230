"""http-request: one HTTP call with Dify's fields, over httpx, without blocking the loop.

The request goes through the run's shared client (``runtime.http``; a process-wide one when
the run has none), so connections are reused across nodes and runs; the node's timeouts go
with the request and ``ssl_verify: false`` takes the service's non-verifying client.

The run's network policy (``runtime.network``; without one, the trusted default that refuses
link-local and cloud-metadata addresses) checks the server of the URL and of every redirect
after resolving its name, caps the response body (Dify's 1 MiB of text, 10 MiB of binary,
given up while reading), and a wait for the first byte is logged while it lasts.

Network errors, timeouts and 429/503 answers raise retryable errors, so the node's retry
policy applies (``Retry-After`` honoured); every other status is returned as the output
``status_code``, as Dify does. The authorization secret never reaches ``process_data``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import httpx

from cellwire.engine import NodeContext, NodeError, NodeResult, RetryableError
from cellwire.engine.secrets import MIN_SECRET_LENGTH, REDACTED, redactor
from cellwire.engine.services import NetworkGuard
from cellwire.model import node_type
from cellwire.services.http import (
    NETWORK,
    SHARED,
    AddressRefused,
    NetworkPolicy,
    ReadTimeout,
    ResponseTooLarge,
)
from cellwire.services.http.guard import BINARY_SIZE_ENV, TEXT_SIZE_ENV
from cellwire.services.http.progress import LateNotice
from cellwire.services.llm.resilience import parse_retry_after

from .http_build import (
    MAX_CONNECT_TIMEOUT,
    MAX_READ_TIMEOUT,
    MAX_WRITE_TIMEOUT,
    HttpNodeError,
    HttpRequestConfig,
    RequestSpec,
    body_files,
    build_request,
)

#: The port of a URL that names none.
_PORTS = {"http": 80, "https": 443}
#: Statuses that mean "try again later": they raise a retryable error.
RETRY_STATUSES = frozenset({429, 503})
#: How much of the request body process_data shows.
LOG_BODY_LIMIT = 10_000


class HttpRetryableError(NodeError, RetryableError):
    """A network error, timeout or 429/503: worth another attempt."""

    def __init__(self, message: str, *, field: str | None = None, hint: str = "",
                 error_type: str | None = None, retry_after: float | None = None):
        super().__init__(message, field=field, hint=hint, error_type=error_type)
        self.retry_after = retry_after



@node_type("http-request", config=HttpRequestConfig,
           outputs=("status_code", "body", "headers", "files"))
async def run(ctx: NodeContext) -> NodeResult:
    """Send the request; outputs ``status_code``, ``body`` (text), ``headers``, ``files``."""
    config: HttpRequestConfig = ctx.config
    spec = build_request(ctx, config, await body_files(ctx, config))
    # verify is a client setting in httpx: ssl_verify false takes the non-verifying client.
    service = SHARED if ctx.runtime.http is None else ctx.runtime.http
    client = service.client(verify=config.ssl_verify is not False)
    policy = ctx.runtime.network or NetworkPolicy.trusted()
    try:
        # httpx's params= drops the URL's own query; Dify's older httpx merged the two.
        url = httpx.URL(spec.url).copy_merge_params(tuple(spec.params))
        request = client.build_request(
            spec.method, url, headers=spec.headers,
            content=spec.content, files=spec.files, json=spec.json, timeout=spec.timeout,
        )
    except (httpx.InvalidURL, ValueError) as exc:
        raise HttpNodeError(f"invalid URL {spec.url!r}: {exc}", field="url",
                            hint="give a full http:// or https:// URL") from None
    process_data = {"request": request_log(request, spec.secrets, spec.secret_headers)}
    status, headers, content, encoding = await _send(ctx, client, request, spec, policy)
    if status in RETRY_STATUSES:
        retry_after = parse_retry_after(headers, ctx.runtime.clock.now())
        wait = f", Retry-After {retry_after:g} s" if retry_after is not None else ""
        raise HttpRetryableError(
            f"{spec.method} {_safe_url(request.url)} answered {status}{wait}",
            hint="retry later: give the node retries, or slow down",
            error_type="HTTPResponseCodeError", retry_after=retry_after,
        )
    body = content.decode(encoding or "utf-8", errors="replace")
    return NodeResult(
        inputs={"method": spec.method, "url": _safe_url(request.url)},
        process_data=process_data,
        outputs={"status_code": status, "body": body, "headers": headers, "files": []},
    )



# -- sending -------------------------------------------------------------------------------


async def _send(ctx: NodeContext, client: httpx.AsyncClient, request: httpx.Request,
                spec: RequestSpec, policy: NetworkGuard
                ) -> tuple[int, dict[str, str], bytes, str | None]:
    """The response's status, headers, body bytes and encoding; errors become NodeErrors.

    Redirects are followed here, one hop at a time, so the network policy checks every hop
    before anything is sent to it (and the fast transport connects only to the addresses it
    checked)."""
    first = request.url
    # What a read timeout interrupted: the response's headers, its body's first byte, or
    # the rest of the body (the fast transport says so itself).
    waiting_for = "headers"
    notice = LateNotice(f"http-request node {ctx.node.id!r}: {spec.method} "
                        f"{_safe_url(request.url)}", spec.timeout.read or MAX_READ_TIMEOUT,
                        "timeout.read")
    try:
        for _hop in range(client.max_redirects + 1):
            target = request.url
            await policy.addresses(target.host, target.port or _PORTS.get(target.scheme, 80))
            request.extensions = {**request.extensions, NETWORK: policy}
            waiting_for = "headers"
            notice.start()
            response = await client.send(request, stream=True, follow_redirects=False)
            if response.next_request is None:
                break
            notice.stop()
            await response.aclose()
            request = response.next_request
        else:
            raise HttpNodeError(f"{_safe_url(first)} redirected more than "
                                f"{client.max_redirects} times", field="url",
                                hint="check the URL: the server redirects in a loop")
        try:
            waiting_for = "body"
            content = await _read_capped(response, policy, notice)
        finally:
            await response.aclose()
    except AddressRefused as exc:
        where = (f"{_safe_url(first)} redirected to {_safe_url(request.url)}: "
                 if request.url != first else "")
        raise HttpNodeError(f"{where}refused to send {spec.method} {_safe_url(request.url)}: "
                            f"{exc}", field="url", hint=exc.fix,
                            error_type="AddressRefused") from None
    except httpx.TimeoutException as exc:
        raise _timeout_error(exc, spec, request.url, waiting_for) from None
    except httpx.UnsupportedProtocol as exc:
        raise HttpNodeError(f"cannot send to {_safe_url(request.url)}: {exc}", field="url",
                            hint="use an http:// or https:// URL") from None
    except ResponseTooLarge as exc:
        raise HttpNodeError(str(exc), hint="ask the server for less (paging, filters)",
                            error_type="ResponseSizeError") from None
    except httpx.TransportError as exc:
        detail = str(exc) or type(exc).__name__
        raise HttpRetryableError(f"{spec.method} {_safe_url(request.url)} failed: {detail}",
                                 field="url",
                                 hint="check that the server is up and the URL is right",
                                 error_type="HTTPNetworkError") from None
    finally:
        notice.stop()
    headers = dict(response.headers)
    return response.status_code, headers, content, response.encoding


def _timeout_error(exc: httpx.TimeoutException, spec: RequestSpec, url: httpx.URL,
                   waiting_for: str) -> HttpRetryableError:
    """Which wait ran out (connect, first byte or read), as a retryable error."""
    limits = spec.timeout.as_dict()
    shown = f"{spec.method} {_safe_url(url)}"
    if isinstance(exc, httpx.ConnectTimeout):
        return HttpRetryableError(
            f"connect timeout: no connection to {url.host} within {limits['connect']:g} s "
            f"({shown})", field="timeout.connect", error_type="HTTPTimeout",
            hint=f"check the host and port, or raise timeout.connect (at most "
                 f"{MAX_CONNECT_TIMEOUT:g} s)")
    if isinstance(exc, httpx.WriteTimeout):
        return HttpRetryableError(
            f"write timeout: sending the request took more than {limits['write']:g} s "
            f"({shown})", field="timeout.write", error_type="HTTPTimeout",
            hint=f"send less, or raise timeout.write (at most {MAX_WRITE_TIMEOUT:g} s)")
    if isinstance(exc, httpx.ReadTimeout):
        waiting_for = exc.waiting_for if isinstance(exc, ReadTimeout) else waiting_for
        read = f"{limits['read']:g} s"
        hint = f"check the server, or raise timeout.read (at most {MAX_READ_TIMEOUT:g} s)"
        if waiting_for == "headers":
            said = f"first-byte timeout: the server sent no response within {read}"
        elif waiting_for == "body":
            said = f"first-byte timeout: the server sent its headers but no body within {read}"
        else:
            said = f"read timeout: the server stopped sending for {read}"
        return HttpRetryableError(f"{said} ({shown})", field="timeout.read", hint=hint,
                                  error_type="HTTPTimeout")
    return HttpRetryableError(f"timed out waiting for a free connection ({shown})",
                              field="timeout", hint="retry, or raise timeout.connect",
                              error_type="HTTPTimeout")


async def _read_capped(response: httpx.Response, policy: NetworkGuard,
                       notice: LateNotice) -> bytes:
    """The body, read as it arrives and given up once it passes the policy's cap (text or
    binary, by its content type), before the rest is read."""
    text = _is_text(response.headers.get("content-type", ""))
    limit = policy.max_text_size if text else policy.max_binary_size
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(text, limit, f"it declares {int(declared)} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        notice.stop()
        size += len(chunk)
        if size > limit:
            raise _too_large(text, limit, f"more than {limit} bytes arrived")
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(text: bool, limit: int, why: str) -> HttpNodeError:
    kind, env = ("text", TEXT_SIZE_ENV) if text else ("binary", BINARY_SIZE_ENV)
    return HttpNodeError(
        f"the response body is larger than the {limit}-byte cap on {kind} responses ({why}); "
        "nothing more was read", error_type="ResponseSizeError",
        hint=f"ask the server for less (paging, filters), or raise the cap: {env}=<bytes>")


def _is_text(content_type: str) -> bool:
    kind = content_type.split(";")[0].strip().lower()
    return (not kind or kind.startswith("text/") or kind.endswith(("json", "xml", "javascript"))
            or kind in ("application/x-www-form-urlencoded", "application/yaml"))


# -- what process_data shows ---------------------------------------------------------------


def request_log(request: httpx.Request, secrets: Sequence[str],
                secret_headers: Collection[str] = ()) -> str:
    """The request as raw HTTP text, with every secret replaced by ``***``."""
    lines = [f"{request.method} {request.url.raw_path.decode('ascii', 'replace')} HTTP/1.1"]
    for raw_name, raw_value in request.headers.raw:
        name = raw_name.decode("latin-1")
        value = REDACTED if name.lower() in secret_headers else raw_value.decode("latin-1")
        lines.append(f"{name}: {value}")
    content = request.read()
    if request.headers.get("content-type", "").startswith(("application/octet-stream",)):
        body = f"<{len(content)} bytes>"
    else:
        body = content.decode("utf-8", errors="replace")
        if len(body) > LOG_BODY_LIMIT:
            body = body[:LOG_BODY_LIMIT] + f"... <{len(content)} bytes in all>"
    text = "\r\n".join(lines) + "\r\n\r\n" + body
    # Its transformed forms too (the base64 of basic auth's user:password...).
    return redactor(s for s in secrets if len(s) >= MIN_SECRET_LENGTH).text(text)


def _safe_url(url: httpx.URL) -> str:
    # URL credentials (user:pass@host) are secrets too.
    return str(url.copy_with(username=None, password=None)) if url.userinfo else str(url)
