"""Sandbox overhead per code node: sandboxed (bubblewrap jails) against the in-kernel node.

Workflows of code nodes run through cellwire's runner (``wf.arun``), once with code running
in the kernel and once with ``Runtime(code=Sandbox())``; the overhead is the difference per
code node. Warm: a chain of 20 Python nodes on a started pool, repeated (mean, best and
median per node). Cold: the first run of a one-node workflow on a new sandbox, which starts
the pool's first worker (best of a few new sandboxes). JavaScript: a fresh Node process per
run, started ahead; shown for information. Target: warm Python overhead under 5 ms per node
on average.

Run: .venv/bin/python benchmarks/sandbox_overhead.py [--repeat N]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import time
from collections.abc import Awaitable, Callable

import cellwire
from cellwire.engine import Runtime
from cellwire.services.sandbox import Sandbox, sandbox_unavailable

CHAIN = 20
PY_STEP = "def main(x):\n    return {'x': x + 1}\n"
JS_STEP = "function main({x}) {\n  return {x: x + 1};\n}\n"


def chain(n: int, language: str = "python3") -> cellwire.Workflow:
    wf = cellwire.Workflow(f"chain-{n}")
    wf.add_node("start", "start", variables=[{"variable": "x", "type": "number"}])
    previous = "start"
    for i in range(n):
        wf.add_node(f"c{i}", "code", after=previous, code_language=language,
                    code=JS_STEP if language == "javascript" else PY_STEP,
                    variables=[{"variable": "x", "value_selector": [previous, "x"]}],
                    outputs={"x": {"type": "number"}})
        previous = f"c{i}"
    wf.add_node("end", "end", after=previous,
                outputs=[{"variable": "x", "value_selector": [previous, "x"]}])
    return wf


async def timed(run: Callable[[], Awaitable[cellwire.RunResult]], repeat: int,
                nodes: int) -> list[float]:
    """Seconds per node of each of ``repeat`` runs (after two unmeasured ones)."""
    for _ in range(2):
        await run()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = await run()
        samples.append((time.perf_counter() - t0) / nodes)
        assert result.outputs == {"x": nodes}, result.error
    return samples


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f}"


async def main(repeat: int) -> int:
    reason = sandbox_unavailable()
    if reason is not None:
        print(f"no sandbox here: {reason}")
        return 1
    wf = chain(CHAIN)
    one = chain(1)
    kernel = Runtime()

    async def in_kernel() -> cellwire.RunResult:
        return await wf.arun(x=0, runtime=kernel, store=False)

    base = await timed(in_kernel, repeat, CHAIN)
    with Sandbox() as box:
        sandboxed = Runtime(code=box)

        async def in_sandbox() -> cellwire.RunResult:
            return await wf.arun(x=0, runtime=sandboxed, store=False)

        warm = await timed(in_sandbox, repeat, CHAIN)

    one_kernel = min(await timed(lambda: one.arun(x=0, runtime=kernel, store=False), 5, 1))
    colds = []
    for _ in range(3):
        with Sandbox() as fresh:
            t0 = time.perf_counter()
            result = await one.arun(x=0, runtime=Runtime(code=fresh), store=False)
            colds.append(time.perf_counter() - t0)
            assert result.outputs == {"x": 1}, result.error
    cold = min(colds) - one_kernel

    js_warm: list[float] = []
    if shutil.which("node"):
        with Sandbox() as box:
            js = chain(1, "javascript")
            js_runtime = Runtime(code=box)
            await box.start("javascript")
            for _ in range(5):
                await asyncio.sleep(0.3)  # the next Node process is started ahead meanwhile
                t0 = time.perf_counter()
                result = await js.arun(x=0, runtime=js_runtime, store=False)
                js_warm.append(time.perf_counter() - t0 - one_kernel)
                assert result.outputs == {"x": 1}, result.error

    overhead = [w - statistics.median(base) for w in warm]
    mean = statistics.fmean(overhead)
    print(f"ms per code node, chain of {CHAIN}, {repeat} runs")
    print(f"{'':<28}{'mean':>8}{'best':>8}{'median':>8}")
    for name, samples in (("in the kernel", base), ("sandboxed, warm", warm),
                          ("sandbox overhead, warm", overhead)):
        print(f"{name:<28}{ms(statistics.fmean(samples))}{ms(min(samples))}"
              f"{ms(statistics.median(samples))}")
    print(f"{'sandbox overhead, cold':<28}{ms(cold)}   (first run of a new sandbox: "
          "its first worker starts)")
    if js_warm:
        print(f"{'JavaScript node, ready':<28}{ms(statistics.fmean(js_warm))}   "
              "(a fresh Node process per run, started ahead)")
    print("target (warm overhead under 5 ms per node on average):",
          "met" if mean < 0.005 else "NOT met")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=20)
    raise SystemExit(asyncio.run(main(parser.parse_args().repeat)))
