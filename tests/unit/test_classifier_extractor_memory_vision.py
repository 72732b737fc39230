"""Chat memory and vision in the question-classifier and parameter-extractor nodes, as Dify
does them: the conversation's earlier turns (read from a real SQLite run store) go into the
system prompt inside <histories> tags, and image files become parts of the user message that
holds the text, before it. Runs on the scripted provider."""

from __future__ import annotations

import base64

import pytest

import cellwire
from cellwire.nodes.llm.memory import NO_MEMORY
from cellwire.services.files import working_folder
from cellwire.services.llm import LLMRouter, Rule, ScriptedProvider
from cellwire.store import RunStore

SCRIPTED = {"provider": "scripted", "name": "echo"}
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(48))
CLASSES = [{"id": "1", "name": "billing"}, {"id": "2", "name": "technical"}]
BILLING = Rule(contains="invoice", json={"category_id": "1", "category_name": "billing"})
TECHNICAL = Rule(json={"category_id": "2", "category_name": "technical"})
PARAMS = [{"name": "city", "type": "string", "required": True},
          {"name": "nights", "type": "number"}]


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    # Runs read local images from the working folder (the default file policy).
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def store(tmp_path) -> RunStore:
    with RunStore(tmp_path / "runs.db") as opened:
        yield opened


def classifier_chat(**config) -> cellwire.Workflow:
    """start -> question-classifier -> one answer per class, as a Dify chatflow."""
    wf = cellwire.Workflow("support", mode="advanced-chat")
    wf.add_node("start", "start")
    wf.add_node("qc", "question-classifier", after="start", model=SCRIPTED,
                query_variable_selector=["sys", "query"], classes=CLASSES, **config)
    wf.add_node("a1", "answer", after=[("qc", "1")], answer="Billing will help.")
    wf.add_node("a2", "answer", after=[("qc", "2")], answer="A technician will help.")
    return wf


def extractor_chat(mode: str = "function_call", **config) -> cellwire.Workflow:
    wf = cellwire.Workflow("booking", mode="advanced-chat")
    wf.add_node("start", "start")
    wf.add_node("pe", "parameter-extractor", after="start", model=SCRIPTED,
                query=["sys", "query"], parameters=PARAMS, reasoning_mode=mode,
                instruction="Cities are in Europe.", **config)
    wf.add_node("answer", "answer", after="pe", answer="{{#pe.city#}} for {{#pe.nights#}}")
    return wf


async def say(wf, provider, store, query: str, conversation: str | None = "c1", **inputs):
    if conversation is not None:
        inputs["sys.conversation_id"] = conversation
    result = await wf.arun({"sys.query": query, **inputs},
                           runtime=cellwire.Runtime(llm=LLMRouter([provider]), files=working_folder()), store=store)
    assert result.ok, result.error
    return result


def process_data(result, node_id: str) -> dict:
    trace = result.trace
    return trace[trace.node_id == node_id].iloc[-1]["process_data"]


def histories(provider: ScriptedProvider) -> str:
    """What the last request's system prompt holds inside <histories> tags."""
    system = provider.calls[-1].messages[0]
    assert system.role == "system"
    return system.text.split("<histories>\n", 1)[1].split("\n</histories>", 1)[0]


# -- question-classifier ---------------------------------------------------------------------


async def test_classifier_puts_earlier_turns_in_the_system_prompt(store):
    provider = ScriptedProvider([BILLING, TECHNICAL])
    wf = classifier_chat(memory={"window": {"enabled": True, "size": 10}})
    first = await say(wf, provider, store, "my invoice is wrong")
    assert first.answer == "Billing will help."
    # A first turn has an empty history, in the same place.
    assert histories(provider) == ""
    second = await say(wf, provider, store, "the app crashes")
    assert second.answer == "A technician will help."
    assert histories(provider) == "Human: my invoice is wrong\nAssistant: Billing will help."
    await say(wf, provider, store, "and the invoice again")
    assert histories(provider) == (
        "Human: my invoice is wrong\nAssistant: Billing will help.\n"
        "Human: the app crashes\nAssistant: A technician will help.")
    # Dify's layout: the history is in the system prompt, the question alone in the user
    # message; no remembered turns as messages of their own.
    messages = provider.calls[-1].messages
    assert [m.role for m in messages] == ["system", "user"]
    assert messages[1].text.endswith("Input:\nand the invoice again")
    assert "<histories>" in process_data(second, "qc")["prompts"][0]["text"]
    assert "notes" not in process_data(second, "qc")


async def test_classifier_window_counts_even_when_off_and_conversations_stay_apart(store):
    provider = ScriptedProvider([BILLING, TECHNICAL])
    # Dify's classifier takes window.size whether or not the window is enabled.
    wf = classifier_chat(memory={"window": {"enabled": False, "size": 1}})
    for query in ("invoice one", "crash two", "invoice three"):
        await say(wf, provider, store, query)
    assert histories(provider) == "Human: crash two\nAssistant: A technician will help."
    await say(wf, provider, store, "invoice elsewhere", conversation="c2")
    assert histories(provider) == ""


async def test_classifier_without_memory_has_no_history_section_and_notes_say_why(store):
    provider = ScriptedProvider([BILLING])
    plain = await say(classifier_chat(), provider, store, "invoice")
    assert "<histories>" not in provider.calls[-1].messages[0].text
    assert "notes" not in process_data(plain, "qc")
    wf = classifier_chat(memory={"window": {"enabled": True, "size": 3}})
    result = await say(wf, provider, store, "invoice", conversation=None)
    assert process_data(result, "qc")["notes"] == [
        "memory: the run has no sys.conversation_id, so no history is sent"]
    result = await say(wf, provider, False, "invoice")
    assert process_data(result, "qc")["notes"] == [
        f"memory: {NO_MEMORY}, so no history is sent"]


async def test_classifier_sends_images_before_the_question_text(store, tmp_path):
    (tmp_path / "screen.png").write_bytes(PNG)
    provider = ScriptedProvider([Rule(images=True, json={"category_id": "2",
                                                        "category_name": "technical"}),
                                 BILLING])
    wf = classifier_chat(memory={"window": {"enabled": True, "size": 5}},
                         vision={"enabled": True, "configs": {"variable_selector": ["sys", "files"],
                                                              "detail": "low"}})
    await say(wf, provider, store, "my invoice")
    files = [{"type": "image", "transfer_method": "remote_url",
              "remote_url": "https://example.com/error.jpg"},
             {"type": "image", "transfer_method": "local_file",
              "path": str(tmp_path / "screen.png")},
             {"type": "document", "transfer_method": "remote_url",
              "remote_url": "https://example.com/manual.pdf", "filename": "manual.pdf"}]
    result = await say(wf, provider, store, "what is this?", **{"sys.files": files})
    assert result.answer == "A technician will help."
    last = provider.calls[-1].messages[-1]
    data = "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert last.role == "user" and last.content[:2] == [
        {"type": "image_url", "image_url": {"url": "https://example.com/error.jpg",
                                            "detail": "low"}},
        {"type": "image_url", "image_url": {"url": data, "detail": "low"}}]
    assert last.content[2]["type"] == "text" and len(last.content) == 3
    assert last.text.endswith("Input:\nwhat is this?")
    assert histories(provider) == "Human: my invoice\nAssistant: Billing will help."
    assert process_data(result, "qc")["notes"] == [
        "vision: 1 file(s) that are not images were not sent: 'manual.pdf'"]


async def test_classifier_vision_off_sends_no_images(store):
    provider = ScriptedProvider([Rule(images=False, json={"category_id": "1",
                                                         "category_name": "billing"})])
    wf = classifier_chat(vision={"enabled": False})
    result = await say(wf, provider, store, "look", **{"sys.files": ["https://e.com/x.png"]})
    assert result.answer == "Billing will help."
    assert provider.calls[-1].messages[-1].images == []


# -- parameter-extractor ---------------------------------------------------------------------


def lisbon(nights: int = 3) -> Rule:
    return Rule(tool_calls=[{"name": "extract_parameters",
                             "arguments": {"city": "Lisbon", "nights": nights}}])


async def test_extractor_puts_earlier_turns_in_the_system_prompt(store):
    provider = ScriptedProvider([lisbon()])
    wf = extractor_chat(memory={"window": {"enabled": True, "size": 4}})
    first = await say(wf, provider, store, "three nights in Lisbon")
    assert first.answer == "Lisbon for 3"
    assert histories(provider) == ""
    await say(wf, provider, store, "make it four")
    assert histories(provider) == "Human: three nights in Lisbon\nAssistant: Lisbon for 3"
    system, user = provider.calls[-1].messages
    # The section sits before the node's instruction, as in Dify's prompt.
    assert system.text.index("</histories>") < system.text.index("Cities are in Europe.")
    assert user.role == "user" and user.text == "Text:\nmake it four"


async def test_extractor_prompt_mode_keeps_the_schema_last_and_sends_images(store, tmp_path):
    (tmp_path / "ticket.png").write_bytes(PNG)
    provider = ScriptedProvider([Rule(json={"city": "Porto", "nights": 2})])
    wf = extractor_chat("prompt", memory={"window": {"enabled": False, "size": 2}},
                        vision={"enabled": True})
    await say(wf, provider, store, "Porto, two nights")
    result = await say(wf, provider, store, "same again", **{"sys.files": [
        str(tmp_path / "ticket.png")]})
    assert result.answer == "Porto for 2"
    system, user = provider.calls[-1].messages
    assert histories(provider) == "Human: Porto, two nights\nAssistant: Porto for 2"
    # The JSON Schema still ends the system prompt (servers and models read it there).
    assert system.text.rstrip().endswith("}")
    assert system.text.index("</histories>") < system.text.index("JSON Schema")
    assert [p["type"] for p in user.content] == ["image_url", "text"]
    assert user.images[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert user.text == "Text:\nsame again"
    assert process_data(result, "pe")["prompts"][-1]["images"] == [
        f"data:image/png;base64,<{len(PNG)} bytes>"]


async def test_extractor_bad_image_is_a_configuration_error_naming_the_field(store):
    provider = ScriptedProvider([lisbon()])
    wf = extractor_chat(vision={"enabled": True})
    result = await wf.arun({"sys.query": "x", "sys.files": ["missing/cat.png"]},
                           runtime=cellwire.Runtime(llm=LLMRouter([provider]), files=working_folder()), store=store)
    assert not result.ok
    assert "cannot read the image" in result.error
    assert "vision.configs.variable_selector[0]" in result.error
    assert provider.calls == []
