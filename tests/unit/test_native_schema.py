"""docs/workflow.schema.json describes what cellwire.dump writes."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

import cellwire
from cellwire.model.yaml12 import parse_yaml

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "docs" / "workflow.schema.json").read_text())
CORPUS = ROOT.parent / "shared" / "corpora" / "dify-dsl"


def _check(document: object) -> None:
    jsonschema.validate(document, SCHEMA, cls=jsonschema.Draft202012Validator)


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_examples_follow_the_schema(path):
    # cellwire reads YAML 1.2 booleans, so a node named `no` stays a string.
    _check(parse_yaml(path.read_text()))


def test_dumped_dify_workflows_follow_the_schema():
    files = sorted(p for p in CORPUS.glob("*/*.yml") if not p.name.startswith("broken-"))
    if not files:
        pytest.skip(f"the shared Dify corpus is not at {CORPUS}")
    checked = 0
    for path in files:
        try:
            workflow = cellwire.load(path)
        except cellwire.WorkflowError:
            continue
        _check(parse_yaml(cellwire.dump(workflow)))
        checked += 1
    assert checked > 50


def test_the_schema_rejects_what_load_rejects():
    with pytest.raises(jsonschema.ValidationError):
        _check({"cellwire": 2, "nodes": []})
    with pytest.raises(jsonschema.ValidationError):
        _check({"cellwire": 1, "nodes": [{"id": "a"}]})
