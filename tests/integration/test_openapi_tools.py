"""OpenAPI tools on the wire: a spec served by a real HTTP server on 127.0.0.1, its operations
as tools, and what their calls send (path, query, header and body parameters; the key from a
granted secret as a header, a query parameter or a bearer token)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

import cellwire
from cellwire.services.tools import Auth, OpenAPIError, ToolRegistry, openapi_tools

sys.path.insert(0, str(Path(__file__).parent))
from loopback_http import loopback_server

pytestmark = pytest.mark.timeout(30)

KEY = "acme-key-7f3a9c"

SPEC = {
    "openapi": "3.0.3",
    "info": {"title": "Acme Inventory", "version": "1"},
    "servers": [{"url": "http://placeholder/api"}],
    "components": {
        "securitySchemes": {"key": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
        "schemas": {"Item": {"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string"}, "count": {"type": "integer"}}}},
        "parameters": {"Verbose": {"name": "verbose", "in": "query",
                                   "schema": {"type": "boolean"}}}},
    "paths": {
        "/items/{item_id}": {
            "parameters": [{"name": "item_id", "in": "path", "required": True,
                            "schema": {"type": "integer"}, "description": "the item"}],
            "get": {"operationId": "getItem", "summary": "Read one item.",
                    "parameters": [{"$ref": "#/components/parameters/Verbose"},
                                   {"name": "X-Trace", "in": "header",
                                    "schema": {"type": "string"}}]}},
        "/items": {
            "post": {"operationId": "createItem", "summary": "Create an item.",
                     "requestBody": {"required": True, "content": {"application/json": {
                         "schema": {"$ref": "#/components/schemas/Item"}}}}}},
    },
}


def served(server, spec=SPEC) -> str:
    """Serve ``spec`` (its server pointing at ``server``) as the next answer."""
    document = json.loads(json.dumps(spec))
    document["servers"] = [{"url": f"{server.url}/api"}]
    server.answer(200, json.dumps(document), Content_Type="application/json")
    return f"{server.url}/openapi.json"


def tool_run(tools, name: str, parameters: dict, secrets=None):
    wf = cellwire.Workflow("openapi")
    wf.add_node("start", "start")
    wf.add_node("t", "tool", after="start", provider_id="acme_inventory", tool_name=name,
                tool_parameters={k: {"type": "constant", "value": v}
                                 for k, v in parameters.items()})
    wf.add_node("end", "end", after="t", outputs=[
        {"variable": "json", "value_selector": ["t", "json"]},
        {"variable": "text", "value_selector": ["t", "text"]}])
    return wf.run(runtime=cellwire.Runtime(tools=ToolRegistry(tools)), secrets=secrets,
                  store=False)


def test_operations_become_tools_with_their_parameters():
    with loopback_server() as server:
        tools = {t.name: t for t in openapi_tools(served(server), auth=Auth(secret="ACME_KEY"))}
    assert set(tools) == {"getItem", "createItem"}
    get = tools["getItem"]
    assert get.provider == "acme_inventory" and get.kind == "openapi"
    assert get.description == "Read one item."
    assert get.parameters["properties"]["item_id"] == {"type": "integer",
                                                       "description": "the item"}
    assert get.parameters["properties"]["verbose"] == {"type": "boolean"}
    assert get.parameters["required"] == ["item_id"]
    create = tools["createItem"]
    assert create.parameters["required"] == ["name"]
    assert create.secrets == ("ACME_KEY",)


def test_a_call_sends_path_query_header_and_the_key_from_the_spec_scheme():
    with loopback_server() as server:
        tools = openapi_tools(served(server), auth=Auth(secret="ACME_KEY"))
        server.answer(200, json.dumps({"id": 42, "name": "bolt"}),
                      Content_Type="application/json")
        result = tool_run(tools, "getItem", {"item_id": 42, "verbose": True,
                                             "X-Trace": "t-1"}, secrets={"ACME_KEY": KEY})
        assert result.ok, result.error
        assert result.outputs["json"] == [{"id": 42, "name": "bolt"}]
        sent = server.requests[-1]
        assert (sent.method, sent.path) == ("GET", "/api/items/42")
        assert sent.query == {"verbose": ["true"]}
        assert sent.header("X-API-Key") == KEY
        assert sent.header("X-Trace") == "t-1"
        # The key never shows in what the run keeps.
        assert KEY not in json.dumps(result.trace.to_dict(orient="records"), default=str)


def test_a_json_body_is_built_from_the_arguments():
    with loopback_server() as server:
        tools = openapi_tools(served(server), auth=Auth(secret="ACME_KEY", kind="bearer"))
        server.answer(201, json.dumps({"id": 7}), Content_Type="application/json")
        result = tool_run(tools, "createItem", {"name": "nut", "count": 3},
                          secrets={"ACME_KEY": KEY})
        assert result.ok, result.error
        sent = server.requests[-1]
        assert (sent.method, sent.path) == ("POST", "/api/items")
        assert json.loads(sent.body) == {"name": "nut", "count": 3}
        assert sent.header("Authorization") == f"Bearer {KEY}"
        assert sent.header("X-API-Key") is None


def test_a_key_in_the_query():
    with loopback_server() as server:
        tools = openapi_tools(served(server), auth=Auth(secret="ACME_KEY", kind="query",
                                                        name="api_key"))
        server.answer(200, "plain text", Content_Type="text/plain")
        result = tool_run(tools, "getItem", {"item_id": 1}, secrets={"ACME_KEY": KEY})
        assert result.ok, result.error
        assert result.outputs["text"] == "plain text"
        assert server.requests[-1].query == {"api_key": [KEY]}


def test_a_key_that_was_not_granted_is_never_taken():
    with loopback_server() as server:
        tools = openapi_tools(served(server), auth=Auth(secret="ACME_KEY"))
        calls = len(server.requests)
        result = tool_run(tools, "getItem", {"item_id": 1},
                          secrets={"OTHER_SECRET": "other-value-123"})
        assert not result.ok
        assert "needs the secret 'ACME_KEY', which was not granted" in result.error
        assert "--secret ACME_KEY" in result.error
        assert len(server.requests) == calls  # nothing was sent


def test_http_errors_and_bad_arguments_are_tool_errors():
    with loopback_server() as server:
        tools = openapi_tools(served(server))
        server.answer(404, json.dumps({"error": "no such item"}),
                      Content_Type="application/json")
        result = tool_run(tools, "getItem", {"item_id": 9})
        assert not result.ok and "GET /items/{item_id} answered 404" in result.error
        missing = tool_run(tools, "getItem", {"verbose": True})
        assert "tool 'getItem' needs item_id" in missing.error
        unknown = tool_run(tools, "getItem", {"item_id": 1, "colour": "red"})
        assert "has no argument colour" in unknown.error


def test_documents_that_cannot_become_tools_say_why():
    with pytest.raises(OpenAPIError, match="not an OpenAPI 3 document"):
        openapi_tools({"swagger": "2.0"})
    with pytest.raises(OpenAPIError, match="names no server"):
        openapi_tools({"openapi": "3.1.0", "paths": {}})
    with pytest.raises(OpenAPIError, match="no apiKey or bearer security scheme"):
        openapi_tools({"openapi": "3.1.0", "servers": [{"url": "http://x"}], "paths": {}},
                      auth=Auth(secret="K"))
