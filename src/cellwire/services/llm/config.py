"""Which providers a run can call: from the environment, a config file, or the notebook.

Sources, each overriding the one before:

1. the environment: ``OPENAI_API_KEY`` (+ ``OPENAI_BASE_URL``) makes provider ``openai``;
   ``ANTHROPIC_API_KEY`` (+ ``ANTHROPIC_BASE_URL``) makes ``anthropic``; ``OLLAMA_HOST``
   (``http://127.0.0.1:11434``) makes ``ollama``, a free OpenAI-compatible provider;
   ``CELLWIRE_DEFAULT_MODEL`` names the default model;
2. ``<cellwire home>/providers.yaml``;
3. ``./cellwire.yaml`` (its ``llm:`` section, or the whole file);
4. :func:`configure_provider`, :func:`map_model` and :func:`set_price` in the notebook.

The file shape (both files)::

    providers:
      openai:                        # the name in 'provider/model'
        type: openai                 # openai | anthropic | ollama | scripted
        base_url: https://api.openai.com/v1
        api_key_env: OPENAI_API_KEY  # the variable holding the key; keys are never in files
      lab:
        type: openai
        base_url: http://127.0.0.1:8080/v1
        free: true                   # a local server: its calls cost 0
    models:                          # the model map: Dify names -> provider/model
      langgenius/openai/openai: lab/qwen2.5      # every model of Dify's openai provider
      openai/gpt-4o: openai/gpt-4o-mini           # one model
    default: lab/qwen2.5             # for models no provider serves
    prices:                          # regular expressions over provider/model or model
      lab/.*: {input: 0, output: 0}
      my-model: {input_per_million: 0.5, output_per_million: 1.5}

API keys are read from the environment (or given to :func:`configure_provider`) and kept in
memory only: they are never written to a file, a trace or a repr.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cellwire.model import WorkflowError
from cellwire.model.yaml12 import parse_yaml, read_text

from .base import Provider, ProviderError

PROVIDER_TYPES = ("openai", "anthropic", "ollama", "scripted")
CONFIG_FILE = "providers.yaml"
PROJECT_FILE = "cellwire.yaml"


class ConfigError(ProviderError):
    """A provider configuration that cannot work; names the source and the fix."""


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """One configured provider. ``api_key`` never appears in a repr."""

    name: str
    type: str = "openai"
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    api_key_env: str | None = None
    #: Calls cost 0 (local servers); otherwise prices come from the price table.
    free: bool = False
    #: Where this came from (``env``, a file path, ``notebook``), for error messages.
    source: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)

    def key(self, environ: Mapping[str, str]) -> str | None:
        """The API key: given, or read from ``api_key_env`` now."""
        if self.api_key:
            return self.api_key
        return environ.get(self.api_key_env) if self.api_key_env else None


@dataclass(slots=True)
class ProvidersConfig:
    """Everything the router needs: providers, the model map, the default, user prices."""

    providers: dict[str, ProviderSpec] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)
    default: str | None = None
    prices: dict[str, Any] = field(default_factory=dict)

    def merge(self, other: ProvidersConfig) -> None:
        """Take ``other``'s entries over this one's."""
        self.providers.update(other.providers)
        self.models.update(other.models)
        self.default = other.default or self.default
        self.prices.update(other.prices)


# -- sources ------------------------------------------------------------------------------------


def from_environ(environ: Mapping[str, str]) -> ProvidersConfig:
    """Providers named by the usual variables of the environment."""
    config = ProvidersConfig(default=environ.get("CELLWIRE_DEFAULT_MODEL") or None)
    if environ.get("OPENAI_API_KEY") or environ.get("OPENAI_BASE_URL"):
        config.providers["openai"] = ProviderSpec(
            "openai", "openai", environ.get("OPENAI_BASE_URL") or None,
            api_key_env="OPENAI_API_KEY", source="env")
    if environ.get("ANTHROPIC_API_KEY") or environ.get("ANTHROPIC_BASE_URL"):
        config.providers["anthropic"] = ProviderSpec(
            "anthropic", "anthropic", environ.get("ANTHROPIC_BASE_URL") or None,
            api_key_env="ANTHROPIC_API_KEY", source="env")
    if environ.get("OLLAMA_HOST"):
        config.providers["ollama"] = ProviderSpec(
            "ollama", "ollama", environ["OLLAMA_HOST"], free=True, source="env")
    return config


def from_mapping(data: Any, source: str) -> ProvidersConfig:
    """A config from the file shape (see the module docstring); raises :class:`ConfigError`."""
    if data is None:
        return ProvidersConfig()
    if not isinstance(data, Mapping):
        raise _error(source, "the file must be a mapping with 'providers', 'models', "
                     "'default' and 'prices'")
    config = ProvidersConfig()
    providers = data.get("providers") or {}
    if not isinstance(providers, Mapping):
        raise _error(source, "'providers' must map names to settings")
    for name, spec in providers.items():
        config.providers[str(name).lower()] = _spec(str(name).lower(), spec or {}, source)
    models = data.get("models") or {}
    if not isinstance(models, Mapping):
        raise _error(source, "'models' must map Dify model names to provider/model")
    config.models = {str(k): str(v) for k, v in models.items()}
    default = data.get("default")
    config.default = str(default) if default else None
    prices = data.get("prices") or {}
    if not isinstance(prices, Mapping):
        raise _error(source, "'prices' must map model patterns to {input, output}")
    config.prices = dict(prices)
    return config


def _spec(name: str, spec: Any, source: str) -> ProviderSpec:
    if not isinstance(spec, Mapping):
        raise _error(source, f"provider {name!r}: give a mapping of settings")
    if "api_key" in spec:
        raise _error(source, f"provider {name!r}: an API key does not belong in a file; "
                     "put it in an environment variable and name it with api_key_env")
    kind = str(spec.get("type") or ("openai" if name not in PROVIDER_TYPES else name))
    if kind not in PROVIDER_TYPES:
        raise _error(source, f"provider {name!r}: unknown type {kind!r} "
                     f"(one of {', '.join(PROVIDER_TYPES)})")
    known = {"type", "base_url", "api_key_env", "free"}
    return ProviderSpec(
        name, kind, spec.get("base_url"), api_key_env=spec.get("api_key_env"),
        free=bool(spec.get("free", kind == "ollama")), source=source,
        options={k: v for k, v in spec.items() if k not in known},
    )


def from_file(path: Path) -> ProvidersConfig:
    """The config in ``path``; an empty config when the file does not exist."""
    try:
        # YAML 1.2 like workflow files: a provider or model named `no` or `on` stays a string.
        data = parse_yaml(read_text(path), source=str(path))
    except (FileNotFoundError, NotADirectoryError):
        return ProvidersConfig()
    except OSError as exc:
        raise _error(str(path), f"cannot read it: {exc.strerror or exc}") from None
    except WorkflowError as exc:
        problem = exc.problems[0]
        raise ConfigError(f"{path}: {problem.message}", hint=problem.hint) from None
    if path.name == PROJECT_FILE and isinstance(data, Mapping):
        data = data.get("llm", data if "providers" in data else None)
    return from_mapping(data, str(path))


def _error(source: str, message: str) -> ConfigError:
    return ConfigError(f"{source}: {message}",
                       hint="see docs/llm.md, 'Configuring providers', for the file's shape")


# -- the notebook -----------------------------------------------------------------------------

_session = ProvidersConfig()
_session_lock = threading.Lock()


def configure_provider(name: str, type: str = "openai", *, base_url: str | None = None,
                       api_key: str | None = None, api_key_env: str | None = None,
                       free: bool | None = None, **options: Any) -> None:
    """Add or replace provider ``name`` for the runs of this process.

    ``type`` is ``openai`` (any OpenAI-compatible server), ``anthropic``, ``ollama`` or
    ``scripted``. The key stays in memory; prefer ``api_key_env`` in shared notebooks.
    """
    if type not in PROVIDER_TYPES:
        raise ConfigError(f"unknown provider type {type!r}",
                          hint=f"use one of {', '.join(PROVIDER_TYPES)}")
    spec = ProviderSpec(name.lower(), type, base_url, api_key=api_key, api_key_env=api_key_env,
                        free=type == "ollama" if free is None else free, source="notebook",
                        options=options)
    with _session_lock:
        _session.providers[spec.name] = spec


def map_model(source: str, target: str) -> None:
    """Route ``source`` (``'langgenius/openai/openai'``, ``'openai/gpt-4o'``) to ``target``
    (``'provider/model'`` or a provider name) in the runs of this process."""
    with _session_lock:
        _session.models[source] = target


def set_price(pattern: str, input: float, output: float, *, currency: str = "USD") -> None:
    """Price models matching ``pattern`` (regex over ``provider/model`` or ``model``) at
    ``input`` / ``output`` per token, in the runs of this process."""
    with _session_lock:
        _session.prices[pattern] = {"input": input, "output": output, "currency": currency}


def reset_session() -> None:
    """Forget what :func:`configure_provider`, :func:`map_model` and :func:`set_price` set."""
    global _session
    with _session_lock:
        _session = ProvidersConfig()


def load_config(environ: Mapping[str, str] | None = None, *,
                home: Path | None = None, cwd: Path | None = None) -> ProvidersConfig:
    """The merged configuration of every source, in the order of the module docstring."""
    env = os.environ if environ is None else environ
    config = from_environ(env)
    if home is None:
        from_env = env.get("CELLWIRE_HOME") or os.environ.get("CELLWIRE_HOME")
        home = Path(from_env).expanduser() if from_env else Path.cwd() / ".cellwire"
    config.merge(from_file(home / CONFIG_FILE))
    config.merge(from_file((cwd or Path.cwd()) / PROJECT_FILE))
    with _session_lock:
        session = replace(_session, providers=dict(_session.providers),
                          models=dict(_session.models), prices=dict(_session.prices))
    config.merge(session)
    return config


# -- building providers ----------------------------------------------------------------------

_instances: dict[tuple[Any, ...], Provider] = {}
_instances_lock = threading.Lock()


def build_provider(spec: ProviderSpec, environ: Mapping[str, str] | None = None) -> Provider:
    """The provider ``spec`` describes; one instance (and HTTP pool) per distinct spec."""
    env = os.environ if environ is None else environ
    key = spec.key(env)
    fingerprint = hashlib.sha256((key or "").encode()).hexdigest()
    ident = (spec.name, spec.type, spec.base_url, fingerprint,
             tuple(sorted((k, repr(v)) for k, v in spec.options.items())))
    with _instances_lock:
        found = _instances.get(ident)
        if found is None:
            found = _instances[ident] = _make(spec, key)
        return found


def _make(spec: ProviderSpec, key: str | None) -> Provider:
    options = dict(spec.options)
    if spec.type == "scripted":
        from .scripted import ScriptedProvider

        return ScriptedProvider(name=spec.name)
    if spec.type == "anthropic":
        from .anthropic import AnthropicProvider

        return AnthropicProvider(name=spec.name, base_url=spec.base_url, api_key=key, **options)
    from .openai import OpenAIProvider

    base_url = spec.base_url
    if spec.type == "ollama":
        host = (base_url or "http://127.0.0.1:11434").rstrip("/")
        if not host.startswith(("http://", "https://")):
            host = f"http://{host}"
        base_url = host if host.endswith("/v1") else f"{host}/v1"
        key = key or "ollama"  # Ollama ignores the key, but clients must send one.
    if base_url:
        options["base_url"] = base_url
    return OpenAIProvider(name=spec.name, api_key=key, **options)
