"""ScriptedProvider: a deterministic test double standing in for a chat model.

It is not a model: it answers by rules, so tests and examples of workflows with LLM nodes run
without network, keys or weights and give the same answer every time. Without a matching rule
it echoes the last user message (the model ``scripted/echo``; every other model name works
the same). Rules can also reply with tool calls, a JSON object, reasoning, a delay, or
failures. Tokens are counted as whitespace-separated words, so usage is exact and stable.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .base import (
    ChatChunk,
    ChatRequest,
    ChatResponse,
    ProviderError,
    RetryableProviderError,
    TokenUsage,
    ToolCall,
    ToolCallDelta,
)

Reply = str | Callable[[ChatRequest], str]
_WORDS = re.compile(r"\w+")


@dataclass
class Rule:
    """A scripted reply and the requests it applies to.

    Every match field given must hold; a rule without any matches every request.
    ``contains`` / ``regex`` look at the text of the last user message, ``images`` at whether
    it carries image parts, ``system`` at the system prompt. Without ``reply`` or ``json``,
    the reply echoes the last user message's text.
    """

    contains: str | None = None
    regex: str | None = None
    system: str | None = None
    model: str | None = None
    images: bool | None = None
    when: Callable[[ChatRequest], bool] | None = None

    reply: Reply | None = None
    #: A value sent as the reply's JSON text (structured output).
    json: Any = None
    reasoning: str = ""
    #: ``ToolCall`` objects or ``{"name": ..., "arguments": {...}}`` dicts.
    tool_calls: list[ToolCall | Mapping[str, Any]] = field(default_factory=list)
    finish_reason: str | None = None
    #: Seconds to wait before answering; None uses the provider's latency.
    latency: float | None = None
    #: Fail the first ``fail_times`` matching calls with a retryable error, then answer.
    fail_times: int = 0
    retry_after: float | None = None
    #: Fail every matching call with this fatal error (a message or a ProviderError).
    error: str | ProviderError | None = None

    def matches(self, request: ChatRequest) -> bool:
        user = request.last_user_message
        return (
            (self.contains is None or self.contains in user)
            and (self.regex is None or re.search(self.regex, user) is not None)
            and (self.system is None or self.system in request.system_prompt)
            and (self.model is None or self.model == request.model)
            and (self.images is None or self.images == bool(_last_user_images(request)))
            and (self.when is None or bool(self.when(request)))
        )


def _last_user_images(request: ChatRequest) -> list[Any]:
    for message in reversed(request.messages):
        if message.role == "user":
            return message.images
    return []


def count_tokens(text: str) -> int:
    """The scripted provider's token count: whitespace-separated words."""
    return len(text.split())


class ScriptedProvider:
    """A chat provider that answers by :class:`Rule` (first match wins); a test double.

    ``latency`` delays every answer (``asyncio.sleep``, so parallel nodes overlap);
    ``chunk_words`` sets how many words each stream chunk carries. ``calls`` records every
    request, failed attempts included, so tests can check the prompts a node rendered (image
    parts included; they count no tokens).
    """

    def __init__(self, rules: Iterable[Rule] = (), *, name: str = "scripted",
                 latency: float = 0.0, chunk_words: int = 1, models: Iterable[str] = ("echo",)):
        self.name = name
        self.rules = list(rules)
        self.latency = latency
        self.chunk_words = max(1, chunk_words)
        self.calls: list[ChatRequest] = []
        self._models = list(models)
        self._failures: dict[int, int] = {}

    # -- the provider protocol ---------------------------------------------------------------

    async def chat(self, request: ChatRequest) -> ChatResponse:
        rule = self._begin(request)
        await self._wait(rule)
        return self._answer(request, rule)

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatChunk]:
        rule = self._begin(request)
        await self._wait(rule)
        response = self._answer(request, rule)
        for piece in _pieces(response.reasoning, self.chunk_words):
            yield ChatChunk(reasoning=piece)
        for piece in _pieces(response.text, self.chunk_words):
            yield ChatChunk(text=piece)
        for index, call in enumerate(response.tool_calls):
            # Two fragments per call, as real providers split arguments across chunks.
            half = len(call.arguments) // 2
            yield ChatChunk(tool_calls=[ToolCallDelta(index, call.id, call.name,
                                                      call.arguments[:half])])
            yield ChatChunk(tool_calls=[ToolCallDelta(index, arguments=call.arguments[half:])])
        yield ChatChunk(usage=response.usage, finish_reason=response.finish_reason)

    async def embed(self, model: str, texts: list[str]) -> list[list[float]]:
        """Bag-of-words vectors hashed into 16 dimensions, unit length: texts sharing words
        come out similar, which is enough to test retrieval."""
        return [_embed(text) for text in texts]

    async def rerank(self, model: str, query: str, documents: list[str], *,
                     top_n: int | None = None) -> list[tuple[int, float]]:
        """Each document's share of the query's distinct words (lower-cased), best first:
        a stand-in for a rerank model that is stable enough to test ordering with."""
        wanted = set(_WORDS.findall(query.lower()))
        scored = [(index, len(wanted & set(_WORDS.findall(text.lower()))) / (len(wanted) or 1))
                  for index, text in enumerate(documents)]
        scored.sort(key=lambda pair: (-pair[1], pair[0]))
        return scored[:top_n] if top_n is not None else scored

    async def models(self) -> list[str]:
        named = {r.model for r in self.rules if r.model}
        return sorted({*self._models, *named})

    # -- answering ---------------------------------------------------------------------------

    def _begin(self, request: ChatRequest) -> Rule | None:
        self.calls.append(request)
        for index, rule in enumerate(self.rules):
            if rule.matches(request):
                self._fail_if_scripted(index, rule, request)
                return rule
        return None

    def _fail_if_scripted(self, index: int, rule: Rule, request: ChatRequest) -> None:
        if rule.error is not None:
            if isinstance(rule.error, ProviderError):
                raise rule.error
            raise ProviderError(rule.error, provider=self.name, model=request.model)
        failed = self._failures.get(index, 0)
        if failed < rule.fail_times:
            self._failures[index] = failed + 1
            raise RetryableProviderError(
                f"scripted failure {failed + 1} of {rule.fail_times}",
                provider=self.name, model=request.model, retry_after=rule.retry_after,
            )

    async def _wait(self, rule: Rule | None) -> None:
        delay = rule.latency if rule is not None and rule.latency is not None else self.latency
        if delay > 0:
            await asyncio.sleep(delay)

    def _answer(self, request: ChatRequest, rule: Rule | None) -> ChatResponse:
        text = self._text(request, rule)
        finish = rule.finish_reason if rule is not None else None
        text, cut = _apply_limits(text, request)
        calls = [_tool_call(c, i) for i, c in enumerate(rule.tool_calls)] if rule else []
        reasoning = rule.reasoning if rule is not None else ""
        prompt = sum(count_tokens(m.text) for m in request.messages)
        completion = (count_tokens(text) + count_tokens(reasoning)
                      + sum(count_tokens(c.arguments) for c in calls))
        return ChatResponse(
            text=text,
            reasoning=reasoning,
            tool_calls=calls,
            finish_reason=finish or cut or ("tool_calls" if calls else "stop"),
            usage=TokenUsage(prompt, completion, prompt + completion),
            model=request.model,
        )

    def _text(self, request: ChatRequest, rule: Rule | None) -> str:
        if rule is not None and rule.json is not None:
            return json.dumps(rule.json, ensure_ascii=False)
        if rule is not None and rule.reply is not None:
            return rule.reply(request) if callable(rule.reply) else rule.reply
        if rule is not None and rule.tool_calls:
            return ""
        if request.response_format == "json_schema" and request.json_schema:
            return json.dumps(example_from_schema(request.json_schema), ensure_ascii=False)
        if request.response_format == "json_object":
            return json.dumps({"text": request.last_user_message}, ensure_ascii=False)
        return request.last_user_message


def _apply_limits(text: str, request: ChatRequest) -> tuple[str, str | None]:
    """Cut ``text`` at the first stop sequence, then at ``max_tokens`` words."""
    for stop in request.stop:
        if stop and stop in text:
            text = text[: text.index(stop)]
    if request.max_tokens is not None and count_tokens(text) > request.max_tokens:
        words = re.findall(r"\s*\S+", text)[: request.max_tokens]
        return "".join(words).lstrip(), "length"
    return text, None


def _pieces(text: str, words: int) -> list[str]:
    """``text`` in chunks of ``words`` words, each keeping its trailing whitespace."""
    tokens = re.findall(r"\S+\s*|\s+", text)
    return ["".join(tokens[i:i + words]) for i in range(0, len(tokens), words)]


def _tool_call(spec: ToolCall | Mapping[str, Any], index: int) -> ToolCall:
    if isinstance(spec, ToolCall):
        return spec
    arguments = spec.get("arguments", {})
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments, ensure_ascii=False)
    return ToolCall(str(spec.get("id") or f"call_{index}"), str(spec["name"]), arguments)


def _embed(text: str, dims: int = 16) -> list[float]:
    vector = [0.0] * dims
    for word in text.lower().split():
        vector[hashlib.sha256(word.encode()).digest()[0] % dims] += 1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


# -- structured output without a rule -----------------------------------------------------------


def example_from_schema(schema: Mapping[str, Any], root: Mapping[str, Any] | None = None,
                        depth: int = 0) -> Any:
    """A small value valid for ``schema``: every declared property, filled with its ``const``,
    ``default``, first ``enum`` value or example, else an empty value of its type."""
    root = schema if root is None else root
    if depth > 32:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, Mapping) else {}
        return example_from_schema(target, root, depth + 1)
    for key in ("const", "default"):
        if key in schema:
            return schema[key]
    if schema.get("enum"):
        return schema["enum"][0]
    if schema.get("examples"):
        return schema["examples"][0]
    for key in ("anyOf", "oneOf"):
        options = [o for o in schema.get(key) or [] if o.get("type") != "null"]
        if options:
            return example_from_schema(options[0], root, depth + 1)
    if schema.get("allOf"):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            value = example_from_schema(part, root, depth + 1)
            if isinstance(value, dict):
                merged.update(value)
        return merged
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        properties = schema.get("properties") or {}
        return {k: example_from_schema(v, root, depth + 1) for k, v in properties.items()}
    if kind == "array":
        item = example_from_schema(schema.get("items") or {}, root, depth + 1)
        return [item] * int(schema.get("minItems") or 0)
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum", -1) + 1)
        if "maximum" in schema:
            low = min(low, schema["maximum"])
        return math.ceil(low) if kind == "integer" else low
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return "x" * int(schema.get("minLength") or 0)
