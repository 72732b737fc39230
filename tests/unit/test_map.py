"""Batch runs (cellwire.scale.map/amap, Workflow.map, %workflow map) on the scripted provider
and a real SQLite run store."""

from __future__ import annotations

import asyncio

import pandas as pd
import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

import cellwire
from cellwire.engine.events import RunFailed
from cellwire.jupyter.magics import WorkflowMagics
from cellwire.jupyter.session import Session
from cellwire.scale import MapError, amap
from cellwire.scale import map as map_rows
from cellwire.services.llm import LLMRouter, Rule, ScriptedProvider
from cellwire.store import open_store

SCRIPTED = {"provider": "scripted", "name": "echo", "mode": "chat"}
RESULT_COLUMNS = ["status", "error", "run_id", "latency", "total_tokens", "cost"]


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLWIRE_HOME", str(tmp_path))
    monkeypatch.delenv("CELLWIRE_DEFAULT_MODEL", raising=False)


def runtime(provider: ScriptedProvider, *sinks) -> cellwire.Runtime:
    return cellwire.Runtime(llm=LLMRouter([provider]), layers=list(sinks))


def echo_workflow(**llm) -> cellwire.Workflow:
    """start(query) -> llm -> end(text)."""
    wf = cellwire.Workflow("echo-batch")
    wf.add_node("start", "start",
                variables=[{"variable": "query", "type": "paragraph", "required": True}])
    wf.add_node("llm", "llm", after="start", model=llm.pop("model", SCRIPTED),
                prompt_template=[{"role": "user", "text": "Q: {{#start.query#}}"}], **llm)
    wf.add_node("end", "end", after="llm",
                outputs=[{"variable": "text", "value_selector": ["llm", "text"]}])
    return wf


# -- outputs per row --------------------------------------------------------------------------


async def test_each_row_gets_its_outputs_on_the_input_index():
    provider = ScriptedProvider()
    df = pd.DataFrame({"query": ["one", "two words", "three more words"],
                       "expected": [1, 2, 3]}, index=["a", "b", "c"])
    out = await echo_workflow().amap(df, runtime=runtime(provider), store=False)

    assert list(out.index) == ["a", "b", "c"]
    assert list(out.columns) == ["query", "expected", "text", *RESULT_COLUMNS]
    assert out["text"].tolist() == ["Q: one", "Q: two words", "Q: three more words"]
    assert out["expected"].tolist() == [1, 2, 3]
    assert out["status"].tolist() == ["succeeded"] * 3
    assert out["error"].isna().all()
    # Scripted tokens are words: prompt + completion.
    assert out["total_tokens"].tolist() == [4, 6, 8]
    assert out["cost"].tolist() == [0.0, 0.0, 0.0]
    assert (out["latency"] >= 0).all()
    assert out["run_id"].nunique() == 3
    assert len(provider.calls) == 3


async def test_a_list_of_dicts_and_inputs_shared_by_every_row():
    wf = cellwire.Workflow("greet")
    wf.add_node("start", "start", variables=[{"variable": "name"}, {"variable": "greeting"}])
    wf.add_node("t", "template-transform", after="start",
                template="{{ start.greeting }}, {{ start.name }}!",
                variables=[{"variable": "x", "value_selector": ["start", "name"]}])
    wf.add_node("end", "end", after="t",
                outputs=[{"variable": "line", "value_selector": ["t", "output"]}])
    out = await wf.amap([{"name": "Ada"}, {"name": "Alan"}], greeting="Hello", store=False)
    assert out["line"].tolist() == ["Hello, Ada!", "Hello, Alan!"]
    assert list(out.index) == [0, 1]

    with pytest.raises(ValueError, match="'name' is both a column and a keyword"):
        await wf.amap([{"name": "Ada"}], name="Bob", store=False)


async def test_missing_cells_are_missing_inputs_and_fail_only_their_row():
    df = pd.DataFrame({"query": ["fine", None, float("nan"), "also fine"]})
    out = await echo_workflow().amap(df, runtime=runtime(ScriptedProvider()), store=False)
    assert out["status"].tolist() == ["succeeded", "failed", "failed", "succeeded"]
    assert "the required input 'query' is missing" in out.loc[1, "error"]
    assert out.loc[3, "text"] == "Q: also fine"


async def test_a_required_input_without_a_column_fails_before_any_run():
    provider = ScriptedProvider()
    with pytest.raises(cellwire.WorkflowError, match="cannot start") as caught:
        await echo_workflow().amap(pd.DataFrame({"question": ["hi"]}),
                                   runtime=runtime(provider), store=False)
    problem = caught.value.problems[0]
    assert (problem.node_id, problem.field) == ("start", "variables.query")
    assert "add a column 'query'" in problem.hint
    assert provider.calls == []


async def test_numpy_values_arrive_as_python_values():
    seen = []

    @cellwire.node_type("t-map-types", outputs=["kind"])
    async def kinds(ctx):
        value = ctx.pool.get(["start", "n"])
        seen.append(value)
        return {"kind": type(value).__name__}

    wf = cellwire.Workflow("types")
    wf.add_node("start", "start", variables=[{"variable": "n", "type": "number"}])
    wf.add_node("k", "t-map-types", after="start")
    wf.add_node("end", "end", after="k",
                outputs=[{"variable": "kind", "value_selector": ["k", "kind"]}])
    out = await wf.amap(pd.DataFrame({"n": [1, 2]}), store=False)
    assert out["kind"].tolist() == ["int", "int"]
    assert seen == [1, 2]


async def test_chatflow_rows_get_the_answer_column_from_sys_query():
    wf = cellwire.Workflow("chat", mode="advanced-chat")
    wf.add_node("start", "start")
    wf.add_node("llm", "llm", after="start", model=SCRIPTED,
                prompt_template=[{"role": "user", "text": "{{#sys.query#}}"}])
    wf.add_node("answer", "answer", after="llm", answer="A: {{#llm.text#}}")
    df = pd.DataFrame({"sys.query": ["hello", "bye"]})
    out = await wf.amap(df, runtime=runtime(ScriptedProvider()), store=False)
    assert out["answer"].tolist() == ["A: hello", "A: bye"]
    assert list(out.columns) == ["sys.query", "answer", *RESULT_COLUMNS]


async def test_outputs_named_like_an_input_or_a_result_column_keep_both():
    wf = cellwire.Workflow("clash")
    wf.add_node("start", "start", variables=[{"variable": "query"}])
    wf.add_node("end", "end", after="start", outputs=[
        {"variable": "query", "value_selector": ["start", "query"]},
        {"variable": "status", "value_selector": ["start", "query"]},
        {"variable": "items", "value_selector": ["start", "query"]},
    ])
    out = await wf.amap([{"query": "q1"}, {"query": "q2"}], store=False)
    assert list(out.columns) == ["query", "output.query", "output.status", "items",
                                 *RESULT_COLUMNS]
    assert out["output.status"].tolist() == ["q1", "q2"]
    assert out["status"].tolist() == ["succeeded", "succeeded"]


async def test_list_and_dict_outputs_stay_whole_values():
    wf = cellwire.Workflow("shapes")
    wf.add_node("start", "start", variables=[{"variable": "xs", "type": "json_object"}])
    wf.add_node("end", "end", after="start",
                outputs=[{"variable": "xs", "value_selector": ["start", "xs"]}])
    out = await wf.amap([{"xs": [1, 2]}, {"xs": {"a": 1}}], store=False)
    assert out["output.xs"].tolist() == [[1, 2], {"a": 1}]


async def test_an_empty_batch_is_an_empty_frame():
    out = await echo_workflow().amap(pd.DataFrame({"query": []}), store=False)
    assert len(out) == 0
    assert list(out.columns) == ["query", "text", *RESULT_COLUMNS]


# -- the concurrency bound --------------------------------------------------------------------


class _Gauge:
    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self.started = 0


_gauge = _Gauge()


@cellwire.node_type("t-map-gauge", outputs=["n"])
async def _gauged(ctx):
    """Counts the executions in flight; the pause lets others start meanwhile."""
    _gauge.now += 1
    _gauge.started += 1
    _gauge.peak = max(_gauge.peak, _gauge.now)
    for _ in range(5):
        await asyncio.sleep(0)
    _gauge.now -= 1
    return {"n": _gauge.started}


@pytest.fixture
def gauge():
    global _gauge
    _gauge = _Gauge()
    return _gauge


def gauge_workflow(width: int = 1) -> cellwire.Workflow:
    wf = cellwire.Workflow("gauge")
    wf.add_node("start", "start", variables=[{"variable": "i", "type": "number"}])
    for k in range(width):
        wf.add_node(f"g{k}", "t-map-gauge", after="start")
    wf.add_node("end", "end", after=[f"g{k}" for k in range(width)],
                outputs=[{"variable": "n", "value_selector": ["g0", "n"]}])
    return wf


@pytest.mark.parametrize("concurrency", [1, 3, 8])
async def test_at_most_concurrency_rows_run_at_once(gauge, concurrency):
    out = await gauge_workflow().amap([{"i": i} for i in range(20)], concurrency=concurrency,
                                      store=False)
    assert (out["status"] == "succeeded").all()
    assert gauge.started == 20
    # Bounded, and the bound is reached: rows do overlap.
    assert gauge.peak == concurrency


async def test_run_concurrency_bounds_the_nodes_within_each_run(gauge):
    out = await gauge_workflow(width=4).amap([{"i": 0}], run_concurrency=1, store=False)
    assert out.loc[0, "status"] == "succeeded"
    assert gauge.peak == 1
    gauge.peak = 0
    await gauge_workflow(width=4).amap([{"i": 0}], store=False)
    assert gauge.peak == 4


async def test_progress_is_called_after_every_row(gauge):
    seen = []
    await gauge_workflow().amap([{"i": i} for i in range(5)], concurrency=2, store=False,
                                progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]


# -- model= routing ---------------------------------------------------------------------------


async def test_model_routes_every_llm_node_of_every_row():
    provider = ScriptedProvider(rules=[Rule(model="routed", reply="from routed")])
    wf = cellwire.Workflow("two-models")
    wf.add_node("start", "start", variables=[{"variable": "query"}])
    wf.add_node("a", "llm", after="start",
                model={"provider": "langgenius/openai/openai", "name": "gpt-4o", "mode": "chat"},
                prompt_template=[{"role": "user", "text": "{{#start.query#}}"}])
    wf.add_node("b", "llm", after="a",
                model={"provider": "anthropic", "name": "claude-sonnet-4-5", "mode": "chat"},
                prompt_template=[{"role": "user", "text": "{{#a.text#}}"}])
    wf.add_node("end", "end", after="b", outputs=[
        {"variable": "a", "value_selector": ["a", "text"]},
        {"variable": "b", "value_selector": ["b", "text"]}])
    df = pd.DataFrame({"query": [f"q{i}" for i in range(6)]})

    out = await wf.amap(df, model="scripted/routed", runtime=runtime(provider), store=False)
    assert (out["status"] == "succeeded").all(), out["error"].tolist()
    assert out["a"].tolist() == ["from routed"] * 6
    assert out["b"].tolist() == ["from routed"] * 6
    assert len(provider.calls) == 12
    assert {c.model for c in provider.calls} == {"routed"}

    # Without model= the nodes' own providers are asked for, and this router has neither.
    plain = await wf.amap(df.head(1), runtime=runtime(provider), store=False)
    assert plain.loc[0, "status"] == "failed"
    assert "node 'a'" in plain.loc[0, "error"]


# -- failures ---------------------------------------------------------------------------------


async def test_a_failing_row_keeps_its_error_and_the_others_their_outputs():
    provider = ScriptedProvider(rules=[Rule(contains="boom", error="the model refused")])
    df = pd.DataFrame({"query": ["ok 1", "boom", "ok 3", "ok 4"]}, index=[10, 20, 30, 40])
    out = await echo_workflow().amap(df, concurrency=2, runtime=runtime(provider),
                                     store=False)
    assert out["status"].tolist() == ["succeeded", "failed", "succeeded", "succeeded"]
    error = out.loc[20, "error"]
    assert "node 'llm'" in error and "the model refused" in error
    assert pd.isna(out.loc[20, "text"])
    assert out.loc[[10, 30, 40], "text"].tolist() == ["Q: ok 1", "Q: ok 3", "Q: ok 4"]
    assert out["error"].isna().tolist() == [True, False, True, True]


async def test_on_error_raise_names_the_row_and_node_and_starts_no_more_rows():
    provider = ScriptedProvider(rules=[Rule(contains="boom", error="the model refused")])
    df = pd.DataFrame({"query": ["fine", "boom", "never", "never"]}, index=list("wxyz"))
    with pytest.raises(MapError, match=r"row 'x' failed at node 'llm'.*refused") as caught:
        await echo_workflow().amap(df, concurrency=1, on_error="raise",
                                   runtime=runtime(provider), store=False)
    error = caught.value
    assert (error.index, error.node_id) == ("x", "llm")
    assert error.frame["status"].tolist() == ["succeeded", "failed", "pending", "pending"]
    assert error.frame.loc["w", "text"] == "Q: fine"
    assert error.frame.loc[["y", "z"], "run_id"].isna().all()
    assert [c.last_user_message for c in provider.calls] == ["Q: fine", "Q: boom"]


async def test_on_error_raise_lets_the_rows_in_flight_finish():
    failed = asyncio.Event()

    @cellwire.node_type("t-map-after-failure", outputs=["done"])
    async def after_failure(ctx):
        # Still running when another row fails: it must be let finish.
        await failed.wait()
        return {"done": True}

    wf = cellwire.Workflow("in-flight")
    wf.add_node("start", "start", variables=[{"variable": "slow", "type": "number"}])
    wf.add_node("check", "if-else", after="start", cases=[{
        "case_id": "slow", "logical_operator": "and",
        "conditions": [{"variable_selector": ["start", "slow"],
                        "comparison_operator": "=", "value": "1"}]}])
    wf.add_node("wait", "t-map-after-failure", after=[("check", "slow")])
    wf.add_node("code", "code", after=[("check", "false")], variables=[],
                code="def main():\n    raise ValueError('row broke')\n", outputs={})
    wf.add_node("end", "end", after=["wait"],
                outputs=[{"variable": "done", "value_selector": ["wait", "done"]}])

    def on_event(event):
        if isinstance(event, RunFailed):
            failed.set()

    rows = [{"slow": 1}, {"slow": 0}, {"slow": 1}, {"slow": 1}]
    with pytest.raises(MapError, match="row 1 failed at node 'code'") as caught:
        await wf.amap(rows, concurrency=2, on_error="raise",
                      runtime=cellwire.Runtime(layers=[on_event]), store=False)
    frame = caught.value.frame
    assert frame["status"].tolist() == ["succeeded", "failed", "pending", "pending"]
    assert frame.loc[0, "done"]


async def test_bad_options_are_refused_before_any_run():
    provider = ScriptedProvider()
    wf = echo_workflow()
    rows = [{"query": "hi"}]
    with pytest.raises(ValueError, match="on_error='skip'"):
        await wf.amap(rows, on_error="skip", runtime=runtime(provider), store=False)
    with pytest.raises(ValueError, match="concurrency=0"):
        await wf.amap(rows, concurrency=0, runtime=runtime(provider), store=False)
    with pytest.raises(TypeError, match="run_id="):
        await wf.amap(rows, run_id="x", runtime=runtime(provider), store=False)
    with pytest.raises(TypeError, match="pass a DataFrame"):
        await wf.amap("query", runtime=runtime(provider), store=False)
    with pytest.raises(TypeError, match="inputs\\[1\\] is a str"):
        await wf.amap([{"query": "a"}, "b"], runtime=runtime(provider), store=False)
    with pytest.raises(TypeError, match="column 0 is not a string"):
        await wf.amap(pd.DataFrame([["a"]]), runtime=runtime(provider), store=False)
    assert provider.calls == []


# -- the run store ----------------------------------------------------------------------------


async def test_every_row_is_a_stored_run(tmp_path):
    path = tmp_path / "batch" / "runs.db"
    provider = ScriptedProvider(rules=[Rule(contains="boom", error="refused")])
    df = pd.DataFrame({"query": ["a", "boom", "c"]})
    out = await echo_workflow().amap(df, runtime=runtime(provider), store=path)

    stored = open_store(path).runs().set_index("run_id")
    assert set(out["run_id"]) <= set(stored.index)
    for row in out.itertuples():
        run = stored.loc[row.run_id]
        assert run["workflow"] == "echo-batch"
        assert run["status"] == row.status
    trace = open_store(path).trace(out.loc[0, "run_id"])
    assert trace.set_index("node_id").loc["llm", "outputs"]["text"] == "Q: a"
    assert open_store(path).run(out.loc[1, "run_id"])["error_node"] == "llm"


async def test_the_default_store_gets_the_rows_and_store_false_none(tmp_path):
    wf = echo_workflow()
    out = await wf.amap([{"query": "x"}], runtime=runtime(ScriptedProvider()))
    runs = open_store(tmp_path / "runs.db").runs()
    assert out.loc[0, "run_id"] in set(runs["run_id"])
    before = len(runs)
    await wf.amap([{"query": "y"}], runtime=runtime(ScriptedProvider()), store=False)
    assert len(open_store(tmp_path / "runs.db").runs()) == before


# -- the blocking forms -----------------------------------------------------------------------


def test_map_blocks_outside_a_loop():
    out = map_rows(echo_workflow(), [{"query": "x"}], runtime=runtime(ScriptedProvider()),
                   store=False)
    assert out.loc[0, "text"] == "Q: x"


async def test_map_blocks_inside_a_running_loop_as_in_a_notebook():
    out = echo_workflow().map([{"query": "x"}, {"query": "y"}],
                              runtime=runtime(ScriptedProvider()), store=False)
    assert out["text"].tolist() == ["Q: x", "Q: y"]


async def test_amap_is_the_scale_function_too():
    out = await amap(echo_workflow(), [{"query": "z"}], runtime=runtime(ScriptedProvider()),
                     store=False)
    assert out.loc[0, "text"] == "Q: z"


# -- %workflow map ----------------------------------------------------------------------------


@pytest.fixture
def shell(tmp_path):
    ip = InteractiveShell(config=Config({"HistoryManager": {"enabled": False}}))
    magics = WorkflowMagics(ip, session=Session())
    ip.register_magics(magics)
    yield ip
    open_store(tmp_path / "runs.db").close()


def test_workflow_map_magic_runs_a_notebook_dataframe(shell, tmp_path):
    ip = shell
    ip.run_cell_magic("workflow", "qa start --type start", "[question]")
    ip.run_cell_magic("workflow", "qa ask --type llm --model openai/gpt-4o",
                      "Answer: {{#start.question#}}")
    ip.run_cell_magic("workflow", "qa end --type end", "answer: ask.text")
    ip.user_ns["questions"] = pd.DataFrame({"question": ["why?", "how?", "when?"]})

    out = ip.run_line_magic("workflow", "map qa questions --model scripted/echo "
                            "--concurrency 2")
    assert out["answer"].tolist() == ["Answer: why?", "Answer: how?", "Answer: when?"]
    assert (out["status"] == "succeeded").all()
    stored = set(open_store(tmp_path / "runs.db").runs()["run_id"])
    assert set(out["run_id"]) <= stored

    with pytest.raises(UsageError, match="no variable 'nothing'"):
        ip.run_line_magic("workflow", "map qa nothing")
    ip.user_ns["text"] = "not a frame"
    with pytest.raises(UsageError, match="pass a DataFrame"):
        ip.run_line_magic("workflow", "map qa text")
    with pytest.raises(UsageError, match="nope"):
        ip.run_line_magic("workflow", "map nope questions")
