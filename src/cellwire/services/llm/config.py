"""Which providers a run can call: from your config folder, the environment, the notebook, and
a project folder's file only when you opt in.

Sources, each overriding the one before:

1. your config file, ``providers.yaml`` in your configuration folder
   (:func:`cellwire.store.home.config_dir`: ``$CELLWIRE_CONFIG_DIR``, else
   ``$XDG_CONFIG_HOME/cellwire``, else ``~/.config/cellwire``);
2. the environment, for the settings it names: ``OPENAI_API_KEY`` (+ ``OPENAI_BASE_URL``)
   makes provider ``openai``; ``ANTHROPIC_API_KEY`` (+ ``ANTHROPIC_BASE_URL``) makes
   ``anthropic``; ``OLLAMA_HOST`` (``http://127.0.0.1:11434``) makes ``ollama``, a free
   OpenAI-compatible provider; ``CELLWIRE_DEFAULT_MODEL`` names the default model. A base URL
   set here wins over the file's; a provider the file defines keeps its other settings;
3. a project folder's file, ``./cellwire.yaml`` (its ``llm:`` section, or the whole file) or
   ``./.cellwire/providers.yaml``, only when you opt in (``CELLWIRE_PROJECT_CONFIG``, or
   ``load_config(project=...)``), and even then it never decides where your keys go (see
   :func:`admit_project`); a project file you did not opt in to is named in a warning, once;
4. :func:`configure_provider`, :func:`map_model` and :func:`set_price` in the notebook.

The file shape (every file)::

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
memory only: they are never written to a file, a trace or a repr. A project file may carry
its own ``api_key`` (one that is no secret of yours, e.g. a local server's placeholder).
"""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cellwire.model import WorkflowError
from cellwire.model.yaml12 import parse_yaml, read_text
from cellwire.store.home import config_dir as user_config_folder

from .base import Provider, ProviderError

PROVIDER_TYPES = ("openai", "anthropic", "ollama", "scripted")
CONFIG_FILE = "providers.yaml"
PROJECT_FILE = "cellwire.yaml"
#: Opts in to a project folder's provider file: 1 (yes, true, on), ``trust``, or a file's path.
PROJECT_ENV = "CELLWIRE_PROJECT_CONFIG"
_YES = ("1", "yes", "true", "on")
_NO = ("", "0", "no", "false", "off")
#: The settings of a provider that decide where its key is sent.
_ROUTE_OPTIONS = ("proxy", "verify", "cert")
_SETTINGS = ("type", "base_url", "api_key", "api_key_env", "free")


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
    #: The settings its source wrote (a file's keys): what it overrides when merged.
    given: frozenset[str] = field(default=frozenset(), repr=False)

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

#: provider -> (its key's variable, its base URL's variable), as the providers' SDKs read them.
_ENV_PROVIDERS = {"openai": ("OPENAI_API_KEY", "OPENAI_BASE_URL"),
                  "anthropic": ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"),
                  "ollama": (None, "OLLAMA_HOST")}


def apply_environ(config: ProvidersConfig, environ: Mapping[str, str]) -> None:
    """Lay the usual variables of the environment over ``config``: a base URL or default
    model set there wins; a provider the config defines keeps its other settings and takes
    the variable's key when it names none."""
    config.default = environ.get("CELLWIRE_DEFAULT_MODEL") or config.default
    for name, (key_env, url_env) in _ENV_PROVIDERS.items():
        url = environ.get(url_env) or None
        if not (url or (key_env and environ.get(key_env))):
            continue
        mine = config.providers.get(name)
        if mine is None:
            config.providers[name] = ProviderSpec(name, name, url, api_key_env=key_env,
                                                  free=name == "ollama", source="env")
        else:
            config.providers[name] = replace(mine, base_url=url or mine.base_url,
                                             api_key_env=mine.api_key_env or key_env)


def from_mapping(data: Any, source: str, *, keys: bool = False) -> ProvidersConfig:
    """A config from the file shape (see the module docstring); raises :class:`ConfigError`.
    ``keys`` lets providers carry an ``api_key`` (a project file's own)."""
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
        config.providers[str(name).lower()] = _spec(str(name).lower(), spec or {}, source, keys)
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


def _spec(name: str, spec: Any, source: str, keys: bool) -> ProviderSpec:
    if not isinstance(spec, Mapping):
        raise _error(source, f"provider {name!r}: give a mapping of settings")
    if "api_key" in spec and not keys:
        raise _error(source, f"provider {name!r}: an API key does not belong in a file; "
                     "put it in an environment variable and name it with api_key_env")
    kind = str(spec.get("type") or ("openai" if name not in PROVIDER_TYPES else name))
    if kind not in PROVIDER_TYPES:
        raise _error(source, f"provider {name!r}: unknown type {kind!r} "
                     f"(one of {', '.join(PROVIDER_TYPES)})")
    key = spec.get("api_key")
    return ProviderSpec(
        name, kind, spec.get("base_url"), api_key=str(key) if key else None,
        api_key_env=spec.get("api_key_env"), free=bool(spec.get("free", kind == "ollama")),
        source=source, options={k: v for k, v in spec.items() if k not in _SETTINGS},
        given=frozenset(str(k) for k in spec),
    )


def from_file(path: Path, *, keys: bool = False) -> ProvidersConfig:
    """The config in ``path``; an empty config when the file does not exist. ``keys``: see
    :func:`from_mapping`."""
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
    return from_mapping(data, str(path), keys=keys)


def _error(source: str, message: str) -> ConfigError:
    return ConfigError(f"{source}: {message}",
                       hint="see docs/llm.md, 'Configuring providers', for the file's shape")


# -- the notebook -----------------------------------------------------------------------------

_session = ProvidersConfig()
_session_lock = threading.Lock()
#: Changes made to ``_session`` so far (see :func:`config_stamp`).
_session_changes = 0


def _changed_session() -> None:
    global _session_changes
    _session_changes += 1


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
        _changed_session()


def map_model(source: str, target: str) -> None:
    """Route ``source`` (``'langgenius/openai/openai'``, ``'openai/gpt-4o'``) to ``target``
    (``'provider/model'`` or a provider name) in the runs of this process."""
    with _session_lock:
        _session.models[source] = target
        _changed_session()


def set_price(pattern: str, input: float, output: float, *, currency: str = "USD") -> None:
    """Price models matching ``pattern`` (regex over ``provider/model`` or ``model``) at
    ``input`` / ``output`` per token, in the runs of this process."""
    with _session_lock:
        _session.prices[pattern] = {"input": input, "output": output, "currency": currency}
        _changed_session()


def reset_session() -> None:
    """Forget what :func:`configure_provider`, :func:`map_model` and :func:`set_price` set."""
    global _session
    with _session_lock:
        _session = ProvidersConfig()
        _changed_session()


def project_files(cwd: Path, user_file: Path) -> list[Path]:
    """The provider files of the project folder ``cwd`` (in order, the last wins), other
    than your own config file."""
    found = [cwd / ".cellwire" / CONFIG_FILE, cwd / PROJECT_FILE]
    mine = user_file.resolve()
    return [path for path in found if path.resolve() != mine]


def _opt_in(environ: Mapping[str, str], project: bool | str | os.PathLike[str] | None,
            trust: bool | None, cwd: Path, user_file: Path) -> tuple[list[Path], bool]:
    """(the project files to read, whether they may route keys), from the arguments, else
    from ``CELLWIRE_PROJECT_CONFIG``."""
    if project is None:
        raw = (environ.get(PROJECT_ENV) or os.environ.get(PROJECT_ENV) or "").strip()
        word = raw.lower()
        if word in _NO:
            return [], False
        if word == "trust":
            project, trust = True, True if trust is None else trust
        else:
            project = True if word in _YES else raw
    if project is False:
        return [], False
    if project is True:
        return project_files(cwd, user_file), bool(trust)
    path = cwd / Path(project)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file, named as the project's provider file",
                          hint=f"check the path given to {PROJECT_ENV} (or project=), or "
                               "set it to 1 to read the current folder's files")
    return [path], bool(trust)


def _route(spec: ProviderSpec) -> tuple[Any, ...]:
    """Where a provider sends its key: type, base URL and how requests travel."""
    url = spec.base_url.rstrip("/") if spec.base_url else None
    return (spec.type, url, *(repr(spec.options.get(k)) for k in _ROUTE_OPTIONS))


def _overlay(base: ProviderSpec, top: ProviderSpec) -> ProviderSpec:
    """``top``'s given settings over ``base``'s."""
    changes = {name: getattr(top, name) for name in _SETTINGS if name in top.given}
    return replace(base, **changes, options={**base.options, **top.options},
                   source=top.source, given=base.given | top.given)


def admit_project(config: ProvidersConfig, project: ProvidersConfig,
                  environ: Mapping[str, str], *, trusted: bool = False) -> None:
    """Merge a project file's ``project`` into ``config`` (yours: your file and the
    environment), refusing what would send one of your keys where you did not.

    Unless ``trusted`` (you confirmed the file: ``CELLWIRE_PROJECT_CONFIG=trust``), a
    project provider may not name an ``api_key_env`` (which of your variables is sent as a
    key is yours to say), and may not change the type, base URL, proxy or TLS settings of
    a provider that has a key of yours, unless it brings its own ``api_key``. Everything
    else applies: keyless providers (local servers), its own keys, the model map, the
    default model, prices. Raises :class:`ConfigError` naming the file and the fix.
    """
    for name, spec in project.providers.items():
        mine = config.providers.get(name)
        merged = spec if mine is None else _overlay(mine, spec)
        if not trusted:
            if "api_key_env" in spec.given:
                raise _refused(spec, f"provider {name!r} names api_key_env "
                               f"{spec.api_key_env!r}: a project file does not choose which of "
                               "your environment variables is sent as a key")
            if (mine is not None and "api_key" not in spec.given and mine.key(environ)
                    and _route(merged) != _route(mine)):
                raise _refused(spec, f"provider {name!r} would send your key "
                               f"({mine.api_key_env or 'from ' + mine.source}) to "
                               f"{merged.base_url or 'the ' + merged.type + ' default'} instead "
                               f"of {mine.base_url or 'the ' + mine.type + ' default'}")
        config.providers[name] = merged
    config.models.update(project.models)
    config.default = project.default or config.default
    config.prices.update(project.prices)


def _refused(spec: ProviderSpec, why: str) -> ConfigError:
    return ConfigError(
        f"{spec.source}: {why}",
        hint=f"define that provider in your own {CONFIG_FILE} (in $CELLWIRE_CONFIG_DIR or "
             "~/.config/cellwire) or the environment, or "
             f"give it its own api_key in the project file; if you trust this file, set "
             f"{PROJECT_ENV}=trust")


_ignored: set[Path] = set()


def _warn_ignored(path: Path) -> None:
    """Say once per process that a project file with provider settings is not read."""
    resolved = path.resolve()
    if resolved in _ignored or not path.is_file():
        return
    _ignored.add(resolved)
    try:
        found = from_file(path, keys=True)
    except ConfigError:
        found = ProvidersConfig(default="?")  # unreadable, but meant as provider settings
    if found.providers or found.models or found.default or found.prices:
        warnings.warn(
            f"cellwire ignores the provider settings in {path}: a project folder's file is "
            f"read only when you opt in ({PROJECT_ENV}=1, or {PROJECT_ENV}=trust to let it "
            "route your keys); see docs/security.md", UserWarning, stacklevel=4)


def load_config(environ: Mapping[str, str] | None = None, *, config_dir: Path | None = None,
                cwd: Path | None = None, project: bool | str | os.PathLike[str] | None = None,
                trust_project: bool | None = None) -> ProvidersConfig:
    """The merged configuration of every source, in the order of the module docstring.

    ``config_dir`` is your configuration folder (default
    :func:`cellwire.store.home.config_dir`); ``project``
    opts in to the project folder's files (True), or to one file (its path), or out (False);
    None asks ``CELLWIRE_PROJECT_CONFIG``. ``trust_project`` lets the project file route
    your keys (see :func:`admit_project`); None: only with ``CELLWIRE_PROJECT_CONFIG=trust``.
    """
    env = os.environ if environ is None else environ
    user_file = (config_dir or user_config_folder()) / CONFIG_FILE
    config = from_file(user_file)
    apply_environ(config, env)
    folder = cwd or Path.cwd()
    files, trusted = _opt_in(env, project, trust_project, folder, user_file)
    for path in files:
        admit_project(config, from_file(path, keys=True), env, trusted=trusted)
    if not files:
        for path in project_files(folder, user_file):
            _warn_ignored(path)
    with _session_lock:
        session = replace(_session, providers=dict(_session.providers),
                          models=dict(_session.models), prices=dict(_session.prices))
    config.merge(session)
    return config


_read: tuple[Any, list[Path]] | None = None


def config_stamp(environ: Mapping[str, str] | None = None) -> tuple[Any, ...]:
    """A value that differs whenever :func:`load_config` (its defaults but ``environ``) could
    return something else: the environment, the working folder, the notebook's own settings,
    and the size and modification time of each file it reads or would read once created.
    A tenth of the cost of loading it: runs check it before each start."""
    global _read
    env = os.environ if environ is None else environ
    # os.environ's own bytes (CPython's): a copy costs a fraction of decoding every item.
    raw = getattr(env, "_data", None)
    where = (tuple(raw.items() if isinstance(raw, dict) else env.items()), os.getcwd())
    found = _read
    if found is None or found[0] != where:
        user_file = user_config_folder() / CONFIG_FILE
        folder = Path.cwd()
        try:
            files, _ = _opt_in(env, None, None, folder, user_file)
        except ConfigError:
            files = []  # load_config says so itself
        found = _read = (where, [user_file, *(files or project_files(folder, user_file))])
    return where, _session_changes, tuple(_file_stamp(path) for path in found[1])


def _file_stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


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
