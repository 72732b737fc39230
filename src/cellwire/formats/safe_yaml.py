"""Reading YAML that may come from anywhere: size-limited, safe tags only, no alias bombs.

``yaml.safe_load`` builds aliased values as shared objects, so a "billion laughs" document
loads quickly and then explodes in whatever walks it next (validation, JSON, the engine).
We therefore measure the document as it would be once every alias is expanded, before
constructing any Python objects, and refuse it past a fixed budget.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

import yaml
from yaml.nodes import MappingNode, Node, SequenceNode

from cellwire.model import Problem, WorkflowError

#: The largest file or text we parse.
MAX_BYTES = 10 * 1024 * 1024
#: How many more YAML nodes alias expansion may add on top of the document's own.
MAX_ALIAS_EXPANSION = 1_000_000

_BOOL = "tag:yaml.org,2002:bool"


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
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, source)
        return loader.construct_document(node)
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
    finally:
        loader.dispose()


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, SequenceNode):
        return list(node.value)
    return []


def _check_expansion(root: Node, source: str | None) -> None:
    """Refuse recursive aliases and documents that grow too much when aliases expand."""
    expanded: dict[int, int] = {}  # id(node) -> size of its subtree with aliases expanded
    on_path: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            expanded[key] = 1 + sum(expanded[id(child)] for child in _children(node))
            continue
        if key in expanded:
            continue
        if key in on_path:
            raise _fail(source, "a YAML alias refers to a value that contains it",
                        "remove the recursive anchor/alias")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in expanded)
    # Sizes are exact integers, so even an astronomically large expansion costs nothing here.
    if expanded[id(root)] > len(expanded) + MAX_ALIAS_EXPANSION:
        raise _fail(source, "YAML aliases expand this document to more than "
                    f"{MAX_ALIAS_EXPANSION:,} extra values", "write the values out instead of "
                    "repeating anchors (&name) and aliases (*name)")
