"""The llm family reads chat memory and the response cache from the runtime's typed services
(``runtime.memory``, ``runtime.cache``), never from the run's sinks; the default runtime
wires the run store in as both."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

import cellwire
from cellwire.engine import Execution, compile_workflow
from cellwire.engine.services import ChatMemory, ResponseCache, Turn
from cellwire.nodes.llm.call import NO_CACHE
from cellwire.runner import Runner
from cellwire.services.llm import LLMRouter, ScriptedProvider
from cellwire.services.llm.cache import ResponseCache as StoreResponseCache
from cellwire.services.llm.cache import open_cache
from cellwire.store import RunStore, open_store

SCRIPTED = {"provider": "scripted", "name": "echo"}


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLWIRE_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)


def chatflow(*, cache: bool = False) -> cellwire.Workflow:
    wf = cellwire.Workflow("chat", mode="advanced-chat")
    wf.add_node("start", "start")
    wf.add_node("llm", "llm", after="start", model=SCRIPTED, cache=cache,
                prompt_template=[{"role": "system", "text": "Be brief."}],
                memory={"window": {"enabled": True, "size": 5}})
    wf.add_node("answer", "answer", after="llm", answer="{{#llm.text#}}")
    return wf


def notes(result, node_id: str = "llm") -> list[str]:
    trace = result.trace
    return trace[trace.node_id == node_id].iloc[-1]["process_data"].get("notes", [])


class Transcript:
    """A chat memory kept by the application rather than a run store (a real use: a chat
    front end that already has the conversation)."""

    def __init__(self, turns: Sequence[tuple[str, str]]):
        self.turns = list(turns)
        self.asked: list[tuple[str, str, int]] = []

    def conversation_turns(self, workflow: str, conversation_id: str, limit: int, *,
                           node_id: str | None = None,
                           exclude_run: str | None = None) -> Sequence[Turn]:
        self.asked.append((workflow, conversation_id, limit))
        return [Turn(f"r{i}", q, a) for i, (q, a) in enumerate(self.turns)][-limit:]


async def test_the_llm_node_reads_history_from_runtime_memory_without_a_store():
    provider = ScriptedProvider()
    memory = Transcript([("who are you?", "a bot"), ("and you do?", "answer")])
    runtime = cellwire.Runtime(llm=LLMRouter([provider]), memory=memory)
    result = await chatflow().arun({"sys.query": "thanks", "sys.conversation_id": "c9"},
                                   runtime=runtime, store=False)
    assert result.ok, result.error
    assert memory.asked == [("chat", "c9", 5)]
    assert [(m.role, m.text) for m in provider.calls[-1].messages] == [
        ("system", "Be brief."), ("user", "who are you?"), ("assistant", "a bot"),
        ("user", "and you do?"), ("assistant", "answer"), ("user", "thanks")]


async def test_a_run_store_on_a_sink_alone_is_not_searched_for_memory(tmp_path):
    # The node reads runtime.memory only: an engine runtime with the store's sink but no
    # memory gives no history, and the note says how to get it.
    store = open_store(tmp_path / "runs.db")
    provider = ScriptedProvider()
    wf = chatflow()
    await wf.arun({"sys.query": "one", "sys.conversation_id": "c1"},
                  runtime=cellwire.Runtime(llm=LLMRouter([provider])), store=store)
    runtime = cellwire.Runtime(llm=LLMRouter([provider]), layers=[store.sink])
    result = await Execution(compile_workflow(wf),
                             {"sys.query": "two", "sys.conversation_id": "c1"}, runtime).run()
    assert notes(result) == [(
        "memory: this run has no chat memory (it was run with store=False); run it with a "
        "store (the default, or store='runs.db') to remember the conversation's earlier "
        "turns, so no history is sent")]
    # Through wf.arun the store that records the run is its memory too.
    again = await wf.arun({"sys.query": "three", "sys.conversation_id": "c1"},
                          runtime=cellwire.Runtime(llm=LLMRouter([provider])), store=store)
    assert notes(again) == []
    assert ("user", "one") in [(m.role, m.text) for m in provider.calls[-1].messages]


async def test_the_response_cache_comes_from_runtime_cache(tmp_path):
    store = open_store(tmp_path / "runs.db")  # creates the llm_cache table
    provider = ScriptedProvider()
    runtime = cellwire.Runtime(llm=LLMRouter([provider]), cache=open_cache(store.path))
    wf = chatflow(cache=True)
    first = await wf.arun({"sys.query": "hello"}, runtime=runtime, store=False)
    second = await wf.arun({"sys.query": "hello"}, runtime=runtime, store=False)
    assert len(provider.calls) == 1
    assert second.outputs == first.outputs
    trace = second.trace
    assert trace[trace.node_id == "llm"].iloc[-1]["metadata"]["cache_hit"] is True


async def test_cache_without_a_cache_says_how_to_get_one():
    provider = ScriptedProvider()
    result = await chatflow(cache=True).arun(
        {"sys.query": "hello"}, runtime=cellwire.Runtime(llm=LLMRouter([provider])),
        store=False)
    assert f"cache: {NO_CACHE}, so replies are not cached" in notes(result)
    assert "store=False" in NO_CACHE and "run it with a store" in NO_CACHE


def test_the_runner_uses_its_store_as_memory_and_cache(tmp_path):
    runtime = Runner().runtime(store=tmp_path / "runs.db")
    assert isinstance(runtime.memory, RunStore)
    assert runtime.memory.sink in runtime.layers
    assert isinstance(runtime.cache, StoreResponseCache)
    assert runtime.cache.path == runtime.memory.path
    bare = Runner().runtime(store=False)
    assert bare.memory is None and bare.cache is None


def test_a_given_memory_or_cache_is_kept_when_a_store_is_added(tmp_path):
    memory = Transcript([])
    runtime = Runner().runtime(base=cellwire.Runtime(memory=memory), store=tmp_path / "runs.db",
                               cache=True)
    assert runtime.memory is memory
    assert isinstance(runtime.cache, StoreResponseCache) and runtime.cache_all


def test_the_store_and_its_cache_satisfy_the_service_protocols(tmp_path):
    store = open_store(tmp_path / "runs.db")
    memory: ChatMemory = store
    cache: ResponseCache = open_cache(store.path)
    assert memory.conversation_turns("chat", "c1", 5) == []
    assert cache.get("missing") is None
