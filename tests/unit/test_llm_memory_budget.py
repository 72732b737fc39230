"""Chat memory trimmed to the model's context, as Dify's TokenBufferMemory does: the most
recent turns that fit the model's input context (from the price table's max_input_tokens)
less the prompt and max_tokens are sent, the oldest dropped first, and process_data says so.
Without a known context the budget is Dify's 2000 tokens. Real SQLite run store, scripted
provider (named after a real provider where the model's context matters)."""

from __future__ import annotations

import re

import pytest

import cellwire
from cellwire.services.llm import LLMRouter, Rule, ScriptedProvider
from cellwire.services.llm.prices import PriceTable
from cellwire.store import RunStore

#: gpt-4's input context in the pinned LiteLLM snapshot.
GPT4_CONTEXT = 8192
LONG = "alpha " * 1200  # about 1200 tokens
BUDGET_NOTE = re.compile(
    r"memory: left out the (\d+) oldest of (\d+) earlier turns to fit a history budget of "
    r"(\d+) tokens: the model's input context of (\d+) less the prompt's (\d+)"
    r"(?: and max_tokens (\d+))?(?: and (\d+) held back)?$")


@pytest.fixture
def store(tmp_path) -> RunStore:
    with RunStore(tmp_path / "runs.db") as opened:
        yield opened


def chat(model: dict, *, max_tokens: int | None = None, node: str = "llm",
         **config) -> cellwire.Workflow:
    """start -> one model node with memory -> answer."""
    wf = cellwire.Workflow(f"budget-{node}", mode="advanced-chat")
    wf.add_node("start", "start")
    if max_tokens is not None:
        model = {**model, "completion_params": {"max_tokens": max_tokens}}
    config.setdefault("memory", {"window": {"enabled": False}})
    if node == "llm":
        config.setdefault("prompt_template", [{"role": "system", "text": "Be brief."}])
        wf.add_node("n", "llm", after="start", model=model, **config)
        wf.add_node("answer", "answer", after="n", answer="{{#n.text#}}")
    elif node == "question-classifier":
        wf.add_node("n", node, after="start", model=model,
                    query_variable_selector=["sys", "query"],
                    classes=[{"id": "1", "name": "any"}], **config)
        wf.add_node("answer", "answer", after=[("n", "1")], answer="ok")
    else:
        wf.add_node("n", node, after="start", model=model, query=["sys", "query"],
                    parameters=[{"name": "city", "type": "string"}], **config)
        wf.add_node("answer", "answer", after="n", answer="ok")
    return wf


def openai_double() -> ScriptedProvider:
    """A scripted test double under the provider name 'openai', so that the model names it
    is asked for find their context in the price table."""
    return ScriptedProvider([Rule(json={"category_id": "1", "category_name": "any"},
                                  system="classification"),
                             Rule(tool_calls=[{"name": "extract_parameters",
                                               "arguments": {"city": "Oslo"}}],
                                  system="extract structured parameters"),
                             Rule(reply="ok")], name="openai")


async def talk(wf, provider, store, *queries: str, conversation: str = "c1"):
    result = None
    for query in queries:
        result = await wf.arun({"sys.query": query, "sys.conversation_id": conversation},
                               runtime=cellwire.Runtime(llm=LLMRouter([provider])),
                               store=store)
        assert result.ok, result.error
    return result


def notes(result) -> list[str]:
    trace = result.trace
    return trace[trace.node_id == "n"].iloc[-1]["process_data"].get("notes", [])


def sent_turns(provider) -> list[tuple[str, str]]:
    """The remembered turns of the last chat request, between the system prompt and the
    user's message."""
    return [(m.role, m.text[:12]) for m in provider.calls[-1].messages[1:-1]]


async def test_long_earlier_turns_are_dropped_oldest_first_to_fit_the_context(store):
    provider = openai_double()
    wf = chat({"provider": "openai", "name": "gpt-4"}, max_tokens=7000,
              memory={"window": {"enabled": True, "size": 10}})
    result = await talk(wf, provider, store, LONG, "short one", "short two", "now")
    # The long first turn does not fit 8192 - 7000 - the prompt; the two after it do.
    assert sent_turns(provider) == [("user", "short one"), ("assistant", "ok"),
                                    ("user", "short two"), ("assistant", "ok")]
    [note] = notes(result)
    dropped, total, budget, context, prompt, max_tokens, held = BUDGET_NOTE.match(note).groups()
    assert (int(dropped), int(total), int(context), int(max_tokens), held) == (
        1, 3, GPT4_CONTEXT, 7000, None)
    assert int(budget) == GPT4_CONTEXT - 7000 - int(prompt) and 0 < int(prompt) < 50


async def test_a_long_turn_ends_the_history_even_if_older_turns_are_short(store):
    provider = openai_double()
    wf = chat({"provider": "openai", "name": "gpt-4"}, max_tokens=7000)
    result = await talk(wf, provider, store, "short zero", LONG, "short two", "now")
    # The most recent turns that fit, none older than one left out.
    assert sent_turns(provider) == [("user", "short two"), ("assistant", "ok")]
    assert BUDGET_NOTE.match(notes(result)[0]).group(1, 2) == ("2", "3")


async def test_a_large_context_keeps_every_turn_and_says_nothing(store):
    provider = openai_double()
    wf = chat({"provider": "openai", "name": "gpt-4o"}, max_tokens=7000)
    result = await talk(wf, provider, store, LONG, "short one", "now")
    assert [role for role, _ in sent_turns(provider)] == ["user", "assistant"] * 2
    assert notes(result) == []


async def test_an_unknown_model_gets_difys_default_budget_of_2000_tokens(store):
    provider = ScriptedProvider([Rule(reply="ok")])
    wf = chat({"provider": "scripted", "name": "echo"})
    result = await talk(wf, provider, store, "alpha " * 1990, "short one", "now")
    assert sent_turns(provider) == [("user", "short one"), ("assistant", "ok")]
    assert notes(result) == [
        ("memory: left out the 1 oldest of 2 earlier turns to fit Dify's default history "
         "budget of 2000 tokens (the model's context size is unknown)")]
    # Turns that fit 2000 tokens are all sent.
    result = await talk(wf, provider, store, "alpha " * 900, "and", "now", conversation="c2")
    assert len(sent_turns(provider)) == 4 and notes(result) == []


async def test_a_provider_that_knows_its_context_window_sets_the_budget(store):
    provider = ScriptedProvider([Rule(reply="ok")], name="local-double")
    provider.n_ctx = 1000  # as the local llama.cpp provider reports its window
    wf = chat({"provider": "local-double", "name": "tiny"})
    result = await talk(wf, provider, store, LONG, "short one", "now")
    assert sent_turns(provider) == [("user", "short one"), ("assistant", "ok")]
    groups = BUDGET_NOTE.match(notes(result)[0]).groups()
    assert int(groups[3]) == 1000 and groups[5] is None


async def test_completion_mode_history_text_is_trimmed_the_same_way(store):
    provider = openai_double()
    wf = chat({"provider": "openai", "name": "gpt-4", "mode": "completion"}, max_tokens=7000,
              prompt_template={"text": "{{#histories#}}\nQ: {{#sys.query#}}"},
              memory={"window": {"enabled": False},
                      "role_prefix": {"user": "U", "assistant": "A"}})
    result = await talk(wf, provider, store, LONG, "short one", "now")
    assert provider.calls[-1].messages[0].text == "U: short one\nA: ok\nQ: now"
    assert BUDGET_NOTE.match(notes(result)[0])


async def test_classifier_history_is_trimmed_to_the_context_less_its_prompt(store):
    provider = openai_double()
    wf = chat({"provider": "openai", "name": "gpt-4"}, max_tokens=7000,
              node="question-classifier", memory={"window": {"enabled": True, "size": 5}})
    result = await talk(wf, provider, store, LONG, "short one", "now")
    system = provider.calls[-1].messages[0].text
    assert "<histories>\nHuman: short one\nAssistant: ok\n</histories>" in system
    groups = BUDGET_NOTE.match(notes(result)[0]).groups()
    # The classifier's prompt (instructions, categories, schema) is counted.
    assert int(groups[4]) > 100 and groups[6] is None


async def test_extractor_holds_back_1000_tokens_as_dify_does(store):
    provider = openai_double()
    wf = chat({"provider": "openai", "name": "gpt-4"}, max_tokens=6000,
              node="parameter-extractor", memory={"window": {"enabled": True, "size": 5}})
    result = await talk(wf, provider, store, LONG, "short one", "now")
    system = provider.calls[-1].messages[0].text
    assert "<histories>\nHuman: short one\nAssistant: ok\n</histories>" in system
    _, _, budget, context, prompt, max_tokens, held = BUDGET_NOTE.match(
        notes(result)[0]).groups()
    assert held == "1000"
    assert int(budget) == int(context) - int(prompt) - int(max_tokens) - 1000


def test_price_table_knows_the_input_context_of_known_models():
    table = PriceTable()
    assert table.max_input_tokens("openai", "gpt-4") == GPT4_CONTEXT
    assert table.max_input_tokens("openai", "gpt-4o") == 128000
    # The same keys as prices: provider/model, model, the name's last part.
    assert table.max_input_tokens("my-gateway", "openai/gpt-4o") == 128000
    assert table.max_input_tokens("anthropic", "claude-haiku-4-5") == 200000
    assert table.max_input_tokens("scripted", "echo") is None
    assert PriceTable(snapshot=False).max_input_tokens("openai", "gpt-4o") is None


def test_a_config_entry_gives_the_context_of_a_model_the_table_does_not_know():
    table = PriceTable()
    table.update({"lab/.*": {"max_input_tokens": 32768},
                  "house": {"input": 1e-6, "output": 2e-6, "max_input_tokens": 4096},
                  "gpt-4o": {"max_input_tokens": 1000}})
    assert table.max_input_tokens("lab", "qwen2.5") == 32768
    assert table.max_input_tokens("openai", "gpt-4o") == 1000  # the user's word wins
    assert table.max_input_tokens("x", "house") == 4096
    # A context alone leaves the price as it was: unknown stays unknown, the table's stays.
    assert table.lookup("lab", "qwen2.5")[0] is None
    assert table.lookup("openai", "gpt-4o")[1] == "table:gpt-4o"
    assert table.lookup("x", "house")[0].input == 1e-6
    with pytest.raises(ValueError, match="positive"):
        table.set_context("y", 0)
