"""The opt-in LLM response cache, kept in the run store's ``llm_cache`` table.

A reply is found again by a key over everything that shapes it: the provider, the model, the
messages and every request parameter (temperature, tools, schema...). Change any of them and
the call goes to the model. Turn it on per llm-family node (``cache: true`` in its config) or
per run (``arun(..., cache=True)``); runs without a store have no cache.

The cache opens its own connection to the store's file (WAL lets it share the file with the
store's writer); its methods block briefly, so nodes call them on a thread.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .base import ChatRequest, ChatResponse, TokenUsage, ToolCall

#: Bump when the key's recipe changes, so old entries stop matching instead of misleading.
KEY_VERSION = 1


def cache_key(provider: str, request: ChatRequest) -> str:
    """A SHA-256 over the provider, model, messages and parameters of ``request``."""
    payload = {
        "v": KEY_VERSION,
        "provider": provider,
        "model": request.model,
        "messages": [
            {"role": m.role, "content": m.content, "name": m.name,
             "tool_call_id": m.tool_call_id,
             "tool_calls": [asdict(c) for c in m.tool_calls]}
            for m in request.messages
        ],
        "temperature": request.temperature,
        "top_p": request.top_p,
        "max_tokens": request.max_tokens,
        "stop": request.stop,
        "tools": request.tools,
        "tool_choice": request.tool_choice,
        "response_format": request.response_format,
        "json_schema": request.json_schema,
        "params": request.params,
    }
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ResponseCache:
    """Replies by key in the ``llm_cache`` table of the SQLite file at ``path``."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA busy_timeout=5000")

    def get(self, key: str) -> ChatResponse | None:
        """The cached reply for ``key``, counting the hit; None on a miss."""
        with self._lock:
            row = self._conn.execute("SELECT response FROM llm_cache WHERE key = ?",
                                     (key,)).fetchone()
            if row is None:
                return None
            self._conn.execute(
                "UPDATE llm_cache SET hits = hits + 1, last_hit_at = ? WHERE key = ?",
                (time.time(), key),
            )
        return _decode(row[0])

    def put(self, key: str, provider: str, response: ChatResponse) -> None:
        """Keep ``response`` under ``key`` (replacing an older one)."""
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO llm_cache (key, provider, model, response, "
                "prompt_tokens, completion_tokens, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (key, provider, response.model, _encode(response),
                 response.usage.prompt_tokens, response.usage.completion_tokens, time.time()),
            )

    def clear(self) -> int:
        """Drop every cached reply; returns how many there were."""
        with self._lock:
            return self._conn.execute("DELETE FROM llm_cache").rowcount

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _encode(response: ChatResponse) -> str:
    data: dict[str, Any] = {
        "text": response.text,
        "reasoning": response.reasoning,
        "tool_calls": [asdict(c) for c in response.tool_calls],
        "finish_reason": response.finish_reason,
        "usage": asdict(response.usage),
        "model": response.model,
    }
    return json.dumps(data, ensure_ascii=False)


def _decode(text: str) -> ChatResponse:
    data = json.loads(text)
    return ChatResponse(
        text=data["text"],
        reasoning=data["reasoning"],
        tool_calls=[ToolCall(**c) for c in data["tool_calls"]],
        finish_reason=data["finish_reason"],
        usage=TokenUsage(**data["usage"]),
        model=data["model"],
    )


_caches: dict[Path, ResponseCache] = {}
_caches_lock = threading.Lock()


def open_cache(path: str | os.PathLike[str]) -> ResponseCache:
    """The process's cache for the store file at ``path`` (one connection per file)."""
    key = Path(path).expanduser().resolve()
    with _caches_lock:
        found = _caches.get(key)
        if found is None:
            found = _caches[key] = ResponseCache(key)
        return found
