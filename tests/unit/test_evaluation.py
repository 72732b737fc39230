"""Evaluation: scorers that must pass and must fail, the summary's numbers, disagreements,
and evaluations kept in a real SQLite store (scripted provider)."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pandas as pd
import pytest

import cellwire
from cellwire.evaluation import (
    Evaluation,
    Score,
    bootstrap_ci,
    contains,
    embedding,
    evaluations,
    exact,
    function,
    json_field,
    numeric,
    regex,
    scorer_of,
    similarity,
)
from cellwire.evaluation.judge import read_verdict
from cellwire.services.llm import LLMRouter, Rule, ScriptedProvider


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLWIRE_HOME", str(tmp_path))
    monkeypatch.delenv("CELLWIRE_DEFAULT_MODEL", raising=False)


def score(scorer, output, expected, row=None) -> float:
    return asyncio.run(scorer.score(output, expected, row or {})).value


@pytest.mark.parametrize(("scorer", "output", "expected"), [
    (exact(), "Paris", "Paris"),
    (exact(), "  Paris \n", "Paris"),
    (exact(), 3.0, 3),
    (exact(ignore_case=True), "PARIS", "paris"),
    (contains(), "The capital is Paris.", "paris"),
    (regex(), "order #1234 shipped", r"#\d{4}\b"),
    (regex(r"^\d+$"), "42", "ignored"),
    (json_field("city"), 'Sure: ```json\n{"city": "Paris", "n": 2}\n```', "Paris"),
    (json_field("a.b.1"), {"a": {"b": [0, 7]}}, 7),
    (json_field(), '{"x": 1, "y": [1, 2]}', '{"y": [1, 2], "x": 1}'),
    (json_field("city"), '{"city": "Paris"}', '{"city": "Paris", "country": "FR"}'),
    (numeric(), "It is 42.", "42"),
    (numeric(0.05), "about 3.14", 3.1),
    (numeric(0.01, relative=True), "1,000.5 km", 1005),
    (function(lambda out, exp: out.startswith(exp)), "Paris, France", "Paris"),
])
def test_scorers_that_must_pass(scorer, output, expected):
    value = score(scorer, output, expected)
    assert value == 1.0 and scorer.passed(value)


@pytest.mark.parametrize(("scorer", "output", "expected"), [
    (exact(), "Paris.", "Paris"),
    (exact(), "paris", "Paris"),
    (contains(), "The capital is Lyon.", "Paris"),
    (regex(), "order 1234", r"#\d{4}"),
    (json_field("city"), "not JSON at all", "Paris"),
    (json_field("city"), '{"town": "Paris"}', "Paris"),
    (json_field("city"), '{"city": "Lyon"}', "Paris"),
    (numeric(), "It is 43.", "42"),
    (numeric(0.05), "about 3.2", 3.1),
    (numeric(), "no number here", 1),
    (function(lambda out, exp, row: out == row["q"]), "x", "y"),
])
def test_scorers_that_must_fail(scorer, output, expected):
    value = score(scorer, output, expected, {"q": "other"})
    assert value == 0.0 and not scorer.passed(value)


def test_similarity_and_embedding_scores_pass_at_their_threshold():
    sim = similarity(0.8)
    assert score(sim, "the cat sat on the mat", "The cat sat on the mat.") > 0.9
    assert score(sim, "completely different", "The cat sat on the mat.") < 0.5
    assert sim.passed(0.85) and not sim.passed(0.7)
    vectors = {"cat": [1.0, 0.0], "kitten": [0.9, 0.1], "car": [0.0, 1.0]}
    emb = embedding(lambda texts: [vectors[t] for t in texts], threshold=0.9)
    assert score(emb, "kitten", "cat") == pytest.approx(0.9939, abs=1e-4)
    assert score(emb, "car", "cat") == 0.0

    async def async_embed(texts):
        return [vectors[t] for t in texts]

    assert score(embedding(async_embed), "cat", "cat") == pytest.approx(1.0)


def test_scorer_names_and_bad_scorers_are_explained():
    assert [scorer_of(s).name for s in ["exact", "numeric:0.01", "json:a.b", "similarity:0.9",
                                        "regex:^x"]] == \
        ["exact", "numeric:0.01", "json:a.b", "similarity", "regex:^x"]
    assert scorer_of("similarity:0.9").threshold == 0.9
    with pytest.raises(ValueError, match="unknown scorer 'bleu'.*exact, contains"):
        scorer_of("bleu")
    with pytest.raises(ValueError, match="judge needs a model"):
        scorer_of("judge")
    with pytest.raises(TypeError, match="takes 1 argument"):
        function(lambda out: True)
    with pytest.raises(ValueError, match="within 0 and 1"):
        score(function(lambda o, e: 7), "a", "b")


def test_judge_replies_are_read_leniently():
    assert read_verdict('{"score": 0.8, "reason": "close"}') == (0.8, "close")
    assert read_verdict('```json\n{"score": 1}\n```') == (1.0, None)
    assert read_verdict("Score: 0.5") == (0.5, None)
    assert read_verdict('{"score": 7}')[0] == 1.0
    value, reason = read_verdict("I cannot grade this")
    assert math.isnan(value) and "no score" in reason


def test_bootstrap_ci_brackets_the_mean_and_is_reproducible():
    values = [1, 0, 1, 1, 0, 1, 1, 1, 0, 1] * 3
    low, high = bootstrap_ci(values)
    assert low < np.mean(values) < high
    assert (low, high) == bootstrap_ci(values)
    assert bootstrap_ci([1.0, 1.0]) == (1.0, 1.0)
    assert all(math.isnan(v) for v in bootstrap_ci([math.nan]))
    wide = bootstrap_ci([1, 0] * 3)
    narrow = bootstrap_ci([1, 0] * 300)
    assert wide[1] - wide[0] > narrow[1] - narrow[0]


def prompt_workflow(name: str, template: str) -> cellwire.Workflow:
    wf = cellwire.Workflow(name)
    wf.add_node("start", "start", variables=[{"variable": "country", "required": True}])
    wf.add_node("llm", "llm", after="start",
                model={"provider": "scripted", "name": "echo", "mode": "chat"},
                prompt_template=[{"role": "user", "text": template}])
    wf.add_node("end", "end", after="llm",
                outputs=[{"variable": "text", "value_selector": ["llm", "text"]}])
    return wf


DATA = pd.DataFrame({"country": ["France", "Japan", "Peru", "Kenya"],
                     "capital": ["Paris", "Tokyo", "Lima", "Nairobi"]})
CAPITALS = dict(zip(DATA.country, DATA.capital, strict=True))


def test_two_prompts_compared_summary_disagreements_and_the_store(tmp_path):
    # "terse" answers with the capital; "chatty" wraps it in a sentence, and gets Peru wrong.
    def reply(request):
        country = request.last_user_message.split()[-1]
        if request.last_user_message.startswith("Chat"):
            return f"The capital of {country} is " + ("Cusco" if country == "Peru"
                                                       else CAPITALS[country])
        return CAPITALS[country]

    provider = ScriptedProvider(rules=[Rule(reply=reply)])
    runtime = cellwire.Runtime(llm=LLMRouter([provider]))
    terse = prompt_workflow("terse", "Capital of {{#start.country#}}")
    chatty = prompt_workflow("chatty", "Chat about {{#start.country#}}")
    db = tmp_path / "eval.db"
    ev = cellwire.evaluate([terse, chatty], DATA, scorers=["exact", "contains"],
                           expected="capital", runtime=runtime, store=db, progress=False,
                           name="capitals")

    # The expected column never reached a run.
    assert all("Paris" not in c.last_user_message for c in provider.calls)
    assert ev.rows["terse:output"].tolist() == ["Paris", "Tokyo", "Lima", "Nairobi"]
    assert ev.rows["chatty:exact"].tolist() == [0.0] * 4
    assert ev.rows["chatty:contains"].tolist() == [1.0, 1.0, 0.0, 1.0]
    summary = ev.summary.set_index(["workflow", "scorer"])
    assert summary.loc[("terse", "exact"), "mean"] == 1.0
    assert summary.loc[("terse", "exact"), ["ci_low", "ci_high"]].tolist() == [1.0, 1.0]
    assert summary.loc[("chatty", "contains"), "mean"] == 0.75
    assert summary.loc[("chatty", "contains"), "pass_rate"] == 0.75
    low, high = summary.loc[("chatty", "contains"), ["ci_low", "ci_high"]]
    assert low < 0.75 <= high
    assert summary.loc[("terse", "exact"), "n"] == 4
    assert (summary["p95_latency"] >= summary["p50_latency"]).all()
    assert (summary["judge_tokens"] == 0).all()
    assert ev.passed(0.7) is False
    assert ev.below(0.7)[["workflow", "scorer"]].values.tolist() == [["chatty", "exact"]]
    # Every row disagrees on exact; only Peru on contains.
    assert len(ev.disagreements()) == 4
    assert ev.disagreements("contains")["country"].tolist() == ["Peru"]
    assert len(ev.disagreements(by="output")) == 4
    fig = ev.chart()
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["exact", "contains"]

    # Stored: read back and compared with a later evaluation.
    back = Evaluation.load(ev.eval_id[:6], store=db)
    pd.testing.assert_frame_equal(back.summary, ev.summary)
    assert back.rows["chatty:output"].tolist() == ev.rows["chatty:output"].tolist()
    later = cellwire.evaluate({"terse": terse}, DATA, scorers=["exact"], expected="capital",
                              runtime=runtime, store=db, progress=False)
    change = later.compare(back).set_index(["workflow", "scorer"])
    assert change.loc[("terse", "exact"), "mean_change"] == 0.0
    assert math.isnan(change.loc[("chatty", "exact"), "mean"])
    listed = evaluations(store=db)
    assert listed["eval_id"].tolist() == [later.eval_id, ev.eval_id]
    assert listed["name"].tolist()[1] == "capitals"


def test_one_workflow_with_two_models_and_a_python_scorer():
    provider = ScriptedProvider(rules=[Rule(model="big", reply="Paris"),
                                       Rule(model="small", reply="Lyon")])
    runtime = cellwire.Runtime(llm=LLMRouter([provider]))
    wf = prompt_workflow("one", "Capital of {{#start.country#}}")

    def is_paris(output, expected, row):
        return Score(1.0 if output == "Paris" else 0.0, f"asked about {row['country']}")

    ev = cellwire.evaluate([(wf, "scripted/big"), (wf, "scripted/small")], DATA.head(1),
                           scorers=[is_paris], expected="capital", runtime=runtime,
                           store=False, progress=False)
    assert ev.workflows == ["one[scripted/big]", "one[scripted/small]"]
    assert ev.summary["mean"].tolist() == [1.0, 0.0]
    assert ev.scores["reason"].tolist() == ["asked about France"] * 2
    with pytest.raises(KeyError, match="no expected column 'answer'"):
        cellwire.evaluate(wf, DATA, scorers=["exact"], expected="answer", store=False)
    with pytest.raises(KeyError, match="no output 'nope'"):
        cellwire.evaluate(wf, DATA.head(1), scorers=["exact"], expected="capital",
                          output="nope", runtime=runtime, store=False, progress=False)


def test_a_failed_run_scores_zero_and_is_counted():
    provider = ScriptedProvider(rules=[Rule(contains="Peru", error="overloaded"),
                                       Rule(reply="Lima")])
    runtime = cellwire.Runtime(llm=LLMRouter([provider]))
    ev = cellwire.evaluate(prompt_workflow("w", "Capital of {{#start.country#}}"), DATA,
                           scorers=["exact"], expected="capital", runtime=runtime,
                           store=False, progress=False)
    assert ev.rows["w:status"].tolist() == ["succeeded", "succeeded", "failed", "succeeded"]
    assert ev.rows["w:exact"].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert ev.scores.loc[2, "reason"] == "the run failed"
    assert ev.summary.loc[0, "failed_runs"] == 1
