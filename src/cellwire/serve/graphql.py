"""Read-only GraphQL at ``/graphql`` over the served apps, their stored runs, node executions
and what they cost (tokens, cost, latency).

The same keys as the REST API: every request passes the guard as a ``viewer`` (401, 403, 429
as there); a key bound to one app sees only that app and its runs, and a run of an app the key
may not see reads as absent (``null``), never as forbidden, so ids of other apps leak nothing.
Only runs of served apps are visible: runs the store holds for other workflows (from notebooks,
say) are not served. There are no mutations.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

import strawberry
from fastapi import APIRouter, Request
from strawberry.fastapi import BaseContext, GraphQLRouter
from strawberry.scalars import JSON
from strawberry.types import Info

from cellwire.model import Workflow
from cellwire.store import RunNotFound, RunStore
from cellwire.store.usage import node_type_usage, workflow_usage

from .principal import Guard, Principal, Role

#: The most runs one ``runs`` query returns (Dify's logs page at most 100 too).
MAX_RUNS = 100


class ServedWorkflow(Protocol):
    """What GraphQL reads of a served app (``serve.apps.ServedApp`` has it)."""

    @property
    def name(self) -> str: ...

    @property
    def workflow(self) -> Workflow: ...

    @property
    def mode(self) -> str: ...


class GraphContext(BaseContext):
    """A request's caller and what it may see."""

    def __init__(self, principal: Principal, store: RunStore,
                 apps: Mapping[str, ServedWorkflow]):
        super().__init__()
        self.principal = principal
        self.store = store
        # The apps this caller may see, and which app each workflow name belongs to.
        self.apps = {name: app for name, app in apps.items()
                     if principal.app is None or principal.app == name}
        self.app_of = {app.workflow.name: name for name, app in self.apps.items()}

    def workflows(self, app: str | None) -> list[str]:
        """The workflow names whose runs the caller may read (of ``app`` only, when given)."""
        if app is None:
            return list(self.app_of)
        served = self.apps.get(app)
        return [] if served is None else [served.workflow.name]


def _ctx(info: Info[GraphContext, None]) -> GraphContext:
    return info.context


def _value(value: Any) -> Any:
    """A cell of a pandas frame as plain Python (NaN and NaT as None)."""
    if value is None:
        return None
    if hasattr(value, "to_pydatetime"):
        import pandas as pd

        return None if pd.isna(value) else value.to_pydatetime(warn=False)
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        return _value(value.item())
    return value


def _record(row: Mapping[Any, Any]) -> dict[str, Any]:
    return {str(key): value for key, value in row.items()}


def _int(value: Any) -> int:
    found = _value(value)
    return 0 if found is None else int(found)


@strawberry.type(description="One node execution of a run (and the nodes it skipped).")
class NodeExecution:
    id: str | None
    node_id: str
    node_type: str
    title: str | None
    status: str
    index: int | None
    parent_id: str | None
    started_at: datetime | None
    finished_at: datetime | None
    elapsed_ms: float | None
    retries: int
    error: str | None
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost: float | None = strawberry.field(description="null when the model is not priced")
    inputs: JSON | None
    outputs: JSON | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> NodeExecution:
        return cls(id=_value(row["execution_id"]), node_id=row["node_id"],
                   node_type=row["node_type"], title=_value(row["title"]),
                   status=str(row["status"]), index=_value(row["index"]),
                   parent_id=_value(row["parent_id"]), started_at=_when(row["started_at"]),
                   finished_at=_when(row["finished_at"]), elapsed_ms=_value(row["elapsed_ms"]),
                   retries=_int(row["retries"]), error=_value(row["error"]) or None,
                   prompt_tokens=_int(row["prompt_tokens"]),
                   completion_tokens=_int(row["completion_tokens"]),
                   total_tokens=_int(row["total_tokens"]), cost=_value(row["cost"]),
                   inputs=_value(row["inputs"]), outputs=_value(row["outputs"]))


def _when(value: Any) -> datetime | None:
    found = _value(value)
    if isinstance(found, (int, float)):
        from datetime import UTC

        return datetime.fromtimestamp(found, tz=UTC)
    return found


@strawberry.type(description="A stored run of a served app.")
class Run:
    id: str
    app: str
    status: str
    inputs: JSON | None
    outputs: JSON | None
    answer: str | None
    error: str | None
    error_node: str | None
    started_at: datetime | None
    finished_at: datetime | None
    elapsed_ms: float | None
    total_tokens: int
    total_cost: float | None = strawberry.field(description="null when a model is not priced")
    total_steps: int
    exceptions_count: int

    @strawberry.field(description="The run's node executions, in the order they finished.")
    def node_executions(self, info: Info[GraphContext, None]) -> list[NodeExecution]:
        frame = _ctx(info).store.trace(self.id)
        return [NodeExecution.from_row(_record(row)) for row in frame.to_dict("records")]

    @classmethod
    def from_row(cls, row: Mapping[str, Any], app: str) -> Run:
        return cls(id=row["run_id"], app=app, status=str(row["status"]),
                   inputs=_value(row["inputs"]), outputs=_value(row["outputs"]),
                   answer=_value(row["answer"]) or None, error=_value(row["error"]) or None,
                   error_node=_value(row["error_node"]), started_at=_when(row["started_at"]),
                   finished_at=_when(row["finished_at"]), elapsed_ms=_value(row["elapsed_ms"]),
                   total_tokens=_int(row["total_tokens"]), total_cost=_value(row["total_cost"]),
                   total_steps=_int(row["total_steps"]),
                   exceptions_count=_int(row["exceptions_count"]))


@strawberry.type(description="Tokens, cost and latency of one node type in an app's runs.")
class NodeTypeCost:
    node_type: str
    executions: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    total_cost: float
    latency_mean_ms: float | None


@strawberry.type(description="What an app's stored runs cost: sums over the priced runs.")
class Usage:
    app: str
    runs: int
    succeeded: int
    failed: int
    total_tokens: int
    total_cost: float
    unpriced_runs: int = strawberry.field(
        description="runs whose cost is unknown (not in total_cost)")
    latency_mean_ms: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    by_node_type: list[NodeTypeCost]


@strawberry.type(description="A served app.")
class App:
    name: str
    mode: str
    description: str | None

    @strawberry.field(description="The app's newest runs.")
    def runs(self, info: Info[GraphContext, None], status: str | None = None,
             limit: int = 20) -> list[Run]:
        return _runs(_ctx(info), self.name, status, limit)

    @strawberry.field(description="What the app's stored runs cost.")
    def usage(self, info: Info[GraphContext, None]) -> Usage | None:
        found = _usage(_ctx(info), self.name)
        return found[0] if found else None


def _app(served: ServedWorkflow) -> App:
    return App(name=served.name, mode=served.mode,
               description=served.workflow.description or None)


def _runs(ctx: GraphContext, app: str | None, status: str | None, limit: int) -> list[Run]:
    if not 1 <= limit <= MAX_RUNS:
        raise ValueError(f"limit must be between 1 and {MAX_RUNS}, not {limit}")
    found: list[dict[str, Any]] = []
    for workflow in ctx.workflows(app):
        frame = ctx.store.runs(limit=limit, workflow=workflow, status=status)
        found.extend(_record(row) for row in frame.to_dict("records"))
    found.sort(key=lambda row: (_when(row["started_at"]) is None, _when(row["started_at"])),
               reverse=True)
    return [Run.from_row(row, ctx.app_of[row["workflow"]]) for row in found[:limit]]


def _usage(ctx: GraphContext, app: str | None) -> list[Usage]:
    workflows = ctx.workflows(app)
    nodes: dict[str, list[NodeTypeCost]] = {}
    for n in node_type_usage(ctx.store, workflows):
        nodes.setdefault(n.workflow, []).append(NodeTypeCost(
            node_type=n.node_type, executions=n.executions, prompt_tokens=n.prompt_tokens,
            completion_tokens=n.completion_tokens, total_tokens=n.total_tokens,
            total_cost=n.total_cost, latency_mean_ms=n.latency_mean_ms))
    return [Usage(app=ctx.app_of[u.workflow], runs=u.runs, succeeded=u.succeeded,
                  failed=u.failed, total_tokens=u.total_tokens, total_cost=u.total_cost,
                  unpriced_runs=u.unpriced_runs, latency_mean_ms=u.latency_mean_ms,
                  latency_p50_ms=u.latency_p50_ms, latency_p95_ms=u.latency_p95_ms,
                  by_node_type=nodes.get(u.workflow, []))
            for u in workflow_usage(ctx.store, workflows)]


@strawberry.type
class Query:
    @strawberry.field(description="The apps this key may see.")
    def apps(self, info: Info[GraphContext, None]) -> list[App]:
        return [_app(app) for app in _ctx(info).apps.values()]

    @strawberry.field(description="One app by name; null when there is none this key may see.")
    def app(self, info: Info[GraphContext, None], name: str) -> App | None:
        served = _ctx(info).apps.get(name)
        return None if served is None else _app(served)

    @strawberry.field(description="The newest runs of the apps this key may see (of `app` "
                                  "only, when given), optionally of one status.")
    def runs(self, info: Info[GraphContext, None], app: str | None = None,
             status: str | None = None, limit: int = 20) -> list[Run]:
        return _runs(_ctx(info), app, status, limit)

    @strawberry.field(description="One run by id; null when there is none this key may see.")
    def run(self, info: Info[GraphContext, None], id: str) -> Run | None:
        ctx = _ctx(info)
        try:
            row = ctx.store.run(id)
        except RunNotFound:
            return None
        app = ctx.app_of.get(row["workflow"])
        return None if app is None else Run.from_row(row, app)

    @strawberry.field(description="What the runs of each app this key may see cost (of `app` "
                                  "only, when given).")
    def usage(self, info: Info[GraphContext, None], app: str | None = None) -> list[Usage]:
        return _usage(_ctx(info), app)


SCHEMA = strawberry.Schema(query=Query)


def graphql_router(guard: Guard, store: RunStore,
                   apps: Mapping[str, ServedWorkflow]) -> APIRouter:
    """The read-only GraphQL endpoint, to mount at ``/graphql``
    (``app.include_router(graphql_router(...), prefix="/graphql")``). ``apps`` is read on each
    request, so apps added to the mapping later are served too."""

    async def context(request: Request) -> GraphContext:
        principal = await guard.check(request, app=None, role=Role.VIEWER)
        return GraphContext(principal, store, apps)

    return GraphQLRouter(SCHEMA, context_getter=context, graphql_ide=None)


__all__ = ["MAX_RUNS", "SCHEMA", "GraphContext", "ServedWorkflow", "graphql_router"]
