"""A test double of a rerank server (Cohere's, Jina's, vLLM's ``POST /v1/rerank``), on
127.0.0.1, for tests.

It is not a model: a document's relevance is the share of the query's distinct words it holds
(or ``score(query, document)`` when given). It is the OpenAI-wire test server
(:mod:`llm_server`) with one more route, so the API key check, the recorded requests and the
queued faults (:meth:`LLMServer.fail`) work the same; ``/v1/embeddings`` and
``/v1/chat/completions`` still answer.

``flavour`` chooses the reply's shape: ``cohere`` (``results`` of ``index`` and
``relevance_score``, best first, cut to ``top_n``), ``jina`` (the same, with ``document``
and ``usage``) or ``tei`` (Hugging Face text-embeddings-inference: a bare list of ``index`` and
``score``). Fault ``malformed`` answers 200 with a body that is JSON but holds no results.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from llm_server import LLMServer, Recorded

_WORD = re.compile(r"\w+")


def overlap(query: str, document: str) -> float:
    """The share of the query's distinct (lower-cased) words that the document holds."""
    wanted = set(_WORD.findall(query.lower()))
    return len(wanted & set(_WORD.findall(document.lower()))) / (len(wanted) or 1)


@dataclass
class RerankServer(LLMServer):
    rerank_flavour: str = "cohere"
    score: Callable[[str, str], float] | None = None

    def rerank_requests(self) -> list[dict[str, Any]]:
        return [r.body for r in self.requests if r.path.endswith("/rerank")]

    async def _request(self, method: str, target: str, headers: dict[str, str], raw: bytes,
                       writer: asyncio.StreamWriter) -> bool:
        path = target.split("?")[0]
        if not (method == "POST" and path == "/v1/rerank"):
            return await super()._request(method, target, headers, raw, writer)
        body = json.loads(raw)
        self.requests.append(Recorded(method, path, headers, body))
        if self.api_key and headers.get("authorization") != f"Bearer {self.api_key}":
            return await self._json(writer, 401, {"message": "invalid api token"})
        fault = self.faults.popleft() if self.faults else None
        if fault is not None and fault.kind == "status":
            return await self._json(writer, fault.status, fault.body or {
                "error": {"message": f"injected {fault.status}"}}, fault.headers)
        if fault is not None and fault.kind == "malformed":
            return await self._json(writer, 200, {"id": "r-1", "meta": {}})
        query, documents = body["query"], body["documents"]
        score = self.score or overlap
        ranked = sorted(({"index": i, "relevance_score": score(query, d)}
                         for i, d in enumerate(documents)),
                        key=lambda item: -item["relevance_score"])
        if body.get("top_n") is not None:
            ranked = ranked[: body["top_n"]]
        if self.rerank_flavour == "tei":
            return await self._json(writer, 200, [{"index": r["index"],
                                                   "score": r["relevance_score"]}
                                                  for r in ranked])
        if self.rerank_flavour == "jina":
            for item in ranked:
                item["document"] = {"text": documents[item["index"]]}
            return await self._json(writer, 200, {"model": body["model"], "results": ranked,
                                                  "usage": {"total_tokens": 10}})
        return await self._json(writer, 200, {"id": "r-1", "results": ranked,
                                              "meta": {"billed_units": {"search_units": 1}}})


@contextmanager
def rerank_server(**options: Any) -> Iterator[RerankServer]:
    server = RerankServer(**options).start()
    try:
        yield server
    finally:
        server.stop()
