"""HTTP for tools: the run's shared client, every hop checked by the run's network policy,
the answer read up to the policy's size cap."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from cellwire.services.http import NETWORK, AddressRefused, NetworkPolicy

from .context import ToolContext
from .tool import ToolError

_PORTS = {"http": 80, "https": 443}
_MAX_REDIRECTS = 5


async def fetch(context: ToolContext, method: str, url: str, *,
                params: Mapping[str, Any] | None = None,
                headers: Mapping[str, str] | None = None, json: Any = None,
                content: bytes | str | None = None, timeout: float = 30.0,
                tool: str = "") -> httpx.Response:
    """Send one request for ``tool``; the response with its body read. Network failures,
    refused addresses and oversized answers are :class:`ToolError` s."""
    client: httpx.AsyncClient = context.client()
    policy = context.network or NetworkPolicy.trusted()
    who = f"tool {tool!r}: " if tool else ""
    try:
        # Checked before the client sees it: httpx reads 'file:///x' as the relative '/x'.
        scheme = httpx.URL(url).scheme
        request = client.build_request(method, url, params=params, headers=headers, json=json,
                                       content=content, timeout=timeout)
    except (httpx.InvalidURL, ValueError) as exc:
        raise ToolError(f"{who}invalid URL {url!r}: {exc}", hint="give an http(s) URL",
                        kind="ToolArgumentsError") from None
    if scheme not in _PORTS:
        raise ToolError(f"{who}cannot fetch {scheme or 'relative'!r} URLs ({url!r})",
                        hint="give an absolute http(s) URL", kind="ToolArgumentsError")
    try:
        for _hop in range(_MAX_REDIRECTS + 1):
            target = request.url
            if target.scheme not in _PORTS:
                raise ToolError(f"{who}cannot fetch {target.scheme!r} URLs",
                                hint="give an http(s) URL", kind="ToolArgumentsError")
            await policy.addresses(target.host, target.port or _PORTS[target.scheme])
            request.extensions = {**request.extensions, NETWORK: policy}
            response = await client.send(request, stream=True, follow_redirects=False)
            if response.next_request is None:
                break
            await response.aclose()
            request = response.next_request
        else:
            raise ToolError(f"{who}{url} redirected more than {_MAX_REDIRECTS} times",
                            kind="ToolHTTPError")
        try:
            limit = policy.max_text_size
            size = 0
            chunks = []
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    raise ToolError(f"{who}{url} answered more than {limit} bytes",
                                    hint="ask for less", kind="ToolResultTooLarge")
                chunks.append(chunk)
            response._content = b"".join(chunks)  # what .text and .json() read
        finally:
            await response.aclose()
    except AddressRefused as exc:
        raise ToolError(f"{who}refused to send {method} {request.url}: {exc}", hint=exc.fix,
                        kind="AddressRefused") from None
    except httpx.TimeoutException:
        raise ToolError(f"{who}{method} {request.url} timed out after {timeout:g} s",
                        kind="ToolTimeout") from None
    except httpx.HTTPError as exc:
        raise ToolError(f"{who}{method} {request.url} failed: {exc or type(exc).__name__}",
                        hint="check that the server is up and the URL is right",
                        kind="ToolHTTPError") from None
    return response
