"""The official Dify Python SDK (``dify-client``) against ``cellwire serve`` unchanged: only
its base URL points at the server on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dify_client import ChatClient, DifyClient
from serve_support import Served, serving, write_apps


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp("sdk")
    with serving(write_apps(folder / "apps", ("greet", "notes")), folder / "runs.db") as found:
        yield found


def sdk(cls: type, served: Served, app: str) -> Any:
    """The SDK as a Dify user sets it up: a key (here bound to ``app``) and a base URL."""
    client = cls(served.new_key("runner", app=app))
    client.base_url = served.url
    return client


def test_chat_messages_blocking_and_streaming_then_conversations(served: Served):
    chat = sdk(ChatClient, served, "notes")
    first = chat.create_chat_message({}, "hello", "sdk-user")
    first.raise_for_status()
    body = first.json()
    assert body["answer"] == "turn 1: hello"
    conversation = body["conversation_id"]
    streamed = chat.create_chat_message({}, "more", "sdk-user", response_mode="streaming",
                                        conversation_id=conversation)
    events = [json.loads(line[5:]) for line in streamed.iter_lines(decode_unicode=True)
              if line and line.startswith("data:")]
    assert "".join(e["answer"] for e in events if e["event"] == "message") == "turn 2: more"
    assert events[-1]["event"] == "message_end"
    listed = chat.get_conversations("sdk-user").json()["data"]
    assert [c["id"] for c in listed] == [conversation]
    messages = chat.get_conversation_messages("sdk-user", conversation).json()["data"]
    assert [m["query"] for m in messages] == ["hello", "more"]
    renamed = chat.rename_conversation(conversation, "from the sdk", "sdk-user").json()
    assert renamed["name"] == "from the sdk"


def test_parameters_and_file_upload(served: Served, tmp_path: Path):
    client = sdk(DifyClient, served, "greet")
    form = client.get_application_parameters("sdk-user").json()["user_input_form"]
    assert [next(iter(item.values()))["variable"] for item in form] == [
        "name", "tone", "times", "doc"]
    upload = client.file_upload("sdk-user", {"file": ("a.txt", b"abc", "text/plain")})
    assert upload.status_code == 201
    assert upload.json()["size"] == 3


def test_workflow_run_through_the_sdks_request_method(served: Served):
    # dify-client 0.1.x has no WorkflowClient; its request method posts what Dify's docs say.
    client = sdk(DifyClient, served, "greet")
    answer = client._send_request("POST", "/workflows/run", json={
        "inputs": {"name": "Ada"}, "response_mode": "blocking", "user": "sdk-user"})
    assert answer.status_code == 200
    assert answer.json()["data"]["outputs"] == {"greeting": "Hello Ada"}
    streamed = client._send_request("POST", "/workflows/run", json={
        "inputs": {"name": "Ada"}, "response_mode": "streaming", "user": "sdk-user"},
        stream=True)
    last = [json.loads(line[5:]) for line in streamed.iter_lines(decode_unicode=True)
            if line and line.startswith("data:")][-1]
    assert last["event"] == "workflow_finished" and last["data"]["status"] == "succeeded"
