"""Calling a code node's ``main(**inputs)`` and describing what went wrong in the user's terms.

One implementation for both places code runs: the kernel (``cellwire.nodes.code``) and the
sandbox's worker, which loads this file by path inside its jail. So it imports the standard
library only, and nothing of cellwire.
"""

from __future__ import annotations

import builtins
import json
import traceback
from base64 import b64decode
from types import CodeType
from typing import Any, NamedTuple

#: The file name the user's code is compiled under: traceback frames with it are theirs.
FILENAME = "<code>"

#: Exceptions that would end a thread or a process, with what a code node should do instead.
_EXITS = {
    SystemExit: "a code node cannot exit; return a dict from main(), or raise an exception "
                "to fail the node",
    KeyboardInterrupt: "a code node cannot interrupt the run; raise an exception to fail "
                       "the node",
    GeneratorExit: "GeneratorExit escaped main(); raise an ordinary exception to fail the node",
}


class Failure(NamedTuple):
    """What failed, where to look (``field``), how to fix it (``hint``); ``module`` is the
    missing module's name when an import failed."""

    message: str
    field: str = "code"
    hint: str = ""
    error_type: str | None = None
    module: str | None = None


class UserCodeError(Exception):
    """The user's code failed; ``failure`` says how, in their terms."""

    def __init__(self, failure: Failure):
        super().__init__(failure.message)
        self.failure = failure


def compile_main(code: str) -> CodeType:
    """``code`` compiled under :data:`FILENAME`; a syntax error is a :class:`UserCodeError`."""
    try:
        return compile(code, FILENAME, "exec")
    except SyntaxError as exc:
        raise UserCodeError(syntax_failure(exc)) from None


def syntax_failure(exc: SyntaxError) -> Failure:
    line = f" on line {exc.lineno}" if exc.lineno else ""
    return Failure(f"syntax error{line}: {exc.msg}", hint="fix the Python syntax",
                   error_type="SyntaxError")


def call_main(compiled: CodeType, code: str, inputs: dict[str, Any]) -> Any:
    """Run the module ``compiled`` in a fresh namespace and return ``main(**inputs)``.

    Any exception the code raises, ``SystemExit`` and ``KeyboardInterrupt`` included, is a
    :class:`UserCodeError`: a code node fails, it never ends its thread or process.
    """
    # A fresh namespace per run: module-level state never leaks from one run to the next.
    namespace: dict[str, Any] = {"__name__": "__cellwire_code__", "__builtins__": builtins}
    try:
        exec(compiled, namespace)  # noqa: S102 - running the user's code is the point
    except BaseException as exc:  # noqa: BLE001
        raise UserCodeError(describe(exc, code, "while loading the code")) from None
    # Dify's runner imports these after the user's code, so Dify code uses them unimported.
    namespace["json"] = json
    namespace["b64decode"] = b64decode
    main = namespace.get("main")
    if not callable(main):
        raise UserCodeError(Failure("the code defines no main() function",
                                    hint="define def main(...) -> dict"))
    try:
        return main(**inputs)
    except BaseException as exc:  # noqa: BLE001
        raise UserCodeError(describe(exc, code, "in main()")) from None


def describe(exc: BaseException, code: str, when: str) -> Failure:
    """``exc`` with the last line of *the user's* traceback (``when`` if none is theirs)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == FILENAME]
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    exit_hint = next((h for kind, h in _EXITS.items() if isinstance(exc, kind)), None)
    if not frames:
        if isinstance(exc, TypeError) and when == "in main()":
            return Failure(f"main() does not take the inputs given: {detail}", field="variables",
                           hint="give main one parameter per variable, e.g. def main(arg1):",
                           error_type="TypeError")
        return Failure(f"{detail} ({when})", hint=exit_hint or "",
                       error_type=type(exc).__name__)
    last = frames[-1]
    lines = code.splitlines()
    source = lines[last.lineno - 1].strip() if last.lineno and last.lineno <= len(lines) else ""
    where = f"line {last.lineno}, in {last.name}" + (f": {source}" if source else "")
    module = exc.name if isinstance(exc, ModuleNotFoundError) else None
    return Failure(f"{detail} ({where})", hint=exit_hint or "fix the code at that line",
                   error_type=type(exc).__name__, module=module)
