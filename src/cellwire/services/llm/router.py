"""Which provider answers for a model: ``provider/model`` names, Dify model identities, a map.

A node names its model the way Dify does, ``model{provider: 'langgenius/openai/openai',
name: 'gpt-4o'}``. The router turns that into a registered :class:`Provider` and the
provider's own model name, in this order:

1. the run's override (``arun(model='scripted/echo')``) routes every LLM node to one model;
2. the model map: ``'openai/gpt-4o'`` or ``'openai'`` mapped to ``'local/llama3'`` or ``'local'``;
3. a provider registered under the Dify provider's short name (``openai``);
4. the default model, from ``CELLWIRE_DEFAULT_MODEL`` (e.g. ``scripted/echo``) in
   :func:`default_router`;
5. otherwise an :class:`UnknownModelError` that says how to configure one.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from .base import Cost, Provider, TokenUsage, UnknownModelError
from .prices import Priced, PriceTable

#: Names a ``provider/model`` that every model without a provider of its own routes to.
DEFAULT_MODEL_ENV = "CELLWIRE_DEFAULT_MODEL"


class Route(NamedTuple):
    """A resolved model: the provider to call and the model name to send it."""

    provider: Provider
    model: str

    @property
    def id(self) -> str:
        """``provider/model``, as traces and usage report it."""
        return f"{self.provider.name}/{self.model}"


def split_model(name: str) -> tuple[str, str]:
    """``'openai/gpt-4o'`` -> ``('openai', 'gpt-4o')``; the model part may hold more slashes."""
    provider, sep, model = name.strip().partition("/")
    if not sep or not provider or not model:
        raise UnknownModelError(
            f"model {name!r} does not name a provider",
            model=name,
            hint="write it as provider/model, e.g. 'scripted/echo'",
        )
    return provider, model


def provider_key(provider: str) -> str:
    """Dify's plugin identity ``'langgenius/openai/openai'`` -> ``'openai'``."""
    return provider.strip().rsplit("/", 1)[-1].lower()


class LLMRouter:
    """Providers by name, a model map, and the default model for everything else."""

    def __init__(self, providers: Iterable[Provider] | Mapping[str, Provider] = (), *,
                 model_map: Mapping[str, str] | None = None, default: str | None = None,
                 prices: PriceTable | None = None):
        self._providers: dict[str, Provider] = {}
        #: Prices for :meth:`priced`; the scripted test double and ``free`` providers cost 0.
        self.prices = prices if prices is not None else PriceTable()
        items = providers.items() if isinstance(providers, Mapping) else (
            (p.name, p) for p in providers
        )
        for name, provider in items:
            self.register(provider, name)
        self._map: dict[str, str] = {}
        # Keys: 'openai', 'openai/gpt-4o', Dify's 'langgenius/openai/openai' (three parts)
        # or that identity followed by '/gpt-4o'.
        for source, target in (model_map or {}).items():
            parts = source.strip().split("/")
            split = 3 if len(parts) >= 3 else 1
            provider, model = "/".join(parts[:split]), "/".join(parts[split:])
            self.map(provider, target, model=model or None)
        self.default = default or None

    # -- configuring ---------------------------------------------------------------------

    def register(self, provider: Provider, name: str | None = None) -> Provider:
        """Serve ``name`` (default: ``provider.name``) with ``provider``; replaces any other."""
        self._providers[(name or provider.name).lower()] = provider
        return provider

    def map(self, provider: str, target: str, *, model: str | None = None) -> None:
        """Route a provider's models (or, with ``model``, one of them) to ``target``.

        ``provider`` is a short name (``'openai'``) or Dify's plugin identity
        (``'langgenius/openai/openai'``). ``target`` is ``'provider/model'``, or a provider
        name to keep the model's own name.
        """
        key = provider_key(provider) + (f"/{model}" if model else "")
        self._map[key] = target.strip()

    @property
    def names(self) -> list[str]:
        """The registered provider names."""
        return sorted(self._providers)

    def provider(self, name: str) -> Provider:
        found = self._providers.get(provider_key(name))
        if found is None:
            raise UnknownModelError(
                f"no provider {name!r} is registered "
                f"(registered: {', '.join(self.names) or 'none'})",
                provider=name,
                hint=f"register it with router.register(provider) or use one of {self.names}",
            )
        return found

    # -- resolving -----------------------------------------------------------------------

    def resolve(self, name: str, *, override: str | None = None,
                fallback: bool = True) -> Route:
        """The route for ``'provider/model'`` (or for ``override`` when it is set)."""
        provider, model = split_model(name)
        return self.resolve_config(provider, model, override=override, fallback=fallback)

    def resolve_config(self, provider: str, model: str, *, override: str | None = None,
                       fallback: bool = True) -> Route:
        """The route for a Dify model config ``{provider, name}``; see the module docstring.
        ``fallback=False``: a provider that is neither registered nor mapped is an error, not
        the default model (a rerank model is no chat model)."""
        if override:
            target_provider, target_model = split_model(override)
            return Route(self.provider(target_provider), target_model)
        key = provider_key(provider) if provider else ""
        target = self._map.get(f"{key}/{model}") or self._map.get(key)
        if target:
            if "/" in target:
                target_provider, target_model = split_model(target)
                return Route(self.provider(target_provider), target_model)
            return Route(self.provider(target), model)
        found = self._providers.get(key)
        if found is not None:
            return Route(found, model)
        if self.default and fallback:
            target_provider, target_model = split_model(self.default)
            if provider_key(target_provider) not in self._providers:
                raise UnknownModelError(
                    f"the default model {self.default!r} names provider {target_provider!r}, "
                    "which is not registered",
                    provider=target_provider, model=self.default,
                    hint=f"set {DEFAULT_MODEL_ENV} to one of {self.names} followed by /model",
                )
            return Route(self._providers[provider_key(target_provider)], target_model)
        shown = f"{key}/{model}" if key else model
        raise UnknownModelError(
            f"no provider is configured for model {shown!r} "
            f"(registered providers: {', '.join(self.names) or 'none'})",
            provider=key or None,
            model=shown,
            hint=(
                f"route it with runtime.llm.map({key or 'provider'!r}, 'scripted/echo') or "
                f"runtime.llm.register(<provider named {key or '...'!r}>), run with "
                f"model='scripted/echo', or set {DEFAULT_MODEL_ENV}=scripted/echo"
            ),
        )

    def price(self, route: Route, usage: TokenUsage) -> Cost:
        """What a call cost; NaN (never 0) for a model without a known price."""
        return self.priced(route, usage).cost

    def priced(self, route: Route, usage: TokenUsage) -> Priced:
        """What a call cost and where the price came from (see :mod:`.prices`)."""
        from .scripted import ScriptedProvider

        if isinstance(route.provider, ScriptedProvider):
            # A test double: its tokens are words and cost nothing by definition.
            return Priced(Cost(), f"free:{route.provider.name}")
        return self.prices.price(route.provider.name, route.model, usage)

    def max_input_tokens(self, route: Route) -> int | None:
        """The input context of the routed model in tokens: a local model's own window, else
        the price table's ``max_input_tokens``; None when unknown."""
        size = getattr(route.provider, "n_ctx", None)
        if isinstance(size, int) and not isinstance(size, bool) and size > 0:
            return size
        return self.prices.max_input_tokens(route.provider.name, route.model)

    async def models(self) -> list[str]:
        """Every ``provider/model`` the registered providers report."""
        found: list[str] = []
        for name, provider in sorted(self._providers.items()):
            found.extend(f"{name}/{model}" for model in await provider.models())
        return found


def default_router(environ: Mapping[str, str] | None = None) -> LLMRouter:
    """The router a run gets: the scripted test provider, every provider configured in the
    environment, the config files and the notebook (:mod:`.config`), their model map, the
    default model (``CELLWIRE_DEFAULT_MODEL`` or ``default:``) and user prices."""
    from .config import build_provider, load_config
    from .local import LocalProvider
    from .scripted import ScriptedProvider

    env = os.environ if environ is None else environ
    config = load_config(env)
    # A model on this machine costs nothing; `local/...` without the extra fails at the node
    # with the install hint, not with "no provider 'local'".
    prices = PriceTable(free={"scripted", "local", *(s.name for s in config.providers.values()
                                                     if s.free)})
    prices.update(config.prices)
    router = LLMRouter([ScriptedProvider(), LocalProvider()], model_map=config.models,
                       default=config.default, prices=prices)
    for spec in config.providers.values():
        router.register(build_provider(spec, env), spec.name)
    return router
