"""Batches in a real SQLite store: resume by batch id, retry of failed rows, column mapping,
progress options (scripted provider)."""

from __future__ import annotations

import sqlite3
import warnings

import pandas as pd
import pytest

import cellwire
from cellwire.scale import retry_failed
from cellwire.services.llm import LLMRouter, Rule, ScriptedProvider
from cellwire.store.batches import BatchMismatch

SCRIPTED = {"provider": "scripted", "name": "echo", "mode": "chat"}


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLWIRE_HOME", str(tmp_path))
    monkeypatch.delenv("CELLWIRE_DEFAULT_MODEL", raising=False)


def echo_workflow() -> cellwire.Workflow:
    wf = cellwire.Workflow("batch-store")
    wf.add_node("start", "start", variables=[{"variable": "query", "required": True},
                                             {"variable": "tone"}])
    wf.add_node("llm", "llm", after="start", model=SCRIPTED,
                prompt_template=[{"role": "user", "text": "{{#start.tone#}}{{#start.query#}}"}])
    wf.add_node("end", "end", after="llm",
                outputs=[{"variable": "text", "value_selector": ["llm", "text"]}])
    return wf


def runtime(provider: ScriptedProvider) -> cellwire.Runtime:
    return cellwire.Runtime(llm=LLMRouter([provider]))


def test_a_batch_id_resumes_only_the_rows_whose_runs_did_not_end(tmp_path):
    provider = ScriptedProvider()
    db = tmp_path / "runs.db"
    df = pd.DataFrame({"query": [f"q{i}" for i in range(6)]})
    wf = echo_workflow()
    first = wf.map(df, runtime=runtime(provider), store=db, progress=False)
    batch_id = first.attrs["batch_id"]
    assert len(provider.calls) == 6
    # Two rows' runs as a killed process leaves them: still `running` in the store.
    with sqlite3.connect(db) as conn:
        conn.executemany("UPDATE runs SET status = 'running' WHERE run_id = ?",
                         [(first.run_id[1],), (first.run_id[4],)])
    again = wf.map(df, runtime=runtime(provider), store=db, batch_id=batch_id, progress=False)
    assert len(provider.calls) == 8
    assert sorted(c.last_user_message for c in provider.calls[6:]) == ["q1", "q4"]
    assert again.attrs["batch_id"] == batch_id
    assert again["text"].tolist() == df["query"].tolist()
    kept = [0, 2, 3, 5]
    assert again.run_id[kept].tolist() == first.run_id[kept].tolist()
    assert again.run_id[1] != first.run_id[1]
    # Other inputs under the same id are refused, naming the fix.
    with pytest.raises(BatchMismatch, match="ran over other inputs"):
        wf.map(df.head(2), runtime=runtime(provider), store=db, batch_id=batch_id,
               progress=False)
    with pytest.raises(ValueError, match="pass store="):
        wf.map(df, store=False, batch_id=batch_id, progress=False)


def test_retry_failed_runs_only_the_failed_rows_with_the_batch_options(tmp_path):
    provider = ScriptedProvider(rules=[Rule(contains="flaky", error="overloaded")])
    df = pd.DataFrame({"query": ["a", "flaky b", "c", "flaky d"]}, index=list("wxyz"))
    wf = echo_workflow()
    first = wf.map(df, runtime=runtime(provider), store=tmp_path / "r.db", progress=False)
    assert first["status"].tolist() == ["succeeded", "failed", "succeeded", "failed"]
    provider.rules.clear()  # the model is back
    second = retry_failed(first)
    assert [c.last_user_message for c in provider.calls[4:]] == ["flaky b", "flaky d"]
    assert second["status"].tolist() == ["succeeded"] * 4
    assert second["text"].tolist() == ["a", "flaky b", "c", "flaky d"]
    assert list(second.index) == list("wxyz")
    assert second.run_id[["w", "y"]].tolist() == first.run_id[["w", "y"]].tolist()
    assert second.attrs["batch_id"] == first.attrs["batch_id"]
    # The same through map: nothing failed now, so nothing runs.
    third = wf.map(df, retry=second, runtime=runtime(provider), store=False, progress=False)
    assert len(provider.calls) == 6
    assert third["text"].tolist() == second["text"].tolist()
    with pytest.raises(ValueError, match="pass the inputs"):
        wf.map(df.head(2), retry=second, store=False, progress=False)


def test_an_explicit_column_beats_the_same_named_one_and_unknown_ones_are_reported_once():
    provider = ScriptedProvider()
    df = pd.DataFrame({"query": ["wrong", "wrong"], "question": ["right 1", "right 2"],
                       "label": [1, 2], "note": ["x", "y"]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = echo_workflow().map(df, columns={"question": "query"}, store=False,
                                  runtime=runtime(provider), progress=False)
    assert out["text"].tolist() == ["right 1", "right 2"]
    assert list(out.columns[:4]) == ["query", "question", "label", "note"]
    reported = [str(w.message) for w in caught if "not an input" in str(w.message)]
    assert len(reported) == 1
    assert "'label', 'note'" in reported[0] and "batch-store" in reported[0]
    # Unknown columns do not reach the runs.
    assert all("label" not in str(c.messages) for c in provider.calls)
    with pytest.raises(ValueError, match="column 'nope'"):
        echo_workflow().map(df, columns={"nope": "query"}, store=False, progress=False)
    with pytest.raises(ValueError, match="not an input of workflow 'batch-store'"):
        echo_workflow().map(df, columns={"question": "topic"}, store=False, progress=False)
    with pytest.raises(ValueError, match="two columns to input 'query'"):
        echo_workflow().map(df, columns={"question": "query", "note": "query"}, store=False,
                            progress=False)


def test_progress_bar_by_default_none_with_false_and_callbacks_still_work(capsys):
    provider = ScriptedProvider()
    df = pd.DataFrame({"query": ["a", "b", "c"]})
    echo_workflow().map(df, runtime=runtime(provider), store=False)
    err = capsys.readouterr().err
    assert "3/3" in err and "failed=0" in err and "rows/s" in err
    seen = []
    echo_workflow().map(df, runtime=runtime(provider), store=False, progress=False)
    echo_workflow().map(df, runtime=runtime(provider), store=False,
                        progress=lambda d, t: seen.append((d, t)))
    assert capsys.readouterr().err == ""
    assert sorted(seen) == [(1, 3), (2, 3), (3, 3)]
    with pytest.raises(TypeError, match="progress="):
        echo_workflow().map(df, store=False, progress="yes")


def test_workflow_map_magic_maps_columns_and_resumes_a_batch(tmp_path):
    from IPython.core.error import UsageError
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    from cellwire.jupyter.magics import WorkflowMagics
    from cellwire.jupyter.session import Session

    ip = InteractiveShell(config=Config({"HistoryManager": {"enabled": False}}))
    ip.register_magics(WorkflowMagics(ip, session=Session()))
    ip.run_cell_magic("workflow", "qa start --type start", "[question]")
    ip.run_cell_magic("workflow", "qa ask --type llm --model scripted/echo",
                      "A: {{#start.question#}}")
    ip.run_cell_magic("workflow", "qa end --type end", "answer: ask.text")
    ip.user_ns["df"] = pd.DataFrame({"q": ["why?", "how?"]})
    out = ip.run_line_magic("workflow", "map qa df --column q=question --no-progress")
    assert out["answer"].tolist() == ["A: why?", "A: how?"]
    again = ip.run_line_magic("workflow", f"map qa df --column q=question --no-progress "
                                          f"--resume {out.attrs['batch_id']}")
    assert again["run_id"].tolist() == out["run_id"].tolist()
    with pytest.raises(UsageError, match="COLUMN=INPUT"):
        ip.run_line_magic("workflow", "map qa df --column q")
