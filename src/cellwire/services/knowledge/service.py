"""The knowledge bases of a project: ``<home>/knowledge/<name>/``, one folder each.

:class:`Knowledge` creates, lists, opens and drops them, and is the run's knowledge service
(:class:`cellwire.engine.services.KnowledgeService`): ``retrieve`` searches the bases a
knowledge-retrieval node names, by id, name or a bound Dify dataset id, and returns chunks
in the shape Dify's node returns them.
"""

from __future__ import annotations

import builtins
import json
import re
import shutil
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cellwire.store.home import home, private_dir

from . import META

# Every run gets a Knowledge service; the bases' modules (LanceDB's, NumPy, the extractors)
# load when a base is opened, not with the service (about 25 ms of imports a run spared).
if TYPE_CHECKING:
    from .base import Hit, KnowledgeBase, Mode
    from .chunking import ChunkRule
    from .filters import Conditions
    from .rerank import Reranker

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class KnowledgeBaseNotFound(LookupError):
    """No knowledge base has that name, id or bound dataset id; the message lists those there are."""


class Knowledge:
    """The knowledge bases under ``root`` (``<home>/knowledge`` when None, read at each
    call). ``router`` resolves embedding models (the LLM service's default router when
    None)."""

    def __init__(self, root: str | Path | None = None, *, router: Any = None):
        self._root = Path(root) if root is not None else None
        self.router = router

    @property
    def root(self) -> Path:
        return self._root if self._root is not None else home() / "knowledge"

    # -- the bases --------------------------------------------------------------------------

    def create(self, name: str, *, embedding: str | None = None,
               rule: ChunkRule | Mapping[str, Any] | None = None, description: str = "",
               id: str | None = None, exist_ok: bool = False) -> KnowledgeBase:
        """A new, empty knowledge base. ``embedding``: ``provider/model``, ``hash`` or None
        (full-text search only). ``rule``: how documents are chunked (Dify's automatic
        rule by default). ``id``: the id to bind (e.g. the Dify dataset id a workflow uses)."""
        if not _NAME.match(name):
            raise ValueError(f"{name!r} is not a valid knowledge base name: use letters, "
                             "digits, '_', '-' and '.', starting with a letter or digit")
        folder = self.root / name
        if (folder / META).exists():
            if exist_ok:
                return self.get(name)
            raise FileExistsError(f"knowledge base {name!r} already exists; drop it first "
                                  f"(cellwire kb drop {name}) or add files to it")
        from .chunking import ChunkRule
        from .embeddings import embedder_for

        if embedding:
            embedder_for(embedding, self.router)  # fails now on a name that cannot work
        chunk_rule = rule if isinstance(rule, ChunkRule) else ChunkRule.model_validate(rule or {})
        meta: dict[str, Any] = {"id": id or str(uuid.uuid4()), "name": name, "description": description,
                "embedding": embedding, "rule": chunk_rule.model_dump(), "aliases": [],
                "created": time.time()}
        private_dir(folder)
        (folder / META).write_text(json.dumps(meta, indent=2))
        return self._open(folder, meta)

    def list(self) -> builtins.list[KnowledgeBase]:
        """Every knowledge base, by name."""
        if not self.root.is_dir():
            return []
        return [self._open(meta.parent, json.loads(meta.read_text()))
                for meta in sorted(self.root.glob(f"*/{META}"))]

    def get(self, key: str) -> KnowledgeBase:
        """The base whose name, id or bound dataset id is ``key``."""
        bases = self.list()
        for base in bases:
            if key in (base.name, base.id) or key in base.meta.get("aliases", []):
                return base
        known = ", ".join(b.name for b in bases) or "none yet"
        raise KnowledgeBaseNotFound(
            f"no knowledge base is named or bound to {key!r} in {self.root} (there: {known}); "
            f"create it with `cellwire kb create NAME`, or bind a Dify dataset id to one with "
            f"`cellwire kb bind NAME {key}`")

    def bind(self, name: str, dataset_id: str) -> KnowledgeBase:
        """Let workflows name the base ``name`` by ``dataset_id`` (a Dify dataset's id)."""
        base = self.get(name)
        aliases = base.meta.setdefault("aliases", [])
        if dataset_id not in aliases:
            aliases.append(dataset_id)
            base._save_meta()
        return base

    def drop(self, name: str) -> None:
        """Delete the base ``name`` (its folder, tables and cache)."""
        base = self.get(name)
        if base.name != name:
            raise KnowledgeBaseNotFound(f"drop takes a knowledge base's name; {name!r} is the "
                                        f"id of {base.name!r}")
        shutil.rmtree(base.folder)

    def _open(self, folder: Path, meta: dict[str, Any]) -> KnowledgeBase:
        from .base import KnowledgeBase

        return KnowledgeBase(folder, meta, router=self.router)

    # -- the run's service --------------------------------------------------------------------

    async def retrieve(self, dataset_ids: Sequence[str], query: str, *,
                       top_k: int | None = None, score_threshold: float | None = None,
                       mode: Mode | None = None, fusion: str = "rrf",
                       vector_weight: float = 0.7, keyword_weight: float = 0.3,
                       filters: Conditions | Mapping[str, Any] | None = None,
                       rerank: Reranker | None = None,
                       ) -> builtins.list[dict[str, Any]]:
        """The best chunks of the bases ``dataset_ids`` for ``query``, Dify-shaped
        (``content``, ``title``, ``metadata`` with ``score`` and the document's fields),
        best first, at most ``top_k`` (4) over all bases.

        With ``rerank`` (a rerank model), as Dify's multiple retrieval: each base gives its
        ``top_k`` best, the model re-scores them all together, and ``score_threshold``
        applies to its scores. Dify's weighted score over several bases is likewise taken
        over their candidates together (the keyword part's inverse document frequencies
        come from all of them)."""
        top_k = top_k or 4
        keys = builtins.list(dict.fromkeys(dataset_ids))
        across = fusion == "weighted" and rerank is None and len(keys) > 1
        found: builtins.list[tuple[KnowledgeBase, Hit]] = []
        for key in keys:
            base = self.get(key)
            base_mode = mode if mode is not None and (mode == "fulltext" or base.embedding) \
                else None
            hits = await base.search(query, mode=base_mode, top_k=top_k,
                                     score_threshold=None if rerank or across
                                     else score_threshold,
                                     filters=filters,
                                     fusion="weighted" if fusion == "weighted" else "rrf",
                                     vector_weight=vector_weight, keyword_weight=keyword_weight)
            found.extend((base, hit) for hit in hits)
        if rerank is not None:
            from .rerank import rerank_hits

            owner = {id(hit): base for base, hit in found}
            ranked = await rerank_hits(rerank, query, [hit for _, hit in found], top_n=top_k,
                                       score_threshold=score_threshold)
            found = [(owner[id(hit)], hit) for hit in ranked]
        elif across:
            found = _weighted_across(found, query, vector_weight, keyword_weight,
                                     score_threshold)
        found.sort(key=lambda pair: -pair[1].score)
        return [dify_result(base, hit, index + 1)
                for index, (base, hit) in enumerate(found[:top_k])]


    def describe_bases(self, dataset_ids: Sequence[str]) -> builtins.list[dict[str, str]]:
        """Each base ``dataset_ids`` names, as ``{key, name, description}`` (``key`` as
        given): what single retrieval offers a model to choose from."""
        return [{"key": key, "name": base.name, "description": str(
                     base.meta.get("description") or "")}
                for key in dict.fromkeys(dataset_ids) for base in [self.get(key)]]

    def metadata_fields(self, dataset_ids: Sequence[str]) -> builtins.list[dict[str, str]]:
        """The metadata fields of the documents in the bases ``dataset_ids``, each as
        ``{name, type}`` with Dify's types (``string``, ``number``, ``time``): what automatic
        metadata filtering lets a model choose from."""
        fields: dict[str, str] = {}
        for key in dict.fromkeys(dataset_ids):
            for document in self.get(key).documents():
                for name, value in document["metadata"].items():
                    if name not in fields or fields[name] == "string":
                        fields[name] = _field_type(name, value)
        return [{"name": name, "type": kind} for name, kind in fields.items()]


def _weighted_across(found: builtins.list[tuple[KnowledgeBase, Hit]], query: str,
                     vector_weight: float, keyword_weight: float,
                     score_threshold: float | None) -> builtins.list[tuple[KnowledgeBase, Hit]]:
    """Dify's ``WeightRerankRunner`` over the hits of several bases: each hit's cosine
    (0 when its base has no vectors) and its keyword score among all of them."""
    from .fusion import keyword_scores

    keyword = keyword_scores(query, {str(index): hit.content
                                     for index, (_, hit) in enumerate(found)})
    kept = []
    for index, (base, hit) in enumerate(found):
        hit.scores["keyword"] = keyword[str(index)]
        hit.score = hit.scores["weighted"] = (vector_weight * hit.scores.get("vector", 0.0)
                                              + keyword_weight * keyword[str(index)])
        if score_threshold is None or hit.score >= score_threshold:
            kept.append((base, hit))
    return kept


#: Dify's built-in metadata fields that hold times (Unix seconds).
_TIME_FIELDS = ("upload_date", "last_update_date")


def _field_type(name: str, value: Any) -> str:
    if name in _TIME_FIELDS:
        return "time"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "number"
    return "string"


def dify_result(base: KnowledgeBase, hit: Hit, position: int) -> dict[str, Any]:
    """One item of a knowledge-retrieval node's ``result``, as Dify returns it."""
    metadata: dict[str, Any] = {
        "_source": "knowledge", "position": position, "dataset_id": base.id,
        "dataset_name": base.name, "document_id": hit.document_id,
        "document_name": hit.document_name, "data_source_type": "upload_file",
        "segment_id": hit.chunk_id, "retriever_from": "workflow", "score": hit.score,
        "segment_hit_count": 0, "segment_word_count": len(hit.content),
        "segment_position": hit.position + 1, "segment_index_node_hash": None,
        "doc_metadata": hit.metadata, "scores": hit.scores,
    }
    if hit.child_chunks:
        metadata["child_chunks"] = hit.child_chunks
    return {"metadata": metadata, "title": hit.document_name, "content": hit.content,
            "files": []}
