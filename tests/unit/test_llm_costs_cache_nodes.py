"""Prices, usage estimates, the response cache, provider config, and the question-classifier
and parameter-extractor nodes, through real runs of small workflows."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator

import pytest

import cellwire
from cellwire.services.llm import (
    ChatChunk,
    ChatRequest,
    LLMRouter,
    Rule,
    ScriptedProvider,
    TokenUsage,
)
from cellwire.services.llm import config as llm_config
from cellwire.services.llm.prices import PriceTable, _snapshot, table_info
from cellwire.services.llm.router import default_router
from cellwire.store import open_store

TABLE = _snapshot()["models"]


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLWIRE_HOME", str(tmp_path))
    monkeypatch.setenv("CELLWIRE_CONFIG_DIR", str(tmp_path))  # providers.yaml is read there
    monkeypatch.chdir(tmp_path)
    for name in ("CELLWIRE_DEFAULT_MODEL", "OPENAI_API_KEY", "OPENAI_BASE_URL",
                 "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "OLLAMA_HOST"):
        monkeypatch.delenv(name, raising=False)
    llm_config.reset_session()
    yield
    llm_config.reset_session()


class NamedDouble:
    """A test double standing in for a paid provider: the scripted provider's replies under
    another provider name, so the price table applies (the scripted provider itself is free)."""

    def __init__(self, name: str, *, usage: bool = True, rules=()):
        self.name = name
        self.inner = ScriptedProvider(rules, name=name)
        self.usage = usage

    async def chat(self, request):
        return await self.inner.chat(request)

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        async for chunk in self.inner.stream(request):
            if not self.usage:
                chunk.usage = None
            yield chunk

    async def embed(self, model, texts):
        return await self.inner.embed(model, texts)

    async def models(self):
        return []

    @property
    def calls(self):
        return self.inner.calls


def llm_workflow(model: dict, *, node_ids=("llm",), **config) -> cellwire.Workflow:
    wf = cellwire.Workflow("costs")
    wf.add_node("start", "start", variables=[{"variable": "query", "type": "paragraph"}])
    for node_id in node_ids:
        wf.add_node(node_id, "llm", after="start", model=model,
                    prompt_template=[{"role": "user", "text": "{{#start.query#}}"}], **config)
    wf.add_node("end", "end", after=list(node_ids),
                outputs=[{"variable": n, "value_selector": [n, "text"]} for n in node_ids])
    return wf


def row(result, node_id: str) -> dict:
    trace = result.trace
    return trace[trace.node_id == node_id].iloc[-1].to_dict()


# -- prices ------------------------------------------------------------------------------------


async def test_costs_match_the_price_table_by_hand():
    router = LLMRouter([NamedDouble("openai"), NamedDouble("anthropic")])
    wf = llm_workflow({"provider": "langgenius/openai/openai", "name": "gpt-4o-mini"},
                      node_ids=("gpt",))
    wf.add_node("claude", "llm", after="start",
                model={"provider": "langgenius/anthropic/anthropic",
                       "name": "claude-haiku-4-5-20251001"},
                prompt_template=[{"role": "system", "text": "be brief please"},
                                 {"role": "user", "text": "{{#start.query#}}"}])
    query = "one two three four five six seven"
    result = await wf.arun(query=query, runtime=cellwire.Runtime(llm=router), store=False)
    assert result.ok, result.error

    # The scripted replies echo the query: prompt = its words (+3 for the system prompt).
    gpt_in, gpt_out = TABLE["gpt-4o-mini"][1:]
    claude_in, claude_out = TABLE["claude-haiku-4-5-20251001"][1:]
    expected_gpt = 7 * gpt_in + 7 * gpt_out
    expected_claude = 10 * claude_in + 7 * claude_out
    gpt, claude = row(result, "gpt"), row(result, "claude")
    assert (gpt["prompt_tokens"], gpt["completion_tokens"]) == (7, 7)
    assert (claude["prompt_tokens"], claude["completion_tokens"]) == (10, 7)
    assert gpt["cost"] == pytest.approx(expected_gpt, rel=1e-12)
    assert claude["cost"] == pytest.approx(expected_claude, rel=1e-12)
    assert result.total_cost == pytest.approx(expected_gpt + expected_claude, rel=1e-12)
    assert gpt["metadata"]["price_source"] == "table:gpt-4o-mini"
    usage = result.events and next(e for e in result.events
                                   if getattr(e, "node_id", None) == "gpt"
                                   and hasattr(e, "outputs") and e.outputs).outputs["usage"]
    assert usage["prompt_price"] == pytest.approx(7 * gpt_in)
    assert usage["completion_price"] == pytest.approx(7 * gpt_out)


async def test_unknown_model_costs_nan_with_the_reason_and_is_stored(tmp_path):
    router = LLMRouter([NamedDouble("vllm")])
    wf = llm_workflow({"provider": "vllm", "name": "house-model-7b"})
    store = open_store(tmp_path / "runs.db")
    result = await wf.arun(query="hello there", runtime=cellwire.Runtime(llm=router),
                           store=store)
    assert result.ok, result.error
    node = row(result, "llm")
    assert math.isnan(node["cost"]) and math.isnan(result.total_cost)
    assert node["metadata"]["price_source"] == "unknown"
    assert "vllm/house-model-7b" in node["metadata"]["cost_reason"]
    assert "set_price" in node["metadata"]["cost_reason"]
    stored = store.trace(result.run_id)
    assert math.isnan(stored[stored.node_id == "llm"].iloc[0]["cost"])
    # The run's total is unknown too, never the sum of the known costs.
    total = store.runs().set_index("run_id").loc[result.run_id, "total_cost"]
    assert total is None or math.isnan(total)


async def test_scripted_models_cost_zero_by_definition():
    wf = llm_workflow({"provider": "scripted", "name": "gpt-4o"})
    result = await wf.arun(query="a b c", store=False)
    node = row(result, "llm")
    assert node["cost"] == 0.0 and node["metadata"]["price_source"] == "free:scripted"


async def test_user_prices_override_the_table_and_price_unknown_models():
    table = PriceTable()
    table.set(r"vllm/house-.*", 1e-6, 2e-6)
    table.update({"gpt-4o-mini": {"input_per_million": 10, "output_per_million": 20}})
    router = LLMRouter([NamedDouble("vllm"), NamedDouble("openai")], prices=table)
    wf = llm_workflow({"provider": "vllm", "name": "house-model-7b"}, node_ids=("house",))
    wf.add_node("mini", "llm", after="start", model={"provider": "openai", "name": "gpt-4o-mini"},
                prompt_template=[{"role": "user", "text": "{{#start.query#}}"}])
    result = await wf.arun(query="x y", runtime=cellwire.Runtime(llm=router), store=False)
    assert row(result, "house")["cost"] == pytest.approx(2 * 1e-6 + 2 * 2e-6)
    assert row(result, "house")["metadata"]["price_source"] == "override:vllm/house-.*"
    assert row(result, "mini")["cost"] == pytest.approx(2 * 10e-6 + 2 * 20e-6)
    with pytest.raises(ValueError, match="regular expression"):
        table.set("(", 0, 0)


def test_price_table_names_its_source_version_and_licence():
    info = table_info()
    assert "LiteLLM" in info["source"] and "MIT" in info["licence"]
    assert info["version"].startswith("litellm ") and info["retrieved"]


async def test_missing_usage_is_estimated_flagged_and_priced():
    router = LLMRouter([NamedDouble("openai", usage=False)])
    wf = llm_workflow({"provider": "openai", "name": "gpt-4o"})
    result = await wf.arun(query="The quick brown fox jumps over the lazy dog.",
                           runtime=cellwire.Runtime(llm=router), store=False)
    node = row(result, "llm")
    from cellwire.services.llm import tokens

    reply = tokens.count_text("The quick brown fox jumps over the lazy dog.")
    assert node["completion_tokens"] == reply
    assert node["prompt_tokens"] == reply + tokens.MESSAGE_OVERHEAD + tokens.REPLY_OVERHEAD
    assert node["metadata"]["usage_estimated"] is True
    assert node["metadata"]["token_count_method"] == tokens.method()
    gpt_in, gpt_out = TABLE["gpt-4o"][1:]
    assert node["cost"] == pytest.approx(node["prompt_tokens"] * gpt_in + reply * gpt_out)


async def test_latency_and_time_to_first_token_are_recorded():
    provider = ScriptedProvider(latency=0.01)
    wf = llm_workflow({"provider": "scripted", "name": "echo"})
    result = await wf.arun(query="a b c d", runtime=cellwire.Runtime(llm=LLMRouter([provider])),
                           store=False)
    meta = row(result, "llm")["metadata"]
    assert 0 < meta["time_to_first_token"] <= meta["latency"]


# -- the response cache ----------------------------------------------------------------------


async def test_node_cache_hit_skips_the_call_and_reports_the_cost_saved(tmp_path):
    double = NamedDouble("openai")
    router = LLMRouter([double])
    store = open_store(tmp_path / "runs.db")
    wf = llm_workflow({"provider": "openai", "name": "gpt-4o-mini"}, cache=True)
    runtime = cellwire.Runtime(llm=router)
    first = await wf.arun(query="cache me now", runtime=runtime, store=store)
    second = await wf.arun(query="cache me now", runtime=runtime, store=store)
    third = await wf.arun(query="something else", runtime=runtime, store=store)
    assert len(double.calls) == 2  # the second run never reached the provider
    assert second.outputs == first.outputs
    miss, hit = row(first, "llm"), row(second, "llm")
    assert "cache_hit" not in miss["metadata"]
    assert hit["metadata"]["cache_hit"] is True
    assert hit["metadata"]["cost_saved"] == pytest.approx(miss["cost"]) and miss["cost"] > 0
    assert hit["cost"] == 0 and hit["total_tokens"] == 0
    assert hit["metadata"]["tokens_saved"] == miss["total_tokens"]
    assert "cache_hit" not in row(third, "llm")["metadata"]


async def test_run_cache_option_and_parameters_in_the_key(tmp_path):
    double = NamedDouble("openai")
    runtime = cellwire.Runtime(llm=LLMRouter([double]))
    store = open_store(tmp_path / "runs.db")
    wf = llm_workflow({"provider": "openai", "name": "gpt-4o",
                       "completion_params": {"temperature": 0.1}})
    await cellwire.api.arun(wf, {"query": "q"}, runtime=runtime, store=store, cache=True)
    hit = await cellwire.api.arun(wf, {"query": "q"}, runtime=runtime, store=store, cache=True)
    assert row(hit, "llm")["metadata"]["cache_hit"] is True
    off = await cellwire.api.arun(wf, {"query": "q"}, runtime=runtime, store=store)
    assert "cache_hit" not in row(off, "llm")["metadata"]
    hotter = llm_workflow({"provider": "openai", "name": "gpt-4o",
                           "completion_params": {"temperature": 0.9}})
    changed = await cellwire.api.arun(hotter, {"query": "q"}, runtime=runtime, store=store,
                                      cache=True)
    assert "cache_hit" not in row(changed, "llm")["metadata"]
    assert len(double.calls) == 3


# -- configuration ---------------------------------------------------------------------------


def test_config_from_environment(monkeypatch):
    env = {"ANTHROPIC_API_KEY": "sk-ant-secret", "ANTHROPIC_BASE_URL": "http://127.0.0.1:9",
           "CELLWIRE_DEFAULT_MODEL": "anthropic/claude-haiku-4-5"}
    router = default_router(env)
    assert router.names == ["anthropic", "local", "scripted"]
    route = router.resolve_config("langgenius/openai/openai", "gpt-4o")
    assert route.id == "anthropic/claude-haiku-4-5"
    provider = router.provider("anthropic")
    assert provider.base_url == "http://127.0.0.1:9"
    assert "sk-ant-secret" not in repr(provider)
    assert "sk-ant-secret" not in repr(llm_config.load_config(env))


def test_config_from_file_with_model_map_prices_and_no_keys(tmp_path):
    (tmp_path / "providers.yaml").write_text(
        "providers:\n"
        "  lab: {type: scripted}\n"
        "  claude: {type: anthropic, base_url: 'http://127.0.0.1:9', api_key_env: MY_KEY}\n"
        "models:\n"
        "  langgenius/openai/openai: lab/small\n"
        "  langgenius/anthropic/anthropic/claude-3-opus: claude/claude-haiku-4-5\n"
        "prices:\n"
        "  lab/.*: {input: 0.5, output: 1.0}\n", encoding="utf-8")
    router = default_router({"MY_KEY": "k"})
    assert router.resolve_config("langgenius/openai/openai", "gpt-4o").id == "lab/small"
    assert router.resolve_config("langgenius/anthropic/anthropic",
                                 "claude-3-opus").id == "claude/claude-haiku-4-5"
    (tmp_path / "providers.yaml").write_text(
        "providers:\n  x: {type: openai, api_key: sk-leak}\n", encoding="utf-8")
    with pytest.raises(llm_config.ConfigError, match="api_key_env"):
        default_router({})


def test_providers_yaml_is_yaml_1_2(tmp_path):
    # Under YAML 1.1 the provider named `no` and the model `on` would be the booleans False and
    # True, and the map would refuse them or route `True`.
    (tmp_path / "providers.yaml").write_text(
        "providers:\n"
        "  no: {type: scripted}\n"
        "models:\n"
        "  yes: no/on\n", encoding="utf-8")
    config = llm_config.from_file(tmp_path / "providers.yaml")
    assert [spec.name for spec in config.providers.values()] == ["no"]
    router = default_router({})
    assert router.resolve_config("yes", "whatever").id == "no/on"


def test_broken_providers_yaml_names_the_file_line_and_fix(tmp_path):
    path = tmp_path / "providers.yaml"
    path.write_text("providers:\n  lab: {type: scripted\n", encoding="utf-8")
    with pytest.raises(llm_config.ConfigError) as caught:
        llm_config.from_file(path)
    assert str(caught.value).startswith(f"{path}: not valid YAML: line 3")
    assert "indentation, quotes, colons" in caught.value.hint


def test_project_file_and_notebook_override_the_home_file(tmp_path, monkeypatch):
    (tmp_path / "providers.yaml").write_text("default: scripted/home\n", encoding="utf-8")
    (tmp_path / "cellwire.yaml").write_text("llm:\n  default: scripted/project\n",
                                            encoding="utf-8")
    with pytest.warns(UserWarning, match="cellwire.yaml: a project folder's file is read only"):
        assert default_router({}).default == "scripted/home"  # not opted in
    monkeypatch.setenv("CELLWIRE_PROJECT_CONFIG", "1")
    assert default_router({}).default == "scripted/project"
    llm_config.configure_provider("mine", "scripted")
    llm_config.map_model("openai", "mine/tiny")
    llm_config.set_price("mine/.*", 1e-6, 1e-6)
    router = default_router({})
    route = router.resolve_config("openai", "gpt-4o")
    assert route.id == "mine/tiny"
    assert router.priced(route, TokenUsage(1, 1, 2)).source == "free:mine"


# -- question-classifier ---------------------------------------------------------------------

CLASSES = [{"id": "1", "name": "billing"}, {"id": "2", "name": "technical"},
           {"id": "3", "name": "other"}]


def classifier_workflow(**config) -> cellwire.Workflow:
    wf = cellwire.Workflow("classify")
    wf.add_node("start", "start", variables=[{"variable": "q", "type": "paragraph"}])
    wf.add_node("qc", "question-classifier", after="start",
                query_variable_selector=["start", "q"],
                model={"provider": "scripted", "name": "echo"}, classes=CLASSES,
                instruction="Refunds count as billing.", **config)
    for cls in CLASSES:
        wf.add_node(f"t{cls['id']}", "template-transform", after=[("qc", cls["id"])],
                    template=cls["name"])
    wf.add_node("end", "end", after=["t1", "t2", "t3"],
                outputs=[{"variable": "class", "value_selector": ["qc", "class_name"]}])
    return wf


async def test_classifier_routes_by_class_id_handle():
    provider = ScriptedProvider([
        Rule(contains="refund", json={"category_id": "1", "category_name": "billing"}),
        Rule(contains="crash", reply='```json\n{"category_id": "2"}\n```'),
        Rule(contains="weather", reply="That is other."),
    ])
    runtime = cellwire.Runtime(llm=LLMRouter([provider]))
    wf = classifier_workflow()
    for query, chosen in (("I want a refund", "1"), ("the app crash", "2"),
                          ("nice weather", "3")):
        result = await wf.arun(q=query, runtime=runtime, store=False)
        assert result.ok, result.error
        assert result.node_status(f"t{chosen}") == "succeeded"
        assert {result.node_status(f"t{i}") for i in "123" if i != chosen} == {"skipped"}
        node = row(result, "qc")
        assert node["handle"] == chosen
        assert node["outputs"]["class_id"] == chosen
    request = provider.calls[0]
    assert "Refunds count as billing." in request.system_prompt
    assert request.json_schema["properties"]["category_id"]["enum"] == ["1", "2", "3"]
    assert "I want a refund" in request.last_user_message


async def test_classifier_without_a_class_in_the_reply_takes_the_first():
    provider = ScriptedProvider([Rule(reply="no idea")])
    result = await classifier_workflow().arun(q="hm", runtime=cellwire.Runtime(
        llm=LLMRouter([provider])), store=False)
    assert row(result, "qc")["handle"] == "1"
    assert row(result, "qc")["process_data"]["chosen_by"] == "default"


# -- parameter-extractor ---------------------------------------------------------------------

PARAMS = [
    {"name": "city", "type": "string", "description": "the city", "required": True},
    {"name": "nights", "type": "number", "required": True},
    {"name": "breakfast", "type": "boolean"},
    {"name": "room", "type": "select", "options": ["single", "double"]},
    {"name": "guests", "type": "array[string]"},
]


def extractor_workflow(mode: str) -> cellwire.Workflow:
    wf = cellwire.Workflow("extract")
    wf.add_node("start", "start", variables=[{"variable": "q", "type": "paragraph"}])
    wf.add_node("pe", "parameter-extractor", after="start", query=["start", "q"],
                model={"provider": "scripted", "name": "echo"}, parameters=PARAMS,
                reasoning_mode=mode, instruction="Dates are in 2025.")
    wf.add_node("end", "end", after=["pe"], outputs=[
        {"variable": n, "value_selector": ["pe", n]}
        for n in ("city", "nights", "breakfast", "room", "guests", "__is_success", "__reason")])
    return wf


async def test_extractor_function_call_mode():
    args = {"city": "Lisbon", "nights": "3", "breakfast": True, "room": "double",
            "guests": ["Ada", "Alan"]}
    provider = ScriptedProvider([Rule(tool_calls=[{"name": "extract_parameters",
                                                   "arguments": args}])])
    result = await extractor_workflow("function_call").arun(
        q="Lisbon, 3 nights, double room with breakfast for Ada and Alan",
        runtime=cellwire.Runtime(llm=LLMRouter([provider])), store=False)
    assert result.outputs == {"city": "Lisbon", "nights": 3, "breakfast": True,
                              "room": "double", "guests": ["Ada", "Alan"],
                              "__is_success": 1, "__reason": None}
    request = provider.calls[0]
    tool = request.tools[0]["function"]
    assert tool["name"] == "extract_parameters"
    assert tool["parameters"]["required"] == ["city", "nights"]
    assert tool["parameters"]["properties"]["room"]["enum"] == ["single", "double"]
    assert request.tool_choice == {"type": "function", "function": {"name": "extract_parameters"}}


async def test_extractor_prompt_mode_and_failures():
    provider = ScriptedProvider([
        Rule(contains="Paris", json={"city": "Paris", "nights": 2, "room": "suite"}),
        Rule(contains="Rome", reply="Sorry, I cannot."),
    ])
    runtime = cellwire.Runtime(llm=LLMRouter([provider]))
    wf = extractor_workflow("prompt")
    result = await wf.arun(q="Paris for 2 nights in a suite", runtime=runtime, store=False)
    assert result.ok
    assert result.outputs["city"] == "Paris" and result.outputs["nights"] == 2
    assert result.outputs["__is_success"] == 0
    assert "'room'" in result.outputs["__reason"] and "suite" in result.outputs["__reason"]
    assert result.outputs["room"] == "" and result.outputs["guests"] == []
    assert provider.calls[0].response_format == "json_object"
    assert '"required": ["city", "nights"]' in provider.calls[0].system_prompt
    failed = await wf.arun(q="Rome", runtime=runtime, store=False)
    assert failed.outputs["__is_success"] == 0 and "not JSON" in failed.outputs["__reason"]
    assert failed.outputs["nights"] == 0 and failed.outputs["breakfast"] is False


async def test_extractor_bad_parameter_type_names_the_field():
    wf = cellwire.Workflow("bad")
    wf.add_node("start", "start", variables=[{"variable": "q", "type": "paragraph"}])
    wf.add_node("pe", "parameter-extractor", after="start", query=["start", "q"],
                model={"provider": "scripted", "name": "echo"},
                parameters=[{"name": "x", "type": "date"}])
    wf.add_node("end", "end", after=["pe"], outputs=[{"variable": "x",
                                                      "value_selector": ["pe", "x"]}])
    result = await wf.arun(q="x", store=False)
    assert not result.ok
    assert "parameters[0].type" in result.error and "date" in result.error


def test_cli_model_option_is_passed(tmp_path):
    from click.testing import CliRunner

    from cellwire.cli import cli

    path = tmp_path / "wf.yaml"
    wf = llm_workflow({"provider": "langgenius/openai/openai", "name": "gpt-4o"})
    cellwire.save(wf, path)
    runner = CliRunner()
    ok = runner.invoke(cli, ["run", str(path), "-i", "query=hi there", "--model",
                             "scripted/echo", "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["outputs"] == {"llm": "hi there"}
    bad = runner.invoke(cli, ["run", str(path), "-i", "query=hi", "--model", "gpt-4o"])
    assert bad.exit_code == 2 and "PROVIDER/MODEL" in bad.output
