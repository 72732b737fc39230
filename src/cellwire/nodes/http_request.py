"""http-request: one HTTP call with Dify's fields, over httpx, without blocking the loop.

The request goes through the run's shared client (``runtime.http``; a process-wide one when
the run has none), so connections are reused across nodes and runs; the node's timeouts go
with the request and ``ssl_verify: false`` takes the service's non-verifying client.

Network errors, timeouts and 429/503 answers raise retryable errors, so the node's retry
policy applies (``Retry-After`` honoured); every other status is returned as the output
``status_code``, as Dify does. The authorization secret never reaches ``process_data``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import httpx

from cellwire.engine import NodeContext, NodeError, NodeResult, RetryableError
from cellwire.engine.secrets import MIN_SECRET_LENGTH, REDACTED, redactor
from cellwire.model import node_type
from cellwire.services.http import SHARED
from cellwire.services.llm.resilience import parse_retry_after

from .http_build import (
    MAX_CONNECT_TIMEOUT,
    MAX_READ_TIMEOUT,
    MAX_WRITE_TIMEOUT,
    HttpNodeError,
    HttpRequestConfig,
    RequestSpec,
    build_request,
)

#: Largest response bodies read (HTTP_REQUEST_NODE_MAX_{TEXT,BINARY}_SIZE).
MAX_TEXT_SIZE = 1024 * 1024
MAX_BINARY_SIZE = 10 * 1024 * 1024
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
    spec = build_request(ctx, config)
    # verify is a client setting in httpx: ssl_verify false takes the non-verifying client.
    service = SHARED if ctx.runtime.http is None else ctx.runtime.http
    client = service.client(verify=config.ssl_verify is not False)
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
    status, headers, content, encoding = await _send(ctx, client, request, spec)
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


_TIMEOUT_FIELDS: dict[type[Exception], str] = {
    httpx.ConnectTimeout: "connect", httpx.ReadTimeout: "read", httpx.WriteTimeout: "write",
}


async def _send(ctx: NodeContext, client: httpx.AsyncClient, request: httpx.Request,
                spec: RequestSpec) -> tuple[int, dict[str, str], bytes, str | None]:
    """The response's status, headers, body bytes and encoding; errors become NodeErrors."""
    url = _safe_url(request.url)
    try:
        response = await client.send(request, stream=True, follow_redirects=True)
        try:
            content = await _read_capped(response)
        finally:
            await response.aclose()
    except httpx.TimeoutException as exc:
        # isinstance, not type(): a transport may raise subclasses (the fast one does).
        which = next((f for t, f in _TIMEOUT_FIELDS.items() if isinstance(exc, t)), None)
        limits = spec.timeout.as_dict()
        if which is None:
            raise HttpRetryableError(f"timed out waiting for a connection to {url}",
                                     field="timeout", hint="retry, or raise timeout.connect",
                                     error_type="HTTPTimeout") from None
        cap = {"connect": MAX_CONNECT_TIMEOUT, "read": MAX_READ_TIMEOUT,
               "write": MAX_WRITE_TIMEOUT}[which]
        raise HttpRetryableError(
            f"{which} timeout after {limits[which]:g} s: {spec.method} {url}",
            field=f"timeout.{which}", hint=f"raise timeout.{which} (at most {cap:g} s) or "
                                           "check the server", error_type="HTTPTimeout",
        ) from None
    except httpx.UnsupportedProtocol as exc:
        raise HttpNodeError(f"cannot send to {url}: {exc}", field="url",
                            hint="use an http:// or https:// URL") from None
    except httpx.TransportError as exc:
        detail = str(exc) or type(exc).__name__
        raise HttpRetryableError(f"{spec.method} {url} failed: {detail}", field="url",
                                 hint="check that the server is up and the URL is right",
                                 error_type="HTTPNetworkError") from None
    headers = dict(response.headers)
    return response.status_code, headers, content, response.encoding


async def _read_capped(response: httpx.Response) -> bytes:
    limit = MAX_TEXT_SIZE if _is_text(response.headers.get("content-type", "")) \
        else MAX_BINARY_SIZE
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise HttpNodeError(
                f"the response body is larger than {limit} bytes", field=None,
                hint="ask the server for less (paging, filters)", error_type="ResponseSizeError",
            )
        chunks.append(chunk)
    return b"".join(chunks)


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
