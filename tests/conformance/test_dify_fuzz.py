"""Fuzzing the Dify importer: mutated corpus files, wrong types, missing keys, cycles, deep
or huge YAML and alias bombs raise only WorkflowError, naming the node or field, quickly."""

from __future__ import annotations

import copy
import time
from typing import Any

import pytest
import yaml
from corpus_report import corpus_files
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cellwire.formats.dify import dump_dify, import_dify
from cellwire.model import WorkflowError
from cellwire.model.yaml12 import read_text

SMALL = [p for p in corpus_files() if p.stat().st_size < 40_000 and "broken-" not in p.name]
DOCS = [yaml.safe_load(read_text(p)) for p in SMALL[:40]]

JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=False),
    st.text(max_size=20), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
    st.just([["a", "b"]]), st.just({"x": {"y": {"z": [1, {"w": None}]}}}),
)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found.extend(_paths(item, (*prefix, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(_paths(item, (*prefix, index)))
    return found


def _mutate(doc: Any, path: tuple, action: str, junk: Any) -> Any:
    if not path:
        return junk
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if action == "delete" and isinstance(parent, dict):
        del parent[last]
    elif action == "delete" and isinstance(parent, list):
        parent.pop(last)
    else:
        parent[last] = junk
    return doc


def _check(doc: Any) -> None:
    started = time.monotonic()
    try:
        result = import_dify(doc, source="fuzz.yml")
    except WorkflowError as exc:
        assert exc.problems, "a WorkflowError must list its problems"
        for problem in exc.problems:
            # Text that is not YAML is placed by the parser (line, column) instead.
            placed = problem.node_id or problem.field or "YAML" in problem.message
            assert placed, f"unplaced problem: {problem}"
    else:
        dump_dify(result.workflow)
    assert time.monotonic() - started < 5


@pytest.mark.skipif(not DOCS, reason="the Dify DSL corpus is not beside the repository")
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_corpus_files_fail_cleanly(data: st.DataObject) -> None:
    doc = copy.deepcopy(data.draw(st.sampled_from(DOCS)))
    for _ in range(data.draw(st.integers(1, 3))):
        paths = _paths(doc)
        path = data.draw(st.sampled_from(paths))
        doc = _mutate(doc, path, data.draw(st.sampled_from(["replace", "delete"])),
                      copy.deepcopy(data.draw(JUNK)))
    _check(doc)


@pytest.mark.skipif(not DOCS, reason="the Dify DSL corpus is not beside the repository")
@settings(max_examples=50, deadline=None)
@given(st.data())
def test_added_cycles_are_named(data: st.DataObject) -> None:
    doc = copy.deepcopy(data.draw(st.sampled_from(DOCS)))
    edges = doc["workflow"]["graph"].get("edges") or []
    if not edges:
        return
    edge = data.draw(st.sampled_from(edges))
    edges.append({"source": edge["target"], "target": edge["source"], "sourceHandle": "source"})
    with pytest.raises(WorkflowError) as caught:
        import_dify(doc)
    assert any("cycle" in p.message and p.node_id for p in caught.value.problems)


def test_alias_bomb_is_refused_quickly() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    started = time.monotonic()
    with pytest.raises(WorkflowError, match="alias"):
        import_dify("\n".join(lines) + "\n")
    assert time.monotonic() - started < 2


def test_deeply_nested_yaml_is_refused() -> None:
    text = "app: {mode: workflow}\nworkflow: {graph: {nodes: " + "[" * 5000 + "]" * 5000 + "}}\n"
    with pytest.raises(WorkflowError) as caught:
        import_dify(text)
    assert "deep" in str(caught.value)


def test_a_huge_document_is_refused_before_parsing() -> None:
    text = "app: {mode: workflow}\nnote: '" + "x" * (11 * 1024 * 1024) + "'\n"
    started = time.monotonic()
    with pytest.raises(WorkflowError, match="MB"):
        import_dify(text)
    assert time.monotonic() - started < 2
