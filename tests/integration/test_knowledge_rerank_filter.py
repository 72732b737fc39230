"""Rerank models and automatic metadata filtering over real HTTP on loopback: a rerank server
speaking Cohere's, Jina's and TEI's ``/rerank`` (rerank_server.py), an OpenAI-wire chat
server writing the metadata conditions (llm_server.py), knowledge bases in tmp_path, and
knowledge-retrieval nodes run by the engine."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from llm_server import llm_server
from rerank_server import overlap, rerank_server

from cellwire.engine import Runtime
from cellwire.engine.events import NodeFailed, NodeSucceeded
from cellwire.model import Workflow
from cellwire.services.knowledge import Knowledge
from cellwire.services.knowledge.rerank import RerankUnavailable, reranker_for
from cellwire.services.llm import LLMRouter, ProviderError, RetryableProviderError
from cellwire.services.llm.base import AuthenticationError
from cellwire.services.llm.openai import OpenAIProvider
from cellwire.services.llm.scripted import ScriptedProvider

KEY = "sk-rerank-secret"
DOCS = {
    "tea.md": "Green tea is steeped for two minutes. Tea tea tea tea tea.",
    "refunds.md": "Refunds for tea orders are issued within 14 days of a return.",
    "coffee.md": "Coffee beans are roasted. Shipping of coffee is free.",
}


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def refund_first(query: str, document: str) -> float:
    """A "model" that knows refunds matter most, whatever the words say."""
    return 0.9 if "Refunds" in document else round(overlap(query, document) / 2, 3)


@pytest.fixture
def knowledge(tmp_path: Path) -> Knowledge:
    knowledge = Knowledge(tmp_path / "kb")
    shop = knowledge.create("shop")
    run(shop.add_texts(DOCS))
    return knowledge


def retrieval_workflow(dataset_ids: tuple[str, ...] = ("shop",), **node: Any) -> Workflow:
    node.setdefault("retrieval_mode", "multiple")
    wf = Workflow("rag")
    wf.add_node("start", "start", variables=[{"variable": "q", "type": "text-input"}])
    wf.add_node("kr", "knowledge-retrieval", after="start", query_variable_selector=["start", "q"],
                dataset_ids=list(dataset_ids), **node)
    wf.add_node("end", "end", after="kr", outputs=[{"variable": "result",
                                                    "value_selector": ["kr", "result"]}])
    return wf


def finished(result: Any, node: str) -> Any:
    return next(e for e in result.events if isinstance(e, NodeSucceeded | NodeFailed)
                and e.node_id == node)


# -- the /rerank wire --------------------------------------------------------------------------


@pytest.mark.parametrize("flavour", ["cohere", "jina", "tei"])
def test_rerank_endpoint_of_each_wire_shape(flavour: str):
    with rerank_server(rerank_flavour=flavour, api_key=KEY) as server:
        provider = OpenAIProvider("cohere", base_url=server.base_url, api_key=KEY)
        ranked = run(provider.rerank("rerank-v3", "tea refunds",
                                     ["coffee", "tea refunds here", "tea"], top_n=2))
        assert ranked == [(1, 1.0), (2, 0.5)]
        [sent] = server.rerank_requests()
        assert sent == {"model": "rerank-v3", "query": "tea refunds",
                        "documents": ["coffee", "tea refunds here", "tea"], "top_n": 2}
        assert server.requests[-1].headers["authorization"] == f"Bearer {KEY}"


def test_rerank_replies_that_are_not_rankings_fail_and_the_key_stays_out():
    with rerank_server(api_key=KEY) as server:
        provider = OpenAIProvider("cohere", base_url=server.base_url, api_key=KEY)
        server.fail("malformed")
        with pytest.raises(ProviderError, match="rerank reply without results"):
            run(provider.rerank("m", "q", ["a"]))
        server.fail("status", status=503)
        with pytest.raises(RetryableProviderError, match="503"):
            run(provider.rerank("m", "q", ["a"]))
        server.fail("status", status=200, body={"results": [{"index": 7,
                                                              "relevance_score": 1}]})
        with pytest.raises(ProviderError, match="index < 1"):
            run(provider.rerank("m", "q", ["a"]))
        wrong = OpenAIProvider("cohere", base_url=server.base_url, api_key="sk-wrong-key")
        with pytest.raises(AuthenticationError) as caught:
            run(wrong.rerank("m", "q", ["a"]))
        assert "sk-wrong-key" not in str(caught.value)


def test_a_rerank_model_needs_a_provider_with_a_rerank_endpoint():
    with pytest.raises(RerankUnavailable, match="names no provider"):
        reranker_for("rerank-v3", LLMRouter())
    with pytest.raises(RerankUnavailable, match="'nowhere/rerank-v3'.*no provider"):
        reranker_for("nowhere/rerank-v3", LLMRouter())


# -- reranking retrieved chunks ----------------------------------------------------------------


def test_rerank_reorders_the_hits_of_all_bases_as_dify_does(knowledge: Knowledge,
                                                           tmp_path: Path):
    other = knowledge.create("more")
    run(other.add_text("tea-faq.md", "Tea questions: how long is tea steeped?"))
    with rerank_server(score=refund_first) as server:
        router = LLMRouter([OpenAIProvider("cohere", base_url=server.base_url)])
        rerank = reranker_for("cohere/rerank-v3", router)
        plain = run(knowledge.retrieve(["shop", "more"], "tea", top_k=2))
        assert plain[0]["title"] == "tea.md"  # BM25 likes the repeated word
        found = run(knowledge.retrieve(["shop", "more"], "tea", top_k=2, rerank=rerank))
        # Each base gave its top 2; the model scored all of them together.
        [sent] = server.rerank_requests()
        assert sent["model"] == "rerank-v3" and sent["query"] == "tea"
        assert len(sent["documents"]) == 3 and sent["top_n"] == 2
        assert [item["title"] for item in found] == ["refunds.md", "tea.md"]
        top = found[0]["metadata"]
        assert top["score"] == 0.9 and top["scores"]["rerank"] == 0.9
        assert "fulltext" in top["scores"] and top["dataset_name"] == "shop"
        assert [item["metadata"]["position"] for item in found] == [1, 2]
        # The threshold applies to the model's scores.
        kept = run(knowledge.retrieve(["shop", "more"], "tea", top_k=3, rerank=rerank,
                                      score_threshold=0.8))
        assert [item["title"] for item in kept] == ["refunds.md"]
        # A base's own search reranks more candidates than it returns.
        hits = run(knowledge.get("shop").search("tea", top_k=1, rerank=rerank))
        assert [h.document_name for h in hits] == ["refunds.md"]
        assert len(server.rerank_requests()[-1]["documents"]) == 2  # all that matched "tea"


def test_cli_search_reranks_through_a_configured_provider(tmp_path: Path):
    env = {**os.environ, "CELLWIRE_HOME": str(tmp_path / "home")}

    def cli(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cellwire.cli", "kb", *args],
                              capture_output=True, text=True, timeout=120, check=False,
                              env={**env, **extra}, cwd=tmp_path)

    for name, text in DOCS.items():
        (tmp_path / name).write_text(text)
    assert cli("create", "shop", "--description", "Orders of the tea shop").returncode == 0
    assert "Orders of the tea shop" in cli("describe", "shop").stdout
    assert cli("add", "shop", *(str(tmp_path / n) for n in DOCS), "--quiet").returncode == 0
    with rerank_server(score=refund_first, api_key=KEY) as server:
        # The provider is the one the environment configures (OPENAI_BASE_URL and its key).
        provider = {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": KEY}
        done = cli("search", "shop", "tea", "--top-k", "2", "--rerank",
                   "openai/rerank-english-v3.0", "--json", **provider)
        assert done.returncode == 0, done.stderr
        hits = json.loads(done.stdout)
        assert [h["source"].rsplit("/", 1)[-1] for h in hits] == ["refunds.md", "tea.md"]
        assert hits[0]["score"] == 0.9 and hits[0]["scores"]["rerank"] == 0.9
        assert server.rerank_requests()[0]["model"] == "rerank-english-v3.0"
        refused = cli("search", "shop", "tea", "--rerank", "nowhere/rerank", **provider)
        assert refused.returncode == 1 and "'nowhere/rerank'" in refused.stderr


def test_node_reranks_with_the_model_it_names(knowledge: Knowledge):
    with rerank_server(score=refund_first, api_key=KEY) as server:
        router = LLMRouter([OpenAIProvider("cohere", base_url=server.base_url, api_key=KEY)])
        runtime = Runtime(llm=router, knowledge=knowledge)
        wf = retrieval_workflow(multiple_retrieval_config={
            "top_k": 2, "reranking_enable": True, "reranking_mode": "reranking_model",
            "reranking_model": {"provider": "langgenius/cohere/cohere",
                                "model": "rerank-english-v3.0"}})
        result = run(wf.arun({"q": "tea"}, runtime=runtime, store=False))
        assert result.ok, result.error
        assert [c["title"] for c in result.outputs["result"]] == ["refunds.md", "tea.md"]
        assert finished(result, "kr").process_data["rerank_model"] == \
            "cohere/rerank-english-v3.0"
        assert server.rerank_requests()[0]["model"] == "rerank-english-v3.0"
        # reranking_enable: false keeps the retrievers' scores, as Dify does.
        wf_off = retrieval_workflow(multiple_retrieval_config={
            "top_k": 2, "reranking_enable": False,
            "reranking_model": {"provider": "cohere", "model": "rerank-english-v3.0"}})
        off = run(wf_off.arun({"q": "tea"}, runtime=runtime, store=False))
        assert off.outputs["result"][0]["title"] == "tea.md"
        assert len(server.rerank_requests()) == 1
        # The server failing fails the node, naming the rerank model's field.
        server.fail("status", status=400, body={"error": {"message": "bad model"}})
        failed = run(wf.arun({"q": "tea"}, runtime=runtime, store=False))
        assert failed.status == "failed"
        assert "reranking_model" in (failed.error or "") and "bad model" in failed.error
        assert KEY not in failed.error


def test_node_with_an_unconfigured_rerank_model_says_how_to_configure_it(
        knowledge: Knowledge):
    # The router has a default model, but a chat model never stands in for a rerank model.
    router = LLMRouter([ScriptedProvider()], default="scripted/echo")
    runtime = Runtime(llm=router, knowledge=knowledge)
    wf = retrieval_workflow(multiple_retrieval_config={
        "top_k": 2, "reranking_model": {"provider": "cohere", "model": "rerank-v3"}})
    result = run(wf.arun({"q": "tea"}, runtime=runtime, store=False))
    assert result.status == "failed"
    assert "multiple_retrieval_config.reranking_model" in (result.error or "")
    assert "cohere/rerank-v3" in result.error
    # A run whose models are all redirected (-m scripted/echo) reranks there too.
    redirected = Runtime(llm=router, knowledge=knowledge, model_override="scripted/echo")
    done = run(wf.arun({"q": "refunds tea"}, runtime=redirected, store=False))
    assert done.ok, done.error
    assert done.outputs["result"][0]["title"] == "refunds.md"
    assert done.outputs["result"][0]["metadata"]["scores"]["rerank"] == 1.0


def test_node_weighted_score_mode_uses_dify_weights(tmp_path: Path):
    knowledge = Knowledge(tmp_path / "kb")
    shop = knowledge.create("shop", embedding="hash-64")
    run(shop.add_texts(DOCS))
    wf = retrieval_workflow(multiple_retrieval_config={
        "top_k": 3, "reranking_enable": True, "reranking_mode": "weighted_score",
        "weights": {"vector_setting": {"vector_weight": 0.2},
                    "keyword_setting": {"keyword_weight": 0.8}}})
    result = run(wf.arun({"q": "refunds issued"}, runtime=Runtime(knowledge=knowledge),
                         store=False))
    assert result.ok, result.error
    chunks = result.outputs["result"]
    assert chunks[0]["title"] == "refunds.md"
    for chunk in chunks:
        scores = chunk["metadata"]["scores"]
        assert chunk["metadata"]["score"] == pytest.approx(
            0.2 * scores.get("vector", 0.0) + 0.8 * scores["keyword"])
    assert [c["metadata"]["score"] for c in chunks] == sorted(
        (c["metadata"]["score"] for c in chunks), reverse=True)


def test_weighted_score_over_several_bases_is_taken_over_all_their_hits(tmp_path: Path):
    from cellwire.services.knowledge.fusion import keyword_scores

    knowledge = Knowledge(tmp_path / "kb")
    run(knowledge.create("shop", embedding="hash-64").add_texts(DOCS))
    run(knowledge.create("faq", embedding="hash-64").add_texts({
        "faq.md": "Refunds take 14 days. Refunds go to the card you paid with."}))
    wf = retrieval_workflow(("shop", "faq"), multiple_retrieval_config={
        "top_k": 10, "reranking_mode": "weighted_score",
        "weights": {"vector_setting": {"vector_weight": 0.4},
                    "keyword_setting": {"keyword_weight": 0.6}}})
    result = run(wf.arun({"q": "refunds days"}, runtime=Runtime(knowledge=knowledge),
                         store=False))
    assert result.ok, result.error
    chunks = result.outputs["result"]
    assert {c["metadata"]["dataset_name"] for c in chunks} == {"shop", "faq"}
    # The keyword part's IDF comes from the hits of both bases together, as in Dify.
    expected = keyword_scores("refunds days", {str(i): c["content"]
                                               for i, c in enumerate(chunks)})
    for index, chunk in enumerate(chunks):
        scores = chunk["metadata"]["scores"]
        assert scores["keyword"] == pytest.approx(expected[str(index)])
        assert chunk["metadata"]["score"] == pytest.approx(
            0.4 * scores["vector"] + 0.6 * scores["keyword"])
    assert [c["metadata"]["score"] for c in chunks] == sorted(
        (c["metadata"]["score"] for c in chunks), reverse=True)


# -- automatic metadata filtering -------------------------------------------------------------


@pytest.fixture
def teams(tmp_path: Path) -> Knowledge:
    knowledge = Knowledge(tmp_path / "kb")
    shop = knowledge.create("shop")
    run(shop.add_text("red.md", "The holiday policy of the team.",
                      metadata={"team": "red", "year": 2021}))
    run(shop.add_text("blue.md", "The holiday policy of the team, newer.",
                      metadata={"team": "blue", "year": 2024}))
    return knowledge


def chat_router(server: Any) -> LLMRouter:
    return LLMRouter([OpenAIProvider("openai", base_url=server.base_url, api_key=KEY)])


AUTOMATIC = {"metadata_filtering_mode": "automatic",
             "metadata_model_config": {"provider": "langgenius/openai/openai",
                                       "name": "gpt-4o-mini", "mode": "chat",
                                       "completion_params": {"temperature": 0}}}


def test_a_model_writes_the_metadata_filter_from_the_query(teams: Knowledge):
    reply = ('```json\n{"metadata_map": [{"metadata_field_name": "team", '
             '"metadata_field_value": "blue", "comparison_operator": "is"}, '
             '{"metadata_field_name": "colour", "metadata_field_value": "x", '
             '"comparison_operator": "is"}]}\n```')
    with llm_server(api_key=KEY, reply=reply) as server:
        runtime = Runtime(llm=chat_router(server), knowledge=teams)
        result = run(retrieval_workflow(**AUTOMATIC).arun(
            {"q": "the blue team's holiday policy"}, runtime=runtime, store=False))
        assert result.ok, result.error
        assert [c["title"] for c in result.outputs["result"]] == ["blue.md"]
        event = finished(result, "kr")
        # The field the bases do not have was dropped; Dify's default join is "or".
        assert event.process_data["metadata_filter"]["conditions"] == {
            "logical_operator": "or", "conditions": [
                {"name": "team", "comparison_operator": "is", "value": "blue"}]}
        assert event.total_tokens > 0
        [sent] = server.chat_requests()
        assert sent["model"] == "gpt-4o-mini" and sent["temperature"] == 0
        roles = [m["role"] for m in sent["messages"]]
        assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
        assert '"before"' in sent["messages"][0]["content"]
        asked = json.loads(sent["messages"][-1]["content"])
        assert asked["input_text"] == "the blue team's holiday policy"
        fields = {f["name"]: f["type"] for f in asked["metadata_fields"]}
        assert fields["team"] == "string" and fields["year"] == "number"
        assert fields["upload_date"] == "time" and fields["document_name"] == "string"


def test_automatic_filter_joins_with_the_nodes_operator_and_compares_numbers(
        teams: Knowledge):
    reply = json.dumps({"metadata_map": [
        {"metadata_field_name": "year", "metadata_field_value": 2022,
         "comparison_operator": ">"},
        {"metadata_field_name": "team", "metadata_field_value": "red",
         "comparison_operator": "is"}]})
    node = {**AUTOMATIC, "metadata_filtering_conditions": {"logical_operator": "and",
                                                           "conditions": []}}
    with llm_server(api_key=KEY, reply=reply) as server:
        runtime = Runtime(llm=chat_router(server), knowledge=teams)
        result = run(retrieval_workflow(**node).arun({"q": "holiday policy"},
                                                     runtime=runtime, store=False))
        # year > 2022 AND team is red: no document is both.
        assert result.ok and result.outputs["result"] == []


def test_a_reply_without_conditions_leaves_the_search_unfiltered_and_says_so(
        teams: Knowledge):
    with llm_server(api_key=KEY, reply="I cannot tell.") as server:
        runtime = Runtime(llm=chat_router(server), knowledge=teams)
        result = run(retrieval_workflow(**AUTOMATIC).arun({"q": "holiday policy"},
                                                          runtime=runtime, store=False))
        assert result.ok, result.error
        assert sorted(c["title"] for c in result.outputs["result"]) == ["blue.md", "red.md"]
        notes = finished(result, "kr").process_data["notes"]
        assert any("holds no metadata_map" in note for note in notes)
        # A server error is treated the same way (Dify logs it and searches unfiltered).
        server.fail("status", status=400, body={"error": {"message": "nope"}})
        again = run(retrieval_workflow(**AUTOMATIC).arun({"q": "holiday policy"},
                                                         runtime=runtime, store=False))
        assert again.ok and len(again.outputs["result"]) == 2
        assert any("filtering failed" in n for n in finished(again, "kr").process_data["notes"])


def test_automatic_filtering_without_a_model_fails_naming_the_field(teams: Knowledge):
    node = {"metadata_filtering_mode": "automatic"}
    result = run(retrieval_workflow(**node).arun(
        {"q": "holiday"}, runtime=Runtime(llm=LLMRouter(), knowledge=teams), store=False))
    assert result.status == "failed" and "metadata_model_config" in (result.error or "")


# -- single retrieval: a model picks the base ----------------------------------------------


def test_single_retrieval_searches_the_base_the_model_picks(tmp_path: Path):
    knowledge = Knowledge(tmp_path / "kb")
    run(knowledge.create("shop", description="Orders, refunds and shipping of the tea shop.")
        .add_texts(DOCS))
    run(knowledge.create("garden.notes").add_text("roses.md", "Roses want tea leaves as "
                                                               "mulch."))

    def pick(body: dict[str, Any]) -> list[dict[str, Any]]:
        offered = {t["function"]["name"]: t["function"]["description"] for t in body["tools"]}
        wanted = next(name for name, text in offered.items()
                      if ("garden" in text) == ("roses" in body["messages"][-1]["content"]))
        return [{"name": wanted, "arguments": {}}]

    node = {"retrieval_mode": "single", "single_retrieval_config": {"model": {
        "provider": "openai", "name": "gpt-4o-mini", "mode": "chat"}},
        # Ignored in single mode, as in Dify: no rerank call is made.
        "multiple_retrieval_config": {"top_k": 3, "reranking_model": {
            "provider": "cohere", "model": "rerank-v3"}}}
    with llm_server(api_key=KEY, tool_plan=pick) as server:
        runtime = Runtime(llm=chat_router(server), knowledge=knowledge)
        wf = retrieval_workflow(("shop", "garden.notes"), **node)
        roses = run(wf.arun({"q": "what do roses want"}, runtime=runtime, store=False))
        assert roses.ok, roses.error
        assert [c["title"] for c in roses.outputs["result"]] == ["roses.md"]
        assert finished(roses, "kr").process_data["chosen_dataset"] == "garden.notes"
        tea = run(wf.arun({"q": "tea refunds"}, runtime=runtime, store=False))
        assert {c["metadata"]["dataset_name"] for c in tea.outputs["result"]} == {"shop"}
        sent = server.chat_requests()[0]
        assert [m["role"] for m in sent["messages"]] == ["system", "user"]
        assert sent["temperature"] == 0.2 and sent["top_p"] == 0.3
        tools = {t["function"]["name"]: t["function"]["description"] for t in sent["tools"]}
        # Names fit function names; a base without a description gets Dify's default one.
        assert tools == {"shop": "Orders, refunds and shipping of the tea shop.",
                         "garden_notes": "useful for when you want to answer queries about "
                                         "the garden.notes"}
        assert finished(tea, "kr").total_tokens > 0
        # A model that calls no tool chooses no base: nothing is retrieved, and it says so.
        server.tool_plan = lambda body: []
        none = run(wf.arun({"q": "tea"}, runtime=runtime, store=False))
        assert none.ok and none.outputs["result"] == []
        assert "chose no knowledge base" in finished(none, "kr").process_data["notes"][0]


def test_single_retrieval_over_several_bases_needs_a_model(knowledge: Knowledge):
    knowledge.create("other")
    wf = retrieval_workflow(("shop", "other"), retrieval_mode="single")
    result = run(wf.arun({"q": "tea"}, runtime=Runtime(llm=LLMRouter(), knowledge=knowledge),
                         store=False))
    assert result.status == "failed" and "single_retrieval_config.model" in (result.error or "")
    # One base needs no choice, and no model.
    one = run(retrieval_workflow(retrieval_mode="single").arun(
        {"q": "tea"}, runtime=Runtime(llm=LLMRouter(), knowledge=knowledge), store=False))
    assert one.ok and one.outputs["result"][0]["title"] == "tea.md"
