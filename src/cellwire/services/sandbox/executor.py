"""The sandbox: a :class:`~cellwire.engine.services.CodeExecutor` that runs code nodes' code
in bubblewrap jails, and the executor that refuses untrusted code where no jail can run."""

from __future__ import annotations

import asyncio
import json
import math
import os
import weakref
from collections.abc import Iterable, Mapping
from functools import partial
from typing import Any, Self

from cellwire.engine.services import CodeFailed, CodeResult

from . import failures
from .jail import LIB, NODE, SITE, Jail, find_node, unavailable
from .limits import MIB, NODE_HEADROOM_MB, Limits
from .loop import LoopThread
from .packages import DEFAULT_PACKAGES, locate
from .pool import Pool
from .worker import Worker, WorkerDied

_KINDS = {"python3": "python", "python": "python", "javascript": "node", "nodejs": "node"}

#: CPU seconds of a Node worker when Limits.cpu_seconds is unset: it starts before its run
#: is known, so it cannot follow the run's time limit, which is what stops a run anyway.
NODE_CPU_BACKSTOP = 300


class Sandbox:
    """Runs ``main(**inputs)`` in jailed worker processes (see ``docs/security.md``).

    Python runs go to a warm pool of workers, each serving runs one at a time, each run in a
    fork of its worker; a worker is replaced after ``max_runs`` runs, or at once when a run
    timed out or killed it. JavaScript runs (``function main({...})``) each get a Node
    process of their own, started ahead so one is ready. ``packages`` are the third-party
    import names the code may use besides the standard library (default:
    :data:`~cellwire.services.sandbox.packages.DEFAULT_PACKAGES`). Workers start on first
    use; :meth:`close` (or the end of the process) kills them.
    """

    def __init__(self, *, packages: Iterable[str] | None = None, limits: Limits | None = None,
                 size: int | None = None, max_runs: int = 200, bwrap: str = "bwrap",
                 node: str | None = "node", boot_timeout: float = 30.0):
        self.limits = limits or Limits()
        self.packages = tuple(packages) if packages is not None else DEFAULT_PACKAGES
        self.bwrap = bwrap
        self._node = find_node(node)
        self._jail = Jail(bwrap=bwrap, packages=locate(self.packages),
                          tmp_bytes=self.limits.tmp_mb * MIB, node=self._node)
        self._size = size or min(8, max(2, os.cpu_count() or 2))
        self._max_runs = max_runs
        self._boot_timeout = boot_timeout
        self._thread = LoopThread("cellwire-sandbox")
        self._pools: dict[str, Pool] = {}
        self._finalizer = weakref.finalize(self, _shut_down, self._thread, self._pools)

    def unavailable(self) -> str | None:
        """Why this sandbox cannot run code here, or None when it can."""
        return unavailable(self.bwrap)

    async def run(self, language: str, code: str, inputs: Mapping[str, Any], *,
                  timeout: float | None = None) -> CodeResult:
        kind = _KINDS.get(language.lower())
        if kind is None:
            raise CodeFailed(f"unknown code_language {language!r}", field="code_language",
                             hint="use python3 or javascript")
        if kind == "node" and self._node is None:
            raise CodeFailed("JavaScript runs on Node.js, which is not installed here",
                             field="code_language",
                             hint="install it (apt-get install nodejs), or port main() to "
                                  "Python and set code_language: python3")
        limit = timeout if timeout is not None else self.limits.timeout
        request = _request(code, inputs, cpu=self.limits.cpu_for(limit))
        return await asyncio.wrap_future(self._thread.submit(self._run(kind, request, limit)))

    async def start(self, *languages: str) -> None:
        """Start one worker for each language (default: Python) and wait until it is ready,
        so the first run does not pay for it."""
        kinds = {_KINDS[lang.lower()] for lang in languages or ("python3",)}
        await asyncio.wrap_future(self._thread.submit(self._warm(kinds)))

    def close(self) -> None:
        """Kill every worker; the sandbox starts new ones if it is used again."""
        _shut_down(self._thread, self._pools)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- on the sandbox's own loop -----------------------------------------------------------

    async def _run(self, kind: str, request: bytes, timeout: float) -> CodeResult:
        reason = self.unavailable()
        if reason is not None:
            raise failures.refused(reason)
        pool = self._pool(kind)
        may_retry = True
        while True:
            try:
                worker = await pool.acquire()
            except WorkerDied as exc:
                raise CodeFailed(f"the sandbox could not start: {exc}",
                                 hint=failures.TRUST_OR_INSTALL,
                                 error_type="SandboxUnavailable") from None
            reused = worker.runs > 0
            try:
                async with asyncio.timeout(timeout):
                    reply = await worker.ask(request)
            except TimeoutError:
                pool.discard(worker)
                raise failures.timed_out(timeout) from None
            except WorkerDied as exc:
                pool.discard(worker)
                # A worker that waited idle may have been killed meanwhile: a new one runs the
                # code again (it has no effect outside its jail, so running twice is safe).
                if reused and may_retry:
                    may_retry = False
                    continue
                raise failures.worker_lost(exc.returncode, self._limits_text(kind)) from None
            except BaseException:
                pool.discard(worker)
                raise
            pool.release(worker)
            return failures.result(reply, limits_text=self._limits_text(kind),
                                   packages=self.packages)

    async def _warm(self, kinds: set[str]) -> None:
        for kind in kinds:
            pool = self._pool(kind)
            pool.release(await pool.acquire())

    def _pool(self, kind: str) -> Pool:
        pool = self._pools.get(kind)
        if pool is None:
            spawn = partial(self._spawn, kind)
            # A Node process serves one run: nothing of a run survives into the next.
            max_runs = self._max_runs if kind == "python" else 1
            pool = self._pools[kind] = Pool(spawn, size=self._size, max_runs=max_runs, warm=1)
        return pool

    async def _spawn(self, kind: str) -> Worker:
        limits = self.limits
        memory = limits.memory_mb + (NODE_HEADROOM_MB if kind == "node" else 0)
        cpu = NODE_CPU_BACKSTOP if limits.cpu_seconds is None else math.ceil(limits.cpu_seconds)
        boot = {
            "mode": kind, "site": SITE, "lib": LIB, "node": NODE,
            # V8's worker threads default to one per core: a fixed few fit the process limit.
            "node_args": [f"--max-old-space-size={limits.memory_mb}", "--v8-pool-size=2",
                          f"{LIB}/main.js"],
            "limits": {"memory": memory * MIB, "file_size": limits.file_size_mb * MIB,
                       "processes": limits.processes, "open_files": limits.open_files,
                       "max_output": limits.max_output_bytes, "max_stdout": limits.max_stdout,
                       "cpu": cpu},
        }
        return await Worker.start(self._jail, boot, max_reply=limits.max_output_bytes + MIB,
                                  boot_timeout=self._boot_timeout)

    def _limits_text(self, kind: str) -> str:
        memory = self.limits.memory_mb + (NODE_HEADROOM_MB if kind == "node" else 0)
        return f"the sandbox allows {memory} MiB of memory and {self.limits.processes} processes"


class RefusingExecutor:
    """A code executor that refuses every run with the same :class:`CodeFailed`: where the
    sandbox cannot run, untrusted code does not run at all (never in the kernel instead)."""

    def __init__(self, failure: CodeFailed):
        self.failure = failure

    @classmethod
    def unavailable(cls, reason: str) -> RefusingExecutor:
        """Refuses saying the sandbox is unavailable (``reason``), how to install it, and
        how to trust the file instead."""
        return cls(failures.refused(reason))

    async def run(self, language: str, code: str, inputs: Mapping[str, Any], *,
                  timeout: float | None = None) -> CodeResult:
        failure = self.failure
        raise CodeFailed(str(failure), field=failure.field, hint=failure.hint,
                         error_type=failure.error_type)


def _request(code: str, inputs: Mapping[str, Any], *, cpu: int) -> bytes:
    try:
        return json.dumps({"code": code, "inputs": dict(inputs), "cpu": cpu}).encode()
    except (TypeError, ValueError):
        pass
    for name, value in inputs.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise CodeFailed(f"input {name!r} cannot be sent to the sandbox: {exc}",
                             field="variables",
                             hint="give the code strings, numbers, booleans, lists and dicts"
                             ) from None
    raise CodeFailed("the inputs cannot be sent to the sandbox", field="variables")


def _shut_down(thread: LoopThread, pools: dict[str, Pool]) -> None:
    if not thread.started:
        pools.clear()
        return
    closing = list(pools.values())
    pools.clear()
    if thread.current:  # dropped by the sandbox's own loop: it cannot wait for itself
        for pool in closing:
            pool.kill_all()
        thread.stop()
        return

    async def close_all() -> None:
        await asyncio.gather(*(pool.close() for pool in closing))

    try:
        thread.submit(close_all()).result(timeout=30)
    finally:
        thread.stop()
