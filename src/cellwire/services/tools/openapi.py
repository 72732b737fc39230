"""An OpenAPI 3 document as a set of HTTP tools: one per operation.

Each operation's path, query and header parameters and its JSON request body become the
tool's arguments. Authentication comes from a secret granted to the run, sent as a header,
a query parameter or a bearer token; the document's ``securitySchemes`` say where when
:class:`Auth` does not.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from .context import ToolContext
from .http import fetch
from .sync import run_sync
from .tool import Tool, ToolError

_METHODS = ("get", "post", "put", "patch", "delete", "head", "options")


@dataclass(frozen=True, slots=True)
class Auth:
    """How the tools authenticate: the value of the granted secret ``secret`` sent as a
    header ``name`` (``kind='header'``), a query parameter ``name`` (``'query'``) or
    ``Authorization: Bearer`` (``'bearer'``). Without ``kind``, the document's first
    security scheme decides."""

    secret: str
    kind: Literal["header", "query", "bearer"] | None = None
    name: str | None = None


class OpenAPIError(ValueError):
    """The document cannot be turned into tools; the message says where and why."""


def openapi_tools(spec: Mapping[str, Any] | str | Path, *, base_url: str | None = None,
                  auth: Auth | None = None, provider: str | None = None,
                  operations: Iterable[str] | None = None, timeout: float = 30.0) -> list[Tool]:
    """The tools of an OpenAPI 3 document (a mapping, a file path, or JSON/YAML text).

    ``base_url`` overrides the document's first server; ``provider`` defaults to the
    document's title; ``operations`` keeps only those operation ids."""
    document = _document(spec)
    version = str(document.get("openapi", ""))
    if not version.startswith("3"):
        raise OpenAPIError(f"not an OpenAPI 3 document (openapi: {version or 'missing'!r}); "
                           "convert Swagger 2 documents first")
    servers = document.get("servers") or []
    base = base_url or (servers[0].get("url") if servers else None)
    if not base:
        raise OpenAPIError("the document names no server: pass base_url='https://...'")
    title = str((document.get("info") or {}).get("title") or "openapi")
    provider = provider or re.sub(r"[^A-Za-z0-9_-]+", "_", title).strip("_").lower()
    resolved = _Resolver(document)
    placement = _placement(auth, document)
    wanted = set(operations) if operations is not None else None
    tools = []
    for path, item in (document.get("paths") or {}).items():
        item = resolved(item)
        shared = item.get("parameters") or []
        for method in _METHODS:
            operation = item.get(method)
            if not isinstance(operation, Mapping):
                continue
            op = _Operation.build(method, path, resolved(operation), shared, resolved)
            if wanted is not None and op.name not in wanted:
                continue
            tools.append(op.tool(base.rstrip("/"), placement, provider, timeout))
    if wanted is not None and (missing := wanted - {t.name for t in tools}):
        raise OpenAPIError(f"no operation {', '.join(sorted(missing))} in the document")
    return tools


def _document(spec: Mapping[str, Any] | str | Path) -> dict[str, Any]:
    if isinstance(spec, Mapping):
        return dict(spec)
    text = spec
    if isinstance(spec, str) and spec.startswith(("http://", "https://")):
        text = run_sync(lambda: _download(spec))
    elif isinstance(spec, Path) or (isinstance(spec, str) and "\n" not in spec
                                     and not spec.lstrip().startswith("{")):
        text = Path(spec).read_text(encoding="utf-8")
    import yaml

    data = yaml.safe_load(str(text))
    if not isinstance(data, Mapping):
        raise OpenAPIError("the OpenAPI document is not a mapping")
    return dict(data)


async def _download(url: str) -> str:
    """The document at ``url``, fetched as tools fetch (the trusted network policy), by a
    plain client of this short-lived loop's own (the fast transport keeps pools per loop,
    which a loop that ends at once has no use for)."""
    import httpx

    async with httpx.AsyncClient() as client:
        response = await fetch(ToolContext(http=_Client(client)), "GET", url, tool="openapi")
    if response.status_code >= 400:
        raise OpenAPIError(f"{url} answered {response.status_code}")
    return response.text


class _Client:
    """One client as an HTTP service."""

    def __init__(self, client: Any):
        self._client = client

    def client(self, *, verify: bool = True) -> Any:
        return self._client


class _Resolver:
    """Follows local ``$ref`` s (``#/components/...``)."""

    def __init__(self, document: Mapping[str, Any]):
        self.document = document

    def __call__(self, value: Any, depth: int = 0) -> Any:
        if depth > 32:
            raise OpenAPIError("a $ref chain is too deep (a cycle?)")
        if isinstance(value, Mapping):
            ref = value.get("$ref")
            if isinstance(ref, str):
                return self(self.lookup(ref), depth + 1)
            return {k: self(v, depth + 1) for k, v in value.items()}
        if isinstance(value, list):
            return [self(v, depth + 1) for v in value]
        return value

    def lookup(self, ref: str) -> Any:
        if not ref.startswith("#/"):
            raise OpenAPIError(f"only local $refs are followed, not {ref!r}")
        node: Any = self.document
        for part in ref[2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, Mapping) or part not in node:
                raise OpenAPIError(f"$ref {ref!r} points at nothing")
            node = node[part]
        return node


def _placement(auth: Auth | None, document: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """``(kind, name, secret)`` of the authentication, or None."""
    if auth is None:
        return None
    if auth.kind is not None:
        name = auth.name or ("Authorization" if auth.kind == "bearer" else "")
        if not name:
            raise OpenAPIError(f"Auth(kind={auth.kind!r}) needs name= (the header or query "
                               "parameter)")
        return auth.kind, name, auth.secret
    schemes = ((document.get("components") or {}).get("securitySchemes") or {})
    for scheme in schemes.values():
        kind = scheme.get("type")
        if kind == "apiKey" and scheme.get("in") in ("header", "query"):
            return scheme["in"], str(scheme.get("name")), auth.secret
        if kind == "http" and str(scheme.get("scheme", "")).lower() == "bearer":
            return "bearer", "Authorization", auth.secret
    raise OpenAPIError("the document has no apiKey or bearer security scheme: give "
                       "Auth(secret=..., kind='header'|'query'|'bearer', name=...)")


@dataclass
class _Operation:
    name: str
    method: str
    path: str
    description: str
    #: argument -> where it goes: 'path', 'query', 'header' or 'body'.
    places: dict[str, str]
    parameters: dict[str, Any]
    #: The body is one non-object value under the argument 'body'.
    whole_body: bool

    @classmethod
    def build(cls, method: str, path: str, operation: Mapping[str, Any],
              shared: list[Any], resolved: _Resolver) -> _Operation:
        name = operation.get("operationId") or re.sub(
            r"[^A-Za-z0-9_]+", "_", f"{method}_{path}").strip("_")
        name = re.sub(r"[^A-Za-z0-9_-]", "_", str(name))[:64]
        description = str(operation.get("summary") or operation.get("description") or
                          f"{method.upper()} {path}")
        properties: dict[str, Any] = {}
        required: list[str] = []
        places: dict[str, str] = {}
        by_key = {(p.get("in"), p.get("name")): p for p in map(resolved, shared)}
        by_key.update({(p.get("in"), p.get("name")): p
                       for p in map(resolved, operation.get("parameters") or [])})
        for (where, pname), param in by_key.items():
            if where not in ("path", "query", "header") or not pname:
                continue
            schema = dict(param.get("schema") or {"type": "string"})
            if param.get("description"):
                schema["description"] = param["description"]
            properties[pname] = schema
            places[pname] = where
            if param.get("required") or where == "path":
                required.append(pname)
        whole_body = False
        body = operation.get("requestBody")
        if isinstance(body, Mapping):
            content = body.get("content") or {}
            media: Any = content.get("application/json") or next(iter(content.values()), {})
            schema = resolved((media or {}).get("schema") or {})
            if schema.get("type") == "object" or "properties" in schema:
                for pname, prop in (schema.get("properties") or {}).items():
                    properties.setdefault(pname, prop)
                    places.setdefault(pname, "body")
                required += [r for r in schema.get("required") or [] if places.get(r) == "body"]
            else:
                whole_body = True
                properties["body"] = schema or {}
                places["body"] = "body"
                if body.get("required"):
                    required.append("body")
        parameters: dict[str, Any] = {"type": "object", "properties": properties}
        if required:
            parameters["required"] = sorted(set(required), key=required.index)
        return cls(name, method.upper(), path, description, places, parameters, whole_body)

    def tool(self, base: str, auth: tuple[str, str, str] | None, provider: str,
             timeout: float) -> Tool:
        op = self

        async def invoke(arguments: dict[str, Any], context: ToolContext) -> Any:
            unknown = sorted(set(arguments) - set(op.places))
            if unknown:
                raise ToolError(f"tool {op.name!r} has no argument {', '.join(unknown)}",
                                hint=f"its arguments: {', '.join(op.places) or 'none'}",
                                kind="ToolArgumentsError")
            missing = [r for r in op.parameters.get("required", []) if r not in arguments]
            if missing:
                raise ToolError(f"tool {op.name!r} needs {', '.join(missing)}",
                                kind="ToolArgumentsError")
            path = op.path
            query: dict[str, Any] = {}
            headers: dict[str, str] = {}
            body: dict[str, Any] = {}
            for key, value in arguments.items():
                where = op.places[key]
                if where == "path":
                    path = path.replace("{" + key + "}", quote(str(value), safe=""))
                elif where == "query":
                    query[key] = json.dumps(value) if isinstance(value, (dict, list)) \
                        else _text(value)
                elif where == "header":
                    headers[key] = _text(value)
                else:
                    body[key] = value
            if auth is not None:
                kind, name, secret = auth
                value = context.secret(secret, tool=op.name)
                if kind == "query":
                    query[name] = value
                elif kind == "bearer":
                    headers["Authorization"] = f"Bearer {value}"
                else:
                    headers[name] = value
            payload = body.get("body") if op.whole_body else (body or None)
            response = await fetch(context, op.method, base + path, params=query or None,
                                   headers=headers, json=payload, timeout=timeout,
                                   tool=op.name)
            if response.status_code >= 400:
                raise ToolError(f"{op.method} {op.path} answered {response.status_code}: "
                                f"{response.text[:300]}", hint="check the arguments",
                                kind="ToolHTTPError")
            kind_ = response.headers.get("content-type", "")
            if "json" in kind_:
                try:
                    return response.json()
                except ValueError:
                    pass
            return response.text

        return Tool(self.name, self.description, self.parameters, invoke, provider=provider,
                    kind="openapi", secrets=(auth[2],) if auth is not None else ())


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
