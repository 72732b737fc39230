"""A batch over a DataFrame, as a user runs one: llm -> code -> template per row.

Each row's llm call goes to an OpenAI-wire server (benchmarks/_provider.py, in a process of
its own) that answers after ``--latency`` seconds, so with ``--concurrency`` rows in flight
the latency alone limits a batch to ``concurrency / latency`` rows per second. The figure is
the share of that limit a batch reaches. The server stands in for a remote provider, whose
CPU is not the client's; here it shares the machine's cores, so it is a lean asyncio
responder (about 0.1 ms of CPU a request; the test double tests/integration/llm_server.py,
with its request log, faults and flavours, costs 0.18 ms) sending the same stream the test
double sends.

- cellwire: ``wf.amap(frame, concurrency=N)`` with the default store (every row a stored
  run) and the OpenAI-compatible provider (streaming, as llm nodes call it);
- LangGraph: the same three steps as a ``StateGraph`` run with ``abatch`` and
  ``max_concurrency=N``, its llm step a plain httpx streaming call (leaner than a chat-model
  wrapper, so the comparison favours LangGraph), without a checkpointer or store. httpx is
  what the OpenAI SDK (and so LangChain's chat models) call through; its connection pool
  slows down past a few dozen requests in flight (here: 147 rows/s at 8 in flight, 102 at
  64), which is most of LangGraph's figure.

Targets (issue 16): cellwire at least 0.8 of the limit, and ahead of LangGraph.

Run: .venv/bin/python benchmarks/batch.py [--rows 2000] [--latency 0.05] [--concurrency 64]
[--runs 1]. Besides rows per second it prints the client's CPU per row (every thread of the
process): on a shared machine that figure moves less than the wall clock.
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
from typing import Any, TypedDict

SERVER = Path(__file__).resolve().parent / "_provider.py"


def start_server(latency: float) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen([sys.executable, str(SERVER), "--latency", str(latency)],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


def cellwire_workflow() -> Any:
    import cellwire

    wf = cellwire.Workflow("batch-bench")
    wf.add_node("start", "start", variables=[{"variable": "question", "type": "paragraph"}])
    wf.add_node("ask", "llm", after="start",
                model={"provider": "openai", "name": "bench", "mode": "chat"},
                prompt_template=[{"role": "user", "text": "Answer: {{#start.question#}}"}])
    wf.add_node("count", "code", after="ask",
                variables=[{"variable": "text", "value_selector": ["ask", "text"]}],
                code="def main(text):\n    return {'words': len(text.split())}\n",
                outputs={"words": {"type": "number"}})
    wf.add_node("shape", "template-transform", after="count",
                variables=[{"variable": "text", "value_selector": ["ask", "text"]},
                           {"variable": "words", "value_selector": ["count", "words"]}],
                template="{{ text }} ({{ words }} words)")
    wf.add_node("end", "end", after="shape",
                outputs=[{"variable": "answer", "value_selector": ["shape", "output"]}])
    return wf


#: ``(wall seconds, CPU seconds of this process)`` of one timed batch.
Timing = tuple[float, float]


async def run_cellwire(base_url: str, rows: list[dict[str, str]], concurrency: int) -> Timing:
    import pandas as pd

    import cellwire
    from cellwire.services.llm import LLMRouter
    from cellwire.services.llm.openai import OpenAIProvider

    provider = OpenAIProvider("openai", base_url=base_url, api_key="bench",
                              max_connections=concurrency * 2)
    runtime = cellwire.Runtime(llm=LLMRouter([provider]))
    wf = cellwire_workflow()
    frame = pd.DataFrame(rows)
    warm = await wf.amap(frame.head(concurrency), runtime=runtime, concurrency=concurrency,
                         progress=False)
    assert (warm["status"] == "succeeded").all(), warm["error"].dropna().head().tolist()
    t0, c0 = time.perf_counter(), time.process_time()
    result = await wf.amap(frame, runtime=runtime, concurrency=concurrency, progress=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert (result["status"] == "succeeded").all(), result["error"].dropna().head().tolist()
    assert result["answer"].iloc[0] == f"echo: Answer: {rows[0]['question']} (4 words)"
    await provider.aclose()
    return wall, cpu


class State(TypedDict, total=False):
    question: str
    text: str
    words: int
    answer: str


async def run_langgraph(base_url: str, rows: list[dict[str, str]], concurrency: int) -> Timing:
    import httpx
    from langgraph.graph import END, START, StateGraph

    client = httpx.AsyncClient(base_url=base_url, limits=httpx.Limits(
        max_connections=concurrency * 2, max_keepalive_connections=concurrency * 2))

    async def ask(state: State) -> State:
        body = {"model": "bench", "stream": True,
                "messages": [{"role": "user", "content": f"Answer: {state['question']}"}]}
        parts: list[str] = []
        async with client.stream("POST", "/chat/completions", json=body,
                                 headers={"Authorization": "Bearer bench"}) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    for choice in json.loads(line[6:]).get("choices") or []:
                        parts.append((choice.get("delta") or {}).get("content") or "")
        return {"text": "".join(parts)}

    def count(state: State) -> State:
        return {"words": len(state["text"].split())}

    def shape(state: State) -> State:
        return {"answer": f"{state['text']} ({state['words']} words)"}

    graph = StateGraph(State)
    graph.add_node("ask", ask)
    graph.add_node("count", count)
    graph.add_node("shape", shape)
    graph.add_edge(START, "ask")
    graph.add_edge("ask", "count")
    graph.add_edge("count", "shape")
    graph.add_edge("shape", END)
    app = graph.compile()
    config = {"max_concurrency": concurrency}
    await app.abatch(rows[:concurrency], config=config)  # type: ignore[arg-type]
    t0, c0 = time.perf_counter(), time.process_time()
    out = await app.abatch(rows, config=config)  # type: ignore[arg-type]
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert out[0]["answer"] == f"echo: Answer: {rows[0]['question']} (4 words)", out[0]
    await client.aclose()
    return wall, cpu


async def main(n: int, latency: float, concurrency: int, runs: int) -> None:
    # The default store, in a home of its own: every row is a stored run, as for a user.
    os.environ["CELLWIRE_HOME"] = tempfile.mkdtemp(prefix="cellwire-batch-bench-")
    rows = [{"question": f"question {i}"} for i in range(n)]
    process, base_url = start_server(latency)
    timings: dict[str, list[Timing]] = {CELLWIRE: [], LANGGRAPH: []}
    try:
        for _ in range(runs):  # alternated, so a busy spell of the machine hits both
            timings[CELLWIRE].append(await run_cellwire(base_url, rows, concurrency))
            timings[LANGGRAPH].append(await run_langgraph(base_url, rows, concurrency))
    finally:
        process.terminate()
        process.wait(10)
    limit = concurrency / latency
    print(f"{n} rows, llm -> code -> template, {latency * 1000:.0f} ms per llm call, "
          f"{concurrency} rows in flight: the latency limit is {limit:.0f} rows/s"
          + (f"; median of {runs} runs" if runs > 1 else ""))
    rates = {}
    for name, timed in timings.items():
        wall = statistics.median(w for w, _ in timed)
        cpu = statistics.median(c for _, c in timed)
        rates[name] = rate = n / wall
        print(f"{name:32s} {rate:7.0f} rows/s  {rate / limit:.2f} of the limit  "
              f"{cpu / n * 1e6:5.0f} us CPU a row")
    print(f"cellwire / LangGraph: {rates[CELLWIRE] / rates[LANGGRAPH]:.2f}x the rows per "
          "second (targets: >= 0.8 of the limit, ahead of LangGraph)")


CELLWIRE, LANGGRAPH = "cellwire (amap, default store)", "LangGraph (abatch)"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--runs", type=int, default=1,
                        help="batches of each, alternated; the figures are their medians")
    args = parser.parse_args()
    asyncio.run(main(args.rows, args.latency, args.concurrency, args.runs))
