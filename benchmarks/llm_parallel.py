"""200 llm nodes in parallel against an OpenAI-wire test server with 100 ms latency.

The workflow fans out from start to 200 llm nodes (streaming, through the OpenAI-compatible
provider over httpx and the fast HTTP/1.1 transport) and joins them in end; it runs with
concurrency=256.
Every request takes the server 100 ms, so the critical path is 100 ms; the figure is the wall
time of a run over that path (target: at most 1.5x). The server is benchmarks/_provider.py,
the lean stand-in for a remote provider that batch.py uses too, in a separate process, so it
really serves concurrently and does not share this process's interpreter lock; its CPU per
request is printed too (on a 2-core machine client and server share the cores, so both count
towards the wall time, which a remote provider's CPU would not). It sends each stream's events
once its latency has passed, each event a chunk of its own, as the test double of
tests/integration/llm_server.py does (which costs about twice the CPU a request, most of it
for 200 new connections at once in the CLI's cold run); the client parses every event as it
would a slower stream.

Then the same workflow as a file through the CLI, ``cellwire run app.yml --concurrency 200
--json`` with the default store, the provider named by ``OPENAI_BASE_URL``: the run's own wall
time (``elapsed_ms``, from its start to its end) over the critical path, and the command's
whole time beside it (which adds starting Python and importing cellwire).

Run: .venv/bin/python benchmarks/llm_parallel.py [--nodes 200] [--latency 0.1] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cellwire
from cellwire.services.llm import LLMRouter
from cellwire.services.llm.openai import OpenAIProvider

SERVER = Path(__file__).resolve().parent / "_provider.py"


def fan_out(nodes: int) -> cellwire.Workflow:
    wf = cellwire.Workflow("llm-parallel")
    wf.add_node("start", "start", variables=[{"variable": "query", "type": "paragraph"}])
    ids = [f"llm{i}" for i in range(nodes)]
    for node_id in ids:
        wf.add_node(node_id, "llm", after="start",
                    model={"provider": "openai", "name": "bench", "mode": "chat"},
                    prompt_template=[{"role": "user", "text": f"{node_id}: {{{{#start.query#}}}}"}])
    wf.add_node("end", "end", after=ids,
                outputs=[{"variable": n, "value_selector": [n, "text"]} for n in ids])
    return wf


def cpu_seconds(pid: int) -> float | None:
    """A process's CPU time so far (Linux's /proc), to tell whether the server is the limit."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(latency: float) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen([sys.executable, str(SERVER), "--latency", str(latency)],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


async def main(nodes: int, latency: float, repeat: int) -> None:
    process, base_url = start_server(latency)
    try:
        provider = OpenAIProvider("openai", base_url=base_url, api_key="bench",
                                  max_connections=max(256, nodes))
        runtime = cellwire.Runtime(llm=LLMRouter([provider]))
        wf = fan_out(nodes)
        # The first run opens the pool's connections; the figures are of warm runs.
        result = await wf.arun(query="go", runtime=runtime, store=False, concurrency=256)
        assert result.ok, result.error
        walls, cpus = [], []
        server_start = cpu_seconds(process.pid)
        for _ in range(repeat):
            t0, c0 = time.perf_counter(), time.process_time()
            result = await wf.arun(query="go", runtime=runtime, store=False, concurrency=256)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
            assert result.ok, result.error
            assert len(result.outputs) == nodes and result.outputs["llm0"] == "echo: llm0: go"
        server_end = cpu_seconds(process.pid)
        await provider.aclose()
        cli = cli_runs(wf, base_url, nodes, repeat)
    finally:
        process.terminate()
        process.wait(10)
    best, median = min(walls), statistics.median(walls)
    print(f"{nodes} llm nodes, {latency * 1000:.0f} ms per request, concurrency 256")
    print(f"wall time: best {best * 1000:.0f} ms, median {median * 1000:.0f} ms")
    print(f"ratio over the {latency * 1000:.0f} ms critical path: best {best / latency:.2f}x, "
          f"median {median / latency:.2f}x (target <= 1.5x)")
    # CPU time does not depend on other load on the machine: the client's cost per node.
    print(f"client CPU per node (engine + llm node + provider + HTTP): "
          f"{statistics.median(cpus) / nodes * 1e6:.0f} us")
    if server_start is not None and server_end is not None:
        print(f"server CPU per request (its own process): "
              f"{(server_end - server_start) / (repeat * nodes) * 1e6:.0f} us")

    runs, commands = cli
    print(f"cellwire run --concurrency {nodes} (default store): the run's own wall time best "
          f"{min(runs) * 1000:.0f} ms, median {statistics.median(runs) * 1000:.0f} ms, "
          f"{min(runs) / latency:.2f}x the critical path (target <= 1.5x); the whole command "
          f"{statistics.median(commands) * 1000:.0f} ms")


def cli_runs(wf: cellwire.Workflow, base_url: str, nodes: int,
             repeat: int) -> tuple[list[float], list[float]]:
    """Seconds of each run as ``cellwire run`` reports it, and of each whole command."""
    from cellwire.formats import dump

    runs, commands = [], []
    with tempfile.TemporaryDirectory() as tmp:
        app = Path(tmp) / "app.yml"
        app.write_text(dump(wf))
        env = {**os.environ, "CELLWIRE_HOME": tmp, "CELLWIRE_CONFIG_DIR": tmp,
               "OPENAI_API_KEY": "bench", "OPENAI_BASE_URL": base_url}
        cellwire_cli = Path(sys.executable).with_name("cellwire")
        for _ in range(repeat):
            t0 = time.perf_counter()
            done = subprocess.run([str(cellwire_cli), "run", str(app), "--concurrency",
                                   str(nodes), "--input", "query=go", "--json"],
                                  capture_output=True, text=True, env=env, check=False)
            commands.append(time.perf_counter() - t0)
            assert done.returncode == 0, done.stderr
            result = json.loads(done.stdout)
            assert result["status"] == "succeeded", result
            runs.append(result["elapsed_ms"] / 1000)
    return runs, commands


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.nodes, args.latency, args.repeat))
