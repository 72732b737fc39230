"""The registry of node types.

Built-in node modules and users register types with :func:`node_type`; third-party packages
register theirs through the ``cellwire.nodes`` entry-point group (each entry point names a
module that registers its types when imported). Built-in modules are *declared* (module ->
names) and imported on the first lookup of one of their names, so a run imports the node
modules it uses, not all of them. The model keeps a node's ``run`` callable as an opaque
value: only the engine calls it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from importlib import import_module
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from .problems import Problem, WorkflowError
from .workflow import Node, Retry

ENTRY_POINT_GROUP = "cellwire.nodes"

#: The retry policy of node types that call a model, used when a node sets none: their
#: providers leave 429, 5xx, timeouts and dropped connections to the node (each retry then
#: shows as a NodeRetry event, with the server's Retry-After honoured).
MODEL_CALL_RETRY = Retry(max_retries=3, interval=1.0, backoff=2.0, max_interval=60.0)
#: Node types whose registrations get :data:`MODEL_CALL_RETRY` unless they give their own.
MODEL_CALL_TYPES = frozenset({"llm", "question-classifier", "parameter-extractor", "agent"})


class NodeConfig(BaseModel):
    """Base of node config models: unknown keys are kept, so Dify's UI fields survive."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


ConfigT = TypeVar("ConfigT", bound=BaseModel)
RunFn = Callable[[Any], Awaitable[Any]]


def _no_declared_outputs(config: Any) -> Collection[str] | None:
    return None


@dataclass(frozen=True, slots=True)
class NodeType:
    """What the engine, the validator and the editor know about one type of node."""

    name: str
    run: RunFn
    config: type[BaseModel] = NodeConfig
    #: Names the node writes to the pool, or None when they cannot be known before a run.
    outputs: Callable[[Any], Collection[str] | None] = _no_declared_outputs
    #: The source handles a branching node chooses among; None for a node that always
    #: takes every outgoing edge.
    handles: Callable[[Any], Sequence[str]] | None = None
    #: ``(field, selector)`` pairs the node reads that the generic scan cannot see (fields
    #: not named ``*selector``), so validate() checks them too.
    references: Callable[[Any], Iterable[tuple[str, Sequence[str]]]] | None = None
    #: ``(field, text)`` for each field the node renders as Jinja (Dify's jinja2 mode); every
    #: other text field is plain, with ``{{#node.var#}}`` references only.
    jinja: Callable[[Any], Iterable[tuple[str, str]]] | None = None
    #: A container (iteration, loop) owns the nodes whose ``parent`` is its id.
    container: bool = False
    #: Where a graph starts: ``start`` at the top, ``iteration-start`` inside an iteration.
    start: bool = False
    description: str = ""
    #: The retry policy of a node of this type that sets none (``retry`` not given).
    default_retry: Retry | None = None
    #: Its outputs depend only on its config and the values it reads, and running it changes
    #: nothing outside the run: a run with a node cache answers it from there.
    pure: bool = False

    def retry_for(self, node: Node) -> Retry:
        """The node's own retry policy if it sets one (even "no retries"), else the type's
        default."""
        if self.default_retry is None or "retry" in node.model_fields_set:
            return node.retry
        return self.default_retry

    def parse_config(self, node_id: str, config: Mapping[str, Any]) -> Any:
        """Validate a node's raw config into this type's config model."""
        try:
            return self.config.model_validate(dict(config))
        except ValidationError as exc:
            raise WorkflowError(
                [
                    Problem(
                        node_id,
                        ".".join(str(p) for p in err["loc"]) or None,
                        f"{err['msg']} (got {_short(err.get('input'))})",
                        f"give '{self.name}' a valid value there",
                    )
                    for err in exc.errors()
                ]
            ) from None

    def json_schema(self) -> dict[str, Any]:
        return self.config.model_json_schema()


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Registry:
    """Node types by name; declared modules load on the first lookup of one of their names,
    entry points on the first miss.

    A *fallback* (``register(..., fallback=True)``) stands in for a type not built here (the
    placeholders of ``cellwire.nodes.unsupported``): it never replaces a real type, a real
    registration of its name shadows it, and a lookup that would answer with it loads the
    entry points first, so a plugin of that name wins.
    """

    def __init__(self) -> None:
        self._types: dict[str, NodeType] = {}
        self._fallbacks: dict[str, NodeType] = {}
        self._aliases: dict[str, str] = {}
        #: Type names and aliases -> the modules that register them when imported. Entries
        #: stay: importing a module again is a dictionary lookup, and a type unregistered
        #: after its module loaded stays unregistered.
        self._declared: dict[str, list[str]] = {}
        self._entry_points_loaded = False
        #: Counts changes of the registered types, so compiled workflows know they are stale.
        self.generation = 0

    def declare(self, module: str, names: Iterable[str]) -> None:
        """Say that importing ``module`` registers ``names`` (types and aliases): the first
        lookup of one of them imports it."""
        for name in names:
            self._declared.setdefault(name, []).append(module)

    def register(self, node_type: NodeType, *, aliases: Sequence[str] = (),
                 fallback: bool = False) -> NodeType:
        """Make ``node_type`` known by its name and ``aliases``; a ``fallback`` only answers
        for names no real type (built in or from a plugin) has."""
        if not fallback:
            # A declared module registers its names first, so this registration replaces
            # them as it did when every built-in loaded at import.
            for name in (node_type.name, *aliases):
                self._import_declared(name)
        if node_type.default_retry is None and node_type.name in MODEL_CALL_TYPES:
            node_type = replace(node_type, default_retry=MODEL_CALL_RETRY)
        self.generation += 1
        if fallback:
            self._fallbacks[node_type.name] = node_type
            for alias in aliases:
                self._aliases.setdefault(alias, node_type.name)
            return node_type
        self._types[node_type.name] = node_type
        for alias in aliases:
            self._aliases[alias] = node_type.name
        return node_type

    def unregister(self, name: str) -> None:
        """Forget the real type ``name`` (its fallback, if any, answers again); a name with
        only a fallback loses that."""
        self._import_declared(name)  # else a later lookup would import it back
        self.generation += 1
        if self._types.pop(name, None) is None:
            self._fallbacks.pop(name, None)

    def find(self, name: str) -> NodeType | None:
        found = self._real(name)
        if found is None and name in self._declared:
            self._import_declared(name)
            found = self._real(name)
        if found is None and not self._entry_points_loaded:
            self._load_entry_points()
            found = self._real(name)
        return found if found is not None else self._fallbacks.get(self._aliases.get(name, name))

    def get(self, name: str) -> NodeType:
        found = self.find(name)
        if found is None:
            raise KeyError(f"unknown node type {name!r}; known types: {', '.join(self.names())}")
        return found

    def names(self) -> list[str]:
        """Every registered type's name; imports every declared module."""
        for name in list(self._declared):
            self._import_declared(name)
        return sorted(self._types.keys() | self._fallbacks.keys())

    def _real(self, name: str) -> NodeType | None:
        return self._types.get(self._aliases.get(name, name))

    def _import_declared(self, name: str) -> None:
        # Another thread importing the module holds its import lock: this waits for it.
        for module in self._declared.get(name, ()):
            import_module(module)

    def _load_entry_points(self) -> None:
        from importlib.metadata import entry_points  # ~9 ms to import, and rarely needed

        self._entry_points_loaded = True
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            ep.load()


registry = Registry()


def node_type(
    name: str,
    *,
    config: type[BaseModel] = NodeConfig,
    outputs: Collection[str] | Callable[[Any], Collection[str] | None] | None = None,
    handles: Sequence[str] | Callable[[Any], Sequence[str]] | None = None,
    references: Callable[[Any], Iterable[tuple[str, Sequence[str]]]] | None = None,
    jinja: Callable[[Any], Iterable[tuple[str, str]]] | None = None,
    container: bool = False,
    start: bool = False,
    aliases: Sequence[str] = (),
    description: str = "",
    fallback: bool = False,
    default_retry: Retry | None = None,
    pure: bool = False,
) -> Callable[[RunFn], RunFn]:
    """Register ``async def run(ctx)`` as the node type ``name``.

    ``outputs`` lists the names the node writes (or computes them from the parsed config);
    ``handles`` makes the node a branch that picks one of those source handles;
    ``references`` yields ``(field, selector)`` for selectors in fields not named ``*selector``;
    ``fallback`` registers a placeholder that any real type or plugin of that name replaces.
    ``jinja`` yields ``(field, text)`` for the fields rendered as Jinja, so validate() checks
    their ``{{ node.var }}`` references.
    ``default_retry`` is the retry policy of nodes that set none.
    ``pure`` says the node's outputs depend only on its config and the values it reads, with
    no effect outside the run, so the node cache may answer it.
    """

    def decorate(run: RunFn) -> RunFn:
        registry.register(
            NodeType(
                name=name,
                run=run,
                config=config,
                outputs=_as_fn(outputs) if outputs is not None else _no_declared_outputs,
                handles=_as_fn(handles) if handles is not None else None,
                references=references,
                jinja=jinja,
                container=container,
                start=start,
                description=description or (run.__doc__ or "").strip().split("\n")[0],
                default_retry=default_retry,
                pure=pure,
            ),
            aliases=aliases,
            fallback=fallback,
        )
        return run

    return decorate


def _as_fn(value: Any) -> Callable[[Any], Any]:
    if callable(value):
        return value
    frozen = tuple(value)
    return lambda _config: frozen
