"""Scorers: each turns a workflow's output, the expected value and the row into a score in
[0, 1] (NaN when it cannot say), passing at its ``threshold``.

Built in: :func:`exact`, :func:`contains`, :func:`regex`, :func:`json_field`,
:func:`numeric`, :func:`similarity` (string), :func:`embedding` (cosine of two embeddings),
:func:`judge` (an LLM with a rubric, in :mod:`.judge`) and :func:`function` (any Python
function). :func:`scorer_of` reads the short forms the CLI takes (``exact``,
``numeric:0.01``, ``json:answer.city``, ``regex:^\\d+$``, ``similarity:0.9``,
``embedding:openai/text-embedding-3-small``, ``judge:openai/gpt-4o-mini``).
"""

from __future__ import annotations

import asyncio
import difflib
import inspect
import json
import math
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cellwire.engine.services import LLMService
    from cellwire.services.llm import Route

#: Numbers in text: ``-1``, ``3.5``, ``1,234.5``, ``2e-3``.
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+")
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)

#: The LLM router judges and embedding scorers call: the evaluation's runtime's, when set.
ROUTER: ContextVar[LLMService | None] = ContextVar("cellwire_eval_router", default=None)


def router() -> LLMService:
    """The LLM service of the running evaluation, else the default runner's."""
    found = ROUTER.get()
    if found is None:
        from cellwire.runner import default_runner

        found = default_runner().runtime(store=False).llm
    assert found is not None
    return found


def route_of(model: str) -> Route:
    """The provider and model ``provider/model`` names, through :func:`router`."""
    from cellwire.services.llm import split_model

    return router().resolve_config(*split_model(model))


@dataclass(slots=True)
class Score:
    """One score: ``value`` in [0, 1] (NaN: not scorable), why, and what it cost (an LLM
    judge's tokens and USD, counted apart from the workflow's)."""

    value: float
    reason: str | None = None
    tokens: int = 0
    cost: float = 0.0


@dataclass
class Scorer:
    """Scores outputs. ``threshold``: a score at or above it passes."""

    name: str
    threshold: float
    #: ``check(output, expected, row) -> Score | float | bool`` (maybe async).
    check: Callable[..., Any] = field(repr=False)
    #: Whether it spends tokens (a judge): its usage columns are kept apart.
    usage: bool = False

    async def score(self, output: Any, expected: Any, row: Mapping[str, Any]) -> Score:
        value = self.check(output, expected, row)
        if inspect.isawaitable(value):
            value = await value
        return as_score(value, self.name)

    async def score_all(self, items: Sequence[tuple[Any, Any, Mapping[str, Any]]],
                        concurrency: int = 8) -> list[Score]:
        """Every item's score, at most ``concurrency`` at once."""
        gate = asyncio.Semaphore(concurrency)

        async def one(item: tuple[Any, Any, Mapping[str, Any]]) -> Score:
            async with gate:
                try:
                    return await self.score(*item)
                except Exception as exc:  # noqa: BLE001 - one row's error is that row's score
                    return Score(math.nan, f"scorer {self.name!r} failed: "
                                           f"{type(exc).__name__}: {exc}")

        return list(await asyncio.gather(*(one(item) for item in items)))

    def passed(self, value: float) -> bool:
        return not math.isnan(value) and value >= self.threshold


def as_score(value: Any, name: str) -> Score:
    """A check's answer as a :class:`Score`: a Score, a bool (1 or 0) or a number in [0, 1]."""
    if isinstance(value, Score):
        return value
    if isinstance(value, bool):
        return Score(1.0 if value else 0.0)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
        if not math.isnan(number) and not 0.0 <= number <= 1.0:
            raise ValueError(f"scorer {name!r} returned {value!r}; a score is within 0 and 1 "
                             "(or a bool)")
        return Score(number)
    raise TypeError(f"scorer {name!r} returned a {type(value).__name__}; return a bool, a "
                    "number within 0 and 1, or a cellwire.evaluation.Score")


# -- values as text, numbers, JSON ------------------------------------------------------------


def text_of(value: Any) -> str:
    """A value as the text a comparison sees: None as '', 3.0 as '3', JSON for containers."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def number_in(value: Any) -> float | None:
    """The value as a number, or the first number in its text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return None if math.isnan(float(value)) else float(value)
    found = _NUMBER.search(text_of(value))
    return None if found is None else float(found.group().replace(",", ""))


def json_in(value: Any) -> Any:
    """The JSON value in ``value``: itself when a dict or list, else parsed from its text (a
    fenced ```json block, or the first ``{...}`` / ``[...]``). Raises ValueError without one."""
    if isinstance(value, (dict, list)):
        return value
    text = text_of(value).strip()
    fenced = _FENCE.search(text)
    candidates = [fenced.group(1).strip()] if fenced else []
    candidates.append(text)
    for opener, closer in ("{}", "[]"):
        start, end = text.find(opener), text.rfind(closer)
        if 0 <= start < end:
            candidates.append(text[start:end + 1])
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            continue
    raise ValueError(f"no JSON in {text[:80]!r}")


def field_at(value: Any, path: str) -> Any:
    """``value`` at a dotted ``path`` (``answer.cities.0``); KeyError names the missing part."""
    for part in [p for p in path.split(".") if p]:
        if isinstance(value, list) and part.lstrip("-").isdigit():
            value = value[int(part)]
        elif isinstance(value, dict) and part in value:
            value = value[part]
        else:
            raise KeyError(f"no field {part!r} in the JSON (path {path!r})")
    return value


def _normal(text: str, ignore_case: bool) -> str:
    text = " ".join(text.split())
    return text.casefold() if ignore_case else text


# -- the built-in scorers ---------------------------------------------------------------------


def exact(*, ignore_case: bool = False) -> Scorer:
    """1 when the output is the expected value (whitespace at the ends and runs of it aside)."""
    return Scorer("exact", 1.0, lambda out, exp, row: _normal(text_of(out), ignore_case)
                  == _normal(text_of(exp), ignore_case))


def contains(*, ignore_case: bool = True) -> Scorer:
    """1 when the expected text occurs in the output."""
    return Scorer("contains", 1.0, lambda out, exp, row: _normal(text_of(exp), ignore_case)
                  in _normal(text_of(out), ignore_case))


def regex(pattern: str | None = None, *, flags: int = 0) -> Scorer:
    """1 when ``pattern`` (else the expected value, as a pattern) matches within the output."""
    fixed = re.compile(pattern, flags) if pattern is not None else None

    def check(out: Any, exp: Any, row: Mapping[str, Any]) -> bool:
        found = fixed if fixed is not None else re.compile(text_of(exp), flags)
        return found.search(text_of(out)) is not None

    return Scorer("regex" if pattern is None else f"regex:{pattern}", 1.0, check)


def json_field(path: str | None = None) -> Scorer:
    """1 when the output's JSON (at the dotted ``path``, if given) equals the expected value
    (JSON text is parsed; with ``path``, an expected JSON object is read at the same path)."""

    def check(out: Any, exp: Any, row: Mapping[str, Any]) -> Score:
        try:
            got = json_in(out)
            if path:
                got = field_at(got, path)
        except (ValueError, KeyError, IndexError) as exc:
            return Score(0.0, str(exc))
        want = exp
        if isinstance(exp, str):
            try:
                want = json.loads(exp)
            except json.JSONDecodeError:
                want = exp
        if path and isinstance(want, dict):
            try:
                want = field_at(want, path)
            except (KeyError, IndexError):
                pass
        same = got == want or text_of(got) == text_of(want)
        return Score(1.0 if same else 0.0, None if same else f"{text_of(got)[:80]!r}")

    return Scorer("json" if path is None else f"json:{path}", 1.0, check)


def numeric(tolerance: float = 0.0, *, relative: bool = False) -> Scorer:
    """1 when the output's number is within ``tolerance`` of the expected one (a fraction of
    it with ``relative=True``)."""
    if tolerance < 0:
        raise ValueError(f"numeric(tolerance={tolerance}): a tolerance is not negative")

    def check(out: Any, exp: Any, row: Mapping[str, Any]) -> Score:
        got, want = number_in(out), number_in(exp)
        if want is None:
            return Score(math.nan, f"the expected value {text_of(exp)!r} is no number")
        if got is None:
            return Score(0.0, "no number in the output")
        allowed = tolerance * abs(want) if relative else tolerance
        return Score(1.0 if abs(got - want) <= allowed + 1e-12 else 0.0)

    return Scorer("numeric" if not tolerance else f"numeric:{tolerance}", 1.0, check)


def similarity(threshold: float = 0.8, *, ignore_case: bool = True) -> Scorer:
    """The strings' similarity ratio (difflib's, 0 to 1); passes at ``threshold``."""
    return Scorer("similarity", threshold, lambda out, exp, row: difflib.SequenceMatcher(
        None, _normal(text_of(out), ignore_case), _normal(text_of(exp), ignore_case)).ratio())


Embed = Callable[[list[str]], "Sequence[Sequence[float]] | Awaitable[Sequence[Sequence[float]]]"]


def embedding(embed: Embed | None = None, *, model: str | None = None,
              threshold: float = 0.8) -> Scorer:
    """Cosine similarity of the output's and the expected text's embeddings (negative as 0);
    passes at ``threshold``. ``embed(texts) -> vectors`` (maybe async) embeds, or ``model``
    (``provider/model``) through the LLM service, e.g. an OpenAI-compatible embeddings
    endpoint."""
    if (embed is None) == (not model):
        raise ValueError("embedding() takes embed= (a function of a list of texts) or model= "
                         "('provider/model'), one of them")

    async def vectors(texts: list[str]) -> Sequence[Sequence[float]]:
        if embed is not None:
            found = embed(texts)
            return await found if inspect.isawaitable(found) else found
        assert model is not None
        route = route_of(model)
        return await route.provider.embed(route.model, texts)

    async def check(out: Any, exp: Any, row: Mapping[str, Any]) -> Score:
        a, b = await vectors([text_of(out), text_of(exp)])
        return Score(max(0.0, cosine(a, b)))

    return Scorer("embedding", threshold, check)


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


def function(check: Callable[..., Any], *, name: str | None = None,
             threshold: float = 1.0) -> Scorer:
    """Any Python function as a scorer: ``check(output, expected)`` or ``check(output,
    expected, row)`` (maybe async) returning a bool, a number within 0 and 1, or a Score."""
    try:
        takes = len(inspect.signature(check).parameters)
    except (TypeError, ValueError):
        takes = 3
    if takes < 2:
        raise TypeError(f"scorer {name or getattr(check, '__name__', check)!r} takes "
                        f"{takes} argument(s); a scorer takes (output, expected[, row])")
    call = check if takes >= 3 else (lambda out, exp, row: check(out, exp))
    return Scorer(str(name or getattr(check, "__name__", "function")), threshold, call)


#: Scorers by the name :func:`scorer_of` takes.
NAMES = ("exact", "contains", "regex", "json", "numeric", "similarity", "embedding", "judge")


def scorer_of(spec: Scorer | str | Callable[..., Any], *, rubric: str | None = None,
              judge_model: str | None = None,
              embedding_model: str | None = None) -> Scorer:
    """A scorer from a Scorer, a Python function, or a name with an optional argument after
    a colon (see the module's text)."""
    if isinstance(spec, Scorer):
        return spec
    if callable(spec):
        return function(spec)
    if not isinstance(spec, str):
        raise TypeError(f"scorer {spec!r}: pass a name ({', '.join(NAMES)}), a function or a "
                        "Scorer")
    name, _, argument = spec.partition(":")
    name = name.strip().lower()
    try:
        if name == "exact":
            return exact()
        if name == "contains":
            return contains()
        if name == "regex":
            return regex(argument or None)
        if name == "json":
            return json_field(argument or None)
        if name == "numeric":
            return numeric(float(argument) if argument else 0.0)
        if name == "similarity":
            return similarity(float(argument) if argument else 0.8)
        if name == "embedding":
            return embedding(model=argument or embedding_model or "")
        if name == "judge":
            from .judge import judge

            return judge(rubric or "", model=argument or judge_model or "")
    except ValueError as exc:
        raise ValueError(f"scorer {spec!r}: {exc}") from None
    raise ValueError(f"unknown scorer {spec!r}; the scorers are {', '.join(NAMES)} (e.g. "
                     "numeric:0.01, json:answer.city), or pass a function")


__all__ = ["NAMES", "ROUTER", "Score", "Scorer", "as_score", "contains", "cosine", "embedding", "exact",
           "field_at", "function", "json_field", "json_in", "number_in", "numeric", "regex",
           "route_of", "router", "scorer_of", "similarity", "text_of"]
