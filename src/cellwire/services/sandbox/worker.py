"""One jailed worker process, seen from the engine: started, asked, killed.

Requests go to the worker's stdin, one JSON line each; replies come back on a pipe of their
own (a length line, then that many bytes), so nothing the code writes to stdout or stderr
can pass for a reply. stderr is drained and its tail kept, to explain a worker that died.
Killing a worker kills its jail: the jail's PID 1 (so the kernel ends every process in the
namespace) and bubblewrap's monitor.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import subprocess
from typing import Any

from .jail import SANDBOX_UID, Jail

#: Most of a worker's stderr kept to explain how it died.
_STDERR_TAIL = 2000


class WorkerDied(Exception):
    """The worker's process ended (or sent something that is not a reply)."""

    def __init__(self, message: str, returncode: int | None = None):
        super().__init__(message)
        self.returncode = returncode


class Worker:
    """A started worker; :meth:`ask` one request at a time."""

    def __init__(self, process: asyncio.subprocess.Process, transport: asyncio.BaseTransport,
                 replies: asyncio.StreamReader, max_reply: int):
        self._process = process
        self._transport = transport
        self._replies = replies
        self._pidfd = -1
        self._max_reply = max_reply
        self._stderr = b""
        self._drain = asyncio.ensure_future(self._drain_stderr())
        self.runs = 0
        #: The worker said it serves no more runs after its last reply.
        self.retiring = False

    @classmethod
    async def start(cls, jail: Jail, boot: dict[str, Any], *, max_reply: int,
                    boot_timeout: float = 30.0) -> Worker:
        """Start a jailed worker and wait until it says it is ready."""
        loop = asyncio.get_running_loop()
        info_r, info_w = os.pipe()
        reply_r, reply_w = os.pipe()
        block_r, block_w = os.pipe() if jail.map_nobody else (None, None)
        argv = jail.command(json.dumps({**boot, "reply_fd": reply_w}), info_fd=info_w,
                            userns_block_fd=block_r)
        inherited = [fd for fd in (info_w, reply_w, block_r) if fd is not None]
        try:
            process = await asyncio.create_subprocess_exec(
                *argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, pass_fds=inherited, start_new_session=True)
        except BaseException:
            for fd in (info_r, reply_r, block_w):
                if fd is not None:
                    os.close(fd)
            raise
        finally:
            for fd in inherited:
                os.close(fd)
        try:
            replies = asyncio.StreamReader(limit=1 << 16)
            transport, _ = await loop.connect_read_pipe(
                lambda: asyncio.StreamReaderProtocol(replies),
                os.fdopen(reply_r, "rb", buffering=0))
        except BaseException:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            for fd in (info_r, block_w):
                if fd is not None:
                    os.close(fd)
            raise
        worker = cls(process, transport, replies, max_reply)
        try:
            async with asyncio.timeout(boot_timeout):
                worker._jailed(await _read_all(info_r), block_w)
                ready = await worker._reply()
        except (WorkerDied, TimeoutError) as exc:
            await worker.close()
            said = worker.stderr or str(exc) or "no reply in time"
            raise WorkerDied(f"the sandbox worker did not start: {said}",
                             process.returncode) from None
        except BaseException:
            await worker.close()  # cancelled: the jail goes too
            raise
        finally:
            if block_w is not None:
                os.close(block_w)
        if ready != {"ready": True}:
            await worker.close()
            raise WorkerDied(f"the sandbox worker did not start: it said {ready!r}")
        return worker

    def _jailed(self, info: bytes, block_w: int | None) -> None:
        """Take the jail's PID 1 from bubblewrap's info and, when mapping nobody, write the
        user namespace's maps and let bubblewrap go on."""
        try:
            pid = int(json.loads(info)["child-pid"])
            self._pidfd = os.pidfd_open(pid)
            if block_w is not None:
                _map_nobody(pid)
                os.write(block_w, b"1")
        except (ValueError, KeyError, TypeError, OSError):
            pass  # bubblewrap failed before its namespaces were up: its stderr says why

    @property
    def alive(self) -> bool:
        """Whether the jail still runs (its PID 1's pidfd turns readable when it ends)."""
        if self._process.returncode is not None or self._pidfd < 0:
            return False
        return not select.select([self._pidfd], [], [], 0)[0]

    @property
    def stderr(self) -> str:
        """The tail of what the worker wrote to stderr."""
        return self._stderr.decode("utf-8", "replace").strip()

    async def ask(self, request: bytes) -> dict[str, Any]:
        """Send one request line; the worker's reply. Raises :class:`WorkerDied`."""
        stdin = self._process.stdin
        assert stdin is not None
        try:
            stdin.write(request + b"\n")
            await stdin.drain()
        except (ConnectionError, RuntimeError):
            pass  # the worker is gone: reading says how
        return await self._reply()

    async def _reply(self) -> dict[str, Any]:
        try:
            head = await self._replies.readline()
            if not head:
                raise WorkerDied("the sandbox worker ended", await self._returncode())
            size_text, _, flag = head.partition(b" ")
            size = int(size_text)
            self.retiring = flag.strip() == b"retire"
            if not 0 <= size <= self._max_reply:
                raise WorkerDied(f"the sandbox worker sent a reply of {size} bytes")
            body = await self._replies.readexactly(size)
        except (ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise WorkerDied(f"the sandbox worker's reply was cut short: {exc}",
                             await self._returncode()) from None
        try:
            reply = json.loads(body)
        except ValueError as exc:
            raise WorkerDied(f"the sandbox worker's reply is not JSON: {exc}") from None
        if not isinstance(reply, dict):
            raise WorkerDied("the sandbox worker's reply is not a JSON object")
        return reply

    async def _returncode(self) -> int | None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                return await self._process.wait()
        return None

    def kill(self) -> None:
        """Kill the jail now: its PID 1 (and so every process in it) and bubblewrap's process
        group (the monitor, and the jail's first process while it is still being set up)."""
        if self._pidfd >= 0:
            with contextlib.suppress(OSError):
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            os.close(self._pidfd)
            self._pidfd = -1
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signal.SIGKILL)

    async def close(self) -> None:
        """Kill the jail and wait until its processes are gone."""
        self.kill()
        await self._process.wait()
        if self._process.stdin is not None:
            self._process.stdin.close()
        self._transport.close()
        # stderr ends when the last process of the jail does; do not wait on a straggler.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._drain), 2)
        self._drain.cancel()

    async def _drain_stderr(self) -> None:
        stderr = self._process.stderr
        assert stderr is not None
        while chunk := await stderr.read(1 << 14):
            self._stderr = (self._stderr + chunk)[-_STDERR_TAIL:]


def _map_nobody(pid: int) -> None:
    # Root of the jail's namespace stays root outside while bubblewrap sets the jail up
    # (it must read the interpreter wherever it is), and the sandbox user is the host's
    # nobody, whose process count the kernel limits (root's it does not).
    mapping = f"0 0 1\n{SANDBOX_UID} {SANDBOX_UID} 1\n"
    for name in ("uid_map", "gid_map"):
        with open(f"/proc/{pid}/{name}", "w", encoding="ascii") as f:
            f.write(mapping)


async def _read_all(fd: int) -> bytes:
    """Everything written to the pipe ``fd`` until its writers close it (bubblewrap's info)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                                os.fdopen(fd, "rb", buffering=0))
    try:
        return await reader.read()
    finally:
        transport.close()
