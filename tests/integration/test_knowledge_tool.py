"""The built-in ``search_knowledge`` tool over a real knowledge base: built by `cellwire kb`
(a real process) in the test's own home folder, full-text only (no model), then searched
from a tool node, by an agent on the scripted provider, and called with bad arguments."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import cellwire
from cellwire.services.knowledge import Knowledge
from cellwire.services.llm import ChatRequest, LLMRouter
from cellwire.services.llm.scripted import Rule, ScriptedProvider
from cellwire.services.tools import ToolContext, ToolError, ToolRegistry
from cellwire.services.tools.builtins import search_knowledge

pytestmark = pytest.mark.timeout(180)

DOCUMENTS = {
    "volcano.txt": "Volcanoes erupt molten lava and ash.\n\nMagma rises from the mantle.",
    "glacier.md": "# Glaciers\n\nGlaciers are rivers of ice that carve deep valleys.",
    "desert.txt": "Deserts receive little rainfall; cacti store water in their stems.",
}


def cellwire_cli(*args: str | Path, home: Path) -> subprocess.CompletedProcess[str]:
    # The child imports the cellwire under test, whatever folder it runs in.
    source = str(Path(cellwire.__file__).parents[1])
    path = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-m", "cellwire.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, "PYTHONPATH": path, "CELLWIRE_HOME": str(home)})


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home folder with the knowledge base ``nature`` built by `cellwire kb`."""
    root = tmp_path_factory.mktemp("kb-tool")
    folder = root / "home"
    docs = root / "docs"
    docs.mkdir()
    for name, text in DOCUMENTS.items():
        (docs / name).write_text(text)
    made = cellwire_cli("kb", "create", "nature", home=folder)
    assert made.returncode == 0, made.stderr
    added = cellwire_cli("kb", "add", "nature", *sorted(docs.iterdir()), "--quiet", home=folder)
    assert added.returncode == 0, added.stderr
    return folder


@pytest.fixture
def knowledge(home: Path, monkeypatch: pytest.MonkeyPatch) -> Knowledge:
    monkeypatch.setenv("CELLWIRE_HOME", str(home))
    return Knowledge(home / "knowledge")


async def search(knowledge: Knowledge, **arguments):
    registry = ToolRegistry([search_knowledge])
    return await registry.call(search_knowledge, arguments, ToolContext(knowledge=knowledge))


def test_a_tool_node_searches_a_cli_built_base(knowledge: Knowledge):
    wf = cellwire.Workflow("ask-the-kb")
    wf.add_node("start", "start", variables=[{"variable": "q", "type": "text-input"}])
    wf.add_node("kb", "tool", after="start", provider_id="builtin", tool_name="search_knowledge",
                tool_parameters={"query": {"type": "variable", "value": ["start", "q"]},
                                 "top_k": {"type": "constant", "value": 2}},
                tool_configurations={"knowledge_base": "nature"})
    wf.add_node("end", "end", after="kb", outputs=[
        {"variable": "text", "value_selector": ["kb", "text"]},
        {"variable": "documents", "value_selector": ["kb", "documents"]}])
    result = wf.run(q="molten lava", store=False)
    assert result.ok, result.error
    text = result.outputs["text"]
    assert text.startswith("[1] volcano.txt, score 1.00\nVolcanoes erupt molten lava")
    documents = result.outputs["documents"]
    assert 1 <= len(documents) <= 2
    first = documents[0]
    assert first["title"] == "volcano.txt" and "molten lava" in first["content"]
    assert first["metadata"]["dataset_name"] == "nature"
    assert first["metadata"]["score"] == 1.0
    row = result.trace[result.trace.node_id == "kb"].iloc[0]
    assert row.outputs["json"][0]["knowledge_base"] == "nature"
    assert row.inputs == {"knowledge_base": "nature", "query": "molten lava", "top_k": 2}


def test_an_agent_searches_the_base_it_is_given(knowledge: Knowledge):
    offered: list[dict] = []

    def results(request: ChatRequest) -> list[str]:
        return [m.text for m in request.messages if m.role == "tool"]

    def first_round(request: ChatRequest) -> bool:
        offered.extend(request.tools)
        return True

    model = ScriptedProvider([
        Rule(when=lambda r: bool(results(r)), reply=lambda r: "From the base: " + results(r)[0]),
        Rule(when=first_round, tool_calls=[{"name": "search_knowledge",
                                            "arguments": {"query": "ice valleys", "top_k": 1}}]),
    ])
    wf = cellwire.Workflow("kb-agent", mode="advanced-chat")
    wf.add_node("start", "start")
    wf.add_node("agent", "agent", after="start", agent_strategy_name="function_calling",
                agent_parameters={
                    "model": {"type": "constant", "value": {"provider": "scripted",
                                                            "model": "m"}},
                    "tools": {"type": "constant", "value": [{
                        "provider_name": "builtin", "tool_name": "search_knowledge",
                        # The app fixes the base: the model only writes the query.
                        "parameters": {"knowledge_base": {"auto": 0, "value": "nature"}}}]},
                    "query": {"type": "constant", "value": "{{#sys.query#}}"}})
    wf.add_node("answer", "answer", after="agent", answer="{{#agent.text#}}")
    result = wf.run({"sys.query": "what carves valleys?"},
                    runtime=cellwire.Runtime(llm=LLMRouter([model])), store=False)
    assert result.ok, result.error
    assert result.answer == ("From the base: [1] glacier.md, score 1.00\n"
                             "# Glaciers\n\nGlaciers are rivers of ice that carve deep valleys.")
    schema = offered[0]["function"]["parameters"]
    assert set(schema["properties"]) == {"query", "top_k", "mode"}
    step = result.trace[(result.trace.parent_id == "agent")
                        & (result.trace.node_type == "tool")].iloc[0]
    assert step.status == "succeeded"
    assert step.outputs["json"][0]["documents"][0]["title"] == "glacier.md"


async def test_the_only_base_is_searched_when_none_is_named(knowledge: Knowledge):
    out = await search(knowledge, query="cacti rainfall")
    assert out.text.startswith("[1] desert.txt")
    # A base without an embedding model searches by words whatever the mode asked.
    vector = await search(knowledge, query="cacti rainfall", mode="vector", top_k=1)
    assert [d["title"] for d in vector.json[0]["documents"]] == ["desert.txt"]


async def test_no_match_is_an_answer_not_an_error(knowledge: Knowledge):
    out = await search(knowledge, query="submarine", knowledge_base="nature")
    assert out.text == "Nothing in knowledge base 'nature' matches 'submarine'."
    assert out.json == [{"knowledge_base": "nature", "query": "submarine", "documents": []}]


@pytest.mark.parametrize(("arguments", "kind", "message"), [
    ({"query": "lava", "knowledge_base": "oceans"}, "KnowledgeBaseNotFound",
     "no knowledge base is named or bound to 'oceans'"),
    ({"query": "lava", "top_k": 0}, "ToolArgumentsError", "top_k: Input should be greater"),
    ({"query": "lava", "mode": "semantic"}, "ToolArgumentsError", "mode: Input should be"),
    ({"query": ""}, "ToolArgumentsError", "query: String should have at least 1 character"),
    ({"query": "lava", "limit": 3}, "ToolArgumentsError", "limit: Extra inputs"),
])
async def test_bad_arguments_are_errors_the_model_can_read(knowledge: Knowledge, arguments,
                                                           kind, message):
    with pytest.raises(ToolError, match=message) as caught:
        await search(knowledge, **arguments)
    assert caught.value.kind == kind and caught.value.hint


async def test_several_bases_need_one_named(knowledge: Knowledge, tmp_path: Path):
    other = Knowledge(tmp_path / "kb")
    other.create("first")
    other.create("second")
    with pytest.raises(ToolError, match=r"name the knowledge base .* \(there: first, second\)"):
        await search(other, query="lava")
    empty = Knowledge(tmp_path / "none")
    with pytest.raises(ToolError, match="there is no knowledge base") as caught:
        await search(empty, query="lava")
    assert "cellwire kb create" in caught.value.hint
