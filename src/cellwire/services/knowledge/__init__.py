"""Knowledge bases on LanceDB: documents extracted, chunked as Dify does, searched by
full text, vector or both (:class:`Knowledge`, :class:`KnowledgeBase`).

The names below load on first use: the document extractor needs only ``extract``, and
``import cellwire`` should not pay for NumPy and the search stack until a base is used.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import AddReport, Hit, KnowledgeBase, hits_as_json, run_sync
    from .chunking import Chunk, ChunkRule, Segmentation, chunk_text, clean
    from .embeddings import Embedder, EmbeddingUnavailable, HashEmbedder, embedder_for
    from .extract import ExtractionError, extract_text, mime_type_of
    from .filters import Condition, Conditions
    from .service import Knowledge, KnowledgeBaseNotFound, dify_result

#: The file that makes a folder a knowledge base (its id, name, embedding model and chunk rule).
META = "kb.json"

_WHERE = {
    "base": ("AddReport", "Hit", "KnowledgeBase", "hits_as_json", "run_sync"),
    "chunking": ("Chunk", "ChunkRule", "Segmentation", "chunk_text", "clean"),
    "embeddings": ("Embedder", "EmbeddingUnavailable", "HashEmbedder", "embedder_for"),
    "extract": ("ExtractionError", "extract_text", "mime_type_of"),
    "filters": ("Condition", "Conditions"),
    "service": ("Knowledge", "KnowledgeBaseNotFound", "dify_result"),
}
_MODULE_OF = {name: module for module, names in _WHERE.items() for name in names}

__all__ = [
    "AddReport", "Chunk", "ChunkRule", "Condition", "Conditions", "Embedder",
    "EmbeddingUnavailable", "ExtractionError", "HashEmbedder", "Hit", "Knowledge",
    "KnowledgeBase", "KnowledgeBaseNotFound", "Segmentation", "chunk_text", "clean",
    "dify_result", "embedder_for", "extract_text", "hits_as_json", "mime_type_of", "run_sync",
]


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
