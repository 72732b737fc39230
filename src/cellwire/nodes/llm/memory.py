"""Chat memory: earlier turns of the conversation, from ``runtime.memory`` (a
:class:`~cellwire.engine.services.ChatMemory`: the run store), fitted to the model's context."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from cellwire.engine import NodeContext
from cellwire.services.llm import ChatRequest, Route
from cellwire.services.llm.tokens import MESSAGE_OVERHEAD, count_messages, count_text

from .call import router_of
from .config import MemoryConfig

#: Why a run has no chat memory (``runtime.memory`` is None), and how to give it one.
NO_MEMORY = ("this run has no chat memory (it was run with store=False); run it with a store "
             "(the default, or store='runs.db') to remember the conversation's earlier turns")
#: The most turns Dify's memory remembers, with or without a window.
MAX_MEMORY_TURNS = 500
#: The history's token budget when the model's context size is unknown (Dify's
#: ``max_token_limit`` default).
DEFAULT_MEMORY_TOKENS = 2000


def window_limit(memory: MemoryConfig, *, enabled_only: bool = True) -> int | None:
    """The turns ``memory``'s window keeps; None for Dify's maximum. Dify's llm node reads
    ``window.size`` only when the window is enabled, its question classifier and parameter
    extractor whenever it is set (``enabled_only=False``)."""
    window = memory.window
    if enabled_only and not window.enabled:
        return None
    return window.size if window.size and window.size > 0 else None


async def read_history(ctx: NodeContext, memory: MemoryConfig | None, notes: list[str], *,
                       route: Route, request: ChatRequest, limit: int | None,
                       reserve: int = 0, reply_node: str | None = None
                       ) -> list[tuple[str, str]]:
    """Dify's chat memory: ``(query, answer)`` of the conversation's earlier runs, oldest
    first, at most ``limit`` of them (Dify's 500 when None), read from ``runtime.memory``.
    Conversations are told apart by ``sys.conversation_id``.

    As Dify's TokenBufferMemory, the oldest turns are dropped until the rest fit the model's
    input context less ``request`` (the prompt without history, its tools and schema), its
    ``max_tokens`` and ``reserve`` tokens; 2000 tokens when the context is unknown. A note
    in ``notes`` says why no history, or less of it, is sent. ``reply_node`` names the node
    whose ``text`` is the reply of a run without an answer node."""
    if memory is None:
        return []
    conversation = ctx.pool.get(("sys", "conversation_id"), None)
    if conversation is None or conversation == "":
        notes.append("memory: the run has no sys.conversation_id, so no history is sent")
        return []
    store = ctx.runtime.memory
    if store is None:
        notes.append(f"memory: {NO_MEMORY}, so no history is sent")
        return []
    workflow = str(ctx.pool.get(("sys", "workflow_id"), ""))
    try:
        turns = await ctx.to_thread(store.conversation_turns, workflow, str(conversation),
                                    min(limit or MAX_MEMORY_TURNS, MAX_MEMORY_TURNS),
                                    node_id=reply_node, exclude_run=ctx.run_id)
    except (OSError, sqlite3.Error) as exc:
        notes.append(f"memory: the chat memory could not be read ({exc}); no history is sent")
        return []
    history = [(turn.query, turn.answer) for turn in turns]
    if not history:
        return history
    context = context_size(ctx, route)
    # Token counts load tiktoken's encoding and walk the text: off the event loop.
    kept, budget, prompt = await ctx.to_thread(_fit_history, history, request, context,
                                               reserve)
    if len(kept) < len(history):
        dropped = len(history) - len(kept)
        if context is None:
            why = (f"Dify's default history budget of {budget} tokens (the model's context "
                   "size is unknown)")
        else:
            why = (f"a history budget of {budget} tokens: the model's input context of "
                   f"{context} less the prompt's {prompt}"
                   + (f" and max_tokens {request.max_tokens}" if request.max_tokens else "")
                   + (f" and {reserve} held back" if reserve else ""))
        notes.append(f"memory: left out the {dropped} oldest of {len(history)} earlier turns "
                     f"to fit {why}")
    return kept


def context_size(ctx: NodeContext, route: Route) -> int | None:
    """The input context of the routed model in tokens: a local model's own window, else
    the price table's ``max_input_tokens``; None when unknown."""
    return router_of(ctx).max_input_tokens(route)


def _fit_history(history: list[tuple[str, str]], request: ChatRequest, context: int | None,
                 reserve: int) -> tuple[list[tuple[str, str]], int, int]:
    """The most recent turns that fit the budget, the budget and the prompt's tokens."""
    prompt = 0
    if context is None:
        budget = DEFAULT_MEMORY_TOKENS
    else:
        prompt = count_messages(request.messages) + sum(
            count_text(json.dumps(part, ensure_ascii=False))
            for part in (request.tools or None, request.json_schema) if part)
        budget = max(context - (request.max_tokens or 0) - prompt - reserve, 0)
    kept: list[tuple[str, str]] = []
    used = 0
    for query, answer in reversed(history):
        used += sum(MESSAGE_OVERHEAD + count_text(text) for text in (query, answer) if text)
        if used > budget:
            break
        kept.append((query, answer))
    kept.reverse()
    return kept, budget, prompt


def histories_text(history: Sequence[tuple[str, str]],
                   role_prefix: dict[str, str] | None = None) -> str:
    """The turns as Dify writes them into a prompt: ``Human: ...`` / ``Assistant: ...``
    lines, or the prefixes of ``role_prefix``."""
    prefix = role_prefix or {}
    user, assistant = prefix.get("user") or "Human", prefix.get("assistant") or "Assistant"
    lines = [f"{role}: {text}" for query, answer in history
             for role, text in ((user, query), (assistant, answer)) if text]
    return "\n".join(lines)


def memory_section(history: Sequence[tuple[str, str]]) -> str:
    """The memory section Dify's question classifier and parameter extractor put in their
    system prompts: the turns inside ``<histories>`` tags (empty on a first turn)."""
    return ("### Memory\nHere is the chat history between the human and the assistant, "
            "inside <histories></histories> XML tags.\n"
            f"<histories>\n{histories_text(history)}\n</histories>")

