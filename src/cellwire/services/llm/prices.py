"""What a model call cost: a pinned public price table, user prices, and NaN for the unknown.

The table is ``data/model_prices.json``: a snapshot of LiteLLM's
``model_prices_and_context_window.json`` (MIT licence, source, version and date in the file's
header and in ``data/model_prices.LICENSE``), cut down to per-token input and output prices.
It is never refreshed behind the user's back, so an old run's cost stays reproducible.

Lookup for a call to ``provider/model``, first hit wins:

1. user prices (:meth:`PriceTable.set`): a regular expression matched in full against
   ``provider/model`` or ``model``, newest first;
2. free providers: the scripted test double and local models cost 0 by definition;
3. the table, under ``provider/model``, then ``model``, then the model name's last part;
4. otherwise the cost is NaN, with the reason; never 0.

The snapshot also keeps LiteLLM's ``max_input_tokens`` (the model's input context), which
chat memory uses to trim the history to what the model can take
(:meth:`PriceTable.max_input_tokens`); a user's entry may give it for models the table does
not know (a vLLM or Ollama model), with or without a price.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from .base import Cost, TokenUsage

NAN = float("nan")


@dataclass(frozen=True, slots=True)
class Price:
    """USD per token for prompt (input) and completion (output) tokens."""

    input: float
    output: float
    currency: str = "USD"


@dataclass(frozen=True, slots=True)
class Priced:
    """A call's cost and where its price came from.

    ``source`` is ``'table:<key>'``, ``'override:<pattern>'``, ``'free:<provider>'`` or
    ``'unknown'``; ``reason`` says why the cost is NaN when it is.
    """

    cost: Cost
    source: str
    reason: str | None = None

    @property
    def known(self) -> bool:
        return not math.isnan(self.cost.total)

    def as_dict(self) -> dict[str, Any]:
        """The JSON-friendly form that goes into a node's metadata."""
        data: dict[str, Any] = {"price_source": self.source}
        if self.reason:
            data["cost_reason"] = self.reason
        return data


@cache
def _snapshot() -> dict[str, Any]:
    text = resources.files(__package__).joinpath("data/model_prices.json").read_text("utf-8")
    return json.loads(text)


def table_info() -> dict[str, str]:
    """The pinned table's ``source``, ``version``, ``retrieved`` date and ``licence``."""
    data = _snapshot()
    return {k: data[k] for k in ("source", "version", "retrieved", "licence")}


class PriceTable:
    """Model prices: the pinned snapshot plus user prices; ``free`` providers cost 0."""

    def __init__(self, *, free: set[str] | frozenset[str] = frozenset({"scripted"}),
                 snapshot: bool = True):
        self._overrides: list[tuple[re.Pattern[str], Price]] = []
        self._contexts: list[tuple[re.Pattern[str], int]] = []
        self.free: set[str] = {p.lower() for p in free}
        self._use_snapshot = snapshot

    def set(self, pattern: str, input: float, output: float, *, currency: str = "USD") -> None:
        """Price every model whose ``provider/model`` or ``model`` matches ``pattern`` in
        full (a regular expression), in ``currency`` per token. Later calls win."""
        if input < 0 or output < 0:
            raise ValueError(f"prices must not be negative: {input}, {output}")
        self._overrides.insert(0, (_pattern(pattern), Price(float(input), float(output),
                                                            currency)))

    def set_context(self, pattern: str, max_input_tokens: int) -> None:
        """The input context, in tokens, of every model matching ``pattern`` (as in
        :meth:`set`). Later calls win."""
        if max_input_tokens <= 0:
            raise ValueError(f"max_input_tokens must be positive: {max_input_tokens}")
        self._contexts.insert(0, (_pattern(pattern), int(max_input_tokens)))

    def update(self, prices: dict[str, Any]) -> None:
        """Add prices from config: ``{pattern: {input: ..., output: ..., currency: ...}}``
        with per-token figures, or ``input_per_million`` / ``output_per_million``; and
        ``max_input_tokens``, alone or with a price."""
        for pattern, spec in prices.items():
            if not isinstance(spec, dict):
                raise TypeError(f"price {pattern!r}: give a mapping with input and output")
            if spec.get("max_input_tokens") is not None:
                self.set_context(pattern, int(spec["max_input_tokens"]))
                if not set(spec) & {"input", "output", "input_per_million",
                                    "output_per_million"}:
                    continue  # a context size only: the price stays the table's
            per_million = "input_per_million" in spec or "output_per_million" in spec
            suffix, scale = ("_per_million", 1e-6) if per_million else ("", 1.0)
            self.set(pattern, float(spec.get(f"input{suffix}", 0.0)) * scale,
                     float(spec.get(f"output{suffix}", 0.0)) * scale,
                     currency=str(spec.get("currency", "USD")))

    def lookup(self, provider: str, model: str) -> tuple[Price | None, str, str | None]:
        """``(price, source, reason)`` for ``provider/model``; price None when unknown."""
        full = f"{provider}/{model}"
        for pattern, price in self._overrides:
            if pattern.fullmatch(full) or pattern.fullmatch(model):
                return price, f"override:{pattern.pattern}", None
        if provider.lower() in self.free:
            return Price(0.0, 0.0), f"free:{provider}", None
        if self._use_snapshot:
            models = _snapshot()["models"]
            for key in (full, model, model.rsplit("/", 1)[-1]):
                row = models.get(key)
                if row is not None:
                    return Price(float(row[1]), float(row[2])), f"table:{key}", None
        return None, "unknown", (
            f"no price for {full!r} in the price table ({_snapshot()['version']}) or the "
            "user prices; add one with cellwire.set_price(pattern, input, output) or "
            "'prices:' in providers.yaml"
        )

    def max_input_tokens(self, provider: str, model: str) -> int | None:
        """The input context of ``provider/model`` in tokens, from the snapshot (same keys as
        prices: ``provider/model``, ``model``, the name's last part); None when unknown."""
        full = f"{provider}/{model}"
        for pattern, size in self._contexts:
            if pattern.fullmatch(full) or pattern.fullmatch(model):
                return size
        if not self._use_snapshot:
            return None
        sizes = _snapshot().get("max_input_tokens", {})
        for key in (f"{provider}/{model}", model, model.rsplit("/", 1)[-1]):
            size = sizes.get(key)
            if size:
                return int(size)
        return None

    def price(self, provider: str, model: str, usage: TokenUsage) -> Priced:
        """The cost of ``usage`` tokens of ``provider/model``."""
        price, source, reason = self.lookup(provider, model)
        if price is None:
            return Priced(Cost(NAN, NAN), source, reason)
        return Priced(
            Cost(usage.prompt_tokens * price.input, usage.completion_tokens * price.output,
                 price.currency),
            source,
        )


def _pattern(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"not a regular expression: {pattern!r} ({exc})") from None
