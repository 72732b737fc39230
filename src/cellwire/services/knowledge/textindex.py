"""BM25 full-text search in process: a Tantivy index of the chunks, kept beside their table.

Words are cut and normalised as LanceDB's full-text index does by default (its ``FTS()``:
the simple tokenizer, tokens over 40 characters dropped, lower case, English stop words
removed, English stemming, accents folded to ASCII), and a query matches the chunks that
hold any of its words, scored by BM25 (k1 1.2, b 0.75), as ``nearest_to_text`` does.

Each chunk is indexed with its key (:func:`.sideindex.chunk_key`, a fast field read back for
the hits) and its document's id (so a replaced or removed document's chunks are deleted by
one term).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

TOKENIZER = "cellwire_en"
#: The writer's memory, split between its threads (Tantivy needs 15 MB a thread at least).
WRITER_HEAP = 64_000_000


def _analyzer() -> Any:
    import tantivy

    return (tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
            .filter(tantivy.Filter.remove_long(40))
            .filter(tantivy.Filter.lowercase())
            .filter(tantivy.Filter.stopword("english"))
            .filter(tantivy.Filter.stemmer("english"))
            .filter(tantivy.Filter.ascii_fold())
            .build())


def _schema() -> Any:
    import tantivy

    builder = tantivy.SchemaBuilder()
    builder.add_text_field("content", stored=False, tokenizer_name=TOKENIZER)
    builder.add_text_field("document_id", stored=False, tokenizer_name="raw")
    builder.add_unsigned_field("key", stored=False, indexed=False, fast=True)
    return builder.build()


class TextIndex:
    """A Tantivy index in ``path`` (a folder), made if missing."""

    def __init__(self, path: Path):
        import tantivy

        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._schema = _schema()
        self._index = tantivy.Index(self._schema, path=str(path), reuse=True)
        self._analyzer = _analyzer()
        self._index.register_tokenizer(TOKENIZER, self._analyzer)
        self._searcher = self._index.searcher()

    def __len__(self) -> int:
        return int(self._searcher.num_docs)

    def update(self, drop_documents: Sequence[str], keys: Sequence[int],
               document_ids: Sequence[str], texts: Sequence[str]) -> None:
        """Delete the chunks of ``drop_documents``, add the given chunks, and commit."""
        import tantivy

        writer = self._index.writer(WRITER_HEAP, 1)
        for document_id in drop_documents:
            writer.delete_documents_by_term("document_id", document_id)
        for key, document_id, text in zip(keys, document_ids, texts, strict=True):
            doc = tantivy.Document()
            doc.add_text("content", text)
            doc.add_text("document_id", document_id)
            doc.add_unsigned("key", int(key))
            writer.add_document(doc)
        writer.commit()
        writer.wait_merging_threads()
        self._index.reload()
        self._searcher = self._index.searcher()

    def terms(self, query: str) -> list[str]:
        """The query's distinct index terms, in order."""
        return list(dict.fromkeys(self._analyzer.analyze(query)))

    def search(self, query: str, limit: int) -> list[tuple[int, float]]:
        """The ``limit`` best chunks for ``query``: (key, BM25 score), best first."""
        import tantivy

        terms = self.terms(query)
        if not terms or limit <= 0:
            return []
        clauses = [(tantivy.Occur.Should, tantivy.Query.term_query(self._schema, "content", t))
                   for t in terms]
        searcher = self._searcher
        hits = searcher.search(tantivy.Query.boolean_query(clauses), limit, count=False).hits
        if not hits:
            return []
        keys = searcher.fast_field_values("key", [address for _, address in hits])
        return [(key, float(score)) for (score, _), key in zip(hits, keys, strict=True)
                if isinstance(key, int)]
