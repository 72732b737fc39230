"""The one YAML reader of cellwire, for workflow files, ``%%workflow`` cell bodies and
``providers.yaml`` alike: YAML 1.2 booleans, size-limited, safe tags only, no alias bombs.

YAML 1.1 (``yaml.safe_load``) reads ``yes``/``no``/``on``/``off`` as booleans; YAML 1.2 and
Dify read them as strings, so everything cellwire reads goes through :func:`parse_yaml`.

A plain document (no anchors, aliases or tags: every file cellwire writes) is built straight
from the parser's events in one pass, its nesting depth checked as it goes: no node graph and
no second parse. Anything else gets the full check first: ``yaml.safe_load`` builds aliased
values as shared objects, so a "billion laughs" document loads quickly and then explodes in
whatever walks it next (validation, JSON, the engine). We therefore measure the document as it
would be once every alias is expanded, before constructing any Python objects, and refuse it
past a fixed budget; likewise nesting depth. Then PyYAML's constructor builds it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import yaml
from yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    Event,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
)
from yaml.nodes import ScalarNode

from .problems import Problem, WorkflowError

#: The largest file or text we parse.
MAX_BYTES = 10 * 1024 * 1024
#: How many more YAML nodes alias expansion may add on top of the document's own.
MAX_ALIAS_EXPANSION = 1_000_000
#: How deeply lists and mappings may nest. libyaml's composer recurses in C, so a document
#: nested tens of thousands deep would crash the process instead of raising.
MAX_DEPTH = 100

_BOOL = "tag:yaml.org,2002:bool"
#: libyaml's scanner refuses flow nesting past its own limit (1000 in the libyaml that PyYAML
#: 6.0.4 bundles) while scanning ahead of the events, so it can stop a document before
#: :func:`_check_events` has counted :data:`MAX_DEPTH`; this is its ``problem`` then.
_LIBYAML_TOO_DEEP = "exceeded maximum nesting depth"


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """The safe loader with YAML 1.2 booleans: only true/false, so a node named ``no`` or a
    branch handle ``yes`` stays a string (YAML 1.1 reads yes/no/on/off as booleans)."""

    yaml_implicit_resolvers: ClassVar[dict[Any, list[Any]]] = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))


def _fail(source: str | None, message: str, hint: str) -> WorkflowError:
    where = source or "the document"
    return WorkflowError([Problem(None, None, message, hint)], f"{where}: cannot be read")


def read_text(path: str | Path) -> str:
    """The text of ``path``; refuses files over :data:`MAX_BYTES` before reading them.

    Raises ``OSError`` when the file cannot be read, :class:`WorkflowError` when it is too
    large or not UTF-8.
    """
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise _too_large(str(path), size)
    with path.open("rb") as fh:
        raw = fh.read(MAX_BYTES + 1)
    if len(raw) > MAX_BYTES:  # the file grew after stat()
        raise _too_large(str(path), len(raw))
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _fail(str(path), f"not UTF-8 text ({exc.reason} at byte {exc.start})",
                    "save the file as UTF-8") from None


def _too_large(source: str | None, size: int) -> WorkflowError:
    return _fail(source, f"{size / 1_048_576:.1f} MB is more than the limit of "
                 f"{MAX_BYTES // 1_048_576} MB", "workflow files are small; move large data "
                 "out of the file (e.g. into a knowledge base or an input)")


def parse_yaml(text: str | bytes, source: str | None = None) -> Any:
    """Parse one YAML document safely; every failure is a :class:`WorkflowError`."""
    size = len(text) if isinstance(text, bytes) else len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_BYTES:
        raise _too_large(source, size)
    try:
        try:
            return _build(text, source)
        except _Unusual:
            _check_events(text, source)
            return yaml.load(text, Loader=_Loader)  # a SafeLoader: plain data only
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        message = exc.problem or exc.context or "malformed"
        raise _fail(source, f"not valid YAML: {where}{message}",
                    "fix the YAML syntax there (indentation, quotes, colons)") from None
    except yaml.YAMLError as exc:
        raise _fail(source, f"not valid YAML: {exc}", "fix the YAML syntax") from None
    except RecursionError:
        raise _fail(source, "the YAML is nested too deeply", "flatten the document") from None


class _Unusual(Exception):
    """The document has what :func:`_build` leaves to the full check and PyYAML's
    constructor: an anchor, alias or tag, a merge key, a key that is a list or mapping, an
    implicit tag without a safe constructor, or a second document."""


_STR = "tag:yaml.org,2002:str"
#: The tags plain scalars resolve to that :func:`_build` constructs (with PyYAML's own
#: constructors); ``merge`` and ``value`` are left to PyYAML.
_SCALAR_TAGS = frozenset(f"tag:yaml.org,2002:{t}" for t in
                         ("bool", "float", "int", "null", "timestamp"))
_NO_KEY = object()


def _build(text: str | bytes, source: str | None) -> Any:
    """The document built from the parser's events in one pass, as ``yaml.load`` with
    :class:`_Loader` builds it; refuses nesting past :data:`MAX_DEPTH` as it goes."""
    loader = _Loader(text)
    resolve, constructors = loader.resolve, loader.yaml_constructors
    open_: list[Any] = []  # the lists and mappings being filled
    keys: list[Any] = []  # per open container: the mapping's pending key, or _NO_KEY
    root: Any = None
    documents = 0
    for event in _events(loader, source):
        # Most events are scalars: test for them first.
        if isinstance(event, ScalarEvent):
            if event.anchor is not None or event.tag is not None:
                raise _Unusual
            value = event.value
            if event.implicit[0]:  # plain: resolved as the loader resolves it
                tag = resolve(ScalarNode, value, event.implicit)
                if tag != _STR:
                    if tag not in _SCALAR_TAGS:
                        raise _Unusual
                    value = constructors[tag](loader, ScalarNode(tag, value))
        elif isinstance(event, (MappingStartEvent, SequenceStartEvent)):
            if event.anchor is not None or event.tag is not None:
                raise _Unusual
            if len(open_) >= MAX_DEPTH:
                raise _too_deep(source)
            open_.append({} if isinstance(event, MappingStartEvent) else [])
            keys.append(_NO_KEY)
            continue
        elif isinstance(event, (MappingEndEvent, SequenceEndEvent)):
            value = open_.pop()
            keys.pop()
        elif isinstance(event, DocumentStartEvent):
            documents += 1
            if documents > 1:
                raise _Unusual  # yaml.load refuses it, saying where
            continue
        elif isinstance(event, AliasEvent):
            raise _Unusual
        else:  # stream and document ends
            continue
        if not open_:
            root = value
        elif type(open_[-1]) is list:
            open_[-1].append(value)
        elif keys[-1] is _NO_KEY:
            keys[-1] = value
        else:
            try:
                open_[-1][keys[-1]] = value
            except TypeError:  # an unhashable key: yaml.load says where
                raise _Unusual from None
            keys[-1] = _NO_KEY
    return root


def _check_events(text: str | bytes, source: str | None) -> None:
    """One pass over the parser's events, before anything is built: refuse deep nesting,
    recursive aliases, and aliases that would blow the document up.

    Composing would find the same things, but libyaml's composer recurses in C (so deep
    nesting crashes the process) and builds every node first.
    """
    depth = 0
    open_: list[list[Any]] = []  # [expanded size so far, anchor] per open list or mapping
    sizes: dict[str, int] = {}  # anchor -> expanded size of the value it names
    distinct = expanded = 0

    def add(size: int) -> None:
        nonlocal expanded
        if open_:
            open_[-1][0] += size
        else:
            expanded += size

    for event in _events(_Loader(text), source):
        if isinstance(event, (MappingStartEvent, SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise _too_deep(source)
            distinct += 1
            open_.append([1, event.anchor])
        elif isinstance(event, (MappingEndEvent, SequenceEndEvent)):
            depth -= 1
            size, anchor = open_.pop()
            if anchor is not None:
                sizes[anchor] = size
            add(size)
        elif isinstance(event, ScalarEvent):
            distinct += 1
            if event.anchor is not None:
                sizes[event.anchor] = 1
            add(1)
        elif isinstance(event, AliasEvent):
            if any(anchor == event.anchor for _, anchor in open_):
                raise _fail(source, "a YAML alias refers to a value that contains it",
                            "remove the recursive anchor/alias")
            # An undefined alias is left for the loader, which reports it with its line.
            add(sizes.get(event.anchor, 1) if event.anchor is not None else 1)
    # Sizes are exact integers, so even an astronomically large expansion costs nothing here.
    if expanded > distinct + MAX_ALIAS_EXPANSION:
        raise _fail(source, "YAML aliases expand this document to more than "
                    f"{MAX_ALIAS_EXPANSION:,} extra values", "write the values out instead of "
                    "repeating anchors (&name) and aliases (*name)")


def _events(loader: _Loader, source: str | None) -> Iterator[Event]:
    """The parser's events; libyaml's own nesting limit becomes the same error as ours."""
    try:
        while (event := loader.get_event()) is not None:
            yield event
    except yaml.MarkedYAMLError as exc:
        if exc.problem == _LIBYAML_TOO_DEEP:
            raise _too_deep(source) from None
        raise
    finally:
        loader.dispose()


def _too_deep(source: str | None) -> WorkflowError:
    return _fail(source, f"lists and mappings nest more than {MAX_DEPTH} deep",
                 "flatten the document: move deeply nested values into their own nodes or "
                 "variables")
