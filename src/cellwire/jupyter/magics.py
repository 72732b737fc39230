"""``%%workflow`` (a cell is a node) and ``%workflow`` (list, show, run, map, stop, runs,
trace, costs, latency, export, import, delete, kb), on jupysql's Magics + Configurable pattern.

Every user error is an IPython ``UsageError`` of one line naming the fix, so it prints
without a traceback. Settings: ``%config WorkflowMagics`` lists them.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, no_var_expand
from traitlets import Bool, Float, Int, List, Unicode, observe
from traitlets.config import Configurable

from cellwire.engine import RunResult
from cellwire.engine.executor import DEFAULT_CONCURRENCY
from cellwire.model import WorkflowError, registry
from cellwire.model.validate import reference_problems
from cellwire.runner import RunHandle, default_runner, resolve_store
from cellwire.store import RunNotFound, RunStore

from . import dashboards
from .cells import CellError, parse_cell, parse_pairs
from .display import LiveStatus, Rendered
from .magic_args import SUBCOMMANDS, cell_parser, parse, split
from .picture import workflow_svg, workflow_text
from .session import Session, SessionError
from .tables import readable_trace, rounded

_NODE_ID = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, WorkflowError) and exc.problems:
        first = str(exc.problems[0])
        more = len(exc.problems) - 1
        head = str(exc).splitlines()[0]
        return f"{head}: {first}" + (f" (and {more} more problems)" if more else "")
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return " ".join(text.split())


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn the errors a user can fix into one-line UsageErrors."""
    try:
        yield
    except UsageError:
        raise
    except (CellError, SessionError, WorkflowError, RunNotFound, LookupError, ValueError,
            OSError) as exc:
        raise UsageError(_one_line(exc)) from None


_F = TypeVar("_F", bound=Callable[..., Any])


def _cell_magic(name: str) -> Callable[[_F], _F]:
    """IPython's ``cell_magic(name)``: IPython annotates it as returning a function or a
    decorator, which mypy cannot apply."""
    return cast("Callable[[_F], _F]", cell_magic(name))


def _line_magic(name: str) -> Callable[[_F], _F]:
    """IPython's ``line_magic(name)``, typed as :func:`_cell_magic` is."""
    return cast("Callable[[_F], _F]", line_magic(name))


@magics_class
class WorkflowMagics(Magics, Configurable):
    """Build workflows cell by cell and run them without blocking the notebook."""

    default_model = Unicode(
        "", config=True,
        help="provider/model for llm cells without --model (e.g. openai/gpt-4o-mini)")
    run_model = Unicode(
        "", config=True,
        help="route every llm node of runs started here to this provider/model "
             "(e.g. scripted/echo); empty: each node's own model")
    store = Unicode(
        "", config=True,
        help="where runs are stored: '' for $CELLWIRE_HOME/runs.db, 'none' for nowhere, "
             "or a path to a runs.db")
    live_interval = Float(0.25, config=True,
                          help="seconds between updates of a run's live status display")
    concurrency = Int(DEFAULT_CONCURRENCY, config=True,
                      help="node executions a run may have in flight at once")
    feedback = Bool(True, config=True, help="say what a %%workflow cell defined")
    node_cache = Bool(True, config=True,
                      help="answer pure nodes (code, template-transform) from the kernel's "
                           "node cache when their config and the values they read are those "
                           "of an earlier run (their status is 'cached')")
    secrets = List(Unicode(), config=True,
                   help="secrets granted to every run of this kernel (the editor's too), as "
                        "grant specs: 'VAR' (your secrets file, else the environment variable "
                        "VAR), 'VAR=env:NAME', 'VAR=file:ENTRY', 'VAR=keyring:SERVICE/USER'")

    def __init__(self, shell: Any = None, session: Session | None = None, **kwargs: Any):
        Configurable.__init__(self, config=shell.config if shell is not None else None)
        Magics.__init__(self, shell=shell, **kwargs)
        self.session = session or Session()
        if shell is not None:
            shell.configurables.append(self)
        self._configure_runner()

    @observe("store", "concurrency", "secrets", "node_cache")
    def _configure_runner(self, *_: Any) -> None:
        # One runner per kernel: the editor and wf.run() follow these settings too.
        default_runner().configure(store=self._store_option(), concurrency=self.concurrency,
                                   secrets=list(self.secrets) or None,
                                   node_cache=self.node_cache)

    # -- %%workflow -------------------------------------------------------------------------

    @no_var_expand
    @_cell_magic("workflow")
    def workflow_cell(self, line: str, cell: str) -> None:
        """%%workflow NAME NODE_ID --type TYPE [--after ID[:HANDLE] ...]: the cell is a node."""
        args = cell_parser().parse_args(split(line))
        with _user_errors():
            node = self._define(args, cell)
        if self.feedback:
            wf = self.session.workflows[args.name]
            upstream = [e.source for e in wf.edges if e.target == node.id]
            print(f"{args.name}: {node.id} ({node.type})"
                  + (f" after {', '.join(upstream)}" if upstream else ""))
        # Refused only when the workflow runs: the node it names may come in a later cell.
        for problem in reference_problems(self.session.workflows[args.name], node.id):
            text = str(problem)  # a warning says so itself
            print(text if problem.level == "warning" else f"warning: {text}", file=sys.stderr)

    def _define(self, args: argparse.Namespace, cell: str) -> Any:
        if not _NODE_ID.match(args.node_id):
            raise CellError(f"node id {args.node_id!r}: use 1-64 letters, digits, _ or -")
        kind = registry.find(args.node_type)
        if kind is None:
            raise CellError(f"unknown node type {args.node_type!r}; use one of: "
                            f"{', '.join(registry.names())}")
        wf = self.session.workflows.get(args.name)
        after = []
        for item in args.after:
            source, _, handle = item.partition(":")
            if wf is None or source not in wf.nodes:
                raise CellError(f"--after {item}: no node {source!r} in workflow "
                                f"{args.name!r}; define it first or fix the id")
            after.append((source, handle or "source"))
        start_id = next((n.id for n in wf.nodes.values() if n.type == "start"), "start") \
            if wf is not None else "start"
        parsed = parse_cell(
            kind.name, cell, model=args.model or self.default_model, system=args.system,
            variables=parse_pairs(args.var, "--var"), outputs=parse_pairs(args.out, "--out"),
            start_id=start_id,
        )
        try:
            kind.parse_config(args.node_id, parsed.config)
        except WorkflowError as exc:
            raise CellError(f"{_one_line(exc)}; fix the cell body or its options") from None
        options: dict[str, Any] = {"title": args.title, "error_strategy": args.error_strategy,
                                   "max_time": args.timeout}
        if args.retry is not None:
            options["retry"] = args.retry
        return self.session.define(
            args.name, args.node_id, kind.name, parsed.config, cell_id=self._cell_id(),
            refs=parsed.references, after=after, **options,
        )

    # -- cell identity ----------------------------------------------------------------------

    def _metadata(self) -> dict[str, Any]:
        kernel = getattr(self.shell, "kernel", None)
        if kernel is None:
            return {}
        try:
            parent = kernel.get_parent()
        except Exception:  # noqa: BLE001 - an old or unusual kernel: no cell ids then
            return {}
        return dict((parent or {}).get("metadata") or {})

    def _cell_id(self) -> str | None:
        cell_id = self._metadata().get("cellId")
        return str(cell_id) if cell_id else None

    def prune_deleted(self, *_: Any) -> None:
        """Remove the nodes of cells JupyterLab reports deleted (a pre_run_cell hook)."""
        deleted = self._metadata().get("deletedCells") or []
        if deleted:
            self.session.delete_cells(str(c) for c in deleted)

    # -- %workflow --------------------------------------------------------------------------

    @no_var_expand
    @_line_magic("workflow")
    def workflow_line(self, line: str) -> Any:
        """%workflow list|show|run|map|stop|runs|trace|costs|latency|export|import|delete|tools|kb|serve|help"""
        words = split(line)
        if not words:
            raise UsageError("%workflow needs a subcommand: " + ", ".join(SUBCOMMANDS))
        sub, rest = words[0], words[1:]
        handler: Callable[[list[str]], Any] | None = getattr(self, f"_cmd_{sub}", None)
        if sub not in SUBCOMMANDS or handler is None:
            raise UsageError(f"unknown subcommand {sub!r}; use one of: {', '.join(SUBCOMMANDS)}")
        with _user_errors():
            return handler(rest)

    def _cmd_kb(self, rest: list[str]) -> Any:
        """%workflow kb create|add|search|list|describe|bind|drop: as `cellwire kb`."""
        from .knowledge import kb_command

        return kb_command(rest)

    def _cmd_help(self, rest: list[str]) -> Rendered:
        text = "%workflow " + "|".join(SUBCOMMANDS) + "\n" + (__doc__ or "")
        return Rendered(f"<pre>{text}</pre>", text)

    def _cmd_list(self, rest: list[str]) -> Any:
        import pandas as pd

        parse("list", rest)
        rows = []
        for name, wf in self.session.workflows.items():
            last = next((h for h in reversed(self.session.runs.values()) if h.workflow == name),
                        None)
            rows.append({"workflow": name, "nodes": len(wf.nodes), "edges": len(wf.edges),
                         "last_run": last.run_id if last else None,
                         "last_status": last.status if last else None})
        return pd.DataFrame(rows, columns=["workflow", "nodes", "edges", "last_run",
                                           "last_status"])

    def _cmd_show(self, rest: list[str]) -> Any:
        """The editor widget in a kernel; the SVG picture with --svg or outside a kernel."""
        args = parse("show", rest)
        wf = self.session.workflow(args.name)
        # Widgets need a kernel with comms (ipykernel); a terminal gets the picture.
        if args.svg or not hasattr(getattr(self.shell, "kernel", None), "comm_manager"):
            return Picture(wf)
        from .widget import WorkflowWidget

        return WorkflowWidget(wf)

    def _cmd_delete(self, rest: list[str]) -> None:
        args = parse("delete", rest)
        self.session.delete(args.name)
        print(f"deleted workflow {args.name}")

    # -- running ------------------------------------------------------------------------------

    def _cmd_run(self, rest: list[str]) -> RunResult | None:
        args = parse("run", rest)
        wf = self.session.workflow(args.name)
        inputs = {key: self._value(value) for key, value in parse_pairs(args.inputs, "input")
                  .items()}
        rerun: dict[str, Any] = {}
        if args.stale:
            found = default_runner().stale(wf, inputs, model=args.model or self.run_model or None)
            if not found.nodes:
                last = found.previous
                print(f"nothing is stale: {wf.name} is up to date with its last run"
                      + (f" ({last.run_id[:12]})" if last is not None else ""))
                return last if args.wait else None
            inputs = found.inputs
            rerun = found.options()
            print(f"running {len(found.nodes)} stale node(s) of {wf.name}: "
                  + ", ".join(found.nodes))
        if args.concurrency is not None:
            if args.concurrency < 1:
                raise UsageError("--concurrency: give at least 1")
            rerun["concurrency"] = args.concurrency
        handle, _live = self.start(wf, inputs, model=args.model, wait=args.wait,
                                   secrets=args.secret or None, **rerun)
        if args.wait:
            return handle.result
        return None

    def start(self, wf: Any, inputs: dict[str, Any], *, model: str = "",
              wait: bool = False, secrets: list[str] | None = None, **rerun: Any
              ) -> tuple[RunHandle, LiveStatus]:
        """Start a run of ``wf`` on the notebook's runner: a task on the running event loop,
        or to completion when ``wait`` (or when no loop runs, as in a terminal). ``secrets``
        are grant specs, on top of ``%config WorkflowMagics.secrets``; ``rerun`` are the
        options of a partial run (:meth:`cellwire.freshness.Staleness.options`)."""
        live = LiveStatus(wf.name, interval=self.live_interval)
        runner = default_runner()
        options: dict[str, Any] = {"layers": [live], "model": model or self.run_model or None,
                                   "secrets": secrets, **rerun}
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None and not wait:
            handle = self.session.add_run(runner.start(wf, inputs, **options))
            assert handle.task is not None
            handle.task.add_done_callback(lambda task: _finish(live, task))
            return handle, live
        # With wait, the kernel's loop is busy running this cell: the runner's own loop.
        handle = self.session.add_run(runner.submit(wf, inputs, **options))
        result = handle.wait()
        if not wait:
            live.finish(result)
        return handle, live

    def _value(self, text: str) -> Any:
        if text.startswith("$"):
            name = text[1:]
            namespace = self.shell.user_ns if self.shell is not None else {}
            if name not in namespace:
                raise UsageError(f"input ${name}: no variable {name!r} in the notebook; "
                                 "define it or pass a literal")
            return namespace[name]
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text

    def _cmd_map(self, rest: list[str]) -> Any:
        """A run per row of a notebook DataFrame, to the end; the rows' results as a frame."""
        from cellwire.scale import map as map_rows

        args = parse("map", rest)
        wf = self.session.workflow(args.name)
        frame = self._value("$" + args.frame.removeprefix("$"))
        columns = dict(pair.partition("=")[::2] for pair in args.column)
        if any(not k or not v for k, v in columns.items()):
            raise UsageError(f"%workflow map: --column takes COLUMN=INPUT, got {args.column}")
        try:
            return map_rows(wf, frame, model=args.model or self.run_model or None,
                            concurrency=args.concurrency, store=self._store_option(),
                            run_concurrency=self.concurrency, batch_id=args.resume,
                            columns=columns or None, progress=not args.no_progress)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"%workflow map: {exc}") from None

    def _cmd_stop(self, rest: list[str]) -> None:
        args = parse("stop", rest)
        handle = self.session.find_run(args.run)
        if handle is None:
            raise SessionError(f"no run {args.run or ''!r} started in this notebook; "
                               "see %workflow runs for ids")
        if handle.done:
            print(f"run {handle.run_id[:12]} already ended: {handle.status}")
            return
        handle.stop()
        print(f"stopping run {handle.run_id[:12]}")

    def _cmd_serve(self, rest: list[str]) -> Any:
        """%workflow serve NAME [--host H] [--port P]: the Service API on a kernel thread;
        %workflow serve --stop ends it."""
        from . import serving

        args = parse("serve", rest)
        if args.stop:
            stopped = serving.stop()
            print(f"stopped serving {stopped.app}" if stopped else "no server was running")
            return None
        if not args.name:
            raise UsageError("%workflow serve needs a workflow name (or --stop)")
        server = serving.start(self.session.workflow(args.name), self._store(),
                               host=args.host, port=args.port)
        print(f"serving {server.app} at {server.url} (API key: the returned object's .key; "
              "stop with %workflow serve --stop)")
        return server

    # -- monitoring ---------------------------------------------------------------------------

    def _store_option(self) -> Any:
        setting = self.store.strip()
        if not setting:
            return True
        return False if setting.lower() in ("none", "off", "false") else setting

    def _store(self) -> RunStore:
        found = resolve_store(self._store_option())
        if found is None:
            raise SessionError("runs are not stored (WorkflowMagics.store = 'none'); set "
                               "%config WorkflowMagics.store = '' to keep them")
        return found

    def _cmd_runs(self, rest: list[str]) -> Any:
        args = parse("runs", rest)
        return dashboards.runs(args.limit, args.workflow, args.status, store=self._store())

    def _cmd_trace(self, rest: list[str]) -> Any:
        args = parse("trace", rest)
        handle = self.session.find_run(args.run)
        run: Any = args.run
        if handle is not None:
            run = handle.result if handle.result is not None else handle.run_id
        if args.chart:
            return dashboards.timeline(run, store=self._store())
        return readable_trace(dashboards.trace(run, store=self._store()))

    def _cmd_costs(self, rest: list[str]) -> Any:
        args = parse("costs", rest)
        if args.chart:
            return dashboards.cost_chart(args.workflow, store=self._store())
        return rounded(dashboards.costs(args.by, workflow=args.workflow, store=self._store()))

    def _cmd_latency(self, rest: list[str]) -> Any:
        args = parse("latency", rest)
        if args.chart:
            return dashboards.latency_chart(args.workflow, by=args.by, store=self._store())
        return rounded(dashboards.latency(args.by, workflow=args.workflow, store=self._store()))

    # -- files ----------------------------------------------------------------------------------

    def _cmd_export(self, rest: list[str]) -> Rendered | None:
        args = parse("export", rest)
        wf = self.session.workflow(args.name)
        text = export_text(wf if args.with_cells else self.session.without_cells(wf),
                           args.format)
        if args.to:
            Path(args.to).write_text(text, encoding="utf-8")
            print(f"wrote {args.to}")
            return None
        return Rendered(f"<pre>{_escape(text)}</pre>", text)

    def _cmd_import(self, rest: list[str]) -> None:
        from cellwire.formats import load
        from cellwire.services.trust import describe

        args = parse("import", rest)
        wf = load(args.file, trusted=True if args.trust else None)
        if args.name:
            wf.name = args.name
        self.session.workflows[wf.name] = wf
        print(f"imported {wf.name}: {len(wf.nodes)} nodes, {len(wf.edges)} edges")
        print(describe(wf))

    def _cmd_tools(self, rest: list[str]) -> Any:
        """Register the tools of Python files or modules (your own code, imported here),
        of MCP servers (``--mcp servers.json``) and renames (``--map renames.yaml``) for
        every later run; shows the registered tools."""
        import pandas as pd

        from cellwire.services.tools import (
            ToolLoadError,
            default_registry,
            describe_tools,
            register_tools,
        )

        args = parse("tools", rest)
        registry = default_registry()
        try:
            register_tools(registry, args.sources, args.mcp, args.map, map_option="--map")
        except ToolLoadError as exc:
            raise UsageError(str(exc)) from None
        rows = [{**row, "arguments": ", ".join(row["arguments"])}
                for row in describe_tools(registry)]
        return pd.DataFrame(rows, columns=["provider", "name", "kind", "description",
                                           "arguments"])


class Picture:
    """A workflow's graph: SVG in a notebook, text in a terminal."""

    def __init__(self, wf: Any):
        self.workflow = wf

    def _repr_svg_(self) -> str:
        return workflow_svg(self.workflow)

    def __repr__(self) -> str:
        return workflow_text(self.workflow)


def export_text(wf: Any, fmt: str) -> str:
    """The workflow as native YAML, Dify DSL YAML, or Python code."""
    if fmt == "yaml":
        from cellwire.formats import dump

        return dump(wf)
    if fmt == "dify":
        from cellwire.formats.dify_export import dump_dify

        return dump_dify(wf)
    from cellwire.formats.python_export import export_python

    return export_python(wf)


def _escape(text: str) -> str:
    import html

    return html.escape(text)


def _finish(live: LiveStatus, task: Any) -> None:
    if not task.cancelled() and task.exception() is None:
        live.finish(task.result())
