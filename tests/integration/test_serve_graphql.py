"""Read-only GraphQL over served apps, their runs, node executions and costs: a real store
filled by real runs (scripted model), the real guard, a real uvicorn server."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from asgi_server import running
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from cellwire.api import run as run_workflow
from cellwire.model import Workflow
from cellwire.serve.auth import KeyGuard
from cellwire.serve.errors import ServeError
from cellwire.serve.graphql import graphql_router
from cellwire.store import RunStore
from cellwire.store.keys import create_key

SCRIPTED = {"provider": "scripted", "name": "echo", "mode": "chat"}


@dataclass(frozen=True)
class App:
    """A served app as the server keeps it (``serve.apps.ServedApp`` has these fields)."""

    name: str
    workflow: Workflow
    mode: str = "workflow"


def ask_workflow(name: str) -> Workflow:
    wf = Workflow(name, description=f"{name} answers")
    wf.add_node("start", "start", variables=[{"variable": "query", "type": "paragraph"}])
    wf.add_node("llm", "llm", after="start", model=SCRIPTED,
                prompt_template=[{"role": "user", "text": "{{#start.query#}}"}])
    wf.add_node("end", "end", after="llm",
                outputs=[{"variable": "text", "value_selector": ["llm", "text"]}])
    return wf


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    db = tmp_path_factory.mktemp("graphql") / "runs.db"
    store = RunStore(db)
    apps = {"ask": App("ask", ask_workflow("ask")), "other": App("other", ask_workflow("other"))}
    runs: dict[str, str] = {}
    for text in ("one two three", "four five"):
        result = run_workflow(apps["ask"].workflow, {"query": text}, store=store)
        assert result.ok, result.error
        runs.setdefault("ask", result.run_id)
    result = run_workflow(apps["other"].workflow, {"query": "six"}, store=store)
    assert result.ok, result.error
    runs["other"] = result.run_id
    # A run of a workflow the server does not serve (from a notebook, say).
    runs["unserved"] = run_workflow(ask_workflow("notebook"), {"query": "x"}, store=store).run_id
    assert store.flush(30)
    keys = {
        "viewer": create_key(store, "viewer")[1],
        "bound": create_key(store, "viewer", app="other")[1],
    }
    app = FastAPI()

    @app.exception_handler(ServeError)
    async def serve_error(request: Request, exc: ServeError) -> JSONResponse:
        return JSONResponse(exc.body(), exc.status, headers=exc.headers)

    app.include_router(graphql_router(KeyGuard(store), store, apps), prefix="/graphql")
    with running(app) as url:
        yield url, {**keys, **{f"run:{k}": v for k, v in runs.items()}}
    store.close()


def query(url: str, key: str | None, text: str, **variables: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{url}/graphql", json={"query": text, "variables": variables},
                      headers=headers, timeout=30)


def data(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


def test_apps_runs_node_executions_and_costs(served: tuple[str, dict[str, str]]) -> None:
    url, known = served
    key = known["viewer"]
    apps = data(query(url, key, "{ apps { name mode description } }"))["apps"]
    assert apps == [{"name": "ask", "mode": "workflow", "description": "ask answers"},
                    {"name": "other", "mode": "workflow", "description": "other answers"}]

    runs = data(query(url, key, """
        { runs { id app status totalTokens totalCost elapsedMs startedAt outputs } }"""))["runs"]
    # Newest first; the unserved workflow's run is not among them.
    assert [r["app"] for r in runs] == ["other", "ask", "ask"]
    assert known["run:unserved"] not in {r["id"] for r in runs}
    assert {r["status"] for r in runs} == {"succeeded"}
    # Scripted tokens are whitespace words: the prompt's and the echo's.
    assert [r["totalTokens"] for r in runs] == [2, 4, 6]
    assert runs[2]["outputs"] == {"text": "one two three"}
    assert all(r["elapsedMs"] > 0 and r["totalCost"] == 0.0 for r in runs)

    one = data(query(url, key, """
        query($id: String!) { run(id: $id) { id app nodeExecutions {
            nodeId nodeType status promptTokens completionTokens totalTokens cost elapsedMs
        } } }""", id=known["run:ask"]))["run"]
    assert one["id"] == known["run:ask"] and one["app"] == "ask"
    nodes = {n["nodeId"]: n for n in one["nodeExecutions"]}
    assert list(nodes) == ["start", "llm", "end"]
    assert (nodes["llm"]["nodeType"], nodes["llm"]["promptTokens"],
            nodes["llm"]["completionTokens"], nodes["llm"]["totalTokens"]) == ("llm", 3, 3, 6)
    assert nodes["start"]["totalTokens"] == 0 and nodes["llm"]["cost"] == 0.0

    usage = data(query(url, key, """
        { usage { app runs succeeded failed totalTokens totalCost unpricedRuns latencyP50Ms
                  latencyP95Ms byNodeType { nodeType executions totalTokens } } }"""))["usage"]
    by_app = {u["app"]: u for u in usage}
    assert set(by_app) == {"ask", "other"}
    assert (by_app["ask"]["runs"], by_app["ask"]["succeeded"], by_app["ask"]["failed"],
            by_app["ask"]["totalTokens"], by_app["ask"]["unpricedRuns"]) == (2, 2, 0, 10, 0)
    assert by_app["ask"]["latencyP50Ms"] <= by_app["ask"]["latencyP95Ms"]
    llm = [n for n in by_app["ask"]["byNodeType"] if n["nodeType"] == "llm"]
    assert llm == [{"nodeType": "llm", "executions": 2, "totalTokens": 10}]

    nested = data(query(url, key, """
        { app(name: "ask") { name runs(limit: 1) { id } usage { runs } } }"""))["app"]
    assert nested["usage"] == {"runs": 2} and len(nested["runs"]) == 1


def test_a_bound_key_sees_only_its_app(served: tuple[str, dict[str, str]]) -> None:
    url, known = served
    key = known["bound"]
    assert data(query(url, key, "{ apps { name } }"))["apps"] == [{"name": "other"}]
    assert data(query(url, key, '{ app(name: "ask") { name } }'))["app"] is None
    runs = data(query(url, key, "{ runs { app } }"))["runs"]
    assert runs == [{"app": "other"}]
    assert data(query(url, key, '{ runs(app: "ask") { id } }'))["runs"] == []
    # A run of another app reads as absent, by id or by a prefix of it.
    for ref in (known["run:ask"], known["run:ask"][:8]):
        assert data(query(url, key, "query($id: String!) { run(id: $id) { id } }",
                          id=ref))["run"] is None
    assert [u["app"] for u in data(query(url, key, "{ usage { app } }"))["usage"]] == ["other"]


def test_graphql_needs_a_key_and_is_read_only(served: tuple[str, dict[str, str]]) -> None:
    url, known = served
    missing = query(url, None, "{ apps { name } }")
    assert missing.status_code == 401 and missing.json()["code"] == "unauthorized"
    assert query(url, "app-wrong", "{ apps { name } }").status_code == 401
    mutation = query(url, known["viewer"], "mutation { x }")
    assert mutation.status_code in (200, 400) and mutation.json()["errors"]
    too_many = query(url, known["viewer"], "{ runs(limit: 1000) { id } }")
    assert "limit must be between 1 and 100" in too_many.json()["errors"][0]["message"]
