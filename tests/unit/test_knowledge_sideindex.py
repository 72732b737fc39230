"""The in-process search indexes kept beside a knowledge base's LanceDB chunks table: they
answer as LanceDB does, follow every write, are rebuilt when they do not match the table, and
the quantized vector search finds the nearest vectors with their exact cosines."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cellwire.services.knowledge import Knowledge
from cellwire.services.knowledge.base import KnowledgeBase
from cellwire.services.knowledge.textindex import TextIndex
from cellwire.services.knowledge.vectorindex import QUANTIZE_FROM, VectorIndex, candidates

TEXTS = {
    "volcano": "Molten lava and ash pour from the volcano.\n\nThe crater glows at night.",
    "glacier": "Rivers of ice carve valleys.\n\nThe glacier moves slowly downhill.",
    "desert": "Dunes shift in the wind.\n\nRainfall is rare and the days are hot.",
    "reef": "Clownfish hide among coral.\n\nThe reef teems with colourful life.",
}


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def searched(base: KnowledgeBase, query: str, mode: str, *, side: bool, **kw: Any) -> list[Any]:
    base._side.enabled = side
    try:
        return run(base.search(query, mode=mode, **kw))  # type: ignore[arg-type]
    finally:
        base._side.enabled = True


@pytest.fixture
def base(tmp_path: Path) -> KnowledgeBase:
    kb = Knowledge(tmp_path / "kb").create("nature", embedding="hash-64")
    run(kb.add_texts(TEXTS))
    return kb


def test_searches_use_the_side_indexes_and_agree_with_lancedb(base: KnowledgeBase):
    for query in ("molten lava", "ice valleys", "coral fish", "hot dunes"):
        for mode in ("fulltext", "vector", "hybrid"):
            mine = searched(base, query, mode, side=True, top_k=3)
            theirs = searched(base, query, mode, side=False, top_k=3)
            assert mine[0].chunk_id == theirs[0].chunk_id, (query, mode)
            if mode == "vector":  # exact cosines on both sides
                assert [h.chunk_id for h in mine] == [h.chunk_id for h in theirs]
                assert [h.score for h in mine] == pytest.approx([h.score for h in theirs],
                                                                abs=1e-5)
    assert base._side.opened
    assert (base.folder / "search" / "state.json").exists()


def test_stemming_and_stop_words_as_lancedb_does(base: KnowledgeBase):
    hits = searched(base, "the glaciers moving", "fulltext", side=True, top_k=1)
    assert hits[0].document_name == "glacier"
    assert searched(base, "the and of", "fulltext", side=True) == []


def test_writes_update_the_indexes(base: KnowledgeBase):
    run(base.add_text("comet", "A comet's tail of vapour points away from the sun."))
    assert searched(base, "vapour tail", "fulltext", side=True, top_k=1)[0].document_name \
        == "comet"
    assert base.remove("volcano")
    for mode in ("fulltext", "vector", "hybrid"):
        names = {h.document_name for h in searched(base, "lava crater", mode, side=True,
                                                   top_k=10)}
        assert "volcano" not in names, mode
    # A changed document replaces its chunks (same ids) in both indexes.
    run(base.add_text("reef", "Sharks patrol the open ocean."))
    assert searched(base, "clownfish", "fulltext", side=True) == []
    assert searched(base, "sharks", "hybrid", side=True, top_k=1)[0].document_name == "reef"


def test_another_instance_opens_the_indexes_without_rebuilding(base: KnowledgeBase,
                                                               tmp_path: Path):
    state = (base.folder / "search" / "state.json").read_text()
    again = Knowledge(tmp_path / "kb").get("nature")
    hits = run(again.search("molten lava", mode="hybrid", top_k=1))
    assert hits[0].document_name == "volcano" and again._side.opened
    assert (base.folder / "search" / "state.json").read_text() == state


def test_indexes_that_do_not_match_the_table_are_rebuilt(base: KnowledgeBase, tmp_path: Path):
    (base.folder / "search" / "state.json").unlink()
    again = Knowledge(tmp_path / "kb").get("nature")
    # Until the rebuild is done the search goes through LanceDB, with the same answer.
    assert run(again.search("molten lava", mode="vector", top_k=1))[0].document_name \
        == "volcano"
    again._side.wait(60)
    assert again._side.opened
    assert run(again.search("rivers of ice", mode="fulltext", top_k=1))[0].document_name \
        == "glacier"
    generations = [p for p in (base.folder / "search").iterdir() if p.is_dir()]
    assert len(generations) == 1


def test_filtered_searches_go_through_lancedb(base: KnowledgeBase):
    only = {"conditions": [{"name": "document_name", "comparison_operator": "is",
                            "value": "desert"}]}
    for mode in ("fulltext", "vector", "hybrid"):
        hits = run(base.search("lava wind", mode=mode, filters=only))  # type: ignore[arg-type]
        assert {h.document_name for h in hits} == {"desert"}, mode


def test_text_index_deletes_documents_and_scores_by_bm25(tmp_path: Path):
    index = TextIndex(tmp_path / "text")
    index.update([], [1, 2, 3], ["a", "a", "b"],
                 ["red apples", "red red apples and pears", "green pears"])
    found = index.search("red pears", 10)
    assert found[0][0] == 2 and {key for key, _ in found} == {1, 2, 3}
    assert all(score > 0 for _, score in found)
    index.update(["a"], [], [], [])
    assert [key for key, _ in index.search("red pears", 10)] == [3]
    assert len(TextIndex(tmp_path / "text")) == 1  # reopened from its folder


def bm25_by_hand(texts: list[str], query: str) -> list[float]:
    """Every text's BM25 score for ``query`` (k1 1.2, b 0.75), word by word, in floats."""
    analyzer = TextIndex(Path("/nonexistent"))._analyzer
    words = [analyzer.analyze(text) for text in texts]
    mean = sum(map(len, words)) / len(words)
    scores = [0.0] * len(texts)
    for term in dict.fromkeys(analyzer.analyze(query)):
        holding = [i for i, ws in enumerate(words) if term in ws]
        idf = math.log(1 + (len(texts) - len(holding) + 0.5) / (len(holding) + 0.5))
        for i in holding:
            tf = words[i].count(term)
            scores[i] += idf * 2.2 * tf / (tf + 1.2 * (0.25 + 0.75 * len(words[i]) / mean))
    return scores


def test_text_index_finds_the_exact_bm25_top_k_with_common_words(tmp_path: Path):
    # Zipf-distributed words: the commonest are in most chunks, so their impacts are kept
    # dense and a chunk holding only them can still make the top k.
    rng = np.random.default_rng(11)
    vocabulary = [f"word{i}" for i in range(400)]
    weights = 1 / np.arange(1, 401)
    picks = rng.choice(400, size=(1500, 12), p=weights / weights.sum())
    texts = [" ".join(vocabulary[i] for i in row) for row in picks]
    index = TextIndex(tmp_path / "text")
    index.update([], list(range(len(texts))), [f"doc{i // 10}" for i in range(len(texts))],
                 texts)
    index.prepare()
    assert index._dense  # the commonest words are dense ...
    assert len(index._dense) < len(vocabulary)  # ... the rest are postings
    queries = ["word0", "word0 word1", "word0 word1 word2 word3", "word0 word250",
               "word7 word120 word399", "word399", "word3 word3 word3"]
    for query in queries:
        expected = bm25_by_hand(texts, query)
        for k in (1, 4, 12):
            found = index.search(query, k)
            best = sorted((s for s in expected if s > 0), reverse=True)[:k]
            assert [score for _, score in found] == pytest.approx(best, rel=1e-5), (query, k)
            for key, score in found:
                assert expected[key] == pytest.approx(score, rel=1e-5)
    # The same after reopening, and after a write that drops documents.
    again = TextIndex(tmp_path / "text")
    assert again.search("word0 word1", 4) == index.search("word0 word1", 4)
    again.update([f"doc{i}" for i in range(0, 150, 2)], [], [], [])
    kept = [i for i in range(len(texts)) if (i // 10) % 2]
    expected = bm25_by_hand([texts[i] for i in kept], "word0 word5")
    found = again.search("word0 word5", 5)
    assert [score for _, score in found] == pytest.approx(sorted(expected, reverse=True)[:5],
                                                          rel=1e-5)
    assert {key for key, _ in found} <= set(kept)
    assert again.search("nothing", 5) == [] and again.search("word0", 0) == []


def test_vector_index_finds_the_nearest_with_exact_cosines(tmp_path: Path):
    rng = np.random.default_rng(3)
    size, dims = 9_000, 128
    assert candidates(10, size) < size  # searched by codes, not exhaustively
    vectors = rng.standard_normal((size, dims)).astype(np.float32)
    keys = np.arange(100, 100 + size, dtype=np.uint64)
    index = VectorIndex(tmp_path / "vectors", dims)
    index.update(np.empty(0, dtype=np.uint64), keys, vectors)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    recall = []
    for _ in range(20):
        query = unit[rng.integers(size)] + 0.1 * rng.standard_normal(dims).astype(np.float32)
        query /= np.linalg.norm(query)
        found, distances = index.search(query, 10)
        exact = keys[np.argsort(-(unit @ query))[:10]]
        recall.append(len(set(found.tolist()) & set(exact.tolist())) / 10)
        cosines = unit[(found - 100).astype(np.int64)] @ query
        assert 1.0 - distances == pytest.approx(cosines, abs=1e-5)
        assert list(distances) == sorted(distances)
    # Unclustered Gaussian vectors are the hardest case for the codes; benchmarks/knowledge.py
    # measures the recall on its corpus.
    assert np.mean(recall) >= 0.8
    assert (tmp_path / "vectors" / "codes.faiss").exists()
    # Dropped keys are gone, also after reopening from the folder.
    index.update(keys[:4500], np.empty(0, dtype=np.uint64), np.empty((0, dims), np.float32))
    reopened = VectorIndex(tmp_path / "vectors", dims)
    assert len(reopened) == 4500
    found, _ = reopened.search(unit[0], 5)
    assert not set(found.tolist()) & set(keys[:4500].tolist())


def test_small_vector_indexes_are_searched_exactly(tmp_path: Path):
    rng = np.random.default_rng(5)
    size, dims = QUANTIZE_FROM - 1, 20  # 20 dimensions: not a whole number of codes
    vectors = rng.standard_normal((size, dims)).astype(np.float32)
    keys = np.arange(size, dtype=np.uint64)
    index = VectorIndex(tmp_path / "vectors", dims)
    index.update(np.empty(0, dtype=np.uint64), keys, vectors)
    assert candidates(10, size) == size
    assert not (tmp_path / "vectors" / "codes.faiss").exists()
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    for row in rng.integers(size, size=10):
        found, _ = index.search(vectors[row], 10)
        assert found.tolist() == np.argsort(-(unit @ unit[row]), kind="stable")[:10].tolist()


def test_vector_codes_follow_the_writes(tmp_path: Path):
    rng = np.random.default_rng(9)
    dims = 20
    folder = tmp_path / "vecteurs, été"  # the files are read and written through Python

    def add(index: VectorIndex, start: int, count: int) -> np.ndarray:
        vectors = rng.standard_normal((count, dims)).astype(np.float32)
        index.update(np.empty(0, dtype=np.uint64),
                     np.arange(start, start + count, dtype=np.uint64), vectors)
        return vectors

    def trained_on() -> int:
        return int(json.loads((folder / "codes.json").read_text())["trained_on"])

    index = VectorIndex(folder, dims)
    add(index, 0, QUANTIZE_FROM)  # quantized from here on: the codes are trained
    assert trained_on() == QUANTIZE_FROM
    first = add(index, QUANTIZE_FROM, 10)  # a small write re-encodes with the same codes
    assert trained_on() == QUANTIZE_FROM
    index = VectorIndex(folder, dims)  # reopened: codes and vectors match
    found, distances = index.search(first[0], 1)
    assert found.tolist() == [QUANTIZE_FROM] and distances[0] == pytest.approx(0, abs=1e-5)
    third = add(index, 2 * QUANTIZE_FROM, QUANTIZE_FROM)  # doubled: trained again
    assert trained_on() == 2 * QUANTIZE_FROM + 10
    # A write that drops vectors keeps the others' codes, in step with their rows.
    index.update(np.arange(100, dtype=np.uint64), np.empty(0, dtype=np.uint64),
                 np.empty((0, dims), np.float32))
    assert trained_on() == 2 * QUANTIZE_FROM + 10
    for reopened in (index, VectorIndex(folder, dims)):
        assert len(reopened) == 2 * QUANTIZE_FROM - 90
        for vector, key in ((first[0], QUANTIZE_FROM), (third[5], 2 * QUANTIZE_FROM + 5)):
            found, distances = reopened.search(vector, 1)
            assert found.tolist() == [key] and distances[0] == pytest.approx(0, abs=1e-5)
    dropped = np.arange(2 * QUANTIZE_FROM, 3 * QUANTIZE_FROM)
    index.update(dropped.astype(np.uint64), np.empty(0, dtype=np.uint64),
                 np.empty((0, dims), np.float32))  # back under the threshold: exact again
    assert not (folder / "codes.faiss").exists() and not (folder / "codes.json").exists()
    found, _ = VectorIndex(folder, dims).search(first[0], 1)
    assert found.tolist() == [QUANTIZE_FROM]


def test_vector_codes_of_another_kind_are_refused(tmp_path: Path):
    import faiss

    index = VectorIndex(tmp_path, 8)
    index.update(np.empty(0, dtype=np.uint64), np.arange(QUANTIZE_FROM, dtype=np.uint64),
                 np.random.default_rng(2).standard_normal((QUANTIZE_FROM, 8)))
    flat = faiss.IndexFlatIP(8)  # what an older format, or another program, might leave
    flat.add(np.zeros((QUANTIZE_FROM, 8), dtype=np.float32))
    faiss.serialize_index(flat).tofile(tmp_path / "codes.faiss")
    with pytest.raises(ValueError, match="another kind"):  # the side index then rebuilds
        VectorIndex(tmp_path, 8)
