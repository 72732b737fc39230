"""code: a ``main(**inputs)`` run, with its returned dict checked.

Where it runs is the run's choice: the runtime's code executor (``runtime.code``, the
sandbox for code that came from a file or a request) when it has one, else the kernel's own
interpreter: the code of the user's own cells is trusted. In the kernel it runs on a daemon
thread, so the event loop stays free, and a node timeout or a stopped run interrupts it
(:mod:`cellwire.engine.interruptible`); whatever it raises, ``SystemExit`` included, fails
the node. Outputs are checked against the declared ``outputs`` with Dify's limits either way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import lru_cache
from types import CodeType
from typing import Any, Literal

from pydantic import Field

from cellwire.engine import NodeContext, NodeError, NodeResult
from cellwire.engine.interruptible import run_interruptible
from cellwire.engine.services import CodeFailed
from cellwire.engine.usercode import Failure, UserCodeError, call_main, compile_main
from cellwire.model import NodeConfig, node_type

#: Dify's output limits (graphon defaults): longest string, deepest nesting, number range.
CODE_MAX_STRING_LENGTH = 400_000
CODE_MAX_DEPTH = 5
CODE_MAX_NUMBER = 2**63 - 1
CODE_MIN_NUMBER = -(2**63)

OutputType = Literal[
    "string", "number", "object", "boolean",
    "array[string]", "array[number]", "array[object]", "array[boolean]",
]

_PYTHON = ("python3", "python")


class CodeOutput(NodeConfig):
    type: OutputType
    children: dict[str, CodeOutput] | None = None


class CodeVariable(NodeConfig):
    variable: str
    value_selector: list[str] = Field(default_factory=list)


class CodeConfig(NodeConfig):
    code_language: str = "python3"
    code: str = ""
    variables: list[CodeVariable] = Field(default_factory=list)
    outputs: dict[str, CodeOutput] = Field(default_factory=dict)


def _declared(config: CodeConfig) -> list[str] | None:
    # No declared outputs: whatever main() returns passes, so the names are unknown.
    return list(config.outputs) or None


@node_type("code", config=CodeConfig, outputs=_declared, pure=True)
async def run(ctx: NodeContext) -> NodeResult:
    """Call ``main(**variables)`` on a thread; its dict, checked, is the node's outputs."""
    config: CodeConfig = ctx.config
    language = config.code_language.lower()
    inputs = {
        v.variable: ctx.pool.get(v.value_selector, None) if v.value_selector else None
        for v in config.variables
    }
    executor = ctx.runtime.code
    if executor is not None:
        try:
            ran = await executor.run(language, config.code, inputs, timeout=ctx.node.max_time)
        except CodeFailed as exc:
            raise NodeError(str(exc), field=exc.field, hint=exc.hint or "",
                            error_type=exc.error_type) from None
        outputs = check_outputs(ran.outputs, config.outputs)
        return NodeResult(inputs=inputs, outputs=outputs,
                          process_data={"stdout": ran.stdout} if ran.stdout else {})
    if language in ("javascript", "nodejs"):
        raise NodeError(
            "JavaScript runs only in the sandbox, and this run has none", field="code_language",
            hint="run it with a code executor (Runtime(code=...)), or port main() to Python "
                 "and set code_language: python3; `function main({a}) { return {r: a} }` "
                 "becomes `def main(a): return {'r': a}`",
        )
    if language not in _PYTHON:
        raise NodeError(f"unknown code_language {config.code_language!r}", field="code_language",
                        hint="use python3")
    compiled = compile_code(config.code)
    result = await run_interruptible(_call_main, compiled, config.code, inputs)
    outputs = check_outputs(result, config.outputs)
    return NodeResult(inputs=inputs, outputs=outputs)


# -- compiling and calling ------------------------------------------------------------------


def compile_code(code: str) -> CodeType:
    """The code object for ``code``, compiled once per text."""
    try:
        return _compile(code)
    except UserCodeError as exc:
        raise _node_error(exc.failure) from None


@lru_cache(maxsize=256)
def _compile(code: str) -> CodeType:
    return compile_main(code)


def _call_main(compiled: CodeType, code: str, inputs: dict[str, Any]) -> Any:
    try:
        return call_main(compiled, code, inputs)
    except UserCodeError as exc:
        raise _node_error(exc.failure) from None


def _node_error(failure: Failure) -> NodeError:
    hint = failure.hint
    if failure.module:
        hint = f"install the package into the kernel's environment: pip install {failure.module}"
    return NodeError(failure.message, field=failure.field, hint=hint,
                     error_type=failure.error_type)


# -- checking the result ------------------------------------------------------------------


def check_outputs(result: Any, schema: Mapping[str, CodeOutput]) -> dict[str, Any]:
    """``result`` checked against the declared outputs (or, without any, by its own types)."""
    if not isinstance(result, dict):
        raise NodeError(f"main() returned {type(result).__name__}, not a dict", field="code",
                        hint="return a dict, e.g. return {'result': value}")
    if not schema:
        _check_free(result, "", 1)
        return result
    return _check_object(result, schema, "", 1)


def _check_object(value: dict[str, Any], schema: Mapping[str, CodeOutput], prefix: str,
                  depth: int) -> dict[str, Any]:
    if depth > CODE_MAX_DEPTH:
        raise _limit(prefix, f"nests deeper than {CODE_MAX_DEPTH} levels")
    checked: dict[str, Any] = {}
    for name, spec in schema.items():
        path = f"{prefix}.{name}" if prefix else name
        if name not in value:
            raise NodeError(f"main() returned no output {path!r} (declared as {spec.type})",
                            field=f"outputs.{path}",
                            hint=f"return {path!r} from main(), or remove it from outputs")
        checked[name] = _check_typed(value[name], spec, path, depth)
    extra = sorted(str(k) for k in value if k not in schema)
    if extra:
        where = f" inside {prefix!r}" if prefix else ""
        raise NodeError(f"main() returned undeclared output(s) {', '.join(extra)}{where}",
                        field=f"outputs.{prefix}" if prefix else "outputs",
                        hint="declare them in outputs, or leave them out of the returned dict")
    return checked


def _check_typed(value: Any, spec: CodeOutput, path: str, depth: int) -> Any:
    if value is None:
        return None  # Dify accepts None for every declared type
    kind = spec.type
    if kind == "object":
        if not isinstance(value, dict):
            raise _wrong_type(path, kind, value)
        if spec.children:
            return _check_object(value, spec.children, path, depth + 1)
        _check_free(value, path, depth + 1)
        return value
    if kind.startswith("array["):
        if not isinstance(value, (list, tuple)):
            raise _wrong_type(path, kind, value)
        item_kind = kind[6:-1]
        for index, item in enumerate(value):
            if not _is_kind(item, item_kind):
                raise _wrong_type(f"{path}[{index}]", item_kind, item, declared=(path, kind))
            _check_free(item, f"{path}[{index}]", depth + 1)
        return list(value)
    if not _is_kind(value, kind):
        raise _wrong_type(path, kind, value)
    _check_free(value, path, depth)
    return value


def _is_kind(value: Any, kind: str) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "object":
        return isinstance(value, dict)
    return False


def _check_free(value: Any, path: str, depth: int) -> None:
    """Limits on a value of any shape: string length, number range, nesting depth."""
    if isinstance(value, str):
        if len(value) > CODE_MAX_STRING_LENGTH:
            raise _limit(path, f"is a string of {len(value)} characters, more than "
                               f"{CODE_MAX_STRING_LENGTH}")
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, (int, float)):
        if isinstance(value, float) and math.isnan(value):
            raise _limit(path, "is NaN")
        if not CODE_MIN_NUMBER <= value <= CODE_MAX_NUMBER:
            raise _limit(path, f"is {value}, outside [{CODE_MIN_NUMBER}, {CODE_MAX_NUMBER}]")
    elif isinstance(value, (dict, list, tuple)):
        if depth > CODE_MAX_DEPTH:
            raise _limit(path, f"nests deeper than {CODE_MAX_DEPTH} levels")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            sub = f"{path}[{key}]" if not isinstance(value, dict) else (
                f"{path}.{key}" if path else str(key))
            _check_free(item, sub, depth + 1)
    else:
        raise NodeError(f"output {path!r} is a {type(value).__name__}, which a workflow "
                        "variable cannot hold", field=f"outputs.{path}",
                        hint="return strings, numbers, booleans, lists and dicts")


def _wrong_type(path: str, expected: str, value: Any,
                declared: tuple[str, str] | None = None) -> NodeError:
    shown = repr(value)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    name, kind = declared or (path, expected)
    return NodeError(f"output {path!r} should be {expected}, got {type(value).__name__} {shown}",
                     field=f"outputs.{name}",
                     hint=f"return a value of type {kind} for {name!r}, or change its type in "
                          "outputs")


def _limit(path: str, what: str) -> NodeError:
    return NodeError(f"output {path!r} {what}", field=f"outputs.{path}" if path else "outputs",
                     hint="return a smaller value", error_type="OutputLimitExceeded")
