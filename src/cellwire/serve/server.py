"""Running the Service API on uvicorn: in the foreground (``cellwire serve``) or on a thread
of its own (``%workflow serve`` in a notebook, tests), so the caller stays free."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Self

import uvicorn

#: Seconds an idle keep-alive connection stays open. uvicorn's default (5 s) closed
#: connections a busy client was about to reuse: its POST then failed with a read error,
#: which HTTP clients do not retry.
KEEP_ALIVE = 30

#: Seconds to wait for a background server to start answering, or to stop.
START_TIMEOUT = 30.0


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class BackgroundServer:
    """An ASGI app served by uvicorn on a daemon thread; ``url`` once started."""

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0,
                 log_level: str = "warning"):
        self.host = host
        self._sock = bind(host, port)
        self.port = int(self._sock.getsockname()[1])
        config = uvicorn.Config(app, log_level=log_level, lifespan="on",
                                timeout_graceful_shutdown=5, access_log=False,
                                timeout_keep_alive=KEEP_ALIVE)
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The server's base URL (``http://host:port``; add ``/v1`` for the API)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> Self:
        """Start serving; returns once the server accepts requests."""
        self._thread = threading.Thread(target=self._server.run,
                                        kwargs={"sockets": [self._sock]},
                                        name=f"cellwire-serve-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"the server on {self.url} stopped while starting")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server on {self.url} did not start in "
                                   f"{START_TIMEOUT:.0f} s")
            time.sleep(0.01)
        return self

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        """Stop serving (running runs are stopped and stored), and wait for it."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(START_TIMEOUT)
        self._sock.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["BackgroundServer", "bind"]
