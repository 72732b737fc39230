"""One knowledge base: its documents and chunks in LanceDB tables in a folder of its own.

Tables: ``documents`` (one row per added document: name, source, content hash, metadata),
``chunks`` (one row per chunk: its text, position, parent for parent-child chunking, and its
vector when the base has an embedding model) and ``embeddings`` (vectors by content hash, so
a chunk whose text was embedded before is never embedded again). ``kb.json`` holds the base's
id, name, embedding model and chunk rule.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

if TYPE_CHECKING:
    import numpy as np  # loaded where a vector is made: not at import

from . import META
from .chunking import ChunkRule, chunk_text
from .embeddings import Embedder, embedder_for
from .extract import extract_text, mime_type_of
from .filters import Conditions, allowed
from .fusion import RRF_K, keyword_scores, rrf, weighted
from .rerank import Reranker, rerank_hits
from .sideindex import COLUMNS as _COLUMNS
from .sideindex import SideIndex

log = logging.getLogger(__name__)
Mode = Literal["fulltext", "vector", "hybrid"]
T = TypeVar("T")
#: Texts sent to the embedding model in one request.
EMBED_BATCH = 64
#: Rows from which a vector index (IVF + HNSW) is built; below, search is exact.
ANN_MIN_ROWS = 10_000


@dataclass
class Hit:
    """One retrieved chunk (or, for parent-child bases, one parent with the children that
    matched). ``scores`` holds what each retriever gave it: ``fulltext`` (BM25), ``vector``
    (cosine similarity), ``rrf`` or ``weighted``."""

    content: str
    score: float
    source: str
    document_id: str
    document_name: str
    position: int
    chunk_id: str
    scores: dict[str, float] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    child_chunks: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AddReport:
    """What an add did: documents added, replaced (changed content) and skipped (unchanged),
    and the chunks written."""

    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    chunks: int = 0
    embedded: int = 0


def _sql(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class KnowledgeBase:
    """A knowledge base in ``folder`` (made by :class:`~.service.Knowledge`)."""

    def __init__(self, folder: Path, meta: dict[str, Any], embedder: Embedder | None = None,
                 *, router: Any = None):
        self.folder = folder
        self.meta = meta
        # Resolved when first needed: listing bases never fails on a model that is missing.
        self._embedder = embedder
        self._router = router
        # LanceDB logs from Rust; its warnings (a table made on first write) are not the
        # user's. Imported here: it takes a second, which a run without retrieval never pays.
        os.environ.setdefault("LANCE_LOG", "error")
        import lancedb

        self._db = lancedb.connect(str(folder / "lance"))
        # Open tables and the documents' metadata, kept between searches; a write of this
        # object drops them (another process's writes are seen after reopen()).
        self._tables: dict[str, Any] = {}
        # The chunks table opened through LanceDB's async API, for searches: its queries run
        # on LanceDB's own runtime, awaited from the caller's loop (any loop, any thread), so
        # a hybrid search runs both of its queries at once. A write drops it: a handle does
        # not see what another handle wrote.
        self._searched: Any = None
        self._docs: list[dict[str, Any]] | None = None
        self._meta_by_id: dict[str, dict[str, Any]] | None = None
        self._rule: ChunkRule | None = None
        # The in-process full-text and vector indexes that searches without metadata filters
        # use (LanceDB is the store of record; they are updated by each write).
        self._side = SideIndex(folder / "search", folder / "lance")

    def reopen(self) -> None:
        """Forget open tables and cached metadata: see what other processes wrote since."""
        self._tables.clear()
        self._searched = None
        self._docs = self._meta_by_id = None
        self._side.forget()

    # -- what it is -------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return str(self.meta["name"])

    @property
    def id(self) -> str:
        return str(self.meta["id"])

    @property
    def embedding(self) -> str | None:
        value = self.meta.get("embedding")
        return str(value) if value else None

    @property
    def rule(self) -> ChunkRule:
        if self._rule is None:
            self._rule = ChunkRule.model_validate(self.meta.get("rule") or {})
        return self._rule

    def _table(self, name: str) -> Any | None:
        table = self._tables.get(name)
        if table is None:
            try:
                table = self._tables[name] = self._db.open_table(name)
            except (FileNotFoundError, ValueError):
                return None
        return table

    def documents(self) -> list[dict[str, Any]]:
        """The documents, oldest first, each with its metadata (Dify's built-in fields:
        document_name, source, upload_date, plus what was given when it was added)."""
        if self._docs is None:
            table = self._table("documents")
            if table is None:
                return []
            rows = table.to_arrow().to_pylist()
            for row in rows:
                row["metadata"] = json.loads(row["metadata"])
            self._docs = sorted(rows, key=lambda r: r["added"])
        return [dict(row) for row in self._docs]

    def _metadata(self) -> dict[str, dict[str, Any]]:
        """Each document's metadata by id (cached with the documents)."""
        if self._meta_by_id is None:
            self._meta_by_id = {d["document_id"]: d["metadata"] for d in self.documents()}
        return self._meta_by_id

    def describe(self) -> dict[str, Any]:
        """Id, name, embedding model, chunk rule, document and chunk counts."""
        chunks = self._table("chunks")
        docs = self.documents()
        return {"id": self.id, "name": self.name, "description": self.meta.get("description", ""),
                "embedding": self.embedding, "aliases": list(self.meta.get("aliases", [])),
                "chunking": self.rule.mode, "documents": len(docs),
                "chunks": chunks.count_rows() if chunks is not None else 0,
                "created": self.meta.get("created"), "folder": str(self.folder)}

    def _save_meta(self) -> None:
        path = self.folder / META
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.meta, indent=2))
        tmp.replace(path)

    # -- adding ---------------------------------------------------------------------------

    async def add_files(self, paths: Iterable[str | os.PathLike[str]], *,
                        metadata: Mapping[str, Any] | None = None,
                        progress: bool = False) -> AddReport:
        """Extract, chunk, embed and index each file; a file whose content is unchanged
        since it was last added is skipped, a changed one has its chunks replaced."""
        items = []
        for path in paths:
            file = Path(path)
            data = await asyncio.to_thread(file.read_bytes)
            text = await asyncio.to_thread(extract_text, data, file.name, None, html="text")
            items.append((file.name, str(file.resolve()), text, _hash_bytes(data)))
        return await self._add(items, metadata or {}, progress)

    async def add_text(self, name: str, text: str, *, source: str | None = None,
                       metadata: Mapping[str, Any] | None = None,
                       progress: bool = False) -> AddReport:
        """Add ``text`` as a document called ``name`` (its source: ``source`` or ``name``)."""
        return await self._add([(name, source or name, text, _hash(text))], metadata or {},
                               progress)

    async def add_texts(self, documents: Mapping[str, str], *,
                        metadata: Mapping[str, Any] | None = None,
                        progress: bool = False) -> AddReport:
        """Add many texts at once, ``{name: text}``: one write and one index update."""
        return await self._add([(name, name, text, _hash(text))
                                for name, text in documents.items()], metadata or {}, progress)

    async def _add(self, items: list[tuple[str, str, str, str]], metadata: Mapping[str, Any],
                   progress: bool) -> AddReport:
        report = AddReport()
        known = {d["source"]: d for d in self.documents()}
        rule = self.rule
        new_docs: list[dict[str, Any]] = []
        rows: list[dict[str, Any]] = []
        drop: list[str] = []
        for name, source, text, digest in items:
            old = known.get(source)
            if old is not None and old["hash"] == digest:
                report.skipped.append(name)
                continue
            doc_id = old["document_id"] if old is not None else uuid.uuid4().hex
            if old is not None:
                drop.append(doc_id)
                report.replaced.append(name)
            else:
                report.added.append(name)
            chunks = chunk_text(text, rule)
            now = time.time()
            meta = {"document_name": name, "source": source,
                    "mime_type": mime_type_of(name), "upload_date": int(now),
                    "last_update_date": int(now), **dict(metadata)}
            new_docs.append({"document_id": doc_id, "name": name, "source": source,
                             "hash": digest, "metadata": json.dumps(meta, default=str),
                             "chunks": len(chunks),
                             "added": old["added"] if old is not None else now})
            for chunk in chunks:
                rows.append({"id": f"{doc_id}:{chunk.position}", "document_id": doc_id,
                             "document_name": name, "source": source,
                             "position": chunk.position, "content": chunk.content,
                             "content_hash": _hash(chunk.content),
                             "parent": chunk.parent or "",
                             "parent_index": -1 if chunk.parent_index is None
                             else chunk.parent_index})
        if rows and self.embedding:
            report.embedded = await self._embed_rows(rows, progress)
        await asyncio.to_thread(self._write, drop, new_docs, rows)
        report.chunks = len(rows)
        return report

    def embedder(self) -> Embedder:
        """The embedding function of the base's model (raises when it has none, or the
        model cannot be used here)."""
        if self._embedder is None:
            if not self.embedding:
                raise ValueError(f"knowledge base {self.name!r} has no embedding model")
            self._embedder = embedder_for(self.embedding, self._router)
        return self._embedder

    async def _embed_rows(self, rows: list[dict[str, Any]], progress: bool) -> int:
        import numpy as np

        embedder = self.embedder()
        cache = await asyncio.to_thread(self._cached, {r["content_hash"] for r in rows})
        missing: dict[str, str] = {}
        for row in rows:
            if row["content_hash"] not in cache:
                missing.setdefault(row["content_hash"], row["content"])
        todo = list(missing.items())
        bar = None
        if progress and todo:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), desc=f"embedding into {self.name}", unit="chunk",
                       file=sys.stderr)
        fresh: dict[str, list[float]] = {}
        try:
            for start in range(0, len(todo), EMBED_BATCH):
                batch = todo[start:start + EMBED_BATCH]
                vectors = await embedder.embed([text for _, text in batch])
                if len(vectors) != len(batch):
                    raise RuntimeError(f"embedding model {embedder.name!r} returned "
                                       f"{len(vectors)} vectors for {len(batch)} texts")
                fresh.update(zip((key for key, _ in batch), vectors, strict=True))
                if bar is not None:
                    bar.update(len(batch))
        finally:
            if bar is not None:
                bar.close()
        if fresh:
            await asyncio.to_thread(self._cache_put, fresh)
        cache.update(fresh)
        for row in rows:
            row["vector"] = np.asarray(cache[row["content_hash"]], dtype=np.float32)
        return len(fresh)

    def _cached(self, hashes: set[str]) -> dict[str, list[float]]:
        table = self._table("embeddings")
        if table is None or not hashes:
            return {}
        found: dict[str, list[float]] = {}
        keys = sorted(hashes)
        for start in range(0, len(keys), 500):
            part = ", ".join(_sql(k) for k in keys[start:start + 500])
            for row in table.search().where(f"hash IN ({part})").limit(500).to_list():
                found[row["hash"]] = row["vector"]
        return found

    def _cache_put(self, vectors: Mapping[str, list[float]]) -> None:
        import numpy as np
        import pyarrow as pa

        dims = len(next(iter(vectors.values())))
        schema = pa.schema([("hash", pa.string()),
                            ("vector", pa.list_(pa.float32(), dims))])
        data = pa.table({"hash": list(vectors),
                         "vector": [np.asarray(v, dtype=np.float32) for v in vectors.values()]},
                        schema=schema)
        table = self._table("embeddings")
        if table is None:
            self._tables["embeddings"] = self._db.create_table("embeddings", data=data)
        else:
            table.add(data)

    def _write(self, drop: list[str], docs: list[dict[str, Any]],
               rows: list[dict[str, Any]]) -> None:
        import pyarrow as pa

        chunks = self._table("chunks")
        documents = self._table("documents")
        self._docs = self._meta_by_id = None
        self._searched = None
        before = int(chunks.version) if chunks is not None else None
        dropped: list[str] = []
        if drop:
            where = f"document_id IN ({', '.join(_sql(d) for d in drop)})"
            if chunks is not None:
                dropped = chunks.search().where(where).select(["id"]).limit(None) \
                    .to_arrow().column("id").to_pylist()
                chunks.delete(where)
            if documents is not None:
                documents.delete(where)
        if rows:
            data = self._chunk_table(rows)
            if chunks is None:
                chunks = self._tables["chunks"] = self._db.create_table("chunks", data=data)
            else:
                chunks.add(data)
        if docs:
            doc_data = pa.Table.from_pylist(docs, schema=pa.schema([
                ("document_id", pa.string()), ("name", pa.string()), ("source", pa.string()),
                ("hash", pa.string()), ("metadata", pa.string()), ("chunks", pa.int64()),
                ("added", pa.float64())]))
            if documents is None:
                self._tables["documents"] = self._db.create_table("documents", data=doc_data)
            else:
                documents.add(doc_data)
        if chunks is not None and (rows or drop):
            self._index(chunks)
            try:
                self._side.update(chunks, before, dropped, drop, rows)
            except Exception:  # a cache of the table: the next search rebuilds it
                log.warning("knowledge base %r: its search index could not be updated; it "
                            "is rebuilt on the next search", self.name, exc_info=True)

    def _chunk_table(self, rows: list[dict[str, Any]]) -> Any:
        import pyarrow as pa

        fields = [("id", pa.string()), ("document_id", pa.string()),
                  ("document_name", pa.string()), ("source", pa.string()),
                  ("position", pa.int64()), ("content", pa.string()),
                  ("content_hash", pa.string()), ("parent", pa.string()),
                  ("parent_index", pa.int64())]
        if "vector" in rows[0]:
            fields.append(("vector", pa.list_(pa.float32(), len(rows[0]["vector"]))))
        return pa.Table.from_pylist(rows, schema=pa.schema(fields))

    def _index(self, chunks: Any) -> None:
        """Keep the indexes current: the full-text index made once, the vector index built
        from ``ANN_MIN_ROWS`` rows and rebuilt when the table has doubled since (its
        partitions fit the size); new rows are merged into existing indexes (``optimize``,
        which also compacts the table's files). Unindexed rows would be searched
        exhaustively."""
        from lancedb.index import FTS

        names = {index.name for index in chunks.list_indices()}
        if "content_idx" not in names:
            chunks.create_index("content", config=FTS(), replace=True)
        rows = chunks.count_rows()
        indexed = int(self.meta.get("vector_indexed_rows", 0))
        if self.embedding and rows >= ANN_MIN_ROWS and rows >= 2 * indexed:
            chunks.create_index(metric="cosine", vector_column_name="vector",
                                index_type="IVF_HNSW_SQ", replace=True)
            self.meta["vector_indexed_rows"] = rows
            self._save_meta()
        if "content_idx" in names:
            chunks.optimize()

    def remove(self, source_or_name: str) -> bool:
        """Remove a document (by source path or name) and its chunks; False if absent."""
        for doc in self.documents():
            if source_or_name in (doc["source"], doc["name"]):
                self._write([doc["document_id"]], [], [])
                return True
        return False

    # -- searching --------------------------------------------------------------------------

    async def search(self, query: str, *, mode: Mode | None = None, top_k: int = 4,
                     score_threshold: float | None = None,
                     filters: Conditions | Mapping[str, Any] | None = None,
                     fusion: Literal["rrf", "weighted"] = "rrf",
                     vector_weight: float = 0.7, keyword_weight: float = 0.3,
                     rerank: Reranker | None = None) -> list[Hit]:
        """The ``top_k`` best chunks for ``query``.

        ``mode``: ``fulltext`` (BM25 over LanceDB's full-text index; no model needed),
        ``vector`` (cosine similarity of embeddings) or ``hybrid`` (both, fused by ``rrf``
        or Dify's ``weighted`` score); the default is hybrid when the base has an
        embedding model, else full-text. ``score`` is the cosine similarity (vector), the
        BM25 score relative to the best hit (full-text), the fused score relative to its
        largest possible value (rrf) or Dify's weighted score. ``filters``: Dify's metadata
        conditions on the documents. ``rerank``: a rerank model (:mod:`.rerank`) that
        re-scores the best ``max(3 * top_k, 10)`` candidates; ``score`` is then its relevance
        score. Hits under ``score_threshold`` are dropped.
        """
        import numpy as np

        mode = mode or ("hybrid" if self.embedding else "fulltext")
        if mode != "fulltext" and not self.embedding:
            raise ValueError(f"knowledge base {self.name!r} has no embedding model, so "
                             f"{mode} search cannot run; use mode 'fulltext', or recreate it "
                             "with an embedding model (cellwire kb create NAME --embedding ...)")
        chunks = self._table("chunks")
        if chunks is None or not query.strip():
            return []
        where = None
        if filters is not None:
            conditions = filters if isinstance(filters, Conditions) else \
                Conditions.model_validate(filters)
            ids = allowed(conditions, [(d["document_id"], d["metadata"])
                                       for d in self.documents()])
            if ids is not None:
                if not ids:
                    return []
                where = f"document_id IN ({', '.join(_sql(i) for i in ids)})"
        hierarchical = self.rule.mode == "hierarchical"
        # Fusion and parent-child grouping need more candidates than they return.
        wanted = max(top_k * 3, 10) if (mode == "hybrid" or hierarchical or rerank) \
            else top_k
        vector = None
        if mode != "fulltext":
            vector = np.asarray((await self.embedder().embed([query]))[0], dtype=np.float32)
        text_rows, vector_rows = await self._query(query if mode != "vector" else None,
                                                   vector, wanted, where)
        if rerank is None:
            return self._rank(query, text_rows, vector_rows, mode, top_k, score_threshold,
                              fusion, vector_weight, keyword_weight, hierarchical)
        candidates = self._rank(query, text_rows, vector_rows, mode, wanted, None, fusion,
                                vector_weight, keyword_weight, hierarchical)
        return await rerank_hits(rerank, query, candidates, top_n=top_k,
                                 score_threshold=score_threshold)

    async def _chunks_async(self) -> Any:
        if self._searched is None:
            import lancedb

            db = await lancedb.connect_async(str(self.folder / "lance"))
            self._searched = await db.open_table("chunks")
        return self._searched

    async def _query(self, query: str | None, vector: np.ndarray | None, wanted: int,
                     where: str | None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The full-text and the nearest-vector candidates: from the in-process indexes when
        they are ready and there is no filter, else from LanceDB, both queries at once."""
        table = self._table("chunks")
        if where is None and table is not None:
            side = self._side.ready(table) if self._side.opened else \
                await asyncio.to_thread(self._side.ready, table)
            if side is not None:
                return (self._side.fulltext(side, query, wanted) if query is not None else [],
                        self._side.nearest(side, vector, wanted) if vector is not None else [])
        chunks = await self._chunks_async()
        text, near = await asyncio.gather(
            self._fulltext(chunks, query, wanted, where) if query is not None else _none(),
            self._nearest(chunks, vector, wanted, where) if vector is not None else _none())
        return text, near

    async def _fulltext(self, chunks: Any, query: str, wanted: int,
                        where: str | None) -> list[dict[str, Any]]:
        request = chunks.query().nearest_to_text(query).select([*_COLUMNS, "_score"])
        if where:
            request = request.where(where)
        rows: list[dict[str, Any]] = await request.limit(wanted).to_list()
        return rows

    async def _nearest(self, chunks: Any, vector: np.ndarray, wanted: int,
                       where: str | None) -> list[dict[str, Any]]:
        request = (chunks.query().nearest_to(vector).column("vector").distance_type("cosine")
                   .select([*_COLUMNS, "_distance"]))
        if self.meta.get("vector_indexed_rows"):
            # 20 IVF partitions, HNSW's beam at 100, and the distances of 5x the candidates
            # re-computed on the full vectors: the scores are exact cosines, not those of the
            # quantized index (recall@4 0.85 in benchmarks/knowledge.py).
            request = request.nprobes(20).refine_factor(5).ef(100)
        if where:
            request = request.where(where)  # a pre-filter: LanceDB's default for vectors
        rows: list[dict[str, Any]] = await request.limit(wanted).to_list()
        return rows

    def _rank(self, query: str, text_rows: list[dict[str, Any]],
              vector_rows: list[dict[str, Any]], mode: Mode, top_k: int,
              score_threshold: float | None, fusion: str, vector_weight: float,
              keyword_weight: float, hierarchical: bool) -> list[Hit]:
        rows: dict[str, dict[str, Any]] = {}
        text_ranked = [row["id"] for row in text_rows]
        bm25 = {row["id"]: float(row["_score"]) for row in text_rows}
        vector_ranked = [row["id"] for row in vector_rows]
        cosine = {row["id"]: 1.0 - float(row["_distance"]) for row in vector_rows}
        for row in (*text_rows, *vector_rows):
            rows.setdefault(row["id"], row)
        scores: dict[str, dict[str, float]] = {key: {} for key in rows}
        for key, value in bm25.items():
            scores[key]["fulltext"] = value
        for key, value in cosine.items():
            scores[key]["vector"] = value
        if mode == "fulltext":
            best = max(bm25.values(), default=1.0) or 1.0
            final = {key: value / best for key, value in bm25.items()}
        elif mode == "vector":
            final = dict(cosine)
        elif fusion == "weighted":
            keyword = keyword_scores(query, {key: rows[key]["content"] for key in rows})
            final = weighted(cosine, keyword, vector_weight=vector_weight,
                             keyword_weight=keyword_weight)
            for key, value in keyword.items():
                scores[key]["keyword"] = value
            for key, value in final.items():
                scores[key]["weighted"] = value
        else:
            fused = rrf(text_ranked, vector_ranked)
            top = 2.0 / (RRF_K + 1)
            final = {key: value / top for key, value in fused.items()}
            for key, value in fused.items():
                scores[key]["rrf"] = value
        ranked = sorted(final, key=lambda key: (-final[key], key))
        hits: list[Hit] = []
        parents: dict[tuple[str, int], Hit] = {}
        for key in ranked:
            row, score = rows[key], final[key]
            if hierarchical and row["parent_index"] >= 0:
                group = (row["document_id"], int(row["parent_index"]))
                child = {"id": key, "content": row["content"], "position": row["position"],
                         "score": score}
                if group in parents:
                    parents[group].child_chunks.append(child)
                    continue
                hit = Hit(row["parent"], score, row["source"], row["document_id"],
                          row["document_name"], int(row["parent_index"]),
                          f"{row['document_id']}:p{row['parent_index']}", scores[key],
                          child_chunks=[child])
                parents[group] = hit
            else:
                hit = Hit(row["content"], score, row["source"], row["document_id"],
                          row["document_name"], int(row["position"]), key, scores[key])
            hits.append(hit)
            if len(hits) == top_k and not hierarchical:
                break  # (a parent takes the children ranked after it, so it reads on)
        if score_threshold is not None:
            hits = [hit for hit in hits if hit.score >= score_threshold]
        hits = hits[:top_k]
        if hits:
            docs = self._metadata()
            for hit in hits:
                hit.metadata = dict(docs.get(hit.document_id, {}))
        return hits


async def _none() -> list[dict[str, Any]]:
    return []


def _hash_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hits_as_json(hits: Sequence[Hit]) -> list[dict[str, Any]]:
    """Hits as the CLI's ``--json`` prints them: content, score and source first."""
    return [{"content": h.content, "score": h.score, "source": h.source,
             "document": h.document_name, "position": h.position, "scores": h.scores,
             **({"child_chunks": h.child_chunks} if h.child_chunks else {})} for h in hits]


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to its end from synchronous code, also where an event loop already runs
    in this thread (a notebook's kernel): then on a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()
