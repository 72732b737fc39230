"""Knowledge bases end to end: built with the CLI (a real process), searched as JSON, used by
an imported Dify app's knowledge-retrieval node, a document-extractor over every file type
given as ``--input doc=@file``, and embeddings from an OpenAI-compatible server on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from llm_server import embedding_of, llm_server

from cellwire.engine.events import NodeSucceeded
from cellwire.formats import load
from cellwire.formats.loader import load_data
from cellwire.runner import Runner
from cellwire.services.knowledge import Knowledge
from cellwire.services.llm import LLMRouter
from cellwire.services.llm.openai import OpenAIProvider
from knowledge_corpus import write_corpus

CORPUS = Path("/work/shared/corpora/dify-dsl")
CHATBOT = CORPUS / "langgenius__dify" / "recommended_apps__Knowledge_Retrieval_Chatbot__e9870913.yml"
CHATBOT_DATASET = "6084ed3f-d100-4df2-a277-b40d639ea7c6"
RAG_FLOW = (CORPUS / "lazeyliu__dify-dsl-generator-skills"
            / "tests__fixtures__dsl__knowledge-retrieval-chatflow.yml")
# A chatflow whose uploaded documents (sys.files) go through a list operator and a
# document-extractor into an llm node; its web-search branch (tools) is switched off.
KIMI = CORPUS / "svcvit__Awesome-Dify-Workflow" / "DSL__simple-kimi.yml"

EXTRACTOR = """\
app: {mode: workflow, name: extract}
kind: app
version: 0.3.1
workflow:
  graph:
    edges:
      - {source: start, target: extract, sourceHandle: source, targetHandle: target}
      - {source: extract, target: end, sourceHandle: source, targetHandle: target}
    nodes:
      - id: start
        data:
          type: start
          title: Start
          variables:
            - {variable: doc, label: doc, type: file, required: true,
               allowed_file_types: [document]}
      - id: extract
        data: {type: document-extractor, title: Extract, variable_selector: [start, doc],
               is_array_file: false}
      - id: end
        data:
          type: end
          title: End
          outputs:
            - {variable: text, value_selector: [extract, text]}
"""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "home"
    monkeypatch.setenv("CELLWIRE_HOME", str(folder))
    monkeypatch.chdir(tmp_path)
    return folder


def cellwire_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cellwire.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=120, env=dict(os.environ),
                          check=False)


def test_cli_builds_and_searches_a_knowledge_base(home: Path, tmp_path: Path):
    files = write_corpus(tmp_path / "docs")
    made = cellwire_cli("kb", "create", "nature", "--embedding", "hash")
    assert made.returncode == 0, made.stderr
    added = cellwire_cli("kb", "add", "nature", *files.values())
    assert added.returncode == 0, added.stderr
    assert "9 added" in added.stdout and "embedding into nature" in added.stderr  # progress
    again = cellwire_cli("kb", "add", "nature", files["pdf"], "--quiet")
    assert "1 unchanged" in again.stdout
    for mode in ("fulltext", "vector", "hybrid"):
        found = cellwire_cli("kb", "search", "nature", "interstellar dust hydrogen", "--mode",
                             mode, "--top-k", "2", "--json")
        assert found.returncode == 0, found.stderr
        hits = json.loads(found.stdout)
        assert len(hits) == (1 if mode == "fulltext" else 2)  # full text: only matches
        assert {"content", "score", "source"} <= set(hits[0])
        assert hits[0]["source"].endswith("nebula.pdf") and "interstellar" in hits[0]["content"]
    listed = cellwire_cli("kb", "list", "--json")
    assert [b["name"] for b in json.loads(listed.stdout)] == ["nature"]
    missing = cellwire_cli("kb", "search", "nope", "x")
    assert missing.returncode == 1 and "cellwire kb create" in missing.stderr
    assert cellwire_cli("kb", "drop", "nature").returncode == 0
    assert json.loads(cellwire_cli("kb", "list", "--json").stdout) == []


@pytest.mark.skipif(not CHATBOT.exists(), reason="the Dify DSL corpus is not on this machine")
def test_imported_dify_chatbot_retrieves_from_a_cli_built_base(home: Path, tmp_path: Path):
    policy = tmp_path / "policy.md"
    policy.write_text("# Returns\n\nRefunds are issued within 14 days of a return.\n\n"
                      "Shipping is free above 50 euros.")
    assert cellwire_cli("kb", "create", "shop", "--embedding", "hash").returncode == 0
    assert cellwire_cli("kb", "add", "shop", policy, "--quiet").returncode == 0
    # Before the Dify dataset id is bound, the node says how to bind it.
    workflow = load(CHATBOT)
    runner = Runner(store=False, model="scripted/echo")
    failed = runner.run(workflow, {"sys.query": "refunds days"})
    assert failed.status == "failed" and f"cellwire kb bind NAME {CHATBOT_DATASET}" in \
        (failed.error or "")
    assert cellwire_cli("kb", "bind", "shop", CHATBOT_DATASET).returncode == 0
    done = cellwire_cli("run", CHATBOT, "-q", "how many days for refunds", "-m",
                        "scripted/echo", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "succeeded"
    result = runner.run(workflow, {"sys.query": "how many days for refunds"})
    assert result.ok, result.error
    finished = {e.node_id: e for e in result.events if isinstance(e, NodeSucceeded)}
    retrieval = next(e for e in finished.values() if "result" in e.outputs)
    [chunk] = retrieval.outputs["result"]
    assert "Refunds are issued within 14 days" in chunk["content"]
    assert chunk["metadata"]["dataset_name"] == "shop" and chunk["title"] == "policy.md"
    # This template's llm node has its context switched off; the answer node still ran.
    assert result.answer == "how many days for refunds"


@pytest.mark.skipif(not RAG_FLOW.exists(), reason="the Dify DSL corpus is not on this machine")
def test_imported_chatflow_puts_retrieved_chunks_in_the_llm_context(home: Path, tmp_path: Path):
    faq = tmp_path / "faq.txt"
    faq.write_text("Refunds are issued within 14 days of a return.\n\nGift cards never expire.")
    # Full text only (no embedding model), created under the dataset id the app names.
    assert cellwire_cli("kb", "create", "faq", "--id", "dataset_1").returncode == 0
    assert cellwire_cli("kb", "add", "faq", faq, "--quiet").returncode == 0
    result = Runner(store=False, model="scripted/echo").run(
        load(RAG_FLOW), {"sys.query": "when are refunds issued"})
    assert result.ok, result.error
    finished = {e.node_id: e for e in result.events if isinstance(e, NodeSucceeded)}
    [chunk] = finished["retrieval_node"].outputs["result"]
    assert chunk["metadata"]["dataset_id"] == "dataset_1"
    assert "Refunds are issued within 14 days" in finished["llm_node"].inputs["#context#"]


@pytest.mark.skipif(not KIMI.exists(), reason="the Dify DSL corpus is not on this machine")
def test_imported_dify_chatflow_reads_an_uploaded_document(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    Path("report.md").write_text("# Notes\n\nRevenue grew by 12 percent this quarter.")
    workflow = load(KIMI)
    # sys.files given as a path becomes a Dify file object the list operator can filter.
    result = Runner(store=False, model="scripted/echo").run(workflow, {
        "sys.query": "summarize", "sys.files": ["report.md"], "web_search": "关闭",
        "role_def": "analyst"})
    assert result.ok, result.error
    finished = {e.node_id: e for e in result.events if isinstance(e, NodeSucceeded)}
    [picked] = finished["1729777763543"].outputs["result"]  # the list operator's documents
    assert picked["type"] == "document" and picked["transfer_method"] == "local_file"
    assert finished["1729777092216"].outputs["text"].startswith("# Notes")
    # The echo model repeats its prompt: the extracted text reached the llm and the answer.
    assert "Revenue grew by 12 percent" in (result.answer or "")
    assert not any(e.node_type == "tool" for e in finished.values())


@pytest.mark.parametrize("kind, expected", [
    ("txt", "molten lava"), ("md", "rivers of ice"), ("csv", "| coral | reef |"),
    ("json", "permafrost"), ("pdf", "interstellar dust"), ("docx", "canopy"),
    ("pptx", "tails of vapour"), ("xlsx", "quartz"), ("html", "<h1>Deserts</h1>"),
])
def test_document_extractor_reads_a_file_input(home: Path, tmp_path: Path, kind: str,
                                               expected: str):
    files = write_corpus(tmp_path / "docs")
    app = tmp_path / "extract.yml"
    app.write_text(EXTRACTOR)
    done = cellwire_cli("run", app, "--input", f"doc=@{files[kind]}", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "succeeded", result["error"]
    assert expected in result["outputs"]["text"]


def test_a_file_input_refuses_a_type_it_does_not_allow(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch):
    import yaml

    monkeypatch.chdir(tmp_path)
    Path("photo.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    Path("notes.md").write_text("plain notes")
    Path("data.bin").write_bytes(b"\x00\x01")
    workflow = load_data(yaml.safe_load(EXTRACTOR))  # allowed_file_types: [document]
    refused = Runner(store=False).run(workflow, {"doc": "photo.png"})
    assert refused.status == "failed"
    assert "'photo.png', of type image; it allows document" in (refused.error or "")
    assert "variables.doc" in refused.error
    assert Runner(store=False).run(workflow, {"doc": "notes.md"}).ok
    # A kind Dify does not know passes the type check, and then needs an allowed extension.
    data = yaml.safe_load(EXTRACTOR)
    start = data["workflow"]["graph"]["nodes"][0]["data"]["variables"][0]
    start["allowed_file_extensions"] = [".csv"]
    custom = Runner(store=False).run(load_data(data), {"doc": "data.bin"})
    assert custom.status == "failed" and "allowed_file_extensions" in (custom.error or "")


def test_document_extractor_refuses_a_file_outside_the_granted_folder(tmp_path: Path):
    outside = tmp_path / "secret.txt"
    outside.write_text("do not read")
    inside = tmp_path / "work"
    inside.mkdir()
    app = inside / "extract.yml"
    app.write_text(EXTRACTOR)
    workflow = load(app)
    file = {"type": "document", "transfer_method": "local_file", "filename": "secret.txt",
            "path": str(outside)}
    result = Runner(store=False, files=str(inside)).run(workflow, {"doc": file})
    assert result.status == "failed" and "outside the folder" in (result.error or "")
    assert "variable_selector" in (result.error or "")


def test_vector_search_through_an_openai_compatible_embeddings_endpoint(tmp_path: Path):
    with llm_server() as server:
        router = LLMRouter([OpenAIProvider("loop", base_url=f"{server.url}/v1", api_key="k")])
        knowledge = Knowledge(tmp_path / "kb", router=router)
        base = knowledge.create("remote", embedding="loop/text-embed")
        # The loopback server's embedding is [len(text), 0.5, -1.25, words]: the chunk whose
        # length and word count are nearest the query's in angle wins.
        asyncio.run(base.add_text("short", "tiny note"))
        asyncio.run(base.add_text("long", "a much longer note with many more words " * 3))
        hits = asyncio.run(base.search("small memo", mode="vector", top_k=2))
        assert [h.document_name for h in hits] == ["short", "long"]
        stored = base._table("embeddings").to_arrow().to_pylist()
        assert sorted(r["vector"] for r in stored) == sorted(
            embedding_of(t) for t in ("tiny note", ("a much longer note with many more words "
                                                    * 3).strip()))


def test_file_list_through_list_operator_into_the_document_extractor(tmp_path: Path,
                                                                     monkeypatch):
    monkeypatch.chdir(tmp_path)
    files = write_corpus(tmp_path / "docs")
    from cellwire.model import Workflow

    wf = Workflow("files")
    wf.add_node("start", "start", variables=[{"variable": "docs", "type": "file-list"}])
    wf.add_node("pick", "list-operator", after="start", variable=["start", "docs"],
                filter_by={"enabled": True, "conditions": [
                    {"key": "extension", "comparison_operator": "in",
                     "value": [".pdf", ".docx"]}]},
                order_by={"enabled": True, "key": "name", "value": "asc"})
    wf.add_node("read", "document-extractor", after="pick",
                variable_selector=["pick", "result"], is_array_file=True)
    wf.add_node("end", "end", after="read", outputs=[
        {"variable": "texts", "value_selector": ["read", "text"]},
        {"variable": "names", "value_selector": ["pick", "result"]}])
    paths = [str(files[k]) for k in ("txt", "pdf", "docx", "csv")]
    result = Runner(store=False).run(wf, {"docs": paths})
    assert result.ok, result.error
    # Start made Dify file objects of the paths; the list operator kept two by extension
    # and ordered them by name; the extractor gave one text per file.
    assert [f["filename"] for f in result.outputs["names"]] == ["nebula.pdf",
                                                                "rainforest.docx"]
    assert all(f["transfer_method"] == "local_file" and f["type"] == "document"
               and f["size"] > 0 for f in result.outputs["names"])
    texts = result.outputs["texts"]
    assert len(texts) == 2 and "interstellar" in texts[0] and "canopy" in texts[1]


async def test_document_extractor_fetches_remote_files_under_the_network_policy():
    import dataclasses

    import yaml
    from loopback_http import loopback_server

    from cellwire.engine import Runtime
    from cellwire.services.http import NetworkPolicy

    workflow = load_data(yaml.safe_load(EXTRACTOR))  # built here: trusted
    with loopback_server() as server:
        server.answer(200, "# Remote\n\nfetched over HTTP", Content_Type="text/markdown")
        url = f"{server.url}/notes/remote.md"
        trusted = Runtime(network=NetworkPolicy.trusted())
        result = await workflow.arun({"doc": url}, runtime=trusted, store=False)
        assert result.ok, result.error
        assert result.outputs["text"] == "# Remote\n\nfetched over HTTP"
        assert server.requests[0].path == "/notes/remote.md"
        # Larger than the binary cap: refused before the rest is read.
        server.answer(200, "x" * 2048, Content_Type="text/plain")
        capped = Runtime(network=dataclasses.replace(NetworkPolicy.trusted(),
                                                     max_binary_size=1024))
        big = await workflow.arun({"doc": f"{server.url}/b.txt"}, runtime=capped, store=False)
        assert big.status == "failed" and "1024-byte cap" in (big.error or "")
        # An untrusted run may not reach loopback at all.
        closed = Runtime(network=NetworkPolicy.untrusted(allow=""))
        refused = await workflow.arun({"doc": url}, runtime=closed, store=False)
        assert refused.status == "failed" and "refused to fetch" in (refused.error or "")
        assert len(server.requests) == 2
