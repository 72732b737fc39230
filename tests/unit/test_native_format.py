"""The native YAML format: exact round trips, readable output, clear errors, safe parsing."""

from __future__ import annotations

import math
import time
from datetime import date
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cellwire
from cellwire.formats import detect_format, dump, load, load_native, parse_yaml, save
from cellwire.formats import native as native_module
from cellwire.model import (
    ConversationVariable,
    EnvironmentVariable,
    Note,
    Position,
    Retry,
    Workflow,
    WorkflowError,
)
from cellwire.model.yaml12 import MAX_BYTES, read_text

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))


def rich_workflow() -> Workflow:
    wf = Workflow("rich", mode="advanced-chat", description="every field set")
    wf.add_node("start", "start", variables=[{"variable": "q", "type": "paragraph"}])
    wf.add_node("branch", "if-else", after="start", title="Which way?",
                cases=[{"case_id": "yes", "conditions": [
                    {"variable_selector": ["start", "q"], "comparison_operator": "not empty"}]}])
    wf.add_node("http", "http-request", after=("branch", "yes"), error_strategy="default-value",
                default_value={"body": ""}, retry=Retry(max_retries=2, interval=0.5),
                max_time=4.0, url="https://example.com", method="get", title="Fetch",
                timeout={"read": 3})
    # Config fields named like node fields must survive too.
    wf.update_node("http", title="inner title", config={"nested": True})
    wf.nodes["http"].meta = {"cell": "c1"}
    wf.nodes["http"].position = Position(x=10, y=-2.5)
    wf.add_node("code", "code", after=[("branch", "false")], retry=3,
                code="def main():\n    return {'x': 1}\n", outputs={"x": {"type": "number"}})
    wf.nodes["code"].title = ""
    wf.nodes["code"].description = "runs code"
    wf.environment = [EnvironmentVariable(name="REGION", value="eu"),
                      EnvironmentVariable(name="LIMIT", value=3, value_type="number",
                                          description="how many"),
                      EnvironmentVariable(name="TOKEN", value_type="secret")]
    wf.conversation_variables = [ConversationVariable(name="history", value_type="array[string]",
                                                      value=["a"])]
    wf.features = {"opening_statement": "hi"}
    wf.notes = [Note(id="n1", text="remember", position=Position(x=1, y=2), meta={"w": 3})]
    wf.meta = {"icon": "🤖"}
    return wf


def test_round_trip_is_exact_for_every_field():
    wf = rich_workflow()
    assert load_native(dump(wf)) == wf


def test_dump_is_short_and_readable():
    text = dump(rich_workflow())
    doc = yaml.safe_load(text)
    start, branch, http, code = doc["nodes"]
    assert text.startswith("cellwire: 1\nname: rich\n")
    # Defaults are left out; a title equal to the id is implied.
    assert start == {"id": "start", "type": "start",
                     "variables": [{"variable": "q", "type": "paragraph"}]}
    assert "title" in branch and "error_strategy" not in branch and "retry" not in branch
    # Config is inline, except fields whose names belong to the node itself.
    assert http["url"] == "https://example.com" and http["timeout"] == {"read": 3}
    assert http["config"] == {"title": "inner title", "config": {"nested": True}}
    assert http["retry"] == {"max_retries": 2, "interval": 0.5}
    assert code["retry"] == 3 and code["title"] == ""
    assert doc["edges"][0] == {"source": "start", "target": "branch"}
    assert doc["edges"][1] == {"source": "branch", "target": "http", "handle": "yes"}
    # Multi-line strings are block scalars, selectors and edges one-liners.
    assert "code: |\n      def main():" in text
    assert "variable_selector: [start, q]" in text
    assert "- {source: start, target: branch}" in text


def test_secret_values_are_never_written():
    wf = Workflow("s", environment=[EnvironmentVariable(name="KEY", value="hunter2-xyz",
                                                        value_type="secret")])
    text = dump(wf)
    assert "hunter2" not in text
    env = yaml.safe_load(text)["environment"]
    assert env == [{"name": "KEY", "value_type": "secret", "value": None}]
    loaded = load_native(text)
    assert loaded.environment[0].value is None and loaded.environment[0].value_type == "secret"


def test_dump_names_the_node_and_field_of_a_value_yaml_cannot_hold():
    wf = Workflow("w")
    wf.add_node("a", "code", handler=object())
    with pytest.raises(WorkflowError) as info:
        dump(wf)
    problem = info.value.problems[0]
    assert (problem.node_id, problem.field) == ("a", "handler")


# -- generated workflows ----------------------------------------------------------------------

_ids = st.from_regex(r"[A-Za-z0-9_\-]{1,12}", fullmatch=True)
_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)
_keys = st.one_of(_text, st.sampled_from(["title", "max_time", "config", "retry", "id", "type",
                                          "timeout"]))
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                     st.floats(allow_nan=False, allow_infinity=False), _text)
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(_keys, inner, max_size=4)), max_leaves=12)
_positions = st.one_of(st.none(), st.builds(Position, x=st.floats(-1e6, 1e6),
                                            y=st.floats(-1e6, 1e6)))
_retries = st.builds(Retry, max_retries=st.integers(0, 100), interval=st.floats(0, 100),
                     backoff=st.floats(1, 10), max_interval=st.floats(0, 100),
                     jitter=st.booleans())


@st.composite
def workflows(draw: st.DrawFn) -> Workflow:
    wf = Workflow(draw(_text), mode=draw(st.sampled_from(["workflow", "advanced-chat"])),
                  description=draw(_text))
    ids = draw(st.lists(_ids, unique=True, max_size=5))
    for node_id in ids:
        node = wf.add_node(
            node_id, draw(st.sampled_from(["start", "end", "llm", "my-type"])),
            error_strategy=draw(st.sampled_from(["fail", "default-value", "fail-branch"])),
            default_value=draw(st.dictionaries(_text, _values, max_size=2)),
            retry=draw(_retries),
            max_time=draw(st.one_of(st.none(), st.floats(0.001, 1e4))),
            parent=draw(st.one_of(st.none(), st.sampled_from(ids))),
        )
        node.config = draw(st.dictionaries(_keys, _values, max_size=4))
        node.title = draw(st.one_of(st.just(node_id), _text))
        node.description = draw(_text)
        node.position = draw(_positions)
        node.meta = draw(st.dictionaries(_text, _values, max_size=2))
    if ids:
        for _ in range(draw(st.integers(0, 4))):
            wf.connect(draw(st.sampled_from(ids)), draw(st.sampled_from(ids)),
                       draw(st.one_of(st.just("source"), _text)))
    wf.environment = draw(st.lists(st.one_of(
        st.builds(EnvironmentVariable, name=_ids, value=_values,
                  value_type=st.sampled_from(["string", "number"]), description=_text),
        st.builds(EnvironmentVariable, name=_ids, value=st.none(), value_type=st.just("secret")),
    ), max_size=3))
    wf.conversation_variables = draw(st.lists(st.builds(
        ConversationVariable, name=_ids, value_type=_text, value=_values, description=_text),
        max_size=2))
    wf.features = draw(st.dictionaries(_text, _values, max_size=3))
    wf.notes = draw(st.lists(st.builds(Note, id=_ids, text=_text, position=_positions,
                                       meta=st.dictionaries(_text, _values, max_size=2)),
                             max_size=2))
    wf.meta = draw(st.dictionaries(_text, _values, max_size=3))
    return wf


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(workflows())
def test_generated_workflows_round_trip_exactly(wf: Workflow):
    text = dump(wf)
    assert load_native(text) == wf
    assert dump(load_native(text)) == text
    compact = dump(wf, compact=True)
    assert load_native(compact) == wf
    assert dump(load_native(compact), compact=True) == compact


def test_a_compact_dump_is_json_unless_json_would_change_a_value():
    wf = Workflow("w")
    odd = "next line\x85, line\u2028, paragraph\u2029, del\x7f, bom\ufeff, 🤖, yes, 1e5"
    wf.add_node("a", "code", text=odd, big=2**70, half=0.5, null="null", empty={})
    text = dump(wf, compact=True)
    assert text.startswith("{")  # JSON: a flow mapping
    assert load_native(text) == wf
    # JSON has no dates and no infinities, and YAML 1.1 reads 1e-05 (JSON's way of writing
    # it) as a string: such documents are written as block YAML.
    for value in (float("inf"), float("nan"), date(2026, 12, 3), 1e-05, 1e20):
        wf.nodes["a"].config["value"] = value
        text = dump(wf, compact=True)
        assert not text.startswith("{")
        back = load_native(text).nodes["a"].config["value"]
        assert back == value or (math.isnan(back) and math.isnan(value))


# -- errors -----------------------------------------------------------------------------------


def problems_of(text: str) -> list:
    with pytest.raises(WorkflowError) as info:
        load_native(text, source="flow.yaml")
    assert "flow.yaml" in str(info.value)
    return info.value.problems


def where(problems: list) -> set[tuple[str | None, str | None]]:
    return {(p.node_id, p.field) for p in problems}


def test_structural_errors_name_the_node_and_field_all_at_once():
    problems = problems_of("""
cellwire: 1
nodes:
  - id: a
  - id: b
    type: end
    retry: {max_retries: -1}
    error_strategy: explode
  - id: b
    type: start
  - {type: end}
  - just a string
edges:
  - {source: a}
  - {target: b, handle: x}
  - {source: a, target: b, colour: red}
""")
    found = where(problems)
    assert ("a", "type") in found
    assert ("b", "retry.max_retries") in found
    assert ("b", "error_strategy") in found
    assert ("b", "id") in found  # the duplicate
    assert (None, "nodes[3].id") in found
    assert (None, "nodes[4]") in found
    assert ("a", "edges[0].target") in found
    assert (None, "edges[1].source") in found
    assert ("a", "edges[2].colour") in found
    text = "\n".join(map(str, problems))
    assert "Traceback" not in text and "pydantic" not in text
    assert "explode" in text and "fix:" in text


def test_duplicate_ids_are_reported():
    problems = problems_of("cellwire: 1\nnodes:\n- {id: x, type: start}\n- {id: x, type: end}\n")
    assert [str(p) for p in problems] == [
        ("node 'x' field 'id': the id is used by more than one node (fix: give each node its "
         "own id)")]


def test_bad_top_level_keys_and_values():
    problems = problems_of("cellwire: 1\nname: [x]\nmode: chat\nnode: []\nedges: {a: b}\n")
    assert where(problems) == {(None, "name"), (None, "mode"), (None, "node"), (None, "edges")}


def test_a_config_field_given_twice_is_an_error():
    problems = problems_of("cellwire: 1\nnodes:\n- id: a\n  type: llm\n  model: x\n"
                           "  config: {model: y}\n")
    assert where(problems) == {("a", "model")}


def test_after_in_a_file_points_to_edges():
    problems = problems_of("cellwire: 1\nnodes:\n- {id: s, type: start}\n"
                           "- {id: a, type: end, after: [s]}\n")
    assert where(problems) == {("a", "after")}
    assert "edges" in problems[0].message and "{source: s, target: a}" in problems[0].hint


def test_not_a_mapping():
    assert "list" in str(problems_of("- 1\n- 2\n")[0])


def test_newer_versions_are_refused_with_the_fix():
    problems = problems_of("cellwire: 7\nname: x\n")
    assert "version 7" in problems[0].message
    assert "upgrade cellwire" in problems[0].hint
    assert where(problems_of("cellwire: 0\n")) == {(None, "cellwire")}
    assert where(problems_of("cellwire: one\n")) == {(None, "cellwire")}


def test_migrations_step_old_documents_up(monkeypatch: pytest.MonkeyPatch):
    def from_v0(doc: dict) -> dict:
        doc["name"] = doc.pop("title")
        return doc

    monkeypatch.setitem(native_module.MIGRATIONS, 0, from_v0)
    wf = load_native("cellwire: 0\ntitle: old\n")
    assert wf.name == "old"


def test_yaml_syntax_errors_give_the_line():
    problems = problems_of("cellwire: 1\nnodes:\n  - id: a\n   type: [\n")
    assert "not valid YAML: line" in problems[0].message


def test_yes_and_no_stay_strings():
    wf = load_native("cellwire: 1\nnodes:\n- {id: no, type: end}\n- {id: yes, type: start}\n"
                     "edges:\n- {source: yes, target: no, handle: on}\n")
    assert list(wf.nodes) == ["no", "yes"]
    assert wf.edges[0].source_handle == "on"
    assert load_native(dump(wf)) == wf


# -- safety -----------------------------------------------------------------------------------


@pytest.mark.timeout(10)
def test_alias_bombs_are_refused_quickly():
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 12):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    started = time.perf_counter()
    with pytest.raises(WorkflowError, match="aliases expand"):
        load_native("cellwire: 1\n" + "\n".join(lines))
    assert time.perf_counter() - started < 5


def test_recursive_aliases_are_refused():
    with pytest.raises(WorkflowError, match="contains it"):
        parse_yaml("a: &x [1, *x]")


@pytest.mark.timeout(10)
def test_deep_nesting_is_refused_without_crashing():
    # libyaml's composer recurses in C: this depth would crash the process if parsed.
    with pytest.raises(WorkflowError, match="nest more than 100 deep"):
        parse_yaml("a: " + "[" * 200_000 + "]" * 200_000)
    assert parse_yaml("[" * 100 + "]" * 100) is not None


def test_modest_aliases_are_fine():
    wf = load_native("cellwire: 1\nmeta:\n  a: &v {k: 1}\n  b: *v\n")
    assert wf.meta == {"a": {"k": 1}, "b": {"k": 1}}


@pytest.mark.timeout(10)
def test_oversize_text_and_files_are_refused_before_parsing(tmp_path: Path):
    big = "cellwire: 1\nmeta: {pad: '" + "x" * MAX_BYTES + "'}\n"
    with pytest.raises(WorkflowError, match="limit of 10 MB"):
        load_native(big)
    path = tmp_path / "big.yaml"
    with path.open("wb") as fh:  # sparse: costs nothing to create
        fh.truncate(MAX_BYTES + 1)
    with pytest.raises(WorkflowError, match="limit of 10 MB") as info:
        read_text(path)
    assert str(path) in str(info.value)


def test_non_utf8_files_are_refused(tmp_path: Path):
    path = tmp_path / "latin.yaml"
    path.write_bytes(b"cellwire: 1\nname: caf\xe9\n")
    with pytest.raises(WorkflowError, match="UTF-8"):
        load(path)


# -- files and formats ------------------------------------------------------------------------


def test_save_and_load_a_file(tmp_path: Path):
    wf = rich_workflow()
    path = save(wf, tmp_path / "rich.yaml")
    assert cellwire.load(path) == wf


def test_load_names_the_file_in_errors(tmp_path: Path):
    path = tmp_path / "broken.yaml"
    path.write_text("cellwire: 1\nnodes:\n- id: a\n")
    with pytest.raises(WorkflowError) as info:
        load(path)
    assert str(path) in str(info.value)
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing.yaml")
    path.write_text("just: a mapping\n")
    with pytest.raises(WorkflowError, match="not a workflow file") as info:
        load(path)
    assert str(path) in str(info.value)


def test_format_detection_table():
    assert detect_format({"cellwire": 1}) == "native"
    assert detect_format({"app": {}, "workflow": {}}) == "dify"
    assert detect_format({"kind": "app", "version": "0.1.5"}) == "dify"
    assert detect_format({"nodes": []}) is None
    assert detect_format(["cellwire"]) is None


def test_dify_documents_go_to_the_dify_importer(tmp_path: Path):
    path = tmp_path / "app.yml"
    path.write_text("""\
app: {name: from-dify, mode: workflow}
kind: app
version: 0.1.5
workflow:
  graph:
    nodes:
      - id: s
        data: {type: start, title: Start, variables: []}
      - id: e
        data: {type: end, title: End, outputs: []}
    edges:
      - {source: s, target: e, sourceHandle: source}
""")
    wf = load(path)
    assert wf.name == "from-dify"
    assert {n.type for n in wf.nodes.values()} == {"start", "end"}
    assert [(e.source, e.target) for e in wf.edges] == [("s", "e")]
    # A document that only looks like Dify gets the importer's errors, naming the file.
    path.write_text("app: {name: x}\nworkflow: [1]\n")
    with pytest.raises(WorkflowError) as info:
        load(path)
    assert str(path) in str(info.value)


async def test_a_loaded_file_runs(tmp_path: Path):
    wf = load(Path(__file__).parents[2] / "examples" / "branch.yaml")
    result = await wf.arun(n=42, store=False)
    assert result.outputs == {"big": 42, "small": None}


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_are_valid_and_round_trip(path: Path):
    wf = load(path)
    assert [str(p) for p in cellwire.validate(wf) if p.level == "error"] == []
    assert load_native(dump(wf)) == wf


def test_an_explicit_retry_off_survives_a_round_trip():
    # llm nodes retry by default; `retry: 0` turns that off and must stay off in the file.
    wf = cellwire.Workflow("retries")
    wf.add_node("start", "start")
    for node_id, retry in (("off", 0), ("default", None)):
        wf.add_node(node_id, "llm", after="start", retry=retry,
                    model={"provider": "scripted", "name": "echo"},
                    prompt_template=[{"role": "user", "text": "hi"}])
    back = load_native(dump(wf))
    assert "retry" in back.nodes["off"].model_fields_set
    assert back.nodes["off"].retry.max_retries == 0
    assert "retry" not in back.nodes["default"].model_fields_set
    kind = cellwire.model.registry.get("llm")
    assert kind.retry_for(back.nodes["off"]).max_retries == 0
    assert kind.retry_for(back.nodes["default"]).max_retries > 0
