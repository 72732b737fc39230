"""http-request's config (Dify's fields) and how it becomes a request: rendered URL,
``key:value`` headers and params, authorization, and each body type."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import httpx
from pydantic import BeforeValidator, Field, ValidationInfo, field_validator

from cellwire.engine import FatalError, NodeContext, NodeError
from cellwire.model import NodeConfig

from .config_checks import empty_list

#: Dify's caps on the timeouts (HTTP_REQUEST_MAX_{CONNECT,READ,WRITE}_TIMEOUT), in seconds;
#: also the defaults when a timeout is not given.
MAX_CONNECT_TIMEOUT = 10.0
MAX_READ_TIMEOUT = 600.0
MAX_WRITE_TIMEOUT = 600.0

Method = Literal["get", "post", "put", "patch", "delete", "head", "options"]
BodyType = Literal["none", "form-data", "x-www-form-urlencoded", "raw-text", "json", "binary"]


class AuthConfig(NodeConfig):
    type: Literal["basic", "bearer", "custom"] | None = None
    api_key: str = ""
    header: str = ""


class Authorization(NodeConfig):
    type: Literal["no-auth", "api-key"] = "no-auth"
    config: AuthConfig | None = None

    @field_validator("config", mode="before")
    @classmethod
    def _no_config_without_auth(cls, value: Any, info: ValidationInfo) -> Any:
        # Dify drops whatever config a no-auth authorization carries.
        return None if info.data.get("type") == "no-auth" else value


class BodyData(NodeConfig):
    key: str = ""
    type: Literal["text", "file"] = "text"
    value: str = ""
    file: list[str] = Field(default_factory=list)


class Body(NodeConfig):
    type: BodyType = "none"
    #: Items; older Dify files give one string (the text, or ``key:value`` lines for forms).
    data: Annotated[list[BodyData] | str, BeforeValidator(empty_list)] = Field(
        default_factory=list)


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


#: A file part of a body: (filename, content, mime type).
FilePart = tuple[str, bytes, str]


async def body_files(ctx: NodeContext, config: HttpRequestConfig) -> dict[str, list[FilePart]]:
    """The files a form-data or binary body sends, read ahead (by the field naming each):
    a Dify file object with a ``remote_url`` is fetched under the run's network policy, a
    local one read under its file policy, as Dify's executor downloads each file."""
    body = config.body
    if body is None or body.type not in ("form-data", "binary") or isinstance(body.data, str):
        return {}
    from cellwire.services.files import NoLocalFiles
    from cellwire.services.files.objects import FileReadError, read_file

    parts: dict[str, list[FilePart]] = {}
    for n, item in enumerate(body.data):
        if item.type != "file" or len(item.file) < 2:
            continue
        field = f"body.data[{n}].file"
        value = ctx.get(item.file, field=field)
        items = value if isinstance(value, list) else [value]
        if not all(_is_file_object(v) for v in items):
            continue  # bytes, or a dict with its content: _file_part takes those as they are
        runtime = ctx.runtime
        try:
            parts[field] = [
                (name, data, mime or "application/octet-stream")
                for data, name, mime in [
                    await read_file(v, files=runtime.files or NoLocalFiles(),
                                    http=runtime.http, network=runtime.network)
                    for v in items]]
        except FileReadError as exc:
            raise HttpNodeError(str(exc), field=field,
                                hint="give a file object with a reachable remote_url or a "
                                     "readable local path") from None
    return parts


def _is_file_object(value: Any) -> bool:
    return (isinstance(value, Mapping) and not isinstance(value.get("content"), (bytes, bytearray))
            and any(value.get(k) for k in ("remote_url", "url", "path")))


def build_request(ctx: NodeContext, config: HttpRequestConfig,
                  files: Mapping[str, list[FilePart]] | None = None) -> RequestSpec:
    """Render the URL, headers, params, auth and body against the pool (``files``: the
    body's files :func:`body_files` read)."""
    url = ctx.render(config.url).strip()
    if not url:
        raise HttpNodeError("the URL is empty", field="url", hint="set url, e.g. https://...")
    if not url.lower().startswith(("http://", "https://")):
        raise HttpNodeError(f"{url!r} is not an http(s) URL", field="url",
                            hint="start the URL with http:// or https://")
    headers = dict(_pairs(ctx, config.headers))
    for name, value in headers.items():
        if "\n" in value or "\r" in value:
            raise HttpNodeError(f"the value of header {name!r} holds a line break",
                                field="headers", hint="insert single-line values only")
    spec = RequestSpec(
        method=config.method.upper(), url=url, params=_pairs(ctx, config.params),
        headers=headers, timeout=request_timeout(config.timeout),
    )
    _apply_auth(ctx, config.authorization, spec)
    if config.body is not None:
        _apply_body(ctx, config.body, spec, files or {})
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


def _pairs(ctx: NodeContext, text: str) -> list[tuple[str, str]]:
    """``key:value`` lines; key and value are rendered apart, so values may hold colons."""
    pairs = []
    for line in text.splitlines():
        if not line.strip():
            continue
        key, _, value = _split_pair(line)
        key = ctx.render(key.strip()).strip()
        if key:
            pairs.append((key, ctx.render(value.strip()).strip()))
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
    key = ctx.render(cfg.api_key).strip()
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


def _apply_body(ctx: NodeContext, body: Body, spec: RequestSpec,
                files: Mapping[str, list[FilePart]]) -> None:
    kind = body.type
    if kind == "none":
        return
    items = _body_items(body)
    if kind in ("json", "raw-text"):
        if len(items) > 1:
            raise HttpNodeError(f"a {kind} body takes one item, got {len(items)}",
                                field="body.data", hint="keep a single item with the text")
        text = ctx.render(items[0].value) if items else ""
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
        pairs = [(ctx.render(i.key), ctx.render(i.value)) for i in items if i.key]
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
            key = ctx.render(item.key)
            if item.type == "file":
                field = f"body.data[{n}].file"
                # A list of files is sent as one part each under the same key, as in Dify.
                for part in files.get(field) or [_file_part(ctx, item.file, field)]:
                    spec.files.append((key, part))
            else:
                spec.files.append((key, (None, ctx.render(item.value))))
    elif kind == "binary":
        if len(items) != 1:
            raise HttpNodeError("a binary body takes one file item", field="body.data",
                                hint="give one item with file: [node_id, var]")
        fetched = files.get("body.data[0].file")
        _name, content, mime = (fetched[0] if fetched
                                else _file_part(ctx, items[0].file, "body.data[0].file"))
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


def _file_part(ctx: NodeContext, selector: Sequence[str], field: str) -> FilePart:
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
        hint="pass a Dify file object (remote_url or a local path), bytes, or a dict with "
             "'content' (bytes), 'filename' and 'mime_type'",
    )
