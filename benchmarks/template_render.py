"""Jinja renders within limits, against Jinja's own sandbox on the same templates.

cellwire renders jinja2-mode fields in a bounded sandbox (size, steps, time; see
``cellwire.engine.bounded_jinja``). Short templates render inline and pay only the checks;
templates with loops start inline and move to a thread when they run long. Per template: the
time of one ``render_jinja`` (best of the repetitions, median beside it) and its ratio to
``ImmutableSandboxedEnvironment.render`` of the same template (no limits, on the caller's
thread). Target: short templates (no loop) under 2x the plain sandbox.

Prints numbers and ratios; asserts nothing about absolute time.
Run: .venv/bin/python benchmarks/template_render.py [--repeat N]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

from jinja2.sandbox import ImmutableSandboxedEnvironment

from cellwire.engine.context import VariablePool
from cellwire.engine.templates import render_jinja

POOL = VariablePool({"start": {"name": "Ada", "q": "What is 2+2?", "rows": list(range(20)),
                               "many": list(range(5000))}})
TEMPLATES = {
    "reference": "{{ start.name }}",
    "prompt": ("You are helpful.\nUser: {{ start.q }}{% if start.name %} "
               "({{ start.name|upper }}){% endif %}"),
    "loop 20 (inline)": "{% for r in start.rows %}{{ r }},{% endfor %}",
    "loop 5000 (thread)": "{% for r in start.many %}{{ r }},{% endfor %}",
}
SHORT_TARGET = 2.0


async def best_and_median(run: Callable[[], Awaitable[object] | object], calls: int,
                          repeat: int) -> tuple[float, float]:
    """Microseconds per call: best and median of ``repeat`` batches of ``calls``, on one
    running loop (as nodes render)."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(calls):
            done = run()
            if asyncio.iscoroutine(done):
                await done
        times.append((time.perf_counter() - started) / calls * 1e6)
    return min(times), statistics.median(times)


async def compare(repeat: int) -> None:
    plain = ImmutableSandboxedEnvironment(autoescape=False)
    namespace = POOL.namespace()
    print(f"{'template':22s} {'cellwire us':>12s} {'median':>8s} {'sandbox us':>11s} {'ratio':>6s}")
    for name, text in TEMPLATES.items():
        calls = 200 if "5000" in name else 2000
        template = plain.from_string(text)
        assert await render_jinja(text, POOL) == template.render(namespace)
        ours, ours_median = await best_and_median(lambda t=text: render_jinja(t, POOL), calls,
                                                  repeat)
        theirs, _ = await best_and_median(lambda t=template: t.render(namespace), calls, repeat)
        ratio = ours / theirs
        note = f"  (target < {SHORT_TARGET:g}x)" if "loop" not in name else ""
        print(f"{name:22s} {ours:12.1f} {ours_median:8.1f} {theirs:11.1f} {ratio:5.1f}x{note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeat", type=int, default=7)
    asyncio.run(compare(parser.parse_args().repeat))


if __name__ == "__main__":
    main()
