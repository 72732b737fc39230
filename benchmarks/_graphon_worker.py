"""Runs inside a graphon interpreter (Python 3.12+, ``graphon==0.8.0``); started by
``_graphon.py``, never imported by cellwire (it must not import cellwire: the graphon venv has
none).

Reads one JSON object on stdin: ``{"dsl": <Dify DSL YAML text>, "inputs": {...},
"repeat": N, "nodes": [<template node ids>]}``. A few warm-up runs, then ``repeat`` timed runs;
each run is what a graphon user does per run: ``graphon.dsl.loads(dsl, start_inputs=...)``
(a new Engine: graphon binds the variable pool and runtime state to the engine, so an engine
runs once) and then the whole ``engine.run()`` event stream. ``loads`` and the run are timed
apart with ``time.perf_counter``. Every run is checked: the graph run succeeded and every
template node succeeded exactly once. Writes one JSON object on stdout: seconds, lists of
``repeat`` samples for ``total`` (loads + run), ``loads``, ``run`` and ``parse`` (the
``yaml.safe_load`` that ``loads`` starts with, timed on its own beside each run: the part of
``loads`` that is YAML), and the graphon version.

``"cache_templates": true`` is a diagnostic, not what a user gets: graphon's built-in renderer
(``graphon.dsl.node_factory._DefaultJinja2TemplateRenderer``, which ``loads`` gives every
template-transform node, with no way to pass another) builds a Jinja2 Environment and compiles
the template on every render; this swaps in one that compiles each template once, with the
same settings, to show how much of graphon's time is that.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from importlib.metadata import version
from typing import Any

import yaml


def main() -> int:
    from graphon.dsl import loads

    request = json.load(sys.stdin)
    dsl, inputs, nodes = request["dsl"], request["inputs"], set(request["nodes"])
    repeat = max(1, int(request["repeat"]))
    if request.get("cache_templates"):
        _cache_templates()

    def once() -> tuple[float, float, float]:
        p0 = time.perf_counter()
        yaml.safe_load(dsl)
        parse = time.perf_counter() - p0
        t0 = time.perf_counter()
        engine = loads(dsl, start_inputs=inputs)
        t1 = time.perf_counter()
        succeeded: list[str] = []
        outcome = None
        for event in engine.run():
            name = type(event).__name__
            if name == "NodeRunSucceededEvent":
                succeeded.append(event.node_id)
            elif name.startswith("GraphRun") and name != "GraphRunStartedEvent":
                outcome = (name, event)
        t2 = time.perf_counter()
        if outcome is None or outcome[0] != "GraphRunSucceededEvent":
            raise RuntimeError(f"graphon run did not succeed: {outcome!r}")
        ran = [node for node in succeeded if node in nodes]
        if len(ran) != len(nodes) or set(ran) != nodes:
            raise RuntimeError(f"graphon ran {len(ran)} of {len(nodes)} template nodes "
                               f"(each must run exactly once)")
        return t1 - t0, t2 - t1, parse

    for _ in range(max(2, repeat // 10)):
        once()
    samples = [once() for _ in range(repeat)]
    json.dump({"graphon": version("graphon"),
               "total": [a + b for a, b, _ in samples],
               "loads": [a for a, _, _ in samples],
               "run": [b for _, b, _ in samples],
               "parse": [c for _, _, c in samples]}, sys.stdout)
    return 0


def _cache_templates() -> None:
    import jinja2
    from graphon.dsl import node_factory
    from graphon.template_rendering import TemplateRenderError

    environment = jinja2.Environment(autoescape=False, undefined=jinja2.StrictUndefined)
    compiled: dict[str, jinja2.Template] = {}

    def render_template(self: object, template: str, variables: Mapping[str, Any]) -> str:
        try:
            found = compiled.get(template)
            if found is None:
                found = compiled[template] = environment.from_string(template)
            return str(found.render(**dict(variables)))
        except jinja2.TemplateError as error:
            raise TemplateRenderError(str(error)) from error

    node_factory._DefaultJinja2TemplateRenderer.render_template = render_template


if __name__ == "__main__":
    raise SystemExit(main())
