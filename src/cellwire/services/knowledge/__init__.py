"""Knowledge bases on LanceDB: documents extracted, chunked as Dify does, searched by
full text, vector or both (:class:`Knowledge`, :class:`KnowledgeBase`)."""

from __future__ import annotations

from .base import AddReport, Hit, KnowledgeBase, hits_as_json, run_sync
from .chunking import Chunk, ChunkRule, Segmentation, chunk_text, clean
from .embeddings import Embedder, EmbeddingUnavailable, HashEmbedder, embedder_for
from .extract import ExtractionError, extract_text, mime_type_of
from .filters import Condition, Conditions
from .service import Knowledge, KnowledgeBaseNotFound, dify_result

__all__ = [
    "AddReport", "Chunk", "ChunkRule", "Condition", "Conditions", "Embedder",
    "EmbeddingUnavailable", "ExtractionError", "HashEmbedder", "Hit", "Knowledge",
    "KnowledgeBase", "KnowledgeBaseNotFound", "Segmentation", "chunk_text", "clean",
    "dify_result", "embedder_for", "extract_text", "hits_as_json", "mime_type_of", "run_sync",
]
