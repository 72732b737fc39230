"""What the ``cellwire`` commands share: exit codes, loading a file, reading inputs, failing."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import click

from cellwire.model import Problem, Workflow, WorkflowError

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_NOT_STORED, EXIT_PAUSED = 0, 1, 2, 3, 4

# The textual start-input types: their values are taken as typed, never parsed as JSON.
_TEXT_INPUTS = frozenset({"text-input", "paragraph", "select"})


def fail(lines: Iterable[str], code: int = EXIT_INVALID) -> NoReturn:
    """Print each line to stderr and exit with ``code``."""
    for line in lines:
        click.echo(line, err=True)
    sys.exit(code)


def load_workflow(file: Path, *, trusted: bool | None = None) -> Workflow:
    """Load a workflow file, or exit 2 naming what is wrong with it."""
    from cellwire.formats import load

    try:
        return load(file, trusted=trusted)
    except OSError as exc:
        fail([f"{file}: cannot read the file: {exc.strerror or exc}"])
    except WorkflowError as exc:
        fail(f"{file}: {problem}" for problem in exc.problems)


def load_checked_workflow(file: Path, *, trusted: bool | None = None
                          ) -> tuple[Workflow, list[Problem]]:
    """Load a workflow file with its warnings (what Dify would import but a run treats
    specially, what cannot run here), or exit 2 naming what is wrong with it."""
    from cellwire.formats.loader import load_checked

    try:
        return load_checked(file, trusted=trusted)
    except OSError as exc:
        fail([f"{file}: cannot read the file: {exc.strerror or exc}"])
    except WorkflowError as exc:
        fail(f"{file}: {problem}" for problem in exc.problems)


def report(file: Path, problems: Sequence[Problem]) -> None:
    """With any errors, print every problem and exit 2."""
    if any(p.level == "error" for p in problems):
        fail(f"{file}: {problem}" for problem in problems)


def json_object(text: str | None) -> dict[str, Any]:
    """The JSON object ``--inputs-json`` gives ({} without it); BadParameter otherwise."""
    if text is None:
        return {}
    try:
        given = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--inputs-json")
    if not isinstance(given, dict):
        raise click.BadParameter("must be a JSON object, e.g. '{\"name\": \"Ada\"}'",
                                 param_hint="--inputs-json")
    return given


def key_value(pair: str) -> tuple[str, str]:
    """An ``--input KEY=VALUE`` pair split; BadParameter when it is not one."""
    key, sep, raw = pair.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--input")
    return key, raw


def parse_inputs(workflow: Workflow, pairs: Sequence[str], inputs_json: str | None) -> dict[str, Any]:
    """The start inputs from ``--inputs-json`` and ``--input KEY=VALUE`` pairs
    (``KEY=@PATH`` passes the file at PATH as a Dify file object)."""
    inputs = json_object(inputs_json)
    text_inputs = text_input_names(workflow)
    for pair in pairs:
        key, raw = key_value(pair)
        if raw.startswith("@"):
            inputs[key] = file_input(key, raw[1:])
            continue
        inputs[key] = raw if key in text_inputs else json_or_text(raw)
    return inputs


def file_input(key: str, path: str) -> dict[str, Any]:
    """``--input KEY=@PATH``: the local file as a Dify file object, or exit 2."""
    from cellwire.services.files.objects import FileReadError, local_file

    try:
        return local_file(path)
    except FileReadError as exc:
        raise click.BadParameter(f"{key}=@{path}: {exc}; give the path of a file",
                                 param_hint="--input") from None


def text_input_names(workflow: Workflow) -> set[str]:
    """The start variables whose values are text, never parsed as JSON."""
    names: set[str] = set()
    for node in workflow.children(None):
        if node.type == "start":
            for var in node.config.get("variables") or []:
                if (isinstance(var, dict) and isinstance(var.get("variable"), str)
                        and var.get("type", "text-input") in _TEXT_INPUTS):
                    names.add(var["variable"])
    return names


def json_or_text(raw: str) -> Any:
    """``raw`` parsed as JSON, or ``raw`` itself when it is not JSON."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def format_ms(value: Any) -> str:
    """Milliseconds for people: ``12.3 ms`` or ``1.23 s``; ``-`` when unknown."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.1f} ms"
