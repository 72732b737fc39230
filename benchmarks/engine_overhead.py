"""Engine overhead per node: cellwire against LangGraph on the same graphs.

Graphs: a chain of 200 no-op nodes, a fan-out of 100 with a join, a 20x10 lattice. Each graph
is compiled once and invoked many times; the figure is the time of one invocation divided by
the number of nodes: the best of the repetitions (what the code costs; the machine is shared
and noisy, and noise only ever adds time), with the median beside it. Targets: cellwire at most 25 us/node with the store off, at
most 100 us/node with the SQLite store on, and at least 10x less than LangGraph everywhere.

Then the same graphs as a user runs them: template-transform nodes (each renders
``{{ v[-8:] }}!`` over its upstream's output: the last eight characters and one more, so every
node handles the same amount of text at any graph size; ``{{ v }}!`` would grow the text by a
character per node, and a 5,000-node chain would move 12.5 million characters, timing the
data rather than the engine), through the runner with the default store (SQLite, a checkpoint
per node) and the per-run compile check. The peers run the same graph rendering the same
Jinja template: LangGraph in memory (no checkpointer: it keeps nothing), LangGraph with its
SQLite checkpointer (``AsyncSqliteSaver``: like cellwire's default, it keeps every step), and
Dify's own engine where a graphon interpreter is given (``--graphon PYTHON`` or
``CELLWIRE_GRAPHON_PYTHON``; see ``_graphon.py``). Last, the cost per node of a 5,000-node
chain against a 100-node one (target: within 1.3x, the engine's cost per node does not grow
with the graph).

Run: .venv/bin/python benchmarks/engine_overhead.py [--repeat N] [--graphon PYTHON]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any, TypedDict

from _timing import abest_and_median
from langgraph.graph import END, START, StateGraph

import cellwire
from cellwire.engine import CompiledWorkflow, Execution, Runtime
from cellwire.model import node_type

Shape = dict[str, list[str]]  # node -> upstream nodes


def chain(n: int = 200) -> Shape:
    return {f"n{i}": ([f"n{i - 1}"] if i else []) for i in range(n)}


def fan_out(width: int = 100) -> Shape:
    shape: Shape = {"root": []}
    shape.update({f"w{i}": ["root"] for i in range(width)})
    shape["join"] = [f"w{i}" for i in range(width)]
    return shape


def lattice(layers: int = 20, width: int = 10) -> Shape:
    shape: Shape = {}
    for layer in range(layers):
        for col in range(width):
            ups = [] if layer == 0 else [f"l{layer - 1}_{col}", f"l{layer - 1}_{(col + 1) % width}"]
            shape[f"l{layer}_{col}"] = ups
    return shape


@node_type("bench-noop")
async def _noop(ctx):
    return None


def cellwire_graph(shape: Shape) -> CompiledWorkflow:
    wf = cellwire.Workflow("bench")
    for node_id, ups in shape.items():
        wf.add_node(node_id, "bench-noop", after=ups or None)
    return CompiledWorkflow(wf)


class State(TypedDict, total=False):
    x: int


async def _lg_noop(state: State) -> dict:
    return {}


def langgraph_graph(shape: Shape):
    builder = StateGraph(State)
    for node_id in shape:
        builder.add_node(node_id, _lg_noop)
    sinks = set(shape) - {u for ups in shape.values() for u in ups}
    for node_id, ups in shape.items():
        if not ups:
            builder.add_edge(START, node_id)
        elif len(ups) == 1:
            builder.add_edge(ups[0], node_id)
        else:
            builder.add_edge(ups, node_id)  # waits for every upstream node
    for node_id in sinks:
        builder.add_edge(node_id, END)
    return builder.compile()


async def measure(name: str, shape: Shape, repeat: int, db: Path) -> dict[str, tuple[float, float]]:
    from cellwire.store import RunStore

    n = len(shape)
    compiled = cellwire_graph(shape)
    bare = Runtime()
    store = RunStore(db)
    stored = Runtime(layers=[store.sink])

    async def cw() -> object:
        result = await Execution(compiled, {}, bare).run()
        assert result.ok, result.error
        return result

    async def cw_store() -> object:
        return await Execution(compiled, {}, stored).run()

    graph = langgraph_graph(shape)

    async def lg() -> object:
        return await graph.ainvoke({"x": 0})

    timings = {
        "cellwire": await abest_and_median(cw, repeat),
        "cellwire+store": await abest_and_median(cw_store, repeat),
        "langgraph": await abest_and_median(lg, max(5, repeat // 5)),
    }
    results = {k: (best / n * 1e6, median / n * 1e6) for k, (best, median) in timings.items()}
    store.close()
    return results


# -- as a user runs them: template nodes, the runner, the default store ------------------------


#: What each template node renders: a fixed amount of text at any graph size.
TEMPLATE = "{{ v[-8:] }}!"


def template_workflow(shape: Shape) -> cellwire.Workflow:
    wf = cellwire.Workflow("bench-templates")
    wf.add_node("start", "start", variables=[{"variable": "x", "type": "text-input"}])
    for node_id, ups in shape.items():
        source = ups[0] if ups else "start"
        wf.add_node(node_id, "template-transform", after=ups or "start", template=TEMPLATE,
                    variables=[{"variable": "v",
                                "value_selector": [source, "output" if ups else "x"]}])
    return wf


def _last(old: str, new: str) -> str:
    return new


class TextState(TypedDict, total=False):
    # A reducer: the nodes of a fan-out write the key in the same step.
    text: Annotated[str, _last]


def langgraph_templates(shape: Shape, checkpointer: Any = None) -> Any:
    """The same graph in LangGraph, each node rendering the same (precompiled) template."""
    import jinja2

    template = jinja2.Environment().from_string(TEMPLATE)

    async def render(state: TextState) -> dict:
        return {"text": template.render(v=state.get("text", ""))}

    builder = StateGraph(TextState)
    for node_id in shape:
        builder.add_node(node_id, render)
    sinks = set(shape) - {u for ups in shape.values() for u in ups}
    for node_id, ups in shape.items():
        builder.add_edge(START if not ups else ups if len(ups) > 1 else ups[0], node_id)
    for node_id in sinks:
        builder.add_edge(node_id, END)
    return builder.compile(checkpointer=checkpointer)


def _cell(best: float, median: float, n: int, width: int) -> str:
    return f"{f'{best / n * 1e6:.1f} ({median / n * 1e6:.0f})':>{width}}"


async def user_runs(repeat: int, folder: Path, graphon: str | None) -> bool:
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    from cellwire.runner import default_runner

    runner = default_runner()
    print("\nas a user runs them: template nodes, runner.arun, default store (SQLite, a "
          "checkpoint per node), compile check; us per node, best (median)")
    print(f"{'graph':<20}{'cellwire':>14}{'langgraph':>14}{'ratio':>8}"
          f"{'lg+sqlite':>14}{'ratio':>8}{'graphon':>12}{'ratio':>8}")
    ok = True
    per_node: dict[int, float] = {}
    runs = 0
    async with AsyncSqliteSaver.from_conn_string(str(folder / "langgraph.db")) as saver:
        for name, shape in {"chain 100": chain(100), "chain 200": chain(200),
                            "fan-out 100 + join": fan_out(100),
                            "chain 5000": chain(5000)}.items():
            wf = template_workflow(shape)
            n = len(shape)

            async def cw(wf: cellwire.Workflow = wf) -> object:
                result = await runner.arun(wf, {"x": "a"})
                assert result.ok, result.error
                return result

            times = max(3, repeat // 5) if n < 1000 else 3
            best, median = await abest_and_median(cw, times)
            per_node[n] = best / n * 1e6
            line = f"{name:<20}{_cell(best, median, n, 14)}"
            if n >= 1000:
                print(line)
                continue
            graph = langgraph_templates(shape)
            lg_best, lg_median = await abest_and_median(
                lambda graph=graph: graph.ainvoke({"text": "a"}), times)
            durable = langgraph_templates(shape, saver)

            async def lg_sqlite(durable: Any = durable) -> object:
                nonlocal runs
                runs += 1  # a thread per run: each starts from an empty checkpoint
                return await durable.ainvoke({"text": "a"},
                                             {"configurable": {"thread_id": str(runs)}})

            sq_best, sq_median = await abest_and_median(lg_sqlite, max(3, times // 5))
            line += (f"{_cell(lg_best, lg_median, n, 14)}{lg_best / best:>7.1f}x"
                     f"{_cell(sq_best, sq_median, n, 14)}{sq_best / best:>7.1f}x")
            if graphon:
                from _graphon import graphon_per_node

                g_best = graphon_per_node(wf, max(5, times // 2), graphon)
                if g_best is not None:
                    line += f"{g_best:>12.1f}{g_best / (best / n * 1e6):>7.1f}x"
            print(line)
            if name != "chain 100":
                ok &= lg_best / best >= 10
    growth = per_node[5000] / per_node[100]
    print(f"cost per node at 5,000 nodes / at 100: {growth:.2f}x (target <= 1.3x)")
    print("targets (>=10x LangGraph in memory on chain 200 and fan-out 100, <=1.3x growth):",
          "met" if ok and growth <= 1.3 else "NOT met")
    return ok and growth <= 1.3


async def main(repeat: int, graphon: str | None) -> int:
    graphs = {"chain 200": chain(), "fan-out 100 + join": fan_out(), "lattice 20x10": lattice()}
    print("us per node, best of the repetitions (median in brackets)")
    print(f"{'graph':<20}{'cellwire':>16}{'+store':>16}{'langgraph':>18}{'ratio':>9}")
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for name, shape in graphs.items():
            r = await measure(name, shape, repeat, Path(tmp) / "bench.db")
            ratio = r["langgraph"][0] / r["cellwire"][0]
            cells = "".join(f"{f'{b:.1f} ({m:.0f})':>{w}}" for (b, m), w in
                            zip((r["cellwire"], r["cellwire+store"], r["langgraph"]), (16, 16, 18)))
            print(f"{name:<20}{cells}{ratio:>8.1f}x")
            ok &= r["cellwire"][0] <= 25 and r["cellwire+store"][0] <= 100 and ratio >= 10
    print("targets (<=25 us, <=100 us with store, >=10x LangGraph):", "met" if ok else "NOT met")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CELLWIRE_HOME"] = tmp  # the default store, in a folder of its own
        await user_runs(repeat, Path(tmp), graphon)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--graphon", default=os.environ.get("CELLWIRE_GRAPHON_PYTHON"),
                        help="a Python with graphon==0.8.0 installed (Dify's engine)")
    args = parser.parse_args()
    raise SystemExit(asyncio.run(main(args.repeat, args.graphon)))
