"""The llm node's chat memory (earlier turns of a conversation, read from a real SQLite run
store) and vision (image files as parts of the user's message), on the scripted provider."""

from __future__ import annotations

import base64
import sqlite3

import pytest

import cellwire
from cellwire.nodes.llm import vision as llm_vision
from cellwire.nodes.llm.memory import NO_MEMORY
from cellwire.services.files import working_folder
from cellwire.services.llm import LLMRouter, Rule, ScriptedProvider
from cellwire.store import RunStore, schema
from cellwire.store.codec import BLOB_MIN_CHARS

SCRIPTED = {"provider": "scripted", "name": "echo"}
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    # Runs read local images from the working folder (the default file policy).
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def store(tmp_path) -> RunStore:
    with RunStore(tmp_path / "runs.db") as opened:
        yield opened


def chatflow(name: str = "chat", *, window: dict | None = None, **llm) -> cellwire.Workflow:
    """start -> llm (with memory) -> answer, as Dify's chatflows are."""
    wf = cellwire.Workflow(name, mode="advanced-chat")
    wf.add_node("start", "start")
    llm.setdefault("prompt_template", [{"role": "system", "text": "Be brief."}])
    llm.setdefault("memory", {"window": window or {"enabled": False}})
    wf.add_node("llm", "llm", after="start", model=SCRIPTED, **llm)
    wf.add_node("answer", "answer", after="llm", answer="{{#llm.text#}}")
    return wf


async def say(wf, provider, store, query: str, conversation: str | None = "c1", **inputs):
    if conversation is not None:
        inputs["sys.conversation_id"] = conversation
    result = await wf.arun({"sys.query": query, **inputs},
                           runtime=cellwire.Runtime(llm=LLMRouter([provider]), files=working_folder()), store=store)
    assert result.ok, result.error
    return result


def sent(provider: ScriptedProvider) -> list[tuple[str, str]]:
    return [(m.role, m.text) for m in provider.calls[-1].messages]


def notes(result, node_id: str = "llm") -> list[str]:
    trace = result.trace
    return trace[trace.node_id == node_id].iloc[-1]["process_data"].get("notes", [])


# -- memory --------------------------------------------------------------------------------


async def test_the_second_turn_sends_the_first_between_system_and_query(store):
    provider = ScriptedProvider([Rule(contains="Ada", reply="Hello Ada!")])
    wf = chatflow(memory={"window": {"enabled": True, "size": 10},
                          "query_prompt_template": "Q: {{#sys.query#}}"})
    first = await say(wf, provider, store, "I am Ada")
    assert sent(provider) == [("system", "Be brief."), ("user", "Q: I am Ada")]
    assert notes(first) == []
    second = await say(wf, provider, store, "what is my name?")
    # The remembered turn is the user's own words and the run's answer, as Dify keeps them.
    assert sent(provider) == [("system", "Be brief."), ("user", "I am Ada"),
                              ("assistant", "Hello Ada!"), ("user", "Q: what is my name?")]
    prompts = second.trace.set_index("node_id").loc["llm", "process_data"]["prompts"]
    assert [p["role"] for p in prompts] == ["system", "user", "assistant", "user"]


async def test_the_window_keeps_the_last_turns_and_conversations_never_mix(store):
    provider = ScriptedProvider([Rule(reply=lambda r: f"re {r.last_user_message}")])
    wf = chatflow(window={"enabled": True, "size": 2})
    for n in range(4):
        await say(wf, provider, store, f"turn {n}")
    await say(wf, provider, store, "elsewhere", conversation="c2")
    await say(chatflow("another-app", window={"enabled": True, "size": 2}), provider, store,
              "other app")
    await say(wf, provider, store, "turn 4")
    assert sent(provider) == [("system", "Be brief."),
                              ("user", "turn 2"), ("assistant", "re turn 2"),
                              ("user", "turn 3"), ("assistant", "re turn 3"),
                              ("user", "turn 4")]
    await say(wf, provider, store, "second there", conversation="c2")
    assert sent(provider)[1:] == [("user", "elsewhere"), ("assistant", "re elsewhere"),
                                  ("user", "second there")]


async def test_without_a_window_every_turn_is_remembered_and_failed_runs_are_not(store):
    provider = ScriptedProvider([Rule(contains="boom", error="scripted failure"),
                                 Rule(reply="ok")])
    wf = chatflow()  # memory on, window off: Dify remembers up to 500 turns
    for query in ("a", "b", "c"):
        await say(wf, provider, store, query)
    failed = await wf.arun({"sys.query": "boom", "sys.conversation_id": "c1"},
                           runtime=cellwire.Runtime(llm=LLMRouter([provider]), files=working_folder()), store=store)
    assert not failed.ok
    await say(wf, provider, store, "d")
    assert [text for role, text in sent(provider) if role == "user"] == ["a", "b", "c", "d"]


async def test_a_workflow_without_answer_node_remembers_the_nodes_own_reply(store):
    provider = ScriptedProvider([Rule(reply=lambda r: f"noted {len(r.messages)}")])
    wf = cellwire.Workflow("plain")
    wf.add_node("start", "start", variables=[{"variable": "q", "type": "paragraph"}])
    wf.add_node("llm", "llm", after="start", model=SCRIPTED,
                prompt_template=[{"role": "system", "text": "sys"},
                                 {"role": "user", "text": "{{#start.q#}}"}],
                memory={"window": {"enabled": True, "size": 3}})
    wf.add_node("end", "end", after="llm",
                outputs=[{"variable": "text", "value_selector": ["llm", "text"]}])
    # Big inputs go to the store's blobs table: the query is read back from there too.
    long = "word " * (BLOB_MIN_CHARS // 4)
    await say(wf, provider, store, "first " + long, q="one")
    await say(wf, provider, store, "second", q="two")
    # Dify's order: the prompt's messages, the remembered turns, the user's query.
    assert sent(provider) == [("system", "sys"), ("user", "two"), ("user", "first " + long),
                              ("assistant", "noted 3"), ("user", "second")]


async def test_no_store_or_no_conversation_sends_no_history_and_says_so(store):
    provider = ScriptedProvider()
    wf = chatflow(window={"enabled": True, "size": 5})
    result = await say(wf, provider, False, "hi")
    assert notes(result) == [f"memory: {NO_MEMORY}, so no history is sent"]
    assert "store=False" in NO_MEMORY and "run it with a store" in NO_MEMORY
    await say(wf, provider, store, "first", conversation=None)
    result = await say(wf, provider, store, "second", conversation=None)
    assert notes(result) == [("memory: the run has no sys.conversation_id, so no history "
                             "is sent")]
    assert sent(provider) == [("system", "Be brief."), ("user", "second")]
    # Without memory, no note at all.
    plain = chatflow(memory=None, prompt_template=[{"role": "user", "text": "{{#sys.query#}}"}])
    assert notes(await say(plain, provider, False, "hi")) == []


async def test_completion_mode_writes_the_history_with_role_prefixes(store):
    provider = ScriptedProvider([Rule(reply="fine")])
    wf = chatflow(prompt_template={"text": "Chat so far:\n{{#histories#}}\nNow: {{#sys.query#}}"},
                  memory={"window": {"enabled": True, "size": 1},
                          "role_prefix": {"user": "U", "assistant": "A"}})
    await say(wf, provider, store, "how are you")
    assert provider.calls[-1].messages[0].text == "Chat so far:\n\nNow: how are you"
    await say(wf, provider, store, "and now")
    assert provider.calls[-1].messages[0].text == (
        "Chat so far:\nU: how are you\nA: fine\nNow: and now")
    # Without a {{#histories#}} slot the history goes first, with Dify's default prefixes.
    wf = chatflow("no-slot", prompt_template={"text": "Now: {{#sys.query#}}"})
    await say(wf, provider, store, "x")
    await say(wf, provider, store, "y")
    assert provider.calls[-1].messages[0].text == "Human: x\nAssistant: fine\nNow: y"


def test_migration_4_indexes_the_conversation_of_runs_stored_before_it(tmp_path, monkeypatch):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:3])
    schema.migrate(conn)
    big = '{"sys.conversation_id": "c9", "sys.query": "' + "x" * BLOB_MIN_CHARS + '"}'
    conn.execute("INSERT INTO blobs VALUES ('h1', ?, ?)", (len(big), big))
    rows = [("r1", '{"sys.conversation_id": "c9", "sys.query": "hi"}', "yo", 1.0),
            ("r2", "@h1", "long one", 2.0),
            ("r3", '{"sys.conversation_id": 7, "sys.query": "n"}', "num", 3.0),
            ("r4", '{"q": "no conversation"}', "none", 4.0)]
    conn.executemany("INSERT INTO runs (run_id, workflow, status, inputs, answer, started_at) "
                     "VALUES (?, 'app', 'succeeded', ?, ?, ?)", rows)
    conn.close()
    monkeypatch.undo()
    with RunStore(path) as migrated:
        assert migrated.pragma("user_version") == len(schema.MIGRATIONS) >= 4
        turns = migrated.conversation_turns("app", "c9", 10)
        assert [(t.run_id, t.query[:2], t.answer) for t in turns] == [
            ("r1", "hi", "yo"), ("r2", "xx", "long one")]
        assert [t.run_id for t in migrated.conversation_turns("app", "7", 10)] == ["r3"]
        assert migrated.conversation_turns("app", "c9", 1)[0].run_id == "r2"
        assert migrated.conversation_turns("other", "c9", 10) == []


# -- vision --------------------------------------------------------------------------------


def seeing(detail: str | None = None, **vision) -> cellwire.Workflow:
    wf = cellwire.Workflow("vision")
    wf.add_node("start", "start", variables=[{"variable": "q", "type": "paragraph"},
                                             {"variable": "pics", "type": "file-list"}])
    configs = {"variable_selector": ["start", "pics"]}
    if detail:
        configs["detail"] = detail
    vision.setdefault("configs", configs)
    wf.add_node("llm", "llm", after="start", model=SCRIPTED,
                prompt_template=[{"role": "system", "text": "Describe."},
                                 {"role": "user", "text": "{{#start.q#}}"}],
                vision={"enabled": True, **vision})
    wf.add_node("end", "end", after="llm",
                outputs=[{"variable": "text", "value_selector": ["llm", "text"]}])
    return wf


async def look(wf, pics, provider=None, **inputs):
    provider = provider or ScriptedProvider()
    result = await wf.arun(q="what is this?", pics=pics, store=False,
                           runtime=cellwire.Runtime(llm=LLMRouter([provider]), files=working_folder()), **inputs)
    return result, provider


async def test_image_files_become_parts_before_the_text_of_the_users_message(tmp_path):
    (tmp_path / "cat.png").write_bytes(PNG)
    (tmp_path / "notes.txt").write_text("not an image")
    pics = [
        {"type": "image", "transfer_method": "remote_url",
         "remote_url": "https://example.com/dog.jpg"},
        {"type": "image", "transfer_method": "local_file", "path": str(tmp_path / "cat.png"),
         "filename": "cat.png"},
        {"type": "document", "transfer_method": "remote_url",
         "url": "https://example.com/report.pdf", "filename": "report.pdf"},
        str(tmp_path / "notes.txt"),
        "data:image/gif;base64,R0lGODlhAQABAAAAACw=",
    ]
    provider = ScriptedProvider([Rule(images=True, reply="two animals and a dot")])
    result, _ = await look(seeing("low"), pics, provider)
    assert result.ok, result.error
    assert result.outputs == {"text": "two animals and a dot"}
    last = provider.calls[-1].messages[-1]
    assert last.role == "user" and last.text == "what is this?"
    data = "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert last.content == [
        {"type": "image_url", "image_url": {"url": "https://example.com/dog.jpg",
                                            "detail": "low"}},
        {"type": "image_url", "image_url": {"url": data, "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "data:image/gif;base64,R0lGODlhAQABAAAAACw=",
                                            "detail": "low"}},
        {"type": "text", "text": "what is this?"},
    ]
    # A path given for a file input becomes a file object, named by its file name.
    assert notes(result) == [("vision: 2 file(s) that are not images were not sent: "
                             "'report.pdf', 'notes.txt'")]
    # The trace shows the images, a data URL by its type and size only.
    prompt = result.trace.set_index("node_id").loc["llm", "process_data"]["prompts"][-1]
    assert prompt["images"] == ["https://example.com/dog.jpg",
                                f"data:image/png;base64,<{len(PNG)} bytes>",
                                "data:image/gif;base64,<14 bytes>"]


async def test_default_selector_is_sys_files_and_no_files_sends_text_only(tmp_path):
    (tmp_path / "a.webp").write_bytes(b"RIFF\x00\x00\x00\x00WEBPVP8 ")
    wf = seeing(configs=None)  # Dify's default: the files of the user's message
    provider = ScriptedProvider([Rule(images=False, reply="no picture"), Rule(reply="seen")])
    result, _ = await look(wf, [], provider, **{"sys.files": [str(tmp_path / "a.webp")]})
    assert result.outputs == {"text": "seen"}
    assert provider.calls[-1].messages[-1].images[0]["image_url"] == {
        "url": "data:image/webp;base64," + base64.b64encode(
            b"RIFF\x00\x00\x00\x00WEBPVP8 ").decode(), "detail": "high"}
    result, _ = await look(wf, [], provider)
    assert result.outputs == {"text": "no picture"} and notes(result) == []


async def test_a_prompt_without_user_message_gets_one_for_the_images():
    wf = seeing()
    wf.nodes["llm"].config["prompt_template"] = [{"role": "system", "text": "Describe."}]
    result, provider = await look(wf, ["https://example.com/x.png"])
    assert result.ok, result.error
    assert [(m.role, len(m.images)) for m in provider.calls[-1].messages] == [
        ("system", 0), ("user", 1)]


async def test_images_go_with_the_query_after_the_remembered_turns(store, tmp_path):
    provider = ScriptedProvider([Rule(reply="ok")])
    # Dify's default query template also names the files: they go as parts, not as text.
    wf = chatflow(memory={"window": {"enabled": True, "size": 3},
                          "query_prompt_template": "{{#sys.query#}}\n\n{{#sys.files#}}"},
                  vision={"enabled": True})
    await say(wf, provider, store, "first")
    await say(wf, provider, store, "look", **{"sys.files": [
        {"type": "image", "transfer_method": "remote_url", "url": "https://e.com/i.png"}]})
    messages = provider.calls[-1].messages
    assert [(m.role, m.text, len(m.images)) for m in messages] == [
        ("system", "Be brief.", 0), ("user", "first", 0), ("assistant", "ok", 0),
        ("user", "look\n\n", 1)]


@pytest.mark.parametrize(("pics", "message", "field"), [
    ([{"type": "image", "transfer_method": "local_file", "upload_file_id": "f-1"}],
     "has no url and no path", "vision.configs.variable_selector[0]"),
    (["missing/cat.png"], "cannot read the image", "vision.configs.variable_selector[0]"),
    ([42], "a int is not a file", "vision.configs.variable_selector[0]"),
])
async def test_bad_files_are_configuration_errors_naming_the_field(pics, message, field):
    result, provider = await look(seeing(), pics)
    assert not result.ok and message in result.error and field in result.error
    assert provider.calls == []


async def test_a_local_image_over_the_size_cap_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(llm_vision, "MAX_IMAGE_BYTES", 1024)
    (tmp_path / "big.png").write_bytes(PNG + bytes(2048))
    result, provider = await look(seeing(), str(tmp_path / "big.png"))
    assert not result.ok
    assert "the image 'big.png' is larger than 1 KB" in result.error
    assert "vision.configs.variable_selector" in result.error
    assert provider.calls == []
