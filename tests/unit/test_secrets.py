"""Secrets are granted by the user, never taken by a workflow that names them, and never shown:
not in events, results, the store or the run state's checkpoints, in clear or disguised."""

from __future__ import annotations

import base64
import dataclasses
import json
from urllib.parse import quote

import pytest

import cellwire
from cellwire.engine import NodeResult, Runtime
from cellwire.engine.events import StreamChunk
from cellwire.engine.secrets import (
    REDACTED,
    Redactor,
    StreamRedactor,
    missing_secrets,
    redactor,
    transformed_forms,
    unknown_grants,
)
from cellwire.formats.dify import dump_dify
from cellwire.formats.python_export import export_python
from cellwire.model import EnvironmentVariable, registry
from cellwire.model.registry import node_type
from cellwire.runner import Runner
from cellwire.store import RunStore

SECRET = "sk-Test-0123456789abcdef"


def _leaky_workflow() -> cellwire.Workflow:
    wf = cellwire.Workflow("leaky", environment=[
        EnvironmentVariable(name="API_KEY", value_type="secret"),
        EnvironmentVariable(name="REGION", value="eu"),
    ])
    wf.add_node("start", "start")
    wf.add_node("show", "template-transform", after="start",
                template="key={{#env.API_KEY#}} region={{#env.REGION#}}")
    wf.add_node("end", "end", after="show", outputs=[
        {"variable": "text", "value_selector": ["show", "output"]},
        {"variable": "raw", "value_selector": ["env", "API_KEY"]},
    ])
    return wf


async def _run(wf: cellwire.Workflow, runtime: Runtime | None = None, **options):
    return await Runner().arun(wf, None, runtime=runtime or Runtime(), store=False, **options)


async def test_a_granted_secret_reaches_the_node_and_nothing_shown(tmp_path):
    wf = _leaky_workflow()
    store = RunStore(tmp_path / "runs.db")
    result = await _run(wf, Runtime(layers=[store.sink]), secrets={"API_KEY": SECRET})
    assert result.status == cellwire.RunStatus.SUCCEEDED, result.error
    # The node saw the real value (the run works) but nothing shown holds it.
    assert result.outputs == {"text": "key=*** region=eu", "raw": "***"}
    assert SECRET not in repr([e.as_dict() for e in result.events])
    assert SECRET not in result.trace.to_json(date_format="iso")
    stored = json.dumps(store.run(result.run_id), default=str) + \
        store.trace(result.run_id).to_json(date_format="iso")
    assert SECRET not in stored and "key=***" in stored
    assert SECRET not in repr(result) and SECRET not in repr(result.state)
    store.close()


@pytest.mark.parametrize("template", [
    "key={{#env.API_KEY#}}",  # a Dify reference in a plain-text field
])
async def test_a_secret_nobody_granted_has_no_value_even_if_the_process_has_one(
        monkeypatch, template):
    # The process has a variable of that name: declaring it is not enough to get it.
    monkeypatch.setenv("API_KEY", SECRET)
    wf = _leaky_workflow()
    wf.nodes["show"].config["template"] = template
    result = await _run(wf)
    assert result.status == cellwire.RunStatus.FAILED
    assert result.error_node == "show"
    assert "env.API_KEY was not granted" in result.error
    assert "--secret API_KEY" in result.error and "secrets=" in result.error
    assert SECRET not in repr(result.events) and SECRET not in result.error


@pytest.mark.parametrize(("read", "variables"), [
    ("{{ env.API_KEY }}", []),  # Jinja over the pool
    ("{{ env['API_KEY'] }}", []),
    ("{{ k }}", [{"variable": "k", "value_selector": ["env", "API_KEY"]}]),  # a selector
])
async def test_every_way_of_reading_an_ungranted_secret_fails_the_node(monkeypatch, read,
                                                                      variables):
    monkeypatch.setenv("API_KEY", SECRET)
    wf = cellwire.Workflow("reads", environment=[
        EnvironmentVariable(name="API_KEY", value_type="secret")])
    wf.add_node("start", "start")
    wf.add_node("t", "template-transform", after="start", template=read, variables=variables)
    wf.add_node("end", "end", after="t", outputs=[{"variable": "o", "value_selector": ["t", "output"]}])
    result = await _run(wf)
    assert result.status == cellwire.RunStatus.FAILED
    assert "env.API_KEY was not granted" in result.error, result.error
    failed = [e for e in result.events if e.name == "node_failed"]
    assert failed[0].error_type == "SecretNotGranted" and failed[0].retries == 0


async def test_what_is_not_a_read_of_the_secret_still_runs():
    # Listing env shows what was granted, nothing else.
    wf = cellwire.Workflow("listing", environment=[
        EnvironmentVariable(name="API_KEY", value_type="secret"),
        EnvironmentVariable(name="REGION", value="eu")])
    wf.add_node("start", "start")
    wf.add_node("t", "template-transform", after="start",
                template="{{ env|list }} {{ 'API_KEY' in env }}")
    wf.add_node("end", "end", after="t", outputs=[{"variable": "o", "value_selector": ["t", "output"]}])
    result = await _run(wf)
    assert result.outputs == {"o": "['REGION'] False"}


async def test_a_secret_value_in_the_workflow_itself_is_not_a_grant():
    # However it got there (a hand-written file, a cell), only secrets= gives a value.
    wf = _leaky_workflow()
    wf.environment[0].value = SECRET
    result = await _run(wf)
    assert result.status == cellwire.RunStatus.FAILED and "not granted" in result.error


async def test_a_grant_fills_a_plain_variable_too_and_is_redacted():
    # Many Dify apps keep keys in string variables: a grant fills them, and hides them.
    wf = _leaky_workflow()
    result = await _run(wf, secrets={"API_KEY": SECRET, "REGION": "north-pole"})
    assert result.outputs == {"text": "key=*** region=***", "raw": "***"}


async def test_too_short_a_secret_is_refused_and_an_empty_one_is_allowed():
    wf = _leaky_workflow()
    with pytest.raises(ValueError, match="'API_KEY' has fewer than 4 characters"):
        await _run(wf, secrets={"API_KEY": "abc"})
    with pytest.raises(ValueError, match="'API_KEY' is not name -> text"):
        await _run(wf, secrets={"API_KEY": 12345678})
    result = await _run(wf, secrets={"API_KEY": ""})
    assert result.outputs == {"text": "key= region=eu", "raw": ""}


def test_missing_and_unknown_grants_are_named():
    wf = _leaky_workflow()
    assert missing_secrets(wf) == ["API_KEY"]
    assert missing_secrets(wf, ["API_KEY"]) == []
    assert unknown_grants(wf, ["API_KEY", "REGION", "API_KYE"]) == ["API_KYE"]


def test_exports_never_hold_secret_values():
    wf = _leaky_workflow()
    wf.environment[0].value = SECRET
    assert SECRET not in cellwire.dump(wf)
    assert SECRET not in dump_dify(wf)
    python = export_python(wf)
    assert SECRET not in python and "'value': 'eu'" in python


# -- redaction of disguised forms ---------------------------------------------------------------

RAW = SECRET.encode()


def _b64_inside(prefix: bytes, suffix: bytes = b"") -> str:
    return base64.b64encode(prefix + RAW + suffix).decode()


DISGUISES = {
    "clear": SECRET,
    "reversed": SECRET[::-1],
    "upper": SECRET.upper(),
    "lower": SECRET.lower(),
    "swapped case": SECRET.swapcase(),
    "reversed upper": SECRET[::-1].upper(),
    "base64": base64.b64encode(RAW).decode(),
    "base64 unpadded": base64.b64encode(RAW).decode().rstrip("="),
    "base64 url-safe": base64.urlsafe_b64encode(RAW).decode(),
    "base64 of the reverse": base64.b64encode(RAW[::-1]).decode(),
    "base64 of the upper case": base64.b64encode(SECRET.upper().encode()).decode(),
    "basic auth": "Basic " + _b64_inside(b"user:"),
    "base64 inside base64, offset 1": _b64_inside(b"x", b"tail"),
    "base64 inside base64, offset 2": _b64_inside(b"{\"", b"\"}"),
    "hex": RAW.hex(),
    "HEX": RAW.hex().upper(),
    "hex of the reverse": RAW[::-1].hex(),
    "url-encoded": quote("a b/" + SECRET + "?&", safe=""),
}


@pytest.mark.parametrize("name", sorted(DISGUISES))
def test_every_disguise_is_redacted(name):
    shown = redactor([SECRET]).text(f"before {DISGUISES[name]} after")
    assert REDACTED in shown and shown.startswith("before ") and shown.endswith(" after")
    for form in DISGUISES.values():
        # Nothing decodable is left: no form of length 8 or more survives in any part.
        assert form not in shown


@pytest.mark.parametrize("value", ["p@ss word/+=?&\"\\\n", "naïve-Ünïcode-κλειδί"])
def test_values_with_special_characters(value):
    shown = redactor([value]).value({
        "url": quote(value, safe=""), "json": json.dumps({"k": value}),
        "clear": value, "b64": base64.b64encode(value.encode()).decode()})
    assert shown == {"url": REDACTED, "json": '{"k": "***"}', "clear": REDACTED,
                     "b64": REDACTED}


def test_redaction_reaches_keys_lists_and_numbers_and_leaves_the_rest():
    red = redactor(["12345678"])
    assert red.value({"12345678": [12345678, 9123456789, 1.5, True, None, "ok"]}) == \
        {REDACTED: [REDACTED, REDACTED, 1.5, True, None, "ok"]}
    assert not Redactor() and Redactor().value({"a": 1}) == {"a": 1}
    assert redactor([SECRET]) is redactor([SECRET])  # compiled once per set of values


def test_forms_shorter_than_four_characters_are_never_matched():
    assert all(len(form) >= 4 for form in transformed_forms("abcd"))
    assert redactor(["abcd"]).text("ab cd abc bcd dcba") == "ab cd abc bcd ***"


def test_a_secret_cut_across_stream_chunks_is_never_shown():
    streams = StreamRedactor(redactor([SECRET]))
    text = f"the key is {SECRET}, reversed {SECRET[::-1]}. done"
    shown = []
    for cut in range(0, len(text), 3):
        chunk = streams.chunk(StreamChunk(
            run_id="r", time=0, node_id="n", node_type="llm", execution_id="e",
            selector=("n", "text"), text=text[cut:cut + 3]))
        if chunk is not None:
            shown.append(chunk.text)
    shown += [c.text for c in streams.flush("e")]
    assert "".join(shown) == "the key is ***, reversed ***. done"
    for part in shown:
        assert SECRET[:6] not in part


async def test_a_streaming_node_shows_no_part_of_the_secret():
    @node_type("secret-streamer", outputs=["text"])
    async def streamer(ctx):
        key = ctx.get(["env", "API_KEY"])
        text = f"key: {key} end"
        for cut in range(0, len(text), 2):
            await ctx.stream(text[cut:cut + 2], selector=(ctx.node.id, "text"))
        return NodeResult(outputs={"text": text})

    try:
        wf = cellwire.Workflow("streams", environment=[
            EnvironmentVariable(name="API_KEY", value_type="secret")])
        wf.add_node("start", "start")
        wf.add_node("s", "secret-streamer", after="start")
        wf.add_node("end", "end", after="s",
                    outputs=[{"variable": "o", "value_selector": ["s", "text"]}])
        seen = []
        result = await _run(wf, Runtime(layers=[seen.append]), secrets={"API_KEY": SECRET})
        chunks = [e.text for e in seen if isinstance(e, StreamChunk)]
        assert "".join(chunks) == "key: *** end" and result.outputs == {"o": "key: *** end"}
        assert all(SECRET[:4] not in c and SECRET[-4:] not in c for c in chunks)
        # Held text is shown before the node's end, not after.
        kinds = [e.name for e in seen if getattr(e, "node_id", None) == "s"]
        assert kinds[-1] == "node_succeeded" and kinds[-2] == "stream_chunk"
    finally:
        registry.unregister("secret-streamer")


# -- the run state -----------------------------------------------------------------------------


def _disguising_workflow() -> cellwire.Workflow:
    wf = cellwire.Workflow("disguise", environment=[
        EnvironmentVariable(name="API_KEY", value_type="secret")])
    wf.add_node("start", "start", variables=[{"variable": "note", "type": "text-input"}])
    wf.add_node("t", "template-transform", after="start",
                variables=[{"variable": "k", "value_selector": ["env", "API_KEY"]}],
                template="{{ k }}|{{ k|reverse }}|{{ k|upper }}|{{ k.encode().hex() }}")
    wf.add_node("end", "end", after="t", outputs=[
        {"variable": "o", "value_selector": ["t", "output"]},
        {"variable": "note", "value_selector": ["start", "note"]}])
    return wf


async def test_the_run_state_checkpoint_holds_no_secret_in_any_form():
    wf = _disguising_workflow()
    result = await Runner().arun(wf, {"note": "mine: " + SECRET}, runtime=Runtime(),
                                 store=False, secrets={"API_KEY": SECRET})
    assert result.outputs == {"o": "***|***|***|***", "note": "mine: ***"}
    state = result.state
    assert state is not None
    # In memory the state keeps the real values (reruns need them)...
    assert SECRET in state.pool.get(["t", "output"])
    # ...its checkpoint form has none of them, nor env at all.
    dumped = json.dumps(state.to_dict())
    for form in (SECRET, SECRET[::-1], SECRET.upper(), RAW.hex()):
        assert form not in dumped
    assert "env" not in state.to_dict()["pool"] and "***" in dumped
    restored = type(state).from_dict(state.to_dict())
    assert SECRET not in repr(dataclasses.asdict(restored))


async def test_a_rerun_keeps_the_grants_of_the_run_it_reruns():
    wf = _disguising_workflow()
    runner = Runner()
    first = await runner.arun(wf, {"note": "x"}, runtime=Runtime(), store=False,
                              secrets={"API_KEY": SECRET})
    again = await runner.arun(wf, {"note": "x"}, runtime=Runtime(), store=False,
                              start_at="t", previous=first)
    assert again.status == cellwire.RunStatus.SUCCEEDED, again.error
    assert again.outputs["o"] == "***|***|***|***"
    assert SECRET in again.state.pool.get(["t", "output"])
