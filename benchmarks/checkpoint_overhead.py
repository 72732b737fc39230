"""Checkpoint cost per node: cellwire's durable runs against the store-off engine and against
LangGraph's SqliteSaver on the same graph.

The graph is a chain of no-op nodes (every node is a step, so every node is checkpointed; a
chain is the worst case, since nothing runs while a `sync` commit is awaited). The figure is
the extra time per node over the same engine without checkpoints: the best of the repetitions
(noise only ever adds time), with the median beside it.

- cellwire: `store off` (no store), `exit` (the store writes the run at its end), `async` and
  `sync` (a checkpoint per node; `sync` commits each node before its successor starts).
- LangGraph: no checkpointer, and SqliteSaver with `durability="sync"` (its default
  `synchronous=FULL`, and again with `synchronous=NORMAL` as cellwire uses). SqliteSaver is the
  package `langgraph-checkpoint-sqlite`, not a dependency of cellwire; without it the benchmark
  compares with LangGraph's InMemorySaver (a lower bound of any saver's cost) and says so.

Targets: cellwire's checkpoints at most 100 us per node, and at least 10x less than SqliteSaver
as LangGraph ships it (`synchronous=FULL`); judged for each durability, `async` the default.

Run: .venv/bin/python benchmarks/checkpoint_overhead.py [--nodes N] [--repeat N]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypedDict

from _timing import abest_and_median, best_and_median
from langgraph.graph import END, START, StateGraph

import cellwire
from cellwire.engine import CompiledWorkflow, Execution, Runtime
from cellwire.engine.checkpoint import DEFAULT_DURABILITY
from cellwire.model import node_type
from cellwire.store import RunStore


@node_type("bench-ckpt-noop")
async def _noop(ctx: Any) -> dict[str, Any]:
    return {"x": 1}


def cellwire_chain(n: int) -> CompiledWorkflow:
    wf = cellwire.Workflow("bench-checkpoints")
    for i in range(n):
        wf.add_node(f"n{i}", "bench-ckpt-noop", after=f"n{i - 1}" if i else None)
    return CompiledWorkflow(wf)


class State(TypedDict, total=False):
    x: int


def _lg_noop(state: State) -> dict[str, int]:
    return {"x": state.get("x", 0) + 1}


def langgraph_chain(n: int, checkpointer: Any = None) -> Any:
    builder = StateGraph(State)
    for i in range(n):
        builder.add_node(f"n{i}", _lg_noop)
        builder.add_edge(f"n{i - 1}" if i else START, f"n{i}")
    builder.add_edge(f"n{n - 1}", END)
    return builder.compile(checkpointer=checkpointer)


async def measure_cellwire(n: int, repeat: int, folder: Path) -> dict[str, tuple[float, float]]:
    compiled = cellwire_chain(n)
    store = RunStore(folder / "cellwire.db")
    bare = Runtime()
    stored = Runtime(layers=[store.sink], checkpointer=store.checkpoints)

    def runner(runtime: Runtime, durability: str) -> Callable[[], Awaitable[object]]:
        async def run() -> object:
            result = await Execution(compiled, {}, runtime, durability=durability).run()
            assert result.ok and result.stored is not False, result.error
            return result
        return run

    timings = {"store off": await abest_and_median(runner(bare, "exit"), repeat)}
    for durability in ("exit", "async", "sync"):
        timings[durability] = await abest_and_median(runner(stored, durability), repeat)
    with sqlite3.connect(folder / "cellwire.db") as conn:
        writes = conn.execute("SELECT count(*) FROM checkpoint_writes").fetchone()[0]
    assert writes >= n, "the checkpointed runs wrote no checkpoints"
    store.close()
    return timings


def measure_langgraph(n: int, repeat: int, folder: Path) -> tuple[str, dict[str, tuple[float,
                                                                                     float]]]:
    plain = langgraph_chain(n)
    timings = {"none": best_and_median(lambda: plain.invoke({"x": 0}), repeat)}
    try:
        from langgraph.checkpoint.sqlite import SqliteSaver
    except ImportError:
        from langgraph.checkpoint.memory import InMemorySaver

        saved = langgraph_chain(n, InMemorySaver())
        timings["InMemorySaver"] = best_and_median(lambda: _invoke(saved), repeat)
        return "InMemorySaver (langgraph-checkpoint-sqlite is not installed)", timings
    for mode in ("FULL", "NORMAL"):
        conn = sqlite3.connect(folder / f"langgraph-{mode}.db", check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={mode}")
        saved = langgraph_chain(n, SqliteSaver(conn))
        timings[f"SqliteSaver {mode}"] = best_and_median(lambda saved=saved: _invoke(saved), repeat)
        conn.close()
    return "SqliteSaver", timings


def _invoke(graph: Any) -> object:
    config = {"configurable": {"thread_id": uuid.uuid4().hex}}
    return graph.invoke({"x": 0}, config, durability="sync")


def main(nodes: int, repeat: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cw = asyncio.run(measure_cellwire(nodes, repeat, folder))
        peer, lg = measure_langgraph(nodes, max(3, repeat // 10), folder)

    def per_node(timings: dict[str, tuple[float, float]], name: str,
                 base: str) -> tuple[float, float]:
        return ((timings[name][0] - timings[base][0]) / nodes * 1e6,
                (timings[name][1] - timings[base][1]) / nodes * 1e6)

    print(f"chain of {nodes} nodes; us per node over the same engine without checkpoints, "
          "best (median)")
    print(f"{'':<34}{'total us/node':>16}{'checkpoint us/node':>22}")
    for name in ("store off", "exit", "async", "sync"):
        extra = per_node(cw, name, "store off")
        total = cw[name][0] / nodes * 1e6
        print(f"{'cellwire ' + name:<34}{total:>16.1f}{f'{extra[0]:.1f} ({extra[1]:.0f})':>22}")
    for name in lg:
        extra = per_node(lg, name, "none")
        total = lg[name][0] / nodes * 1e6
        print(f"{'langgraph ' + name:<34}{total:>16.1f}{f'{extra[0]:.1f} ({extra[1]:.0f})':>22}")
    ours = {d: max(per_node(cw, d, "store off")[0], 1e-3) for d in ("async", "sync")}
    theirs = {name: per_node(lg, name, "none")[0] for name in lg if name != "none"}
    for name, cost in theirs.items():
        print(f"ratio {name} / cellwire: sync {cost / ours['sync']:.1f}x, "
              f"async {cost / ours['async']:.1f}x")
    # The target is against the saver as LangGraph ships it (synchronous=FULL); NORMAL is
    # printed for comparison at equal durability.
    shipped = "SqliteSaver FULL" if "SqliteSaver FULL" in theirs else "InMemorySaver"
    print(f"compared with LangGraph's {peer}; targets against {shipped}")
    for durability in ("async", "sync"):
        ok = ours[durability] <= 100 and theirs[shipped] / ours[durability] >= 10
        default = " (the default)" if durability == DEFAULT_DURABILITY else ""
        print(f"targets for {durability}{default} (<=100 us per node, >=10x less than the "
              f"peer): {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    raise SystemExit(main(args.nodes, args.repeat))
