"""Evaluation against the OpenAI-wire test server on 127.0.0.1 (tests/integration/
llm_server.py): an LLM judge whose tokens and cost are counted apart from the workflow's,
embedding similarity through the embeddings endpoint, and `cellwire eval` failing a CI gate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import cellwire
from cellwire.evaluation import embedding, judge
from cellwire.services.llm import LLMRouter
from cellwire.services.llm.openai import OpenAIProvider, Timeouts
from cellwire.services.llm.ratelimit import RateLimits

sys.path.insert(0, str(Path(__file__).parent))
from llm_server import llm_server

pytestmark = pytest.mark.timeout(120)

SRC = Path(cellwire.__file__).parents[1]
DATA = pd.DataFrame({"country": ["France", "Japan", "Peru", "Kenya"],
                     "capital": ["Paris", "Tokyo", "Lima", "Nairobi"]})
#: What the "model" answers: right but for Peru.
ANSWERS = {"France": "Paris", "Japan": "Tokyo", "Peru": "Cusco", "Kenya": "Nairobi"}

FLOW = """\
cellwire: 1
name: capitals
nodes:
  - {id: start, type: start, variables: [{variable: country, type: text-input, required: true}]}
  - id: llm
    type: llm
    model: {provider: openai, name: gpt-4o-mini, mode: chat}
    prompt_template: [{role: user, text: "Capital of {{#start.country#}}"}]
  - {id: end, type: end, outputs: [{variable: text, value_selector: [llm, text]}]}
edges:
  - {source: start, target: llm}
  - {source: llm, target: end}
"""


def _text(message: dict) -> str:
    return str(message.get("content") or "")


def reply(body: dict) -> str:
    """The workflow's model, and a judge that checks the answer against the expected one."""
    messages = body["messages"]
    if messages[0]["role"] == "system" and "You grade" in _text(messages[0]):
        prompt = _text(messages[-1])
        given = prompt.rsplit("Answer:\n", 1)[1].strip()
        wanted = prompt.split("Expected answer:\n", 1)[1].split("\n", 1)[0].strip()
        if given == wanted:
            return '{"score": 1, "reason": "the right capital"}'
        return '{"score": 0, "reason": "another city"}'
    return ANSWERS[_text(messages[-1]).rsplit(" ", 1)[-1]]


def usage_of(body: dict) -> int:
    """The tokens the test server reports for a request (words in, words out)."""
    prompt = sum(len(_text(m).split()) for m in body["messages"])
    return prompt + len(reply(body).split())


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLWIRE_HOME", str(tmp_path))
    monkeypatch.delenv("CELLWIRE_DEFAULT_MODEL", raising=False)


def runtime(server) -> cellwire.Runtime:
    provider = OpenAIProvider("openai", base_url=server.base_url, api_key="sk-test",
                              rate_limits=RateLimits(),
                              timeouts=Timeouts(connect=2, read=10, first_byte=10))
    return cellwire.Runtime(llm=LLMRouter([provider]))


def test_an_llm_judge_and_embeddings_on_the_wire_with_their_usage_apart(tmp_path):
    path = tmp_path / "flow.yml"
    path.write_text(FLOW)
    wf = cellwire.load(path, trusted=True)
    with llm_server(reply=reply) as server:
        ev = cellwire.evaluate(
            wf, DATA, expected="capital", runtime=runtime(server), store=tmp_path / "e.db",
            progress=False,
            scorers=[judge("Is it the capital?", model="openai/gpt-4o-mini"),
                     embedding(model="openai/text-embed", threshold=0.999)])
        chats = server.chat_requests()
        judged = [b for b in chats if b["messages"][0]["role"] == "system"]
        embedded = [r for r in server.requests if r.path.endswith("/embeddings")]

    rows = ev.rows
    assert rows["capitals:output"].tolist() == ["Paris", "Tokyo", "Cusco", "Nairobi"]
    assert rows["capitals:judge"].tolist() == [1.0, 1.0, 0.0, 1.0]
    assert ev.scores.loc[ev.scores.scorer == "judge", "reason"].tolist() == [
        "the right capital", "the right capital", "another city", "the right capital"]
    # Four workflow calls, four judge calls (the judge's rubric and the expected answer went
    # only to the judge), four embedding calls of [output, expected].
    assert len(chats) == 8 and len(judged) == 4
    assert all("Is it the capital?" in _text(b["messages"][-1]) for b in judged)
    assert len(embedded) == 4 and embedded[0].body["input"] == ["Paris", "Paris"]
    # Same-length words embed alike on this server: Cusco vs Lima differ in length only.
    assert rows["capitals:embedding"].tolist()[:2] == [pytest.approx(1.0)] * 2
    assert rows["capitals:embedding"][2] < 0.999
    # The judge's tokens and cost are its own; the workflow's are its runs'.
    workflow_calls = [b for b in chats if b not in judged]
    assert rows["capitals:judge_tokens"].sum() == sum(usage_of(b) for b in judged)
    assert rows["capitals:total_tokens"].sum() == sum(usage_of(b) for b in workflow_calls)
    summary = ev.summary.set_index("scorer")
    assert summary.loc["judge", "judge_cost"] > 0 and summary.loc["judge", "cost"] > 0
    assert summary.loc["judge", "total_cost"] == pytest.approx(
        summary.loc["judge", "cost"] + summary.loc["judge", "judge_cost"])
    assert summary.loc["judge", "mean"] == 0.75


def _eval(tmp: Path, server, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CELLWIRE_DEFAULT_MODEL"}
    env.update(PYTHONPATH=os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p),
               OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=server.base_url,
               CELLWIRE_HOME=str(tmp / "home"), CELLWIRE_CONFIG_DIR=str(tmp / "config"))
    return subprocess.run([sys.executable, "-m", "cellwire.cli", "eval", str(tmp / "flow.yml"),
                           "--data", str(tmp / "data.csv"), "--expected", "capital", *args],
                          check=False, capture_output=True, text=True, env=env, timeout=60)


def test_cellwire_eval_fails_the_ci_gate_below_the_threshold(tmp_path):
    (tmp_path / "flow.yml").write_text(FLOW)
    DATA.to_csv(tmp_path / "data.csv", index=False)
    with llm_server(reply=reply) as server:
        below = _eval(tmp_path, server, "--scorer", "exact", "--min-score", "0.9", "--json")
        above = _eval(tmp_path, server, "--scorer", "exact", "--scorer", "judge",
                      "--judge-model", "openai/gpt-4o-mini", "--min-score", "0.7")
        plain = _eval(tmp_path, server, "--scorer", "contains", "--output",
                      str(tmp_path / "rows.jsonl"))
        bad = _eval(tmp_path, server, "--scorer", "bleu")
        DATA.rename(columns={"capital": "city"}).to_csv(tmp_path / "data.csv", index=False)
        no_column = _eval(tmp_path, server, "--scorer", "exact")
    assert below.returncode == 1, below.stderr
    report = json.loads(below.stdout)
    assert report["passed"] is False and report["min_score"] == 0.9
    assert [(r["workflow"], r["scorer"], r["mean"]) for r in report["below"]] == [
        ("flow", "exact", 0.75)]
    assert "below 0.9" not in below.stderr  # --json: the reasons are in the JSON
    assert above.returncode == 0, above.stderr
    assert "judge" in above.stdout and "exact" in above.stdout
    assert plain.returncode == 0, plain.stderr  # no --min-score: no gate
    rows = pd.read_json(tmp_path / "rows.jsonl", lines=True)
    assert rows["flow:contains"].tolist() == [1.0, 1.0, 0.0, 1.0]
    assert bad.returncode == 2 and "unknown scorer 'bleu'" in bad.stderr
    assert no_column.returncode == 2 and "--expected capital" in no_column.stderr


async def test_the_judge_retries_a_429_and_names_a_failure_in_its_reason():
    from cellwire.evaluation.scorers import ROUTER
    from cellwire.model import Retry

    with llm_server(reply=reply) as server:
        token = ROUTER.set(runtime(server).llm)
        try:
            scorer = judge("Right city?", model="openai/gpt-4o-mini",
                           retry=Retry(max_retries=2, interval=0.01, jitter=False))
            server.fail("status", status=429, headers={"Retry-After": "0"})
            found = await scorer.score("Paris", "Paris", {"country": "France"})
            assert (found.value, found.reason) == (1.0, "the right capital")
            assert len(server.chat_requests()) == 2  # the 429, then the answer
            for _ in range(3):
                server.fail("status", status=503)
            failed = await scorer.score_all([("Paris", "Paris", {})])
        finally:
            ROUTER.reset(token)
    assert len(server.chat_requests()) == 5  # two retries, then the row gives up
    assert failed[0].value != failed[0].value  # NaN: not scorable
    assert "judge" in failed[0].reason and "503" in failed[0].reason
