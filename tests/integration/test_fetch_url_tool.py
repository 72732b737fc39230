"""The built-in ``fetch_url`` tool on the wire: a page from a real HTTP server on 127.0.0.1
fetched through the run's shared client (redirects followed, HTML made text), HTTP errors and
oversized answers as tool errors, and the run's network policy keeping an untrusted
workflow's tool calls off loopback until the file is trusted."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import cellwire
from cellwire.services.http import NetworkPolicy
from cellwire.services.tools import ToolContext, ToolError, ToolRegistry
from cellwire.services.tools.builtins import fetch_url

sys.path.insert(0, str(Path(__file__).parent))
from loopback_http import loopback_server

pytestmark = pytest.mark.timeout(60)

PAGE = ("<html><head><title>Shop</title><style>p{color:red}</style><script>var x=1;</script>"
        "</head><body><h1>Opening hours</h1><p>Mon&ndash;Fri 9&ndash;17</p></body></html>")


def fetcher(url: str) -> cellwire.Workflow:
    wf = cellwire.Workflow("fetcher")
    wf.add_node("start", "start")
    wf.add_node("get", "tool", after="start", provider_id="builtin", tool_name="fetch_url",
                tool_parameters={"url": {"type": "constant", "value": url}})
    wf.add_node("end", "end", after="get",
                outputs=[{"variable": "text", "value_selector": ["get", "text"]}])
    return wf


def test_a_page_is_fetched_as_text_following_redirects():
    with loopback_server() as server:
        server.answer(302, Location="/hours")
        server.answer(200, PAGE, Content_Type="text/html; charset=utf-8")
        server.answer(200, '{"open": true}', Content_Type="application/json")
        result = fetcher(f"{server.url}/start").run(store=False)
        assert result.ok, result.error
        assert result.outputs == {"text": "Shop Opening hours Mon–Fri 9–17"}
        assert [r.path for r in server.requests] == ["/start", "/hours"]
        # Anything but HTML comes back as it is.
        raw = fetcher(f"{server.url}/data.json").run(store=False)
        assert raw.outputs == {"text": '{"open": true}'}


def test_http_errors_and_oversized_answers_are_tool_errors():
    with loopback_server() as server:
        server.answer(404, "gone", Content_Type="text/plain")
        failed = fetcher(f"{server.url}/missing").run(store=False)
        assert not failed.ok and failed.error_node == "get"
        assert f"GET {server.url}/missing answered 404" in failed.error

        server.answer(200, "x" * 5000, Content_Type="text/plain")
        registry = ToolRegistry([fetch_url])
        small = ToolContext(network=NetworkPolicy(max_text_size=1000))
        with pytest.raises(ToolError, match="answered more than 1000 bytes") as caught:
            cellwire.runner.blocking(registry.call(fetch_url, {"url": f"{server.url}/big"},
                                                   small))
        assert caught.value.kind == "ToolResultTooLarge"
        for url, scheme in [("file:///etc/passwd", "'file'"), ("/etc/passwd", "'relative'")]:
            with pytest.raises(ToolError, match=f"cannot fetch {scheme} URLs"):
                cellwire.runner.blocking(registry.call(fetch_url, {"url": url}, small))


def test_an_untrusted_workflows_tool_cannot_reach_loopback_until_trusted(tmp_path: Path):
    with loopback_server() as server:
        flow = tmp_path / "fetcher.yml"
        flow.write_text(cellwire.dump(fetcher(f"{server.url}/inside")))
        refused = cellwire.load(flow).run(store=False)
        assert not refused.ok and refused.error_node == "get"
        assert "refused to send GET" in refused.error and "127.0.0.1" in refused.error
        assert server.requests == []  # nothing left the process
        server.answer(200, "inside", Content_Type="text/plain")
        trusted = cellwire.load(flow, trusted=True).run(store=False)
        assert trusted.outputs == {"text": "inside"}, trusted.error
