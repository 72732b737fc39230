"""The %%workflow / %workflow magics driven through an IPython InteractiveShell, the displays,
and the dashboards checked against the run store."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

import cellwire
from cellwire.jupyter import dashboards
from cellwire.jupyter.display import LiveStatus, run_html, run_text
from cellwire.jupyter.magics import WorkflowMagics
from cellwire.jupyter.session import Session
from cellwire.store import open_store


class FakeKernel:
    """Stands in for ipykernel: the execute_request metadata JupyterLab sends."""

    def __init__(self) -> None:
        self.metadata: dict = {}

    def get_parent(self) -> dict:
        return {"metadata": self.metadata}


@pytest.fixture
def shell(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLWIRE_HOME", str(tmp_path))
    monkeypatch.setenv("CELLWIRE_DEFAULT_MODEL", "scripted/echo")
    ip = InteractiveShell(config=Config({"HistoryManager": {"enabled": False}}))
    ip.kernel = FakeKernel()
    magics = WorkflowMagics(ip, session=Session())
    ip.register_magics(magics)
    ip.events.register("pre_run_cell", magics.prune_deleted)
    from cellwire.jupyter.display import register_formatters

    register_formatters(ip)
    ip.magics_obj = magics
    yield ip
    ip.kernel = None
    open_store(tmp_path / "runs.db").close()


def cell(ip, line: str, body: str, cell_id: str | None = None, deleted=()):
    ip.kernel.metadata = {"cellId": cell_id, "deletedCells": list(deleted)} if cell_id else {}
    ip.magics_obj.prune_deleted()
    ip.run_cell_magic("workflow", line, body)


def wf(ip, name="qa"):
    return ip.magics_obj.session.workflows[name]


def edges(ip, name="qa"):
    return sorted((e.source, e.target, e.source_handle) for e in wf(ip, name).edges)


def build_qa(ip):
    cell(ip, "qa start --type start", "[question]", "c1")
    cell(ip, "qa ask --type llm --model openai/gpt-4o", "Answer: {{#start.question#}}", "c2")
    cell(ip, "qa shout --type code --var text=ask.text",
         "def main(text):\n    return {'loud': text.upper(), 'n': len(text)}\n", "c3")
    cell(ip, "qa end --type end", "answer: shout.loud\nn: shout.n", "c4")


# -- defining nodes -------------------------------------------------------------------------------


def test_cells_define_nodes_and_edges_from_references(shell):
    build_qa(shell)
    w = wf(shell)
    assert list(w.nodes) == ["start", "ask", "shout", "end"]
    assert edges(shell) == [("ask", "shout", "source"), ("shout", "end", "source"),
                            ("start", "ask", "source")]
    assert w.nodes["ask"].config["prompt_template"] == [
        {"role": "user", "text": "Answer: {{#start.question#}}"}]
    assert w.nodes["ask"].config["model"]["name"] == "gpt-4o"
    assert w.nodes["shout"].config["outputs"] == {"loud": {"type": "string"},
                                                   "n": {"type": "number"}}
    result = w.run(question="hi", store=False)
    assert result.outputs == {"answer": "ANSWER: HI", "n": 10}


def test_rerunning_a_cell_updates_its_node_and_its_edges(shell):
    build_qa(shell)
    # Same cell, new body: the node now reads the question directly, not the llm.
    cell(shell, "qa shout --type template-transform", "{{ start.question }}!", "c3")
    w = wf(shell)
    assert w.nodes["shout"].type == "template-transform"
    assert ("ask", "shout", "source") not in edges(shell)
    assert ("start", "shout", "source") in edges(shell)
    assert ("shout", "end", "source") in edges(shell)  # downstream edges stay


def test_renaming_the_node_of_a_cell_keeps_its_place(shell):
    build_qa(shell)
    cell(shell, "qa upper --type code --var text=ask.text",
         "def main(text):\n    return {'loud': text.upper(), 'n': 1}\n", "c3")
    assert "shout" not in wf(shell).nodes
    assert ("ask", "upper", "source") in edges(shell)
    assert ("upper", "end", "source") in edges(shell)


def test_deleting_a_cell_removes_its_node(shell):
    build_qa(shell)
    cell(shell, "qa other --type template-transform", "x", "c9", deleted=["c3"])
    assert "shout" not in wf(shell).nodes
    assert all("shout" not in (e.source, e.target) for e in wf(shell).edges)


def test_a_reference_to_a_later_cell_becomes_an_edge_when_it_is_defined(shell):
    cell(shell, "w b --type template-transform", "{{ a.output }}", "c2")
    assert wf(shell, "w").edges == []
    cell(shell, "w a --type template-transform", "hello", "c1")
    assert edges(shell, "w") == [("a", "b", "source")]


def test_after_with_a_handle_and_another_cells_node_id(shell):
    cell(shell, "w start --type start", "[x]", "c1")
    cell(shell, "w check --type if-else", """
cases:
  - case_id: "true"
    logical_operator: and
    conditions:
      - {variable_selector: [start, x], comparison_operator: is, value: yes}
""", "c2")
    cell(shell, "w yes --type template-transform --after check:true", "Y", "c3")
    assert ("check", "yes", "true") in edges(shell, "w")
    assert ("start", "check", "source") in edges(shell, "w")
    with pytest.raises(UsageError, match="defined by another cell"):
        cell(shell, "w yes --type template-transform", "Z", "c4")


def test_cell_bodies_are_yaml_1_2_so_yes_no_and_on_stay_strings(shell):
    # YAML 1.1 would read these values as booleans: the condition would compare the input
    # with True and the 'yes' branch would never be taken. Workflow files are YAML 1.2.
    cell(shell, "w start --type start", "[answer]", "c1")
    cell(shell, "w check --type if-else", """
cases:
  - case_id: agreed
    logical_operator: or
    conditions:
      - {variable_selector: [start, answer], comparison_operator: is, value: yes}
      - {variable_selector: [start, answer], comparison_operator: is, value: on}
  - case_id: refused
    logical_operator: and
    conditions:
      - {variable_selector: [start, answer], comparison_operator: is, value: no}
""", "c2")
    values = [c["value"] for case in wf(shell, "w").nodes["check"].config["cases"]
              for c in case["conditions"]]
    assert values == ["yes", "on", "no"]
    cell(shell, "w agreed --type template-transform --after check:agreed", "A", "c3")
    cell(shell, "w refused --type template-transform --after check:refused", "R", "c4")
    cell(shell, "w other --type template-transform --after check:false", "O", "c5")
    cell(shell, "w end --type end", "agreed: agreed.output\nrefused: refused.output\n"
         "other: other.output", "c6")
    for answer, taken in [("yes", "agreed"), ("on", "agreed"), ("no", "refused"),
                          ("True", "other")]:
        result = shell.run_line_magic("workflow", f"run w answer={answer} --wait")
        assert result.status == "succeeded"
        assert {k: v for k, v in result.outputs.items() if v} == {
            taken: {"agreed": "A", "refused": "R", "other": "O"}[taken]}, answer


def test_a_too_deeply_nested_cell_body_names_the_nesting(shell):
    with pytest.raises(UsageError) as caught:
        shell.run_cell_magic("workflow", "w x --type if-else", "cases: " + "[" * 2000)
    assert "nest more than 100 deep" in str(caught.value)


def test_plain_shell_keys_nodes_by_id(shell):
    shell.kernel = None
    shell.run_cell_magic("workflow", "w a --type template-transform", "one")
    shell.run_cell_magic("workflow", "w a --type template-transform", "two")
    assert list(wf(shell, "w").nodes) == ["a"]
    assert wf(shell, "w").nodes["a"].config["template"] == "two"


@pytest.mark.parametrize(("line", "body", "fix"), [
    ("qa x", "hi", "required: --type"),
    ("qa x --type nope", "hi", "unknown node type 'nope'; use one of"),
    ("qa x --type llm --bogus 1", "hi", "unrecognized arguments: --bogus"),
    ("qa 'a b' --type llm", "hi", "use 1-64 letters"),
    ("qa x --type llm --after ghost", "hi", "define it first"),
    ("qa x --type llm --model gpt4", "hi", "provider/name"),
    ("qa x --type llm", "  ", "write the prompt"),
    ("qa x --type code", "def main(:\n", "fix the Python"),
    ("qa x --type code", "x = 1\n", "def main"),
    ("qa x --type code --var y=a.b", "def main(x):\n    return {}\n", "no parameter"),
    ("qa x --type if-else", "cases: [1", "not valid YAML"),
    ("qa x --type if-else", "- 1\n- 2", "field: value"),
    ("qa x --type end", "answer: nodot", "node.var"),
    ("qa x --type start", "variables: [{label: x}]", "variable"),
    ("qa x --type list-operator", "limit: {enabled: maybe}", "fix the cell body"),
    ("qa x --type llm --retry x", "hi", "invalid int value"),
])
def test_bad_flags_or_bodies_give_a_one_line_usage_error(shell, line, body, fix):
    with pytest.raises(UsageError) as caught:
        shell.run_cell_magic("workflow", line, body)
    message = str(caught.value)
    assert fix in message
    assert "\n" not in message


def test_usage_errors_print_without_a_traceback(shell, capsys):
    result = shell.run_cell("%%workflow qa x --type nope\nhi\n")
    assert isinstance(result.error_in_exec, UsageError)
    err = capsys.readouterr().err
    assert "UsageError: unknown node type" in err
    assert "Traceback" not in err


def test_config_is_settable_with_percent_config(shell):
    shell.run_line_magic("config", "WorkflowMagics.default_model = 'scripted/fixed'")
    assert shell.magics_obj.default_model == "scripted/fixed"
    shell.run_cell_magic("workflow", "w a --type llm", "hello")
    assert wf(shell, "w").nodes["a"].config["model"]["provider"] == "scripted"


# -- subcommands ----------------------------------------------------------------------------------


def test_run_wait_list_show_export_delete(shell, tmp_path):
    build_qa(shell)
    result = shell.run_line_magic("workflow", "run qa question=hello --wait")
    assert result.status == "succeeded"
    assert result.outputs["answer"] == "ANSWER: HELLO"
    listing = shell.run_line_magic("workflow", "list")
    assert listing.to_dict("records")[0]["last_status"] == "succeeded"
    picture = shell.run_line_magic("workflow", "show qa")
    svg = picture._repr_svg_()
    assert svg.startswith("<svg") and ">shout<" in svg
    # A wide graph shrinks to the output area's width instead of being cut off.
    assert 'viewBox="0 0 ' in svg and "max-width:100%" in svg
    text = shell.run_line_magic("workflow", "export qa --format yaml")
    assert "cellwire: 1" in repr(text) and "cell_id" not in repr(text)
    path = tmp_path / "qa.yml"
    shell.run_line_magic("workflow", f"export qa --format dify --to {path}")
    shell.run_line_magic("workflow", f"import {path} --name copy")
    assert set(wf(shell, "copy").nodes) == set(wf(shell).nodes)
    shell.run_line_magic("workflow", "delete copy")
    assert "copy" not in shell.magics_obj.session.workflows
    with pytest.raises(UsageError, match="no workflow named 'copy'"):
        shell.run_line_magic("workflow", "run copy")
    with pytest.raises(UsageError, match="unknown subcommand"):
        shell.run_line_magic("workflow", "frobnicate")


def test_run_inputs_take_literals_and_notebook_variables(shell):
    cell(shell, "w start --type start", "n: number\ntext: text-input", "c1")
    cell(shell, "w end --type end", "n: start.n\ntext: start.text", "c2")
    shell.user_ns["greeting"] = "hi there"
    result = shell.run_line_magic("workflow", "run w n=3 text=$greeting --wait")
    assert result.outputs == {"n": 3, "text": "hi there"}
    with pytest.raises(UsageError, match="no variable 'nope'"):
        shell.run_line_magic("workflow", "run w n=3 text=$nope")


def test_an_invalid_workflow_does_not_start(shell):
    cell(shell, "w a --type template-transform", "x", "c1")
    cell(shell, "w b --type template-transform --after a", "y", "c2")
    cell(shell, "w a --type template-transform --after b", "x", "c1")  # a cycle
    with pytest.raises(UsageError) as caught:
        shell.run_line_magic("workflow", "run w")
    assert "\n" not in str(caught.value)


async def test_run_without_wait_returns_at_once_and_can_be_stopped(shell):
    import asyncio

    gate = asyncio.Event()

    @cellwire.node_type("test-gate")
    async def gate_node(ctx):
        await gate.wait()
        return cellwire.NodeResult(outputs={"ok": True})

    cell(shell, "w start --type start", "[]", "c1")
    cell(shell, "w g --type test-gate --after start", "{}", "c2")
    cell(shell, "w end --type end", "ok: g.ok", "c3")
    assert shell.run_line_magic("workflow", "run w") is None
    run = shell.magics_obj.session.find_run(None)
    await asyncio.sleep(0)
    assert not run.done and run.status == "running"
    shell.run_line_magic("workflow", f"stop {run.run_id[:8]}")
    result = await run
    assert result.status == "stopped"


# -- displays -------------------------------------------------------------------------------------


def test_result_html_escapes_and_names_the_failed_node(shell):
    cell(shell, "w start --type start", "[x]", "c1")
    cell(shell, "w boom --type code --var x=start.x",
         "def main(x):\n    raise ValueError('<b>bad</b>')\n", "c2")
    cell(shell, "w end --type end", "y: boom.y", "c3")
    result = shell.run_line_magic("workflow", "run w x=<i>hi</i> --wait")
    page = run_html(result)
    assert "failed" in page and "<b>boom</b>" in page
    assert "&lt;b&gt;bad&lt;/b&gt;" in page and "<b>bad</b>" not in page
    assert "boom" in run_text(result).splitlines()[1]
    bundle = shell.display_formatter.format(result)[0]
    assert bundle["text/html"] == page
    assert bundle["text/plain"] == run_text(result)


def test_a_paused_run_shows_its_form_and_how_to_answer_it_and_no_dollar_is_typeset(tmp_path):
    wfl = cellwire.Workflow("ask")
    wfl.add_node("start", "start")
    wfl.add_node("review", "human-input", after="start", form_content="Spend $5 or $50?",
                 inputs=[{"type": "paragraph", "output_variable_name": "why"}],
                 user_actions=[{"id": "five", "title": "$5"}, {"id": "fifty", "title": "$50"}])
    wfl.add_node("end", "end", after=[("review", "five")], outputs=[])
    result = wfl.run(store=tmp_path / "runs.db")
    page = run_html(result)
    assert 'class="cellwire-run tex2jax_ignore mathjax_ignore"' in page
    assert "waits for input at node <b>review</b>" in page and "Spend $5 or $50?" in page
    assert "run.respond(&#x27;five&#x27;, {&#x27;why&#x27;: ...})" in page
    text = run_text(result)
    assert "answer it: run.respond('five', {'why': ...})" in text
    assert "actions: five ($5), fifty ($50)" in text


def test_live_status_is_throttled_and_shows_the_end():
    shown = []
    live = LiveStatus("w", interval=3600, publish=shown.append)
    wfl = cellwire.Workflow("w")
    wfl.add_node("start", "start")
    for i in range(5):
        wfl.add_node(f"t{i}", "template-transform", after="start", template="x")
    runtime = cellwire.Runtime()
    runtime.subscribe(live)
    result = cellwire.api.run(wfl, runtime=runtime, store=False)
    # One update for the first event, then the hour-long throttle holds until the run ends.
    assert live.updates == 2
    assert "succeeded" in shown[-1].text and "6 succeeded" in shown[-1].text
    live.finish(result)
    assert shown[-1].text == run_text(result)


# -- dashboards against the store -----------------------------------------------------------------


def test_dashboards_match_the_store(shell, tmp_path):
    build_qa(shell)
    for q in ("one", "two words", "three more words"):
        shell.run_line_magic("workflow", f"run qa question='{q}' --wait")
    cell(shell, "bad start --type start", "[x]", "d1")
    cell(shell, "bad boom --type code --var x=start.x", "def main(x):\n    return 1/0\n", "d2")
    cell(shell, "bad end --type end", "y: boom.y", "d3")
    shell.run_line_magic("workflow", "run bad x=1 --wait")
    store = open_store(tmp_path / "runs.db")
    stored = store.runs()
    assert len(stored) == 4

    costs = dashboards.costs("model", store=store)
    llm_rows = [store.trace(r)[lambda t: t.node_type == "llm"] for r in stored.run_id]
    tokens = sum(int(t.total_tokens.sum()) for t in llm_rows)
    assert costs.loc["scripted/echo", "total_tokens"] == tokens
    assert costs.loc["scripted/echo", "calls"] == 3
    assert costs.loc["scripted/echo", "runs"] == 3
    by_workflow = dashboards.costs("workflow", store=store)
    assert by_workflow.loc["qa", "total_tokens"] == stored[stored.workflow == "qa"][
        "total_tokens"].sum()
    assert by_workflow.loc["bad", "calls"] == 2  # start and the failed code node

    lat = dashboards.latency("node", store=store)
    ask = [t for r in stored.run_id for t in store.trace(r).query("node_id == 'ask'")
           .elapsed_ms]
    assert lat.loc["ask", "count"] == 3
    assert lat.loc["ask", "p50_ms"] == pytest.approx(sorted(ask)[1])
    assert lat.loc["ask", "max_ms"] == pytest.approx(max(ask))
    assert lat.loc["boom", "errors"] == 1 and lat.loc["boom", "error_rate"] == 1.0
    runs_lat = dashboards.latency("workflow", store=store)
    assert runs_lat.loc["bad", "error_rate"] == 1.0 and runs_lat.loc["qa", "errors"] == 0

    newest = stored.run_id.iloc[0]
    tr = shell.run_line_magic("workflow", "trace")
    assert list(tr.node_id) == list(store.trace(newest).sort_values("started_at",
                                                                     kind="stable").node_id)
    assert tr.loc[tr.node_id == "boom", "status"].item() == "failed"
    assert shell.run_line_magic("workflow", "runs --limit 2").run_id.tolist() == \
        stored.run_id.tolist()[:2]
    day = dashboards.costs("day", store=store)
    assert day["calls"].sum() == 14  # 3 runs x 4 nodes + start and boom

    from matplotlib.figure import Figure

    for fig in (dashboards.timeline(newest, store=store), dashboards.cost_chart(store=store),
                dashboards.latency_chart(store=store),
                shell.run_line_magic("workflow", "trace --chart")):
        assert isinstance(fig, Figure)
    assert "image/png" in shell.display_formatter.format(dashboards.cost_chart(store=store))[0]


def test_timeline_shows_parallel_branches_overlapping(tmp_path):
    import asyncio

    @cellwire.node_type("test-nap")
    async def nap(ctx):
        await asyncio.sleep(0.05)
        return cellwire.NodeResult(outputs={"ok": 1})

    w = cellwire.Workflow("par")
    w.add_node("start", "start")
    w.add_node("a", "test-nap", after="start")
    w.add_node("b", "test-nap", after="start")
    store = open_store(tmp_path / "par.db")
    result = w.run(store=store)
    fig = dashboards.timeline(result, store=store)
    bars = {t.get_text(): p for t, p in zip(fig.axes[0].get_yticklabels(),
                                             fig.axes[0].patches, strict=True)}
    a, b = bars["a"], bars["b"]
    # The two spans overlap in time: each starts before the other ends.
    assert a.get_x() < b.get_x() + b.get_width() and b.get_x() < a.get_x() + a.get_width()
    store.close()


def test_export_python_rebuilds_the_same_workflow(shell, tmp_path):
    build_qa(shell)
    text = shell.run_line_magic("workflow", "export qa --format python")
    source = repr(text)
    assert source.lstrip().startswith('"""') and "import cellwire" in source
    namespace: dict = {}
    exec(compile(source, "qa.py", "exec"), namespace)  # noqa: S102 - the script runs as printed
    # The same workflow, without the notebook's note of which cell made each node.
    assert namespace["wf"] == shell.magics_obj.session.without_cells(wf(shell))
    assert "cell_id" not in source
    assert "cell_id" in repr(shell.run_line_magic("workflow", "export qa --with-cells"))
    path = tmp_path / "qa.py"
    shell.run_line_magic("workflow", f"export qa --format python --to {path}")
    assert path.read_text(encoding="utf-8") == source
    rebuilt = namespace["wf"].run({"question": "hi"}, store=False, model="scripted/echo")
    assert rebuilt.outputs["answer"] == "ANSWER: HI"


def test_run_grants_secrets_only_when_asked(shell, monkeypatch):
    monkeypatch.setenv("MAGIC_TOKEN_X", "tok-123456789")
    sess = shell.magics_obj.session
    w = cellwire.Workflow("sec")
    w.environment = [cellwire.model.EnvironmentVariable(name="TOKEN", value_type="secret")]
    w.add_node("start", "start")
    w.add_node("t", "template-transform", after="start", template="{{ env.TOKEN | length }}",
               variables=[{"variable": "env", "value_selector": ["env"]}])
    w.add_node("end", "end", after="t", outputs=[{"variable": "n", "value_selector": ["t", "output"]}])
    sess.workflows["sec"] = w
    ungranted = shell.run_line_magic("workflow", "run sec --wait")
    assert ungranted.status.value == "failed" and "TOKEN" in ungranted.error
    granted = shell.run_line_magic("workflow", "run sec --wait --secret TOKEN=env:MAGIC_TOKEN_X")
    assert granted.status.value == "succeeded" and granted.outputs == {"n": "13"}
    shell.run_line_magic("config", "WorkflowMagics.secrets = ['TOKEN=env:MAGIC_TOKEN_X']")
    try:
        assert shell.run_line_magic("workflow", "run sec --wait").outputs == {"n": "13"}
    finally:
        shell.run_line_magic("config", "WorkflowMagics.secrets = []")
    with pytest.raises(UsageError, match="NO_SUCH_VAR_Y"):
        shell.run_line_magic("workflow", "run sec --wait --secret TOKEN=env:NO_SUCH_VAR_Y")


def test_compare_puts_two_runs_side_by_side_node_by_node(shell, tmp_path):
    store = open_store(tmp_path / "runs.db")
    w = cellwire.Workflow("cmp")
    w.add_node("start", "start", variables=[{"variable": "x", "type": "text-input"}])
    w.add_node("greet", "template-transform", after="start", template="hello {{ x }}",
               variables=[{"variable": "x", "value_selector": ["start", "x"]}])
    w.add_node("shout", "template-transform", after="greet", template="{{ g | upper }}",
               variables=[{"variable": "g", "value_selector": ["greet", "output"]}])
    w.add_node("end", "end", after="shout",
               outputs=[{"variable": "out", "value_selector": ["shout", "output"]}])
    first = w.run(x="ada", store=store)
    w.update_node("greet", template="bye {{ x }}")
    second = w.run(x="ada", store=store)
    table = cellwire.compare(first.run_id, second)
    assert list(table["node_id"]) == ["start", "greet", "shout", "end"]
    assert dict(zip(table["node_id"], table["same_outputs"], strict=True)) == {
        "start": True, "greet": False, "shout": False, "end": False}
    assert table.loc[1, "outputs_a"] == {"output": "hello ada"}
    assert table.loc[1, "outputs_b"] == {"output": "bye ada"}
    assert table["same_status"].all()


def test_trace_magic_reads_node_status_time_tokens_cost_first(shell, tmp_path):
    """%workflow trace: the reading columns first, ms from the run's start instead of
    timestamps, rounded, and columns with nothing in them left out."""
    from cellwire.jupyter.tables import TRACE_FIRST

    build_qa(shell)
    assert shell.run_line_magic("workflow", "run qa question=hi --wait").status == "succeeded"
    tr = shell.run_line_magic("workflow", "trace")
    assert list(tr.columns[:len(TRACE_FIRST) + 1]) == [*TRACE_FIRST, "start_ms"]
    assert "started_at" not in tr and "finished_at" not in tr
    assert "parent_id" not in tr and "retries" not in tr  # nothing in them
    assert tr.start_ms.min() == 0.0
    assert all(round(v, 1) == v for v in tr.elapsed_ms)
    assert tr.loc[tr.node_id == "ask", "total_tokens"].item() > 0


def test_a_cell_naming_an_unknown_node_or_output_warns_with_the_closest_name(shell, capsys):
    cell(shell, "qa start --type start", "[question]", "c1")
    cell(shell, "qa ask --type llm", "Answer: {{#start.questoin#}} {{#strat.question#}}", "c2")
    cell(shell, "qa end --type end", "answer: ask.txt", "c3")
    err = capsys.readouterr().err
    assert "node 'start' has no output 'questoin' (fix: did you mean 'question'?)" in err
    assert "refers to node 'strat', which does not exist (fix: did you mean 'start'?)" in err
    assert "node 'ask' has no output 'txt' (fix: did you mean 'text'?)" in err
    cell(shell, "qa ask --type llm", "Answer: {{#start.question#}}", "c2")
    assert "warning" not in capsys.readouterr().err  # fixed: nothing to say


def test_start_inputs_are_typed_from_the_short_form(shell):
    cell(shell, "t start --type start",
         "[question, n:number, tone:select(short|long), doc:file, notes:paragraph]", "c1")
    cell(shell, "t end --type end", "n: start.n\ntone: start.tone", "c2")
    variables = {v["variable"]: v for v in wf(shell, "t").nodes["start"].config["variables"]}
    assert {k: v["type"] for k, v in variables.items()} == {
        "question": "text-input", "n": "number", "tone": "select", "doc": "file",
        "notes": "paragraph"}
    assert variables["tone"]["options"] == ["short", "long"]
    result = shell.run_line_magic("workflow", "run t question=q n=3 tone=long --wait")
    assert result.outputs == {"n": 3, "tone": "long"}
    with pytest.raises(UsageError, match=r"unknown type 'nubmer'; use one of"):
        cell(shell, "t start --type start", "[n:nubmer]", "c1")
    with pytest.raises(UsageError, match=r"only a select takes options"):
        cell(shell, "t start --type start", "[n:number(1|2)]", "c1")


def test_trace_magic_lists_a_container_before_what_ran_inside_it(shell):
    """Nodes finish inside-out (an iteration after its items), but the trace is read in the
    order nodes started: the iteration's row, then its items' rows naming it as parent."""
    wf = cellwire.Workflow("nest")
    wf.add_node("start", "start", variables=[{"variable": "items", "type": "json_object"}])
    wf.add_node("it", "iteration", after="start", iterator_selector=["start", "items"],
                output_selector=["t", "output"], start_node_id="its")
    wf.add_node("its", "iteration-start", parent="it")
    wf.add_node("t", "template-transform", parent="it", after="its", template="{{ x }}!",
                variables=[{"variable": "x", "value_selector": ["it", "item"]}])
    wf.add_node("end", "end", after="it", outputs=[{"variable": "out",
                                                    "value_selector": ["it", "output"]}])
    shell.magics_obj.session.workflows["nest"] = wf
    result = shell.run_line_magic("workflow", "run nest items=[1,2] --wait")
    assert result.outputs == {"out": ["1!", "2!"]}, result.error
    raw = result.trace
    assert list(raw.node_id).index("it") > list(raw.node_id).index("t")  # finish order
    tr = shell.run_line_magic("workflow", "trace")
    order = list(tr.node_id)
    assert order.index("it") < order.index("t") and order[0] == "start"
    assert set(tr.loc[tr.node_id == "t", "parent_id"]) == {"it"}
