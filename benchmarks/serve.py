"""The Service API under load on loopback: requests per second and latency percentiles.

``cellwire serve`` (one uvicorn worker process, as a user starts it) serves a three-node
workflow (start, template-transform, end) guarded by a real API key; ``--clients`` concurrent httpx
clients send ``--requests`` runs between them, blocking (the answer is the finished, stored
run) and then streaming (the answer is every SSE event of the run). Every run is stored in the
SQLite store. Prints requests/s and p50/p95/max latency per mode; asserts nothing about time.

Run: .venv/bin/python benchmarks/serve.py [--clients 50] [--requests 1000] [--workers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from cellwire.store import RunStore
from cellwire.store.keys import create_key

WORKFLOW = """\
cellwire: 1
name: greet
nodes:
  - id: start
    type: start
    variables: [{variable: name, type: text-input, required: true}]
  - id: say
    type: template-transform
    template: "Hello {{ name }}"
    variables: [{variable: name, value_selector: [start, name]}]
  - id: end
    type: end
    outputs: [{variable: greeting, value_selector: [say, output]}]
edges:
  - {source: start, target: say}
  - {source: say, target: end}
"""


async def load(url: str, key: str, mode: str, clients: int, total: int) -> list[float]:
    """Seconds per request, from ``clients`` clients sharing ``total`` requests."""
    left = iter(range(total))
    latencies: list[float] = []
    body = {"inputs": {"name": "Ada"}, "response_mode": mode, "user": "bench"}

    async def client(http: httpx.AsyncClient) -> None:
        for _ in left:
            t0 = time.perf_counter()
            response = await http.post("/workflows/run", json=body)
            await response.aread()
            if response.status_code != 200 or b"succeeded" not in response.content:
                raise RuntimeError(f"{response.status_code}: {response.text[:200]}")
            latencies.append(time.perf_counter() - t0)

    async with httpx.AsyncClient(base_url=url, timeout=120,
                                 headers={"Authorization": f"Bearer {key}"},
                                 limits=httpx.Limits(max_connections=clients)) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return latencies


def report(mode: str, latencies: list[float], seconds: float) -> None:
    ordered = sorted(latencies)
    p50 = statistics.median(ordered)
    p95 = ordered[int(0.95 * (len(ordered) - 1))]
    print(f"{mode:<10} {len(ordered) / seconds:8.1f} req/s   p50 {p50 * 1000:7.1f} ms   "
          f"p95 {p95 * 1000:7.1f} ms   max {ordered[-1] * 1000:7.1f} ms")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, key: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/info", headers={"Authorization": f"Bearer {key}"},
                         timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("cellwire serve did not start")
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        workflow = Path(folder) / "greet.yaml"
        workflow.write_text(WORKFLOW)
        db = Path(folder) / "runs.db"
        with RunStore(db) as store:
            key = create_key(store, "runner", app="greet")[1]
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "cellwire.cli", "serve", str(workflow), "--port", str(port),
             "--db", str(db), "--trust", "--workers", str(args.workers), "--rate", "0",
             "--max-runs", "0"],
            env={**os.environ, "CELLWIRE_HOME": folder}, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}/v1"
            wait_until_up(url, key, server)
            asyncio.run(load(url, key, "blocking", args.clients, 50))  # warm-up
            print(f"{args.clients} clients, {args.requests} runs per mode, loopback, "
                  f"cellwire serve --workers {args.workers}")
            for mode in ("blocking", "streaming"):
                t0 = time.perf_counter()
                latencies = asyncio.run(load(url, key, mode, args.clients, args.requests))
                report(mode, latencies, time.perf_counter() - t0)
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(60)
        with RunStore(db) as store:
            stored = len(store.runs(workflow="greet"))
    print(f"stored runs: {stored} (of {2 * args.requests + 50})")


if __name__ == "__main__":
    main()
