"""Human input: a run pauses at a human-input node with its form, survives its process, and
continues where it stopped once a person answers, from Python, from another process and
from the command line; a form nobody answers in time leaves through ``__timeout``."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import cellwire
from cellwire.durable import NotResumable
from cellwire.engine.forms import FormError, FormExpired
from cellwire.store import RunStore
from cellwire.store.seal import SEALED_PREFIX

CORPUS = Path(__file__).parents[2].parent / "shared/corpora/dify-dsl"
EXAMPLE = Path(__file__).parents[2] / "examples/approval.yaml"


def approval(timeout: int = 36, extra_nodes: str = "", extra_edges: str = "") -> str:
    """A draft, a review form, and a branch per action (and the timeout)."""
    return textwrap.dedent("""\
        cellwire: 1
        name: approval
        nodes:
          - id: start
            type: start
            variables: [{variable: topic, type: text-input, required: true}]
          - id: draft
            type: code
            code: |
              def main(topic):
                  with open("{log}", "a") as f:
                      f.write("draft\\n")
                  return {"text": "A post about " + topic}
            variables: [{variable: topic, value_selector: [start, topic]}]
            outputs: {text: {type: string}}
          - id: review
            type: human-input
            title: Review
            form_content: "Check: {{#draft.text#}} / note: {{#$output.note#}}"
            inputs:
              - {type: paragraph, output_variable_name: note}
              - type: select
                output_variable_name: channel
                option_source: {type: constant, value: [blog, mail]}
                default: {type: constant, value: blog}
            user_actions:
              - {id: approve, title: Publish}
              - {id: reject, title: Drop}
            timeout: TIMEOUT
            timeout_unit: hour
          - id: yes
            type: template-transform
            template: "published on {{ c }}: {{ n }}"
            variables:
              - {variable: c, value_selector: [review, channel]}
              - {variable: n, value_selector: [review, note]}
          - id: no
            type: template-transform
            template: "dropped"
          - id: late
            type: template-transform
            template: "nobody answered"
          - id: pick
            type: variable-aggregator
            variables: [[yes, output], [no, output], [late, output]]
          - id: end
            type: end
            outputs:
              - {variable: result, value_selector: [pick, output]}
              - {variable: action, value_selector: [review, __action_id]}
              - {variable: title, value_selector: [review, __action_value]}
              - {variable: shown, value_selector: [review, __rendered_content]}
        EXTRA_NODES
        edges:
          - {source: start, target: draft}
          - {source: draft, target: review}
          - {source: review, target: yes, handle: approve}
          - {source: review, target: no, handle: reject}
          - {source: review, target: late, handle: __timeout}
          - {source: yes, target: pick}
          - {source: no, target: pick}
          - {source: late, target: pick}
          - {source: pick, target: end}
        EXTRA_EDGES
        """).replace("TIMEOUT", str(timeout)).replace("EXTRA_NODES", extra_nodes).replace(
        "EXTRA_EDGES", extra_edges)


@pytest.fixture
def flow(tmp_path: Path):
    log = tmp_path / "effects.log"

    def make(**kwargs) -> cellwire.Workflow:
        path = tmp_path / "approval.yaml"
        path.write_text(approval(**kwargs).replace("{log}", str(log)))
        return cellwire.load(path, trusted=True)

    make.log = log  # type: ignore[attr-defined]
    make.path = tmp_path / "approval.yaml"  # type: ignore[attr-defined]
    return make


def test_a_run_pauses_with_its_form_and_an_answer_continues_it_where_it_stopped(flow, tmp_path):
    db = tmp_path / "runs.db"
    wf = flow()
    paused = wf.run({"topic": "cats"}, store=db)
    assert paused.status == "paused" and not paused.ok
    assert paused.outputs == {}
    [form] = paused.forms
    assert form.node_id == "review" and form.content == (
        "Check: A post about cats / note: {{#$output.note#}}")
    assert [f.name for f in form.fields] == ["note", "channel"]
    assert form.fields[1].options == ["blog", "mail"] and form.fields[1].default == "blog"
    assert [a.id for a in form.actions] == ["approve", "reject"]
    assert form.expires_at == pytest.approx(form.created_at + 36 * 3600)
    with RunStore(db) as store:
        assert store.runs().iloc[0]["status"] == "paused"
        assert [f.token for f in store.forms(paused.run_id)] == [form.token]

    done = paused.respond("approve", {"note": "ship it"})
    assert done.run_id == paused.run_id and done.status == "succeeded"
    assert done.outputs == {
        "result": "published on blog: ship it", "action": "approve", "title": "Publish",
        "shown": "Check: A post about cats / note: ship it"}
    # The draft ran once: the resumed run reused it from the checkpoint.
    assert flow.log.read_text() == "draft\n"
    with RunStore(db) as store:
        assert store.forms(paused.run_id) == []  # nothing waits any more
        trace = store.trace(paused.run_id)
        review = trace[trace.node_id == "review"]
        assert list(review.status) == ["paused", "succeeded"]
        assert store.runs().iloc[0]["status"] == "succeeded"
    with pytest.raises(FormError, match="is succeeded, not paused"):
        paused.respond("approve")


@pytest.mark.parametrize(("action", "values", "message"), [
    ("publish", {}, "action 'publish' is not one of the form's actions \\(approve, reject\\)"),
    ("approve", {"nope": "x"}, "the form has no input nope; its inputs are note, channel"),
    ("approve", {}, "input 'note' is missing"),
    ("approve", {"note": "x", "channel": "fax"}, "'fax', not one of its options \\(blog, mail\\)"),
    ("approve", {"note": ["a"]}, "input 'note' takes text, not list"),
])
def test_an_answer_that_does_not_fit_the_form_is_refused_naming_the_field(
        flow, tmp_path, action, values, message):
    paused = flow().run({"topic": "cats"}, store=tmp_path / "runs.db")
    with pytest.raises(FormError, match=message):
        paused.respond(action, values)
    # Refused answers change nothing: the form still waits.
    assert paused.respond("reject", {"note": "later"}).outputs["result"] == "dropped"


def test_a_paused_run_outlives_its_process_and_another_process_answers_it(flow, tmp_path):
    db = tmp_path / "runs.db"
    flow()
    script = textwrap.dedent(f"""
        import asyncio, json, sys, cellwire
        if sys.argv[1] == "run":
            wf = cellwire.load({str(flow.path)!r}, trusted=True)
            r = wf.run({{"topic": "dogs"}}, store={str(db)!r})
            print(json.dumps([r.run_id, str(r.status)]))
        else:
            r = asyncio.run(cellwire.respond(sys.argv[2], "approve", {{"note": "ok"}},
                                             store={str(db)!r}, trust=True))
            print(json.dumps([r.run_id, str(r.status), r.outputs]))
        """)
    first = subprocess.run([sys.executable, "-c", script, "run"], capture_output=True,
                           text=True, timeout=120, check=True)
    run_id, status = json.loads(first.stdout)
    assert status == "paused"
    second = subprocess.run([sys.executable, "-c", script, "respond", run_id[:8]],
                            capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(second.stdout) == [run_id, "succeeded", {
        "result": "published on blog: ok", "action": "approve", "title": "Publish",
        "shown": "Check: A post about dogs / note: ok"}]
    assert flow.log.read_text() == "draft\n"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT status, action FROM forms").fetchall() == [
            ("answered", "approve")]


def cli(*args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cellwire.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=120, check=False, env=env)


def test_the_command_line_shows_the_form_refuses_to_resume_early_and_takes_the_answer(
        flow, tmp_path):
    db = tmp_path / "runs.db"
    flow()
    ran = cli("run", flow.path, "--trust", "--input", "topic=owls", "--db", db, "--json")
    assert ran.returncode == 4, ran.stderr
    shown = json.loads(ran.stdout)
    assert shown["status"] == "paused" and shown["forms"][0]["node_id"] == "review"
    run_id = shown["run_id"]
    human = cli("run", flow.path, "--trust", "--input", "topic=owls", "--db", db)
    assert human.returncode == 4
    assert "waits for input at node 'review' (Review)" in human.stderr
    assert "input channel: select one of blog, mail (default 'blog')" in human.stderr
    assert "cellwire respond" in human.stderr and "--action approve --input note=..." in human.stderr

    early = cli("resume", run_id, "--db", db)
    assert early.returncode == 2 and "waits for input at node 'review'" in early.stderr
    wrong = cli("respond", run_id, "--action", "approve", "--input", "color=red", "--db", db)
    assert wrong.returncode == 2 and "the form has no input color" in wrong.stderr
    answered = cli("respond", run_id[:10], "--action", "approve", "--input", "note=fine",
                   "--input", "channel=mail", "--db", db, "--trust", "--json")
    assert answered.returncode == 0, answered.stderr
    assert json.loads(answered.stdout)["outputs"]["result"] == "published on mail: fine"
    again = cli("respond", run_id, "--action", "approve", "--db", db)
    assert again.returncode == 2 and "not paused for input" in again.stderr
    listed = json.loads(cli("runs", "--db", db, "--json").stdout)
    assert {r["run_id"]: r["status"] for r in listed}[run_id] == "succeeded"


def test_a_form_nobody_answered_in_time_leaves_through_the_timeout_branch(flow, tmp_path):
    db = tmp_path / "runs.db"
    paused = flow(timeout=0).run({"topic": "cats"}, store=db)
    assert paused.status == "paused"
    with pytest.raises(FormExpired, match="expired at .* takes no answer"):
        paused.respond("approve", {"note": "too late"})
    timed_out = cli("resume", paused.run_id, "--db", db, "--trust", "--json")
    assert timed_out.returncode == 0, timed_out.stderr
    assert json.loads(timed_out.stdout)["outputs"] == {
        "result": "nobody answered", "action": "", "title": "",
        "shown": "Check: A post about cats / note: {{#$output.note#}}"}


PARALLEL_NODES = """\
  - id: legal
    type: human-input
    form_content: "Legal check"
    user_actions: [{id: ok, title: OK}]
  - id: side
    type: code
    code: |
      def main():
          with open("{log}", "a") as f:
              f.write("side\\n")
          return {"x": 1}
    outputs: {x: {type: number}}
  - id: after_legal
    type: end
    outputs: [{variable: legal, value_selector: [legal, __action_id]}]
"""
PARALLEL_EDGES = """\
  - {source: draft, target: legal}
  - {source: draft, target: side}
  - {source: legal, target: after_legal, handle: ok}
"""


def test_a_run_waits_on_every_form_of_its_parallel_branches_and_runs_the_rest_meanwhile(
        flow, tmp_path):
    db = tmp_path / "runs.db"
    wf = flow(extra_nodes=textwrap.indent(PARALLEL_NODES, ""), extra_edges=PARALLEL_EDGES)
    paused = wf.run({"topic": "cats"}, store=db)
    assert paused.status == "paused"
    assert sorted(f.node_id for f in paused.forms) == ["legal", "review"]
    assert flow.log.read_text() == "draft\nside\n"  # the branch without a form ran
    with pytest.raises(FormError, match="waits on forms at .*say which one"):
        paused.respond("ok")
    half = paused.respond("ok", node="legal")
    assert half.status == "paused" and [f.node_id for f in half.forms] == ["review"]
    done = half.respond("reject", {"note": "-"})
    assert done.status == "succeeded"
    assert done.outputs == {"legal": "ok", "result": "dropped", "action": "reject",
                            "title": "Drop", "shown": "Check: A post about cats / note: -"}
    assert flow.log.read_text() == "draft\nside\n"  # nothing ran twice


def test_a_form_never_shows_a_granted_secret_and_its_answer_is_sealed_in_the_store(
        tmp_path, monkeypatch):
    monkeypatch.setenv("CELLWIRE_STORE_KEY", "k" * 43 + "=")
    db = tmp_path / "runs.db"
    path = tmp_path / "secret.yaml"
    path.write_text(textwrap.dedent("""\
        cellwire: 1
        name: secret-form
        environment:
          - {name: TOKEN, value_type: secret}
        nodes:
          - {id: start, type: start}
          - id: ask
            type: human-input
            form_content: "token is {{#env.TOKEN#}}"
            inputs: [{type: paragraph, output_variable_name: reply}]
            user_actions: [{id: go, title: Go}]
          - id: end
            type: end
            outputs: [{variable: reply, value_selector: [ask, reply]}]
        edges:
          - {source: start, target: ask}
          - {source: ask, target: end, handle: go}
        """))
    secret = "s3cr3t-value-4242"
    paused = cellwire.load(path).run({}, store=db, secrets={"TOKEN": secret})
    assert paused.status == "paused"
    assert secret not in paused.forms[0].content and "token is" in paused.forms[0].content
    with pytest.raises(NotResumable, match="grant them again"):
        paused.respond("go", {"reply": "answer-7731"})
    with RunStore(db) as store:  # nothing was recorded: the form still waits
        assert [f.node_id for f in store.forms(paused.run_id)] == ["ask"]
    done = paused.respond("go", {"reply": "answer-7731"}, secrets={"TOKEN": secret})
    assert done.outputs == {"reply": "answer-7731"}
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("runs.db*"))
    assert secret.encode() not in raw
    with sqlite3.connect(db) as conn:  # kept like the run's checkpoint: sealed
        [(answer,)] = conn.execute("SELECT answer FROM forms").fetchall()
    assert answer.startswith(SEALED_PREFIX) and "answer-7731" not in answer


def test_an_imported_dify_approval_app_pauses_and_takes_its_answer(tmp_path):
    dsl = CORPUS / "lazeyliu__dify-dsl-generator-skills" / \
        "tests__fixtures__dsl__human-input-approval-workflow.yml"
    paused = cellwire.load(dsl).run({"request_id": "R-1"}, store=tmp_path / "runs.db")
    assert paused.status == "paused"
    [form] = paused.forms
    assert form.content == "请审批该请求" and [f.name for f in form.fields] == ["comment"]
    assert [(a.id, a.title) for a in form.actions] == [("approve", "通过"), ("reject", "拒绝")]
    done = paused.respond("approve", {"comment": "fine by me"})
    assert done.status == "succeeded" and done.outputs == {"comment": "fine by me"}


def test_a_human_input_node_inside_an_iteration_fails_saying_where_to_move_it(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text(textwrap.dedent("""\
        cellwire: 1
        name: ask-each
        nodes:
          - {id: start, type: start, variables: [{variable: xs, type: json_object}]}
          - id: each
            type: iteration
            iterator_selector: [start, xs]
            output_selector: [ask, __action_id]
          - {id: eachstart, type: iteration-start, parent: each}
          - id: ask
            type: human-input
            parent: each
            user_actions: [{id: ok, title: OK}]
          - {id: end, type: end, outputs: [{variable: out, value_selector: [each, output]}]}
        edges:
          - {source: start, target: each}
          - {source: eachstart, target: ask}
          - {source: each, target: end}
        """))
    result = cellwire.load(path).run({"xs": [1, 2]}, store=False)
    assert result.status == "failed"
    assert "inside an iteration or loop cannot pause the run" in result.error
    assert "move the human-input node before or after the container" in result.error
