"""Dify's own engine, graphon, as a peer in the benchmarks: a cellwire workflow exported to Dify
DSL and run by ``graphon==0.8.0`` in its own interpreter (graphon needs Python 3.12; cellwire's
venv is 3.11, so it runs in a subprocess: ``_graphon_worker.py``).

The interpreter is the ``python`` argument, else ``CELLWIRE_GRAPHON_PYTHON``; nothing else is
assumed, and with neither :func:`graphon_per_node` returns None. Make one with::

    ~/.pyenv/versions/3.12*/bin/python -m venv /work/graphon-venv
    /work/graphon-venv/bin/pip install graphon==0.8.0
    export CELLWIRE_GRAPHON_PYTHON=/work/graphon-venv/bin/python

What is timed, per run, is what a graphon user does per run: ``graphon.dsl.loads(dsl,
start_inputs=...)``, which parses the YAML, validates the graph and builds a new ``Engine``
(graphon binds the variable pool and runtime state to the engine, so an engine runs once), then
the whole ``engine.run()`` event stream (default ``workers=5`` threads). So the figure includes
``loads``, as cellwire's includes the runner's per-run compile check; :func:`graphon_timings`
gives ``loads`` and the run apart. Timed with ``time.perf_counter`` inside the graphon process
(not the subprocess start or the import), after a few warm-up runs; the best of ``repeat``.
Template-transform nodes render with graphon's built-in local Jinja2 renderer (``jinja2`` in
the graphon venv; no code sandbox, no network).

The export is cellwire's Dify exporter, unchanged (``cellwire export --dsl``).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import cellwire
from cellwire.formats.dify import dump_dify

WORKER = Path(__file__).with_name("_graphon_worker.py")
ENV = "CELLWIRE_GRAPHON_PYTHON"


def graphon_python(python: str | None = None) -> str | None:
    """The graphon interpreter: ``python``, else ``$CELLWIRE_GRAPHON_PYTHON``; None without
    either, or (with a note on stderr) when the one given is not there."""
    given = python or os.environ.get(ENV)
    if not given:
        return None
    found = shutil.which(given)
    if found is None:
        print(f"graphon: no interpreter at {given!r}; skipping", file=sys.stderr)
    return found


def graphon_dsl(workflow: cellwire.Workflow) -> str:
    """``workflow`` as the Dify DSL graphon loads: cellwire's export, as a user writes it."""
    return dump_dify(workflow)


def graphon_timings(workflow: cellwire.Workflow, repeat: int, python: str | None = None,
                    inputs: dict[str, Any] | None = None, *,
                    cache_templates: bool = False) -> dict[str, Any] | None:
    """Run ``workflow`` ``repeat`` times under graphon; None without an interpreter. Returns
    seconds per run: ``best``/``median`` of ``total`` (loads + run), ``loads``, ``run`` and
    ``parse`` (the YAML parsing ``loads`` starts with, timed on its own), and ``nodes``, the
    number of template-transform nodes. ``inputs`` defaults to ``"a"`` for every start
    variable. ``cache_templates`` is a diagnostic (see ``_graphon_worker.py``): graphon's
    renderer compiles each template on every render; this compiles it once. Raises
    ``RuntimeError`` when graphon cannot run the workflow."""
    interpreter = graphon_python(python)
    if interpreter is None:
        return None
    nodes = [n.id for n in workflow.nodes.values() if n.type == "template-transform"]
    if inputs is None:
        inputs = {v["variable"]: "a" for n in workflow.nodes.values() if n.type == "start"
                  for v in (_dump(n.config).get("variables") or [])}
    request = {"dsl": graphon_dsl(workflow), "inputs": inputs, "repeat": repeat, "nodes": nodes,
               "cache_templates": cache_templates}
    done = subprocess.run([interpreter, str(WORKER)], input=json.dumps(request),
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"graphon ({interpreter}) failed:\n{done.stderr.strip()[-3000:]}")
    samples = json.loads(done.stdout)
    result: dict[str, Any] = {"graphon": samples["graphon"], "nodes": len(nodes)}
    for key in ("total", "loads", "run", "parse"):
        result[key] = {"best": min(samples[key]), "median": statistics.median(samples[key])}
    return result


def graphon_per_node(workflow: cellwire.Workflow, repeat: int,
                     python: str | None = None) -> float | None:
    """Best microseconds per template-transform node of one graphon run of ``workflow``
    (``loads`` + run, see the module's docstring); None without a graphon interpreter."""
    timings = graphon_timings(workflow, repeat, python)
    if timings is None:
        return None
    return timings["total"]["best"] / max(1, timings["nodes"]) * 1e6


def _dump(config: Any) -> dict[str, Any]:
    return config.model_dump() if hasattr(config, "model_dump") else dict(config)


if __name__ == "__main__":  # .venv/bin/python benchmarks/_graphon.py [PYTHON] [--repeat N]
    import argparse

    from engine_overhead import chain, fan_out, template_workflow

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("python", nargs="?", default=None)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    if graphon_python(args.python) is None:
        raise SystemExit(f"give a graphon interpreter (argument or ${ENV})")
    keys = ("total", "loads", "run", "parse")
    print(f"{'graph':<32}" + "".join(f"{k:>16}" for k in keys)
          + "   us per template node, best (median)")
    for name, shape in {"chain 100": chain(100), "chain 200": chain(200),
                        "fan-out 100 + join": fan_out(100)}.items():
        for cache in (False, True):
            t = graphon_timings(template_workflow(shape), args.repeat, args.python,
                                cache_templates=cache)
            assert t is not None
            cells = ""
            for key in keys:
                best, median = (t[key][s] / t["nodes"] * 1e6 for s in ("best", "median"))
                cells += f"{f'{best:.1f} ({median:.0f})':>16}"
            print(f"{name + (' (cached tpl)' if cache else ''):<32}{cells}")
