"""An LLM judge: a model grades each output against a rubric, through the LLM service.

The judge asks for a JSON object ``{"score": 0..1, "reason": "..."}`` (a bare number is read
too) at temperature 0. Its tokens and cost are the judge's, reported apart from the
workflow's (``judge_tokens``, ``judge_cost`` of an evaluation). A call the provider may retry
(429, 5xx, a timeout) is retried as a node's would be (``retry``, the server's
``Retry-After`` honoured); one that still fails scores NaN with the error as its reason.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Mapping
from typing import Any

from cellwire.engine.retry import retry_delay
from cellwire.model import Retry
from cellwire.services.llm import ChatMessage, ChatRequest, ChatResponse, RetryableProviderError

from .scorers import Score, Scorer, json_in, route_of, router, text_of

#: What the judge is told when no rubric is given.
DEFAULT_RUBRIC = ("The answer is correct when it says what the expected answer says; wording "
                  "may differ. 1 for correct, 0 for wrong, in between for partly correct.")

SYSTEM = ("You grade the answers of an AI system. Read the rubric, the inputs, the expected "
          "answer and the answer. Reply with one JSON object and nothing else: "
          '{"score": <a number from 0 to 1>, "reason": "<one sentence>"}.')

_SCORE = re.compile(r"\b(0(?:\.\d+)?|1(?:\.0+)?)\b")


#: Retries of a judge call that failed in a way worth another attempt.
DEFAULT_RETRY = Retry(max_retries=3, interval=1.0)


def judge(rubric: str = "", *, model: str, threshold: float = 0.5, name: str = "judge",
          retry: Retry = DEFAULT_RETRY) -> Scorer:
    """A scorer asking ``model`` (``provider/model``) to grade each output by ``rubric``."""
    if not model or "/" not in model.strip("/"):
        raise ValueError(f"the judge needs a model as provider/model (got {model!r}), e.g. "
                         "judge(rubric, model='openai/gpt-4o-mini') or --judge-model")
    text = rubric.strip() or DEFAULT_RUBRIC

    async def check(output: Any, expected: Any, row: Mapping[str, Any]) -> Score:
        llm = router()
        route = route_of(model)
        inputs = "\n".join(f"- {k}: {text_of(v)}" for k, v in row.items())
        prompt = (f"Rubric:\n{text}\n\nInputs:\n{inputs or '(none)'}\n\n"
                  f"Expected answer:\n{text_of(expected)}\n\nAnswer:\n{text_of(output)}")
        request = ChatRequest(model=route.model, temperature=0.0,
                              messages=[ChatMessage("system", SYSTEM),
                                        ChatMessage("user", prompt)])
        reply = await _ask(route.provider, request, retry)
        cost = llm.priced(route, reply.usage).cost.total
        value, reason = read_verdict(reply.text)
        return Score(value, reason, reply.usage.total_tokens, cost)

    return Scorer(name, threshold, check, usage=True)


async def _ask(provider: Any, request: ChatRequest, retry: Retry) -> ChatResponse:
    attempt = 0
    while True:
        try:
            reply: ChatResponse = await provider.chat(request)
            return reply
        except RetryableProviderError as exc:
            attempt += 1
            if attempt > retry.max_retries:
                raise
            await asyncio.sleep(retry_delay(retry, attempt, exc))


def read_verdict(text: str) -> tuple[float, str | None]:
    """``(score, reason)`` from a judge's reply; NaN with the reply when it holds no score."""
    try:
        found = json_in(text)
    except ValueError:
        found = None
    if isinstance(found, dict) and "score" in found:
        try:
            value = float(found["score"])
        except (TypeError, ValueError):
            value = math.nan
        reason = found.get("reason")
        if not math.isnan(value):
            return min(1.0, max(0.0, value)), None if reason is None else str(reason)
    bare = _SCORE.search(text)
    if bare is not None:
        return float(bare.group(1)), None
    return math.nan, f"the judge gave no score: {json.dumps(text[:200])}"


__all__ = ["DEFAULT_RETRY", "DEFAULT_RUBRIC", "judge", "read_verdict"]
