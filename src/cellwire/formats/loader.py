"""``load(path)``: read a workflow file in any format cellwire knows, found by its keys."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cellwire.model import Problem, Workflow, WorkflowError
from cellwire.model.yaml12 import parse_yaml, read_text
from cellwire.services.trust import is_trusted

from .native import dump, load_native


def is_native(data: Mapping[str, Any]) -> bool:
    return "cellwire" in data


def is_dify(data: Mapping[str, Any]) -> bool:
    # Chat, agent-chat and completion apps have a model_config instead of a workflow.
    return (("workflow" in data or "model_config" in data) and "app" in data
            or data.get("kind") == "app")


def load_dify(data: Mapping[str, Any], source: str | None = None) -> Workflow:
    """Hand a Dify DSL document to :mod:`cellwire.formats.dify`, when it is installed."""
    try:
        from cellwire.formats import dify
    except ModuleNotFoundError as exc:
        if exc.name != "cellwire.formats.dify":
            raise
        raise WorkflowError(
            [Problem(None, None, "this is a Dify DSL file, and this cellwire cannot import "
                     "Dify DSL yet", "upgrade cellwire, or convert the file to the native "
                     "format (cellwire: 1)")],
            f"{source or 'the document'}: cannot be loaded",
        ) from None
    return dify.load_dify(data, source=source)


#: Format name, how to recognise its parsed document, how to load it. First match wins.
FORMATS: list[tuple[str, Callable[[Mapping[str, Any]], bool],
                    Callable[[Mapping[str, Any], str | None], Workflow]]] = [
    ("native", is_native, load_native),
    ("dify", is_dify, load_dify),
]


def detect_format(data: Any) -> str | None:
    """The name of the format ``data`` (a parsed document) is in, or None."""
    if isinstance(data, Mapping):
        for name, matches, _ in FORMATS:
            if matches(data):
                return name
    return None


def load_data(data: Any, source: str | None = None) -> Workflow:
    """A :class:`Workflow` from a parsed document in any known format."""
    name = detect_format(data)
    for format_name, _, loader in FORMATS:
        if format_name == name:
            return loader(data, source)
    raise WorkflowError(
        [Problem(None, None, "not a workflow file in any format cellwire knows",
                 "a native file starts with 'cellwire: 1'; a Dify DSL file has 'app:' and "
                 "'workflow:' (or 'model_config:') keys")],
        f"{source or 'the document'}: cannot be loaded",
    )


def load(path: str | Path, *, trusted: bool | None = None) -> Workflow:
    """Load the workflow file at ``path`` (native YAML or Dify DSL, found by its contents).

    A file's code is untrusted (:attr:`Workflow.trusted` is False: code nodes run in the
    sandbox) unless the user trusted these exact contents (``cellwire trust FILE``) or passes
    ``trusted=True``; ``trusted=False`` sandboxes even a trusted file.

    Raises ``OSError`` when the file cannot be read and :class:`WorkflowError`, naming the
    file, when it is not a valid workflow.
    """
    source = str(path)
    text = read_text(path)
    workflow = load_data(parse_yaml(text, source), source)
    return workflow.mark_origin(source, trusted=is_trusted(text) if trusted is None else trusted)


def load_checked(path: str | Path, *, trusted: bool | None = None
                 ) -> tuple[Workflow, list[Problem]]:
    """:func:`load`, and every problem the file has that does not stop it loading: warnings
    (what Dify would import but a run treats specially, what cannot run here) and, for a
    native file, the errors :func:`~cellwire.model.validate` finds."""
    from cellwire.model.validate import validate

    from .runnable import cannot_run

    source = str(path)
    text = read_text(path)
    data = parse_yaml(text, source)
    if detect_format(data) == "dify":
        from cellwire.formats import dify

        result = dify.import_dify(data, source=source)
        workflow, problems = result.workflow, list(result.problems)
    else:
        workflow = load_data(data, source)
        problems = validate(workflow)
        if not any(p.level == "error" for p in problems):
            problems += [problem for problem, _ in cannot_run(workflow)]
    workflow = workflow.mark_origin(source, trusted=is_trusted(text) if trusted is None
                                    else trusted)
    return workflow, problems


def save(workflow: Workflow, path: str | Path) -> Path:
    """Write ``workflow`` to ``path`` as native YAML (secrets left out); returns the path."""
    path = Path(path)
    path.write_text(dump(workflow), encoding="utf-8")
    return path
