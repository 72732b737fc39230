"""The file access policy on the wire: an llm node's vision input reads a local file only when
the run's policy grants it, and a refused file never reaches the provider (a real
OpenAI-compatible server on 127.0.0.1, llm_server.py, records what it received)."""

from __future__ import annotations

import base64
import os
import sys
from pathlib import Path

import pytest

import cellwire
from cellwire.services.files import FolderPolicy, NoLocalFiles
from cellwire.services.llm import LLMRouter
from cellwire.services.llm import config as llm_config
from cellwire.services.llm.openai import OpenAIProvider
from cellwire.services.llm.ratelimit import RateLimits

sys.path.insert(0, str(Path(__file__).parent))
from llm_server import llm_server

pytestmark = pytest.mark.timeout(30)

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(32))
MODEL = {"provider": "langgenius/openai/openai", "name": "gpt-4o-mini"}


@pytest.fixture
def server():
    with llm_server("openai") as running:
        yield running


@pytest.fixture
def notebook(tmp_path, monkeypatch, server) -> Path:
    """A notebook's folder as the working folder, with the loopback server as ``openai``."""
    folder = tmp_path / "notebook"
    folder.mkdir()
    (folder / "cat.png").write_bytes(PNG)
    (tmp_path / "secret.png").write_bytes(PNG)
    monkeypatch.chdir(folder)
    monkeypatch.setenv("CELLWIRE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    for name in ("CELLWIRE_DEFAULT_MODEL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL",
                 "OLLAMA_HOST"):
        monkeypatch.delenv(name, raising=False)
    llm_config.reset_session()
    yield folder
    llm_config.reset_session()


def seeing() -> cellwire.Workflow:
    wf = cellwire.Workflow("vision")
    wf.add_node("start", "start", variables=[{"variable": "pics", "type": "file-list"}])
    wf.add_node("llm", "llm", after="start", model=MODEL,
                prompt_template=[{"role": "user", "text": "What is this?"}],
                vision={"enabled": True, "configs": {"variable_selector": ["start", "pics"],
                                                     "detail": "low"}})
    wf.add_node("end", "end", after="llm",
                outputs=[{"variable": "text", "value_selector": ["llm", "text"]}])
    return wf


def sent_images(server) -> list[str]:
    return [part["image_url"]["url"] for request in server.chat_requests()
            for message in request["messages"] if isinstance(message["content"], list)
            for part in message["content"] if part["type"] == "image_url"]


def test_a_file_in_the_notebook_folder_is_sent(notebook, server):
    (notebook / "pics").mkdir()
    os.symlink(notebook / "cat.png", notebook / "pics" / "alias.png")
    result = seeing().run(pics=["cat.png", str(notebook / "pics" / "alias.png"),
                                "pics/../cat.png"], store=False)
    assert result.ok, result.error
    data_url = f"data:image/png;base64,{base64.b64encode(PNG).decode()}"
    assert sent_images(server) == [data_url] * 3


@pytest.mark.parametrize("name", ["/etc/passwd", "../secret.png", "link.png", "file-url"])
def test_a_file_outside_the_notebook_folder_is_refused_and_never_sent(notebook, server, name):
    secret = notebook.parent / "secret.png"
    if name == "link.png":
        os.symlink(secret, notebook / "link.png")
    path = secret.as_uri() if name == "file-url" else name
    result = seeing().run(pics=[path], store=False)
    assert not result.ok
    assert result.error_node == "llm"
    error = result.error
    assert error.startswith("node 'llm' failed: field 'vision.configs.variable_selector[0]'")
    assert f"is outside the folder this run may read: {notebook}" in error
    # How to grant more: the folder policy with the file's folder added.
    target_folder = Path("/etc") if name == "/etc/passwd" else notebook.parent
    assert f"FolderPolicy('{notebook}', '{target_folder}')" in error
    assert server.chat_requests() == []


def test_a_granted_folder_is_read_and_a_run_without_a_policy_reads_nothing(notebook, server):
    provider = OpenAIProvider("openai", base_url=server.base_url, api_key="sk-test",
                              rate_limits=RateLimits())
    secret = str(notebook.parent / "secret.png")
    for files in (None, NoLocalFiles()):
        # A served run's default: no local file at all, not even the working folder's.
        runtime = cellwire.Runtime(llm=LLMRouter([provider]), files=files)
        refused = seeing().run(pics=["cat.png"], runtime=runtime, store=False)
        assert not refused.ok
        assert "'cat.png' is a local file, and this run may read no local files" in \
            refused.error
        assert "files=cellwire.services.files.FolderPolicy('<folder>')" in refused.error
    assert server.chat_requests() == []
    granted = cellwire.Runtime(llm=LLMRouter([provider]),
                               files=FolderPolicy(notebook, notebook.parent))
    result = seeing().run(pics=[secret], runtime=granted, store=False)
    assert result.ok, result.error
    assert len(sent_images(server)) == 1


def test_the_question_classifier_obeys_the_policy_too(notebook, server):
    wf = cellwire.Workflow("triage")
    wf.add_node("start", "start", variables=[{"variable": "pics", "type": "file-list"},
                                             {"variable": "q", "type": "paragraph"}])
    wf.add_node("qc", "question-classifier", after="start", model=MODEL,
                query_variable_selector=["start", "q"],
                classes=[{"id": "a", "name": "billing"}, {"id": "b", "name": "other"}],
                vision={"enabled": True, "configs": {"variable_selector": ["start", "pics"]}})
    wf.add_node("end", "end", after=[("qc", "a"), ("qc", "b")],
                outputs=[{"variable": "c", "value_selector": ["qc", "class_name"]}])
    result = wf.run(q="what is this?", pics=["/etc/passwd"], store=False)
    assert not result.ok and result.error_node == "qc"
    assert "is outside the folder this run may read" in result.error
    assert server.chat_requests() == []
