"""http-request: one HTTP call with Dify's fields, over httpx, without blocking the loop.

Network errors, timeouts and 429/503 answers raise retryable errors, so the node's retry
policy applies (``Retry-After`` honoured); every other status is returned as the output
``status_code``, as Dify does. The authorization secret never reaches ``process_data``.
"""

from __future__ import annotations

import base64
import email.utils
import json
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any, Literal
from urllib.parse import urlencode

import httpx
from pydantic import Field, field_validator

from cellwire.engine import FatalError, NodeContext, NodeError, NodeResult, RetryableError
from cellwire.model import NodeConfig, node_type

from .template_transform import render_template

#: Dify's caps on the timeouts (HTTP_REQUEST_MAX_{CONNECT,READ,WRITE}_TIMEOUT), in seconds;
#: also the defaults when a timeout is not given.
MAX_CONNECT_TIMEOUT = 10.0
MAX_READ_TIMEOUT = 600.0
MAX_WRITE_TIMEOUT = 600.0
#: Largest response bodies read (HTTP_REQUEST_NODE_MAX_{TEXT,BINARY}_SIZE).
MAX_TEXT_SIZE = 1024 * 1024
MAX_BINARY_SIZE = 10 * 1024 * 1024
#: Statuses that mean "try again later": they raise a retryable error.
RETRY_STATUSES = frozenset({429, 503})
#: How much of the request body process_data shows.
LOG_BODY_LIMIT = 10_000
REDACTED = "***"

Method = Literal["get", "post", "put", "patch", "delete", "head", "options"]
BodyType = Literal["none", "form-data", "x-www-form-urlencoded", "raw-text", "json", "binary"]


class AuthConfig(NodeConfig):
    type: Literal["basic", "bearer", "custom"] | None = None
    api_key: str = ""
    header: str = ""


class Authorization(NodeConfig):
    type: Literal["no-auth", "api-key"] = "no-auth"
    config: AuthConfig | None = None


class BodyData(NodeConfig):
    key: str = ""
    type: Literal["text", "file"] = "text"
    value: str = ""
    file: list[str] = Field(default_factory=list)


class Body(NodeConfig):
    type: BodyType = "none"
    #: Items; older Dify files give one string (the text, or ``key:value`` lines for forms).
    data: list[BodyData] | str = Field(default_factory=list)


class Timeout(NodeConfig):
    connect: float | None = Field(None, ge=0)
    read: float | None = Field(None, ge=0)
    write: float | None = Field(None, ge=0)


class HttpRequestConfig(NodeConfig):
    method: Method = "get"
    url: str = ""
    authorization: Authorization = Field(default_factory=Authorization)
    headers: str = ""
    params: str = ""
    body: Body | None = None
    timeout: Timeout | None = None
    ssl_verify: bool | None = True

    @field_validator("method", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class HttpNodeError(NodeError, FatalError):
    """A bad config or input: no retry can fix it."""


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
    runtime_client = ctx.runtime.http
    # verify is a client setting in httpx, so ssl_verify=False needs a client of its own.
    own = runtime_client is None or config.ssl_verify is False
    client: httpx.AsyncClient = (
        httpx.AsyncClient(verify=config.ssl_verify is not False) if own else runtime_client
    )
    try:
        try:
            # httpx's params= drops the URL's own query; Dify's older httpx merged the two.
            url = httpx.URL(spec.url).copy_merge_params(spec.params)
            request = client.build_request(
                spec.method, url, headers=spec.headers,
                content=spec.content, files=spec.files, json=spec.json, timeout=spec.timeout,
            )
        except (httpx.InvalidURL, ValueError) as exc:
            raise HttpNodeError(f"invalid URL {spec.url!r}: {exc}", field="url",
                                hint="give a full http:// or https:// URL") from None
        process_data = {"request": request_log(request, spec.secrets, spec.secret_headers)}
        response = await _send(ctx, client, request, spec)
    finally:
        if own:
            await client.aclose()
    status, headers, content, encoding = response
    if status in RETRY_STATUSES:
        retry_after = parse_retry_after(headers.get("retry-after"), ctx.runtime.clock.now())
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


# -- building the request ------------------------------------------------------------------


@dataclass(slots=True)
class RequestSpec:
    """Everything httpx needs, rendered; ``secrets`` are the values to redact."""

    method: str
    url: str
    params: list[tuple[str, str]]
    headers: dict[str, str]
    timeout: httpx.Timeout
    content: bytes | str | None = None
    files: list[tuple[str, Any]] | None = None
    json: Any = None
    secrets: list[str] = field(default_factory=list)
    #: Headers whose whole value is hidden in the log (the authorization header).
    secret_headers: set[str] = field(default_factory=set)


def build_request(ctx: NodeContext, config: HttpRequestConfig) -> RequestSpec:
    """Render the URL, headers, params, auth and body against the pool."""
    url = _render(ctx, config.url, "url").strip()
    if not url:
        raise HttpNodeError("the URL is empty", field="url", hint="set url, e.g. https://...")
    if not url.lower().startswith(("http://", "https://")):
        raise HttpNodeError(f"{url!r} is not an http(s) URL", field="url",
                            hint="start the URL with http:// or https://")
    headers = dict(_pairs(ctx, config.headers, "headers"))
    for name, value in headers.items():
        if "\n" in value or "\r" in value:
            raise HttpNodeError(f"the value of header {name!r} holds a line break",
                                field="headers", hint="insert single-line values only")
    spec = RequestSpec(
        method=config.method.upper(), url=url, params=_pairs(ctx, config.params, "params"),
        headers=headers, timeout=request_timeout(config.timeout),
    )
    _apply_auth(ctx, config.authorization, spec)
    if config.body is not None:
        _apply_body(ctx, config.body, spec)
    return spec


def request_timeout(timeout: Timeout | None) -> httpx.Timeout:
    """Dify's rule: a missing or zero timeout takes the default, and each is capped."""
    t = timeout or Timeout()
    return httpx.Timeout(
        connect=min(t.connect or MAX_CONNECT_TIMEOUT, MAX_CONNECT_TIMEOUT),
        read=min(t.read or MAX_READ_TIMEOUT, MAX_READ_TIMEOUT),
        write=min(t.write or MAX_WRITE_TIMEOUT, MAX_WRITE_TIMEOUT),
        pool=MAX_CONNECT_TIMEOUT,
    )


def _render(ctx: NodeContext, text: str, field: str) -> str:
    return render_template(text, ctx, {}, field=field) if "{" in text else text


def _pairs(ctx: NodeContext, text: str, field: str) -> list[tuple[str, str]]:
    """``key:value`` lines; key and value are rendered apart, so values may hold colons."""
    pairs = []
    for line in text.splitlines():
        if not line.strip():
            continue
        key, _, value = _split_pair(line)
        key = _render(ctx, key.strip(), field).strip()
        if key:
            pairs.append((key, _render(ctx, value.strip(), field).strip()))
    return pairs


def _split_pair(line: str) -> tuple[str, str, str]:
    # The first colon outside {{ }}: a template expression may hold colons of its own.
    depth = 0
    for i, char in enumerate(line):
        if line.startswith("{{", i):
            depth += 1
        elif line.startswith("}}", i) and depth:
            depth -= 1
        elif char == ":" and depth == 0:
            return line[:i], ":", line[i + 1:]
    return line, "", ""


def _apply_auth(ctx: NodeContext, auth: Authorization, spec: RequestSpec) -> None:
    if auth.type != "api-key":
        return
    cfg = auth.config
    if cfg is None or cfg.type is None:
        raise HttpNodeError("api-key authorization needs a config with a type",
                            field="authorization.config",
                            hint="set config.type to bearer, basic or custom")
    key = _render(ctx, cfg.api_key, "authorization.config.api_key").strip()
    if not key:
        raise HttpNodeError("the API key is empty", field="authorization.config.api_key",
                            hint="set api_key, e.g. {{#env.API_KEY#}}")
    header = cfg.header.strip() or "Authorization"
    if cfg.type == "bearer":
        value = f"Bearer {key}"
    elif cfg.type == "basic":
        # Dify: "user:password" is encoded here; anything else is taken as already encoded.
        encoded = base64.b64encode(key.encode()).decode() if ":" in key else key
        value = f"Basic {encoded}"
    else:
        value = key
    for name in [n for n in spec.headers if n.lower() == header.lower()]:
        del spec.headers[name]
    spec.headers[header] = value
    spec.secret_headers.add(header.lower())
    spec.secrets += [value, key, *([value.split(" ", 1)[1]] if " " in value else [])]


def _header(spec: RequestSpec, name: str) -> str | None:
    return next((v for k, v in spec.headers.items() if k.lower() == name.lower()), None)


def _apply_body(ctx: NodeContext, body: Body, spec: RequestSpec) -> None:
    kind = body.type
    if kind == "none":
        return
    items = _body_items(body)
    if kind in ("json", "raw-text"):
        if len(items) > 1:
            raise HttpNodeError(f"a {kind} body takes one item, got {len(items)}",
                                field="body.data", hint="keep a single item with the text")
        text = _render(ctx, items[0].value, "body.data") if items else ""
        if kind == "raw-text":
            spec.content = text
            if _header(spec, "content-type") is None:
                spec.headers["Content-Type"] = "text/plain"
        elif text.strip():
            try:
                spec.json = json.loads(text, strict=False)
            except json.JSONDecodeError as exc:
                raise HttpNodeError(
                    f"the body is not valid JSON after rendering: {exc.msg} at line {exc.lineno} "
                    f"column {exc.colno}", field="body.data",
                    hint='quote inserted strings, e.g. {"name": "{{#start.name#}}"}',
                ) from None
    elif kind == "x-www-form-urlencoded":
        pairs = [(_render(ctx, i.key, f"body.data[{n}].key"),
                  _render(ctx, i.value, f"body.data[{n}].value"))
                 for n, i in enumerate(items) if i.key]
        spec.content = urlencode(pairs)
        if _header(spec, "content-type") is None:
            spec.headers["Content-Type"] = "application/x-www-form-urlencoded"
    elif kind == "form-data":
        # httpx writes the multipart Content-Type with its boundary; a user's one would break it.
        for name in [n for n in spec.headers if n.lower() == "content-type"]:
            del spec.headers[name]
        spec.files = []
        for n, item in enumerate(items):
            if not item.key:
                continue
            key = _render(ctx, item.key, f"body.data[{n}].key")
            if item.type == "file":
                spec.files.append((key, _file_part(ctx, item.file, f"body.data[{n}].file")))
            else:
                spec.files.append((key, (None, _render(ctx, item.value, f"body.data[{n}].value"))))
    elif kind == "binary":
        if len(items) != 1:
            raise HttpNodeError("a binary body takes one file item", field="body.data",
                                hint="give one item with file: [node_id, var]")
        _name, content, mime = _file_part(ctx, items[0].file, "body.data[0].file")
        spec.content = content
        if _header(spec, "content-type") is None:
            spec.headers["Content-Type"] = mime


def _body_items(body: Body) -> list[BodyData]:
    if not isinstance(body.data, str):
        return body.data
    if body.type in ("json", "raw-text"):
        return [BodyData(value=body.data)] if body.data else []
    items = []
    for line in body.data.splitlines():
        if line.strip():
            key, _, value = _split_pair(line)
            items.append(BodyData(key=key.strip(), value=value.strip()))
    return items


def _file_part(ctx: NodeContext, selector: Sequence[str], field: str) -> tuple[str, bytes, str]:
    """``(filename, content, mime type)`` of a file value in the pool."""
    if len(selector) < 2:
        raise HttpNodeError("no file selected", field=field, hint="set file: [node_id, var]")
    value = ctx.get(selector, field=field)
    if isinstance(value, (bytes, bytearray)):
        return ("file", bytes(value), "application/octet-stream")
    if isinstance(value, Mapping) and isinstance(value.get("content"), (bytes, bytearray)):
        name = str(value.get("filename") or value.get("name") or "file")
        mime = str(value.get("mime_type") or "application/octet-stream")
        return (name, bytes(value["content"]), mime)
    raise HttpNodeError(
        f"{'.'.join(selector)} is a {type(value).__name__}, not a file", field=field,
        hint="pass bytes, or a dict with 'content' (bytes), 'filename' and 'mime_type'",
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
        which = _TIMEOUT_FIELDS.get(type(exc))
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


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


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
    return redact(text, secrets)


def redact(text: str, secrets: Sequence[str]) -> str:
    # Longest first, so a header value is replaced whole before the key inside it.
    for secret in sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def _safe_url(url: httpx.URL) -> str:
    # URL credentials (user:pass@host) are secrets too.
    return str(url.copy_with(username=None, password=None)) if url.userinfo else str(url)
