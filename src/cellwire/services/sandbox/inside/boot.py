"""The sandbox worker's bootstrap, run inside its bubblewrap jail (standard library only).

``argv[1]`` is a JSON object from the engine (``cellwire.services.sandbox.worker``). The
bootstrap drops to uid 65534 when it starts as root of its namespace, refuses to go on unless
it is jailed (uid 65534, no capabilities, its own PID namespace), sets its rlimits, and then
either serves Python runs or becomes the Node worker (``main.js``).

Python runs: one JSON request per line on stdin; each runs in a fork of this process (so no
run sees another's state, and a run that breaks its process breaks only itself), and its
reply goes to the engine on ``reply_fd`` as a length line and that many bytes of JSON.
"""

from __future__ import annotations

import builtins
import ctypes
import io
import json
import os
import resource
import select
import signal
import sys
import time
from typing import Any

UID = 65534
PR_SET_DUMPABLE = 4


def main() -> None:
    config = json.loads(sys.argv[1])
    if os.getuid() == 0:
        os.setgroups([])
        os.setresgid(UID, UID, UID)
        os.setresuid(UID, UID, UID)
    refuse_unless_jailed()
    limits = config["limits"]
    set_limits(limits)
    os.environ.clear()  # bubblewrap's PWD, the interpreter's LC_CTYPE: code sees nothing
    if config["mode"] == "node":
        resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu"], limits["cpu"] + 1))
        os.execve(config["node"], [config["node"], *config["node_args"], str(config["reply_fd"]),
                                   str(limits["max_output"]), str(limits["max_stdout"])], {})
    # A run is a child of this process and has its uid: without this it could ptrace its
    # parent and stay on for the next run.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    sys.path += [config["site"], config["lib"]]
    serve(config["reply_fd"], limits)


def refuse_unless_jailed() -> None:
    problems = []
    if os.getuid() != UID or os.getgid() != UID:
        problems.append(f"runs as uid {os.getuid()}, not {UID}")
    if os.getpid() != 2:  # bubblewrap's reaper is pid 1 of the jail's own PID namespace
        problems.append(f"is pid {os.getpid()}, so not in a PID namespace of its own")
    with open("/proc/self/status", encoding="ascii") as status:
        caps = dict(line.split(":", 1) for line in status if line.startswith("Cap"))
    if int(caps.get("CapEff", "1").strip(), 16) or int(caps.get("CapPrm", "1").strip(), 16):
        problems.append("holds capabilities")
    if problems:
        sys.stderr.write("cellwire sandbox worker refuses to run: it " + "; ".join(problems))
        os._exit(70)


def set_limits(limits: dict[str, int]) -> None:
    for which, value in ((resource.RLIMIT_AS, limits["memory"]),
                         (resource.RLIMIT_FSIZE, limits["file_size"]),
                         (resource.RLIMIT_NPROC, limits["processes"]),
                         (resource.RLIMIT_NOFILE, limits["open_files"]),
                         (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(which, (value, value))


def send(fd: int, body: bytes, *, retire: bool = False) -> None:
    """A reply frame; ``retire`` tells the engine this worker will serve no more runs."""
    write_all(fd, b"%d%s\n" % (len(body), b" retire" if retire else b"") + body)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def serve(reply_fd: int, limits: dict[str, int]) -> None:
    import cellwire_usercode as usercode  # type: ignore[import-not-found]  # beside this file

    send(reply_fd, b'{"ready": true}')
    for line in sys.stdin.buffer:
        request = json.loads(line)
        reply = run_one(request, reply_fd, limits, usercode)
        try:
            clear_out()  # each run starts alone, with an empty /tmp
            wipe("/tmp")
        except (OSError, RecursionError):
            send(reply_fd, reply, retire=True)  # left something it cannot clear: a new jail
            return
        send(reply_fd, reply)


def run_one(request: dict[str, Any], reply_fd: int, limits: dict[str, int],
            usercode: Any) -> bytes:
    """The reply to one request: the child's own JSON, or how the child died."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            os.close(reply_fd)
            child(request, write_end, limits, usercode)
        finally:
            os._exit(0)
    os.close(write_end)
    data, size = collect(read_end, pid, limits["max_output"])
    _, status = os.waitpid(pid, 0)
    if data is None:
        return json.dumps({"ok": False, "too_large": size}).encode()
    if data and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        return data
    died = ({"signal": os.WTERMSIG(status)} if os.WIFSIGNALED(status)
            else {"exit": os.WEXITSTATUS(status)})
    return json.dumps({"ok": False, "died": died}).encode()


def collect(read_end: int, pid: int, limit: int) -> tuple[bytes | None, int]:
    """What the child wrote until every writer is gone (None past ``limit`` bytes): when the
    child exits, whatever it left running is killed, so a straggler cannot hold the pipe."""
    pidfd = os.pidfd_open(pid)
    poller = select.poll()
    poller.register(read_end, select.POLLIN)
    poller.register(pidfd, select.POLLIN)
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            for fd, _ in poller.poll():
                if fd == pidfd:
                    poller.unregister(pidfd)
                    kill_all_but_me()
                    continue
                chunk = os.read(read_end, 1 << 16)
                if not chunk:
                    return (None if size > limit else b"".join(chunks)), size
                size += len(chunk)
                if size > limit:
                    chunks.clear()
                    os.kill(pid, signal.SIGKILL)
                else:
                    chunks.append(chunk)
    finally:
        os.close(pidfd)
        os.close(read_end)


def wipe(folder: str) -> None:
    """Remove everything in ``folder`` (a run may have made things read-only)."""
    for entry in os.scandir(folder):
        if entry.is_dir(follow_symlinks=False):
            os.chmod(entry.path, 0o700)
            wipe(entry.path)
            os.rmdir(entry.path)
        else:
            os.unlink(entry.path)


def clear_out() -> None:
    """Kill whatever the last run left running, and wait until the reaper has taken it."""
    me = os.getpid()
    for _ in range(1000):
        if not [p for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, me)]:
            return
        kill_all_but_me()
        time.sleep(0.002)
    raise OSError("processes of the last run would not end")


def kill_all_but_me() -> None:
    # Every process of this uid in the jail's PID namespace but this one (and the reaper,
    # pid 1): refuse_unless_jailed() made sure the namespace is the jail's own.
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass


def child(request: dict[str, Any], write_end: int, limits: dict[str, int],
          usercode: Any) -> None:
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    cpu = request["cpu"]
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    printed = io.StringIO()
    sys.stdout = sys.stderr = printed
    code = request["code"]
    me = os.getpid()
    # The code may patch builtins or json (len, json.dumps): the reply is written with
    # what was there before it ran.
    saved_builtins, dumps = dict(builtins.__dict__), json.dumps
    try:
        compiled = usercode.compile_main(code)
        reply: dict[str, Any] = {"ok": True,
                                 "outputs": usercode.call_main(compiled, code, request["inputs"])}
    except usercode.UserCodeError as exc:
        reply = {"ok": False, **exc.failure._asdict()}
    builtins.__dict__.clear()
    builtins.__dict__.update(saved_builtins)
    if os.getpid() != me:
        return  # a process the code forked came back from main(): only the run replies
    reply["stdout"] = kept(printed.getvalue(), limits["max_stdout"])
    try:
        body = dumps(reply).encode()
    except BaseException as exc:  # noqa: BLE001 - a set, a cycle, too deep, out of memory
        body = dumps({"ok": False, "message": f"main() returned a value that is not JSON: "
                                                   f"{exc}", "field": "code",
                           "hint": "return strings, numbers, booleans, lists and dicts",
                           "error_type": "OutputNotJSON", "stdout": reply["stdout"]}).encode()
    write_all(write_end, body)


def kept(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[{len(text) - limit} more characters not kept]"


if __name__ == "__main__":
    main()
