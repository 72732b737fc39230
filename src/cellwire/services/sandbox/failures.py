"""What a sandboxed run that failed tells the user: a :class:`CodeFailed` naming the field and
the fix, for every way a run can fail (the code raised, its process died, it ran out of
time, it printed or returned too much, no sandbox could start)."""

from __future__ import annotations

import signal
from collections.abc import Iterable
from typing import Any

from cellwire.engine.services import CodeFailed, CodeResult

from .packages import import_hint

#: The hint of every refusal for want of a sandbox: how to get one, or to trust the file.
TRUST_OR_INSTALL = ("install bubblewrap (apt-get install bubblewrap) so the sandbox can run "
                    "it, or, if you trust the file, trust it: cellwire trust FILE, --trust on "
                    "the command line, or trusted=True when loading it in Python")


def refused(reason: str) -> CodeFailed:
    """Untrusted code and no sandbox to run it in: it does not run at all."""
    return CodeFailed(f"this code came from a file and is untrusted, so it runs only in the "
                      f"sandbox, which is unavailable: {reason}", hint=TRUST_OR_INSTALL,
                      error_type="SandboxUnavailable")


def result(reply: dict[str, Any], *, limits_text: str, packages: Iterable[str]) -> CodeResult:
    """The run's outputs from the worker's ``reply``, or the :class:`CodeFailed` it means."""
    if reply.get("ok") is True:
        outputs = reply.get("outputs")
        if not isinstance(outputs, dict):
            raise CodeFailed(f"main() returned {type(outputs).__name__}, not a dict",
                             hint="return a dict, e.g. return {'result': value}")
        return CodeResult(outputs=outputs, stdout=reply.get("stdout") or "")
    if "died" in reply:
        raise died(reply["died"], limits_text)
    if "too_large" in reply:
        raise CodeFailed(f"the code's reply (its outputs and what it printed) is "
                         f"{reply['too_large']} bytes, more than the sandbox allows",
                         hint="return a smaller value, or print less",
                         error_type="OutputLimitExceeded")
    hint = reply.get("hint") or ""
    if reply.get("module"):
        hint = import_hint(str(reply["module"]), packages)
    elif reply.get("error_type") == "MemoryError":
        hint = f"use less memory: {limits_text}"
    message = str(reply.get("message") or "the code failed")
    printed = reply.get("stdout") or ""
    if printed:
        message += f"; it printed: {_tail(printed)}"
    raise CodeFailed(message, field=str(reply.get("field") or "code"), hint=hint,
                     error_type=reply.get("error_type"))


def died(how: dict[str, Any], limits_text: str) -> CodeFailed:
    """The run's process ended before main() returned: by a signal, or by exiting."""
    if "signal" in how:
        number = int(how["signal"])
        if number == signal.SIGXCPU:
            return CodeFailed("the code used up its CPU time and was stopped",
                              hint=f"make it faster, or raise the node's max_time ({limits_text})",
                              error_type="CPULimitExceeded")
        name = _signal_name(number)
        return CodeFailed(f"the code's process was killed by {name} before main() returned",
                          hint=f"it may have run out of memory or crashed ({limits_text}); a "
                               "code node must not signal processes",
                          error_type="CodeKilled")
    code = how.get("exit")
    return CodeFailed(f"the code ended its process (exit code {code}) before main() returned",
                      hint="return a dict from main(); a code node cannot exit, raise an "
                           "exception to fail it", error_type="CodeExited")


def worker_lost(returncode: int | None, limits_text: str) -> CodeFailed:
    """The worker itself ended while running this code (the code killed it, or ran it out
    of memory)."""
    if returncode is not None and returncode < 0:  # bubblewrap itself was killed
        return died({"signal": -returncode}, limits_text)
    if returncode is not None and returncode > 128:  # bubblewrap passes on 128 + signal
        return died({"signal": returncode - 128}, limits_text)
    if returncode is not None and returncode >= 0:
        return died({"exit": returncode}, limits_text)
    return CodeFailed("the sandbox worker running this code stopped answering",
                      hint=f"the code may have exhausted a limit ({limits_text})",
                      error_type="CodeKilled")


def timed_out(timeout: float) -> CodeFailed:
    return CodeFailed(f"timed out after {timeout:g} s: the sandbox stopped the code",
                      field="max_time", hint="raise the node's max_time or make the code faster",
                      error_type="NodeTimeout")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _tail(text: str, keep: int = 300) -> str:
    text = text.strip()
    return text if len(text) <= keep else "..." + text[-keep:]
