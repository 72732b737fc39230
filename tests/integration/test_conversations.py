"""Conversation variables persist per conversation id across turns: each turn is a separate
`cellwire run` process (a kernel restart between turns), on one real store file."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import cellwire
from cellwire.store import RunStore

NOTES = """\
cellwire: 1
name: notes
mode: advanced-chat
nodes:
  - id: start
    type: start
  - id: assign
    type: assigner
    version: '2'
    items:
      - variable_selector: [conversation, seen]
        input_type: variable
        operation: append
        value: [sys, query]
      - variable_selector: [conversation, turns]
        input_type: constant
        operation: +=
        value: 1
  - id: answer
    type: answer
    answer: '{{#conversation.turns#}}: {{#conversation.seen#}} ({{#conversation.tone#}})'
edges:
  - {source: start, target: assign}
  - {source: assign, target: answer}
conversation_variables:
  - {name: seen, value_type: 'array[string]', value: []}
  - {name: turns, value_type: number, value: 0}
  - {name: tone, value_type: string, value: plain}
"""


@pytest.fixture
def notes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CELLWIRE_HOME", str(tmp_path / "home"))
    path = tmp_path / "notes.yaml"
    path.write_text(NOTES)
    return path


def notes_workflow(tmp_path: Path, text: str = NOTES) -> cellwire.Workflow:
    path = tmp_path / "notes.yaml"
    path.write_text(text)
    return cellwire.load(path, trusted=True)


def listed(items: list[str]) -> str:
    """An array as an answer template renders it (a Markdown list, as Dify does)."""
    return "\n".join(f"- {item}" for item in items)


def said(turns: int, seen: list[str], tone: str) -> str:
    return f"{turns}: {listed(seen)} ({tone})"


def turn(file: Path, db: Path, query: str, *conversation: str) -> dict:
    """One turn, in a process of its own."""
    done = subprocess.run(
        [sys.executable, "-m", "cellwire.cli", "run", str(file), "--json", "--db", str(db),
         "--query", query, *conversation],
        capture_output=True, text=True, timeout=60, env=dict(os.environ), check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_turns_in_separate_processes_share_the_conversation_variables(notes: Path,
                                                                      tmp_path: Path):
    db = tmp_path / "runs.db"
    assert turn(notes, db, "hello", "--conversation", "c1")["answer"] == \
        said(1, ["hello"], "plain")
    assert turn(notes, db, "again", "-c", "c1")["answer"] == said(2, ["hello", "again"], "plain")
    # Another conversation starts from the declared values; c1 is untouched by it.
    assert turn(notes, db, "other", "-c", "c2")["answer"] == said(1, ["other"], "plain")
    assert turn(notes, db, "third", "-c", "c1")["answer"] == \
        said(3, ["hello", "again", "third"], "plain")
    # A run outside any conversation neither reads nor writes them.
    assert turn(notes, db, "alone")["answer"] == said(1, ["alone"], "plain")
    with RunStore(db) as store:
        assert store.conversation_variables("notes", "c1") == {
            "seen": ["hello", "again", "third"], "turns": 3}
        assert store.conversation_variables("notes", "c2") == {"seen": ["other"], "turns": 1}
        assert store.conversation_variables("notes", "nope") == {}


async def test_the_declared_value_of_a_variable_no_turn_assigned_is_current(tmp_path: Path):
    # Only assigned variables are kept: a default edited between turns applies to the others,
    # and a variable the workflow no longer declares is dropped.
    db = tmp_path / "runs.db"
    wf = notes_workflow(tmp_path)
    first = await wf.arun(store=db, **{"sys.query": "a", "sys.conversation_id": "k"})
    assert first.answer == said(1, ["a"], "plain")
    wf.conversation_variables[2].value = "warm"
    del wf.conversation_variables[1]
    wf.update_node("assign", items=wf.node("assign").config["items"][:1])  # no `turns` now
    wf.update_node("answer", answer="{{#conversation.seen#}} ({{#conversation.tone#}})")
    second = await wf.arun(store=db, **{"sys.query": "b", "sys.conversation_id": "k"})
    assert second.answer == f"{listed(['a', 'b'])} (warm)", second.error


async def test_a_failed_turn_keeps_what_it_assigned_before_failing(tmp_path: Path):
    # As in Dify, an assignment is made when the assigner runs, whatever happens after it.
    db = tmp_path / "runs.db"
    wf = notes_workflow(tmp_path)
    wf.add_node("boom", "code", after="assign", code="def main():\n    raise ValueError('no')\n",
                outputs={"x": {"type": "string"}})
    failed = await wf.arun(store=db, **{"sys.query": "a", "sys.conversation_id": "k"})
    assert failed.status == "failed"
    with RunStore(db) as store:
        assert store.conversation_variables("notes", "k") == {"seen": ["a"], "turns": 1}


async def test_an_unreadable_store_fails_the_turn_saying_why(tmp_path: Path):
    db = tmp_path / "runs.db"
    wf = notes_workflow(tmp_path)
    store = RunStore(db)
    conn = sqlite3.connect(db)
    conn.execute("DROP TABLE conversations")  # a damaged store
    conn.commit()
    conn.close()
    result = await wf.arun(store=store, **{"sys.query": "a", "sys.conversation_id": "k"})
    assert result.status == "failed"
    assert "the variables of conversation 'k' could not be read" in result.error
    assert "sys.conversation_id" in result.error
    store.close()


async def test_a_granted_secret_assigned_to_a_variable_is_stored_redacted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    db = tmp_path / "runs.db"
    secret = "s3cr3t-value-for-the-store"
    monkeypatch.setenv("NOTES_KEY", secret)
    wf = notes_workflow(tmp_path, NOTES.replace("value: [sys, query]", "value: [env, NOTES_KEY]")
                        + "environment:\n  - {name: NOTES_KEY, value_type: secret}\n")
    result = await wf.arun(store=db, secrets=["NOTES_KEY"],
                           **{"sys.query": "a", "sys.conversation_id": "k"})
    assert result.ok, result.error
    with RunStore(db) as store:
        seen = store.conversation_variables("notes", "k")["seen"]
    assert len(seen) == 1 and secret not in seen[0]
    for file in (db, db.with_name("runs.db-wal")):
        assert secret.encode() not in file.read_bytes()
