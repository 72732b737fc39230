"""A rerank model over retrieved chunks, as Dify's ``RerankModelRunner`` applies one.

The model is a provider's ``rerank`` (an OpenAI-compatible provider sends Cohere's / Jina's
``POST /rerank``), named ``provider/model`` and resolved through the LLM service's router,
so it has that provider's base URL, key and rate limits. As in Dify: duplicate chunks are
sent once, each chunk's score becomes the model's relevance score, chunks under the score
threshold are dropped, and the ``top_n`` best are kept, best first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .base import Hit


class RerankUnavailable(RuntimeError):
    """The rerank model cannot be used here; the message says why and what to do."""


class Reranker(Protocol):
    """Scores documents against a query: ``(index, score)`` pairs, best first."""

    name: str

    async def rerank(self, query: str, documents: Sequence[str],
                     top_n: int | None = None) -> list[tuple[int, float]]: ...


class ModelReranker:
    """The rerank endpoint of ``provider`` for ``model`` (a router's route)."""

    def __init__(self, provider: Any, model: str, *, name: str | None = None):
        self.provider = provider
        self.model = model
        self.name = name or f"{provider.name}/{model}"
        if getattr(provider, "rerank", None) is None:
            raise RerankUnavailable(
                f"rerank model {self.name!r}: provider {provider.name!r} has no rerank "
                "endpoint; configure an OpenAI-compatible provider whose server serves "
                "POST /rerank (Cohere, Jina, vLLM, Xinference) under that name, or map it "
                "to one")

    async def rerank(self, query: str, documents: Sequence[str],
                     top_n: int | None = None) -> list[tuple[int, float]]:
        result: list[tuple[int, float]] = await self.provider.rerank(
            self.model, query, list(documents), top_n=top_n)
        return result


def reranker_for(name: str, router: Any = None) -> ModelReranker:
    """The reranker ``provider/model`` names, resolved by ``router`` (the LLM service's
    default router when None)."""
    if "/" not in name:
        raise RerankUnavailable(f"rerank model {name!r} names no provider; give it as "
                                "provider/model (e.g. cohere/rerank-english-v3.0)")
    if router is None:
        from cellwire.services.llm.router import default_router

        router = default_router()
    try:
        # No fallback to the default model: that is a chat model, not a rerank model.
        route = router.resolve(name, fallback=False)
    except Exception as exc:  # noqa: BLE001 - the router's own errors say what is missing
        raise RerankUnavailable(f"rerank model {name!r}: {exc}") from None
    return ModelReranker(route.provider, route.model, name=name)


async def rerank_hits(reranker: Reranker, query: str, hits: Sequence[Hit], *,
                      top_n: int | None = None,
                      score_threshold: float | None = None) -> list[Hit]:
    """``hits`` re-scored by ``reranker`` (``score`` and ``scores["rerank"]``), those under
    ``score_threshold`` dropped, the ``top_n`` best first."""
    unique: list[Hit] = []
    seen: set[tuple[str, str]] = set()
    for hit in hits:
        key = (hit.document_id, hit.chunk_id)
        if key not in seen:
            seen.add(key)
            unique.append(hit)
    if not unique:
        return []
    ranked = await reranker.rerank(query, [hit.content for hit in unique], top_n)
    kept: list[Hit] = []
    for index, score in ranked:
        if score_threshold is not None and score < score_threshold:
            continue
        hit = unique[index]
        hit.score = score
        hit.scores["rerank"] = score
        kept.append(hit)
    kept.sort(key=lambda hit: -hit.score)
    return kept[:top_n] if top_n else kept
