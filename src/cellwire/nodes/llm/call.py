"""One model call: route, response cache, stream, usage, cost and timings."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from cellwire.engine import NodeContext, Usage
from cellwire.engine.services import LLMService
from cellwire.services.llm import (
    ChatAccumulator,
    ChatChunk,
    ChatRequest,
    ChatResponse,
    ProviderError,
    Route,
    default_router,
)
from cellwire.services.llm.cache import cache_key
from cellwire.services.llm.prices import Priced
from cellwire.services.llm.router import DEFAULT_MODEL_ENV, split_model
from cellwire.services.llm.tokens import estimate_usage

from .config import LLMConfigError, ModelConfig, node_error

#: Why a run has no response cache (``runtime.cache`` is None), and how to give it one.
NO_CACHE = ("this run has no response cache (it was run with store=False); run it with a "
            "store (the default, or store='runs.db'), whose file keeps the cached replies")

@dataclass(slots=True)
class Call:
    """A finished model call with what the trace needs to know about it."""

    route: Route
    response: ChatResponse
    priced: Priced
    latency: float
    #: Seconds to the first streamed piece (text, reasoning or tool call); None if none came.
    ttft: float | None
    cache_hit: bool = False
    #: The cost the call would have had, when a cache hit spared it.
    cost_saved: float = 0.0
    note: str = ""

    @property
    def usage_dict(self) -> dict[str, Any]:
        """Dify's ``usage`` output, plus latency, time to first token and flags. An unknown
        price is None: the output is JSON, which has no NaN."""
        usage, cost = self.response.usage, self.priced.cost
        data: dict[str, Any] = {
            "prompt_tokens": usage.prompt_tokens,
            "prompt_price": finite(cost.prompt),
            "completion_tokens": usage.completion_tokens,
            "completion_price": finite(cost.completion),
            "total_tokens": usage.total_tokens,
            "total_price": finite(cost.total),
            "currency": cost.currency,
            "latency": round(self.latency, 6),
            "time_to_first_token": None if self.ttft is None else round(self.ttft, 6),
            "estimated": usage.estimated,
        }
        if self.cache_hit:
            data["cache_hit"] = True
        return data

    def node_usage(self) -> Usage:
        usage = self.response.usage
        if self.cache_hit:
            # Nothing was spent: the reply came from the cache.
            return Usage(model=self.route.id, currency=self.priced.cost.currency)
        return Usage(prompt_tokens=usage.prompt_tokens,
                     completion_tokens=usage.completion_tokens,
                     total_tokens=usage.total_tokens, cost=self.priced.cost.total,
                     currency=self.priced.cost.currency, model=self.route.id,
                     estimated=usage.estimated)

    def metadata(self) -> dict[str, Any]:
        """What the node execution's metadata records about the call."""
        usage, cost = self.response.usage, self.priced.cost
        data: dict[str, Any] = {
            "model": self.route.id,
            "total_tokens": 0 if self.cache_hit else usage.total_tokens,
            "total_price": 0.0 if self.cache_hit else finite(cost.total),
            "currency": cost.currency,
            "latency": round(self.latency, 6),
            "time_to_first_token": None if self.ttft is None else round(self.ttft, 6),
            "usage_estimated": usage.estimated,
            **self.priced.as_dict(),
        }
        if usage.estimated:
            from cellwire.services.llm.tokens import method

            data["token_count_method"] = method()
        if self.cache_hit:
            data.update(cache_hit=True, cost_saved=self.cost_saved,
                        tokens_saved=usage.total_tokens)
        return data


async def invoke(ctx: NodeContext, route: Route, request: ChatRequest, *, cache: bool = False,
                 reasoning_format: str = "tagged", stream: bool = True,
                 final: bool = True) -> Call:
    """Call ``route`` with ``request`` for the node in ``ctx``: from the response cache
    (``runtime.cache``) when it is on (``cache``, or ``runtime.cache_all``) and holds the
    reply, else streamed from the provider (to the run's stream when ``stream``); usage
    estimated when the server sent none; priced by the router."""
    router = router_of(ctx)
    wanted = cache or ctx.runtime.cache_all
    store = ctx.runtime.cache if wanted else None
    note = f"cache: {NO_CACHE}, so replies are not cached" if wanted and store is None else ""
    key = cache_key(route.provider.name, request) if store is not None else ""
    clock = ctx.runtime.clock
    t0 = clock.monotonic()
    if store is not None:
        cached = await ctx.to_thread(store.get, key)
        if cached is not None:
            latency = clock.monotonic() - t0
            if stream and cached.text:
                await ctx.stream(cached.text, selector=(ctx.node.id, "text"))
                if final:
                    await ctx.stream("", selector=(ctx.node.id, "text"), is_final=True)
            priced = router.priced(route, cached.usage)
            return Call(route, cached, priced, latency, latency, cache_hit=True,
                        cost_saved=priced.cost.total)
    response, ttft = await _call(ctx, route, request, reasoning_format, stream=stream,
                                 final=final)
    latency = clock.monotonic() - t0
    if response.usage.estimated:
        # The server sent no usage: count it with the documented tokenizer, off the loop.
        response.usage = await ctx.to_thread(estimate_usage, request.messages, response)
    if store is not None:
        await ctx.to_thread(store.put, key, route.provider.name, response)
    return Call(route, response, router.priced(route, response.usage), latency,
                None if ttft is None else ttft - t0, note=note)


def finite(value: float) -> float | None:
    """``value``, or None for NaN (an unknown price): what a JSON document can hold."""
    return None if math.isnan(value) else value


def router_of(ctx: NodeContext) -> LLMService:
    # Built lazily, so a runtime made before CELLWIRE_DEFAULT_MODEL was set still sees it.
    return ctx.runtime.llm if ctx.runtime.llm is not None else default_router()


def route_for(ctx: NodeContext, model: ModelConfig) -> Route:
    """The provider and model a node's ``model{provider, name}`` resolves to in this run."""
    override = ctx.runtime.model_override
    router = router_of(ctx)
    try:
        if not override and not model.name:
            # A node without a model of its own runs on the default model (the one `make lab`
            # sets up, CELLWIRE_DEFAULT_MODEL, or a config file's `default:`).
            default = getattr(router, "default", None)
            if not default:
                raise LLMConfigError(
                    "no model is set, and there is no default model", field="model.name",
                    hint=f"set the node's model (e.g. --model openai/gpt-4o-mini), or a default: "
                         f"{DEFAULT_MODEL_ENV}=provider/model (make lab sets one), or run with "
                         "model='scripted/echo'")
            return router.resolve_config(*split_model(default))
        return router.resolve_config(model.provider, model.name, override=override)
    except ProviderError as exc:
        shown = override or "/".join(p for p in (model.provider, model.name) if p)
        raise node_error(exc, shown) from None

async def _call(ctx: NodeContext, route: Route, request: ChatRequest, reasoning_format: str,
                *, stream: bool = True, final: bool = True) -> tuple[ChatResponse, float | None]:
    """Stream the reply (to the run's event stream when ``stream``) and collect it; returns
    it with the clock reading at its first piece."""
    selector = (ctx.node.id, "text")
    accumulator = ChatAccumulator()
    clock = ctx.runtime.clock
    first: float | None = None
    # Tagged mode streams reasoning inside <think> tags, as the final text holds it.
    tagged = reasoning_format == "tagged"
    thinking = False
    try:
        async for chunk in route.provider.stream(request):
            accumulator.add(chunk)
            if first is None and _has_content(chunk):
                first = clock.monotonic()
            if not stream:
                continue
            if tagged and chunk.reasoning:
                if not thinking:
                    thinking = True
                    await ctx.stream("<think>\n", selector=selector)
                await ctx.stream(chunk.reasoning, selector=selector)
            if chunk.text:
                if thinking:
                    thinking = False
                    await ctx.stream("\n</think>\n", selector=selector)
                await ctx.stream(chunk.text, selector=selector)
    except ProviderError as exc:
        raise node_error(exc, route.id) from None
    if stream:
        if thinking:
            await ctx.stream("\n</think>\n", selector=selector)
        if final:
            await ctx.stream("", selector=selector, is_final=True)
    return accumulator.response(route.id, request.messages), first


def _has_content(chunk: ChatChunk) -> bool:
    return bool(chunk.text or chunk.reasoning or chunk.tool_calls)

