"""The workflow as data: nodes, edges, variables. Four editors (magics, widget, Python, DSL
files) change the same :class:`Workflow`; running it is the engine's job."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from importlib import import_module
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from .problems import Problem, WorkflowError

if TYPE_CHECKING:
    import pandas as pd

ErrorStrategy = Literal["fail", "default-value", "fail-branch"]
Mode = Literal["workflow", "advanced-chat"]

#: The handle every ordinary node leaves through, and the fail branch's handle.
SOURCE = "source"
FAIL_BRANCH = "fail-branch"


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Retry(_Data):
    """Retries before the node's error strategy applies: exponential backoff with jitter."""

    max_retries: int = Field(0, ge=0, le=100)
    interval: float = Field(1.0, ge=0, description="seconds before the first retry")
    backoff: float = Field(2.0, ge=1)
    max_interval: float = Field(60.0, ge=0)
    jitter: bool = True


class Position(_Data):
    x: float = 0.0
    y: float = 0.0


class Node(_Data):
    """One step of a workflow. ``config`` holds the type's own fields, named as in Dify."""

    id: str = Field(pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    type: str
    title: str = ""
    description: str = ""
    config: dict[str, Any] = Field(default_factory=dict)
    #: The iteration or loop this node runs inside, if any.
    parent: str | None = None
    position: Position | None = None
    error_strategy: ErrorStrategy = "fail"
    #: Outputs to use when the node fails and ``error_strategy`` is ``default-value``.
    default_value: dict[str, Any] = Field(default_factory=dict)
    retry: Retry = Field(default_factory=Retry)
    #: Seconds a single attempt may take; None for no limit. (Not ``timeout``: that name is
    #: the http-request node's own Dify field.)
    max_time: float | None = Field(None, gt=0)
    #: Editor-side facts (cell id, size, z-index) that round-trip but never change a run.
    meta: dict[str, Any] = Field(default_factory=dict)


class Edge(_Data):
    """A connection from ``source`` (leaving through ``source_handle``) to ``target``."""

    source: str
    target: str
    source_handle: str = SOURCE

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.source, self.source_handle, self.target)


class EnvironmentVariable(_Data):
    name: str
    value: Any = None
    value_type: Literal["string", "number", "secret"] = "string"
    description: str = ""


class ConversationVariable(_Data):
    name: str
    value_type: str = "string"
    value: Any = None
    description: str = ""


class Note(_Data):
    """A canvas note: kept with the workflow, never run."""

    id: str
    text: str = ""
    position: Position | None = None
    meta: dict[str, Any] = Field(default_factory=dict)


Upstream = str | tuple[str, str]


class Workflow(_Data):
    """A workflow: build it in Python, load it from a file, edit it in the notebook."""

    name: str = "workflow"
    mode: Mode = "workflow"
    description: str = ""
    nodes: dict[str, Node] = Field(default_factory=dict)
    edges: list[Edge] = Field(default_factory=list)
    environment: list[EnvironmentVariable] = Field(default_factory=list)
    conversation_variables: list[ConversationVariable] = Field(default_factory=list)
    features: dict[str, Any] = Field(default_factory=dict)
    notes: list[Note] = Field(default_factory=list)
    #: Facts about the app (icon, original DSL version) kept for round trips.
    meta: dict[str, Any] = Field(default_factory=dict)

    # Where it came from, never written to a file: see `trusted`.
    _origin: str | None = PrivateAttr(None)
    _trusted: bool = PrivateAttr(True)
    # Tools this workflow's runs get (functions, Tool objects); never written to a file.
    _tools: list[Any] = PrivateAttr(default_factory=list)

    def __init__(self, name: str = "workflow", /, **data: Any) -> None:
        # One mapping: the pydantic plugin types super() as _Data, which declares no fields.
        super().__init__(**{"name": name, **data})

    # -- trust ---------------------------------------------------------------------------

    @property
    def trusted(self) -> bool:
        """Whether its code may run in the kernel and its HTTP nodes reach private addresses.

        True for a workflow built in Python or in cells; False for one read from a file or
        received over the network, unless the user trusted it (``cellwire trust FILE``,
        ``load(path, trusted=True)``): its code nodes then run in the sandbox.
        """
        return self._trusted

    @property
    def origin(self) -> str | None:
        """The file (or request) an untrusted or loaded workflow came from; None if built here."""
        return self._origin

    @property
    def tools(self) -> list[Any]:
        """Tools every run of this workflow gets besides the registered ones (``@tool``
        functions, :class:`cellwire.services.tools.Tool` objects, OpenAPI or MCP tools):
        ``wf.tools = [weather, *mcp_tools("servers.json")]``. Not saved with the workflow."""
        return self._tools

    @tools.setter
    def tools(self, tools: list[Any]) -> None:
        self._tools = list(tools)

    def mark_origin(self, origin: str | None, *, trusted: bool) -> Workflow:
        """Record where the workflow came from and whether its contents are trusted."""
        self._origin = origin
        self._trusted = trusted
        return self

    def __eq__(self, other: object) -> bool:
        # Equal as data: where a workflow came from (its trust) is not part of what it is.
        if not isinstance(other, Workflow):
            return NotImplemented
        return type(self) is type(other) and self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]  # mutable, as every pydantic model

    def code_nodes(self) -> list[str]:
        """Ids of the nodes that run code (code nodes, in Python or JavaScript)."""
        return [node.id for node in self.nodes.values() if node.type == "code"]

    # -- building ------------------------------------------------------------------------

    def add_node(
        self,
        id: str,
        type: str,
        *,
        after: Upstream | Sequence[Upstream] | None = None,
        title: str = "",
        parent: str | None = None,
        error_strategy: ErrorStrategy = "fail",
        default_value: dict[str, Any] | None = None,
        retry: Retry | dict[str, Any] | int | None = None,
        max_time: float | None = None,
        **config: Any,
    ) -> Node:
        """Add (or replace) node ``id`` of ``type``; ``after`` connects it to upstream nodes.

        ``after`` takes node ids, or ``(node_id, handle)`` pairs for a branch's handle.
        ``retry`` takes a :class:`Retry`, its fields as a dict, or a number of retries (``0``
        for none); ``None`` leaves the node type's default policy.
        """
        if isinstance(retry, int):
            retry = Retry(max_retries=retry)
        # Unset when not given, so the node type's default retry policy applies.
        set_retry = {} if retry is None else {"retry": Retry.model_validate(retry)}
        node = Node(
            id=id,
            type=type,
            title=title or id,
            config=config,
            parent=parent,
            error_strategy=error_strategy,
            default_value=default_value or {},
            max_time=max_time,
            **set_retry,
        )
        if id in self.nodes:
            old = self.nodes[id]
            node.position, node.meta = old.position, old.meta
        self.nodes[id] = node
        for upstream in _as_upstreams(after):
            source, handle = (upstream, SOURCE) if isinstance(upstream, str) else upstream
            self.connect(source, id, handle)
        return node

    def node(self, id: str) -> Node:
        try:
            return self.nodes[id]
        except KeyError:
            known = ", ".join(self.nodes) or "none"
            raise KeyError(f"no node {id!r} in workflow {self.name!r} (nodes: {known})") from None

    def update_node(self, id: str, **config: Any) -> Node:
        """Change some config fields of a node; the rest stay."""
        node = self.node(id)
        node.config = {**node.config, **config}
        return node

    def remove_node(self, id: str) -> None:
        """Remove a node, its edges and, for a container, everything inside it."""
        doomed = {id, *self.descendants(id)}
        for node_id in doomed:
            self.nodes.pop(node_id, None)
        self.edges = [e for e in self.edges if e.source not in doomed and e.target not in doomed]

    def connect(self, source: str, target: str, handle: str = SOURCE) -> Edge:
        """Add the edge ``source --handle--> target`` unless it is already there."""
        edge = Edge(source=source, target=target, source_handle=handle)
        if all(e.key != edge.key for e in self.edges):
            self.edges.append(edge)
        return edge

    def disconnect(self, source: str, target: str, handle: str | None = None) -> None:
        self.edges = [
            e
            for e in self.edges
            if not (e.source == source and e.target == target and handle in (None, e.source_handle))
        ]

    # -- reading -------------------------------------------------------------------------

    def children(self, container_id: str | None) -> list[Node]:
        """The nodes directly inside ``container_id`` (None: the top level)."""
        return [n for n in self.nodes.values() if n.parent == container_id]

    def descendants(self, container_id: str) -> list[str]:
        found: list[str] = []
        for child in self.children(container_id):
            found.append(child.id)
            found.extend(self.descendants(child.id))
        return found

    def validate_problems(self) -> list[Problem]:
        """Every problem :func:`cellwire.model.validate.validate` finds."""
        from .validate import validate

        return validate(self)

    def check(self) -> None:
        """Raise :class:`WorkflowError` if the workflow has errors (warnings pass)."""
        errors = [p for p in self.validate_problems() if p.level == "error"]
        if errors:
            raise WorkflowError(errors, f"workflow {self.name!r} is not valid")

    # -- running: the layers above provide it (``cellwire.api``), the model imports none --

    async def arun(self, inputs: dict[str, Any] | None = None, /, **kwargs: Any) -> Any:
        """Run the workflow and return a :class:`cellwire.RunResult`.

        Inputs go by name (``wf.arun(name="Ada")``) or as a dict; ``sys.*`` keys in the dict
        set system variables (``{"sys.query": "hi"}``). Run options: ``concurrency``,
        ``max_steps``, ``max_time``, ``store``, ``runtime``.
        """
        return await _provided("arun")(self, inputs, **kwargs)

    def run(self, inputs: dict[str, Any] | None = None, /, **kwargs: Any) -> Any:
        """Like :meth:`arun`, but blocking; works inside a notebook's running event loop."""
        return _provided("run")(self, inputs, **kwargs)

    async def amap(self, inputs: Any, /, **kwargs: Any) -> pd.DataFrame:
        """Run the workflow once per row of ``inputs`` (a DataFrame or a list of dicts); a
        DataFrame of the inputs, outputs, status, error, run_id, latency, tokens and cost.

        Options: ``model``, ``concurrency`` (rows at once, 8), ``store``, ``runtime``,
        ``cache``, ``on_error`` (``"keep"`` or ``"raise"``), ``progress`` (a bar by default),
        ``client`` (a Dask client to run the rows on), ``columns`` (``{column: input}``),
        ``batch_id`` (resume a stored batch), ``retry`` (an earlier result: rerun its failed
        rows); see :func:`cellwire.scale.amap`.
        """
        result: pd.DataFrame = await _provided("amap")(self, inputs, **kwargs)
        return result

    def map(self, inputs: Any, /, **kwargs: Any) -> pd.DataFrame:
        """Like :meth:`amap`, but blocking; works inside a notebook's running event loop."""
        result: pd.DataFrame = _provided("map")(self, inputs, **kwargs)
        return result

    def widget(self) -> Any:
        """The visual editor of this workflow, for a notebook; its edits change this object."""
        return _provided("widget")(self)

    def to_frame(self) -> pd.DataFrame:
        """The nodes as a DataFrame: id, type, title, parent, upstream ids."""
        import pandas as pd

        rows = [
            {
                "id": n.id,
                "type": n.type,
                "title": n.title,
                "parent": n.parent,
                "after": [e.source for e in self.edges if e.target == n.id],
            }
            for n in self.nodes.values()
        ]
        return pd.DataFrame(rows, columns=["id", "type", "title", "parent", "after"])


def _as_upstreams(after: Upstream | Sequence[Upstream] | None) -> Iterable[Upstream]:
    if after is None:
        return ()
    if isinstance(after, str):
        return (after,)
    if isinstance(after, tuple):
        # A tuple is one (node_id, handle) pair; several upstreams come as a list.
        return (after,)
    return after


#: How a workflow runs, maps and shows itself, given by the layers above the model
#: (``cellwire.api`` provides them, imported on the first call), so the model imports none.
_PROVIDED: dict[str, Callable[..., Any]] = {}
#: Modules that call :func:`provide` when imported; imported when an action is missing.
_PROVIDERS: list[str] = []


def provide(**actions: Callable[..., Any]) -> None:
    """Give :class:`Workflow` its ``run``, ``arun``, ``map``, ``amap`` and ``widget``."""
    _PROVIDED.update(actions)


def provide_on_import(module: str) -> None:
    """Name a module that calls :func:`provide` when imported, to import on first need."""
    _PROVIDERS.append(module)


def _provided(name: str) -> Callable[..., Any]:
    if name not in _PROVIDED:
        for module in _PROVIDERS:
            import_module(module)
    try:
        return _PROVIDED[name]
    except KeyError:
        raise RuntimeError(f"Workflow.{name}() needs cellwire's runner: import cellwire "
                           "first") from None
