"""Every file of the Dify DSL corpus: imports (or, if broken, is rejected naming the part, or
warned about when Dify itself imports it),
round-trips through Dify DSL and through Python, runs to a terminal state; the offline cases
of expected.json give exactly the expected outputs or answer."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from corpus_report import CORPUS, corpus_files, record

from cellwire.engine import RunStatus
from cellwire.formats.dify import dump_dify, import_dify, load_dify
from cellwire.formats.python_export import export_python
from cellwire.model import Workflow, WorkflowError
from cellwire.model.yaml12 import read_text

FILES = corpus_files()
IDS = [f"{p.parent.name[:12]}/{p.name}" for p in FILES]
#: Where a run may end: ``paused`` is a human-input node waiting for a person, as in Dify.
TERMINAL = {RunStatus.SUCCEEDED, RunStatus.PARTIAL_SUCCEEDED, RunStatus.FAILED,
            RunStatus.PAUSED}

#: The part of each broken file its rejection must name: (node id, field prefix).
BROKEN_PARTS = {
    "broken-agent-parameters": ("agent_node", "agent_parameters"),
    "broken-agent-strategy": ("agent_node", None),
    "broken-human-input-duplicate-actions": ("human_node", "user_actions"),
    "broken-if-else-no-false": ("if_node", "false"),
    "broken-knowledge-retrieval-config": ("retrieval_node", "multiple_retrieval_config.top_k"),
    "broken-list-operator-limit": ("list_node", "limit.size"),
    "broken-question-classifier-duplicate-class": ("classifier_node", "classes"),
    "broken-question-classifier-routing": ("classifier_node", "classes.support"),
    "broken-selector": ("missing_node", "edges"),
    "broken-trigger-schedule-cron": ("trigger_node", None),
    "broken-trigger-webhook-body": ("trigger_node", "body"),
}


#: Broken files Dify itself imports (it fails or skips at run time): they import here too,
#: with a warning naming the same part (``cellwire validate --strict`` refuses them).
DIFY_IMPORTS = {"broken-if-else-no-false", "broken-question-classifier-routing",
                "broken-selector"}


def _broken_key(path: Path) -> str | None:
    stem = path.stem.rsplit("__", 1)[-1]
    return stem if stem.startswith("broken-") else None


@pytest.fixture(autouse=True)
def _scripted_llm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELLWIRE_DEFAULT_MODEL", "scripted/echo")


def _sample(var: dict[str, Any]) -> Any:
    if var.get("options"):
        return var["options"][0]
    return {"number": 1, "checkbox": False, "json_object": {}, "file": None,
            "file-list": None}.get(var.get("type"), "test")


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_imports_or_is_rejected(corpus: Path, path: Path) -> None:
    broken = _broken_key(path)
    if broken is None or broken in DIFY_IMPORTS:
        result = import_dify(read_text(path), source=path.name)
        assert result.workflow.nodes
        if broken is not None:
            node_id, field = BROKEN_PARTS[broken]
            assert [p for p in result.problems if p.node_id == node_id and p.level == "warning"
                    and (field is None or (p.field or "").startswith(field))], result.problems
        record(path, imported=True)
        return
    with pytest.raises(WorkflowError) as caught:
        import_dify(read_text(path), source=path.name)
    node_id, field = BROKEN_PARTS[broken]
    named = [p for p in caught.value.problems if p.node_id == node_id
             and (field is None or (p.field or "").startswith(field))]
    assert named, f"no problem names {node_id}/{field}: {caught.value}"
    record(path, rejected=True)


def _importable() -> list[Path]:
    return [p for p in FILES if _broken_key(p) is None or _broken_key(p) in DIFY_IMPORTS]


@pytest.mark.parametrize("path", _importable(), ids=[f"{p.parent.name[:12]}/{p.name}"
                                                      for p in _importable()])
def test_round_trips(corpus: Path, path: Path) -> None:
    workflow = load_dify(read_text(path))
    again = load_dify(dump_dify(workflow))
    assert again == workflow
    namespace: dict[str, Any] = {}
    exec(compile(export_python(workflow), f"<{path.name}>", "exec"), namespace)  # noqa: S102
    assert isinstance(namespace["wf"], Workflow)
    assert namespace["wf"] == workflow


@pytest.mark.parametrize("path", _importable(), ids=[f"{p.parent.name[:12]}/{p.name}"
                                                      for p in _importable()])
async def test_runs_to_a_terminal_state(corpus: Path, path: Path) -> None:
    workflow = load_dify(read_text(path))
    inputs: dict[str, Any] = {}
    for node in workflow.children(None):
        if node.type == "start":
            for var in node.config.get("variables") or []:
                inputs[var["variable"]] = _sample(var)
    if workflow.mode == "advanced-chat":
        inputs["sys.query"] = "hello"
    result = await asyncio.wait_for(workflow.arun(inputs, max_time=30), 60)
    assert result.status in TERMINAL
    if result.status is RunStatus.FAILED:
        # A failure names the node and says why; it is never a bare traceback.
        assert result.error_node and result.error and "Traceback" not in result.error
    if result.status is RunStatus.PAUSED:
        assert result.forms, "a paused run says which form it waits on"
    record(path, runnable=result.ok or result.status is RunStatus.PAUSED)


def _cases() -> list[dict[str, Any]]:
    expected = CORPUS / "expected.json"
    if not expected.is_file():
        return []
    return json.loads(expected.read_text(encoding="utf-8"))["cases"]


CASES = _cases()


@pytest.mark.parametrize("case", CASES, ids=[f"{Path(c['file']).name}:{json.dumps(c['inputs'])}"
                                             for c in CASES])
async def test_expected_results(corpus: Path, case: dict[str, Any]) -> None:
    workflow = load_dify(read_text(corpus / case["file"]))
    result = await workflow.arun(dict(case["inputs"]))
    assert result.status is RunStatus.SUCCEEDED, result.error
    if "answer" in case:
        assert result.answer == case["answer"]
    else:
        assert result.outputs == case["outputs"]
