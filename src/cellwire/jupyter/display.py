"""How runs look in a notebook: a RunResult as compact HTML or text, and the live status
display of a run in flight, updated from its event stream."""

from __future__ import annotations

import asyncio
import html
import json
import time
from collections.abc import Callable
from typing import Any

from cellwire.engine import RunResult
from cellwire.engine.events import (
    RUN_END_EVENTS,
    Event,
    NodeFinished,
    NodeSkipped,
    NodeStarted,
    RunFailed,
    RunStarted,
)
from cellwire.engine.forms import Form
from cellwire.engine.result import trace_row

STATUS_COLORS = {
    "succeeded": "#1a7f37", "partial-succeeded": "#9a6700", "failed": "#cf222e",
    "stopped": "#6e7781", "running": "#0969da", "pending": "#6e7781", "exception": "#9a6700",
    "skipped": "#8c959f", "paused": "#8250df", "interrupted": "#bc4c00",
}
MAX_ROWS = 50
MAX_VALUE = 300
#: Classes MathJax skips: JupyterLab typesets text between two `$` signs in HTML outputs.
NO_MATH = "tex2jax_ignore mathjax_ignore"


class Rendered:
    """Something with both an HTML and a text face: notebooks show one, terminals the other."""

    def __init__(self, html_text: str, text: str):
        self.html = html_text
        self.text = text

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return self.text


def short(value: Any, limit: int = MAX_VALUE) -> str:
    """A value as one line of at most ``limit`` characters."""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            text = repr(value)
    text = " ".join(text.split()) if "\n" in text else text
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _badge(status: str) -> str:
    color = STATUS_COLORS.get(status, "#6e7781")
    return (f'<span style="background:{color};color:#fff;border-radius:3px;padding:0 6px;'
            f'font-size:90%">{html.escape(status)}</span>')


def _fmt_cost(cost: float) -> str:
    return f"${cost:.4f}" if cost else "$0"


def _table(head: list[str], rows: list[list[str]]) -> str:
    """Cells are HTML already escaped by the caller."""
    th = "".join(f'<th style="text-align:left">{html.escape(h)}</th>' for h in head)
    body = "".join("<tr>" + "".join(f'<td style="text-align:left">{c}</td>' for c in r)
                   + "</tr>" for r in rows)
    return f'<table style="font-size:90%"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _node_rows(rows: list[dict[str, Any]]) -> tuple[list[list[str]], int]:
    shown = rows[:MAX_ROWS]
    out = []
    for r in shown:
        out.append([
            html.escape(str(r["node_id"])), html.escape(str(r["node_type"])),
            _badge(str(r["status"])), f"{(r['elapsed_ms'] or 0):.1f}",
            str(r["total_tokens"] or 0), _fmt_cost(r["cost"] or 0.0), str(r["retries"] or 0),
            html.escape(short(r["error"], 200)) if r.get("error") else "",
        ])
    return out, len(rows) - len(shown)


_NODE_HEAD = ["node", "type", "status", "ms", "tokens", "cost", "retries", "error"]


def run_rows(result: RunResult) -> list[dict[str, Any]]:
    """The trace rows of a result, without building a DataFrame."""
    return [trace_row(e) for e in result.events if isinstance(e, (NodeFinished, NodeSkipped))]


def other_warnings(result: RunResult) -> list[str]:
    """The result's warnings but the store's own, which ``store_error`` already says."""
    error = result.store_error
    return [w for w in result.warnings if not (error and error in w)]


def run_html(result: RunResult) -> str:
    """A compact HTML summary: status, outputs, answer, time, tokens, cost, a node table."""
    status = str(result.status)
    parts = [
        # tex2jax_ignore/mathjax_ignore: JupyterLab would typeset text between two `$` as
        # LaTeX (costs, prices, shell snippets in errors).
        f'<div class="cellwire-run {NO_MATH}" style="font-family:sans-serif">',
        (f"<b>{html.escape(result.workflow)}</b> {_badge(status)} "
        f"<code>{html.escape(result.run_id[:12])}</code> · {result.elapsed_ms:.0f} ms · "
        f"{result.total_tokens} tokens · {_fmt_cost(result.total_cost)}"),
    ]
    if result.error:
        where = f" at node <b>{html.escape(result.error_node)}</b>" if result.error_node else ""
        parts.append(f'<div style="color:#cf222e">error{where}: '
                     f"{html.escape(short(result.error, 1000))}</div>")
    if result.stored is False:
        parts.append(f'<div style="color:#cf222e">not stored: '
                     f"{html.escape(result.store_error or '')}</div>")
    for warning in other_warnings(result):
        parts.append(f'<div style="color:#9a6700">warning: {html.escape(warning)}</div>')
    for form in result.forms:
        parts.append(f'<div style="color:#8250df">{_form_html(form)}</div>')
    if result.outputs:
        rows = [[f"<code>{html.escape(str(k))}</code>", html.escape(short(v))]
                for k, v in result.outputs.items()]
        parts.append(_table(["output", "value"], rows))
    if result.answer:
        parts.append(f"<div><i>answer:</i> {html.escape(short(result.answer, 2000))}</div>")
    rows, more = _node_rows(run_rows(result))
    if rows:
        parts.append(f"<details><summary>{len(rows) + more} node executions</summary>"
                     + _table(_NODE_HEAD, rows)
                     + (f"<div>… {more} more: see .trace</div>" if more else "")
                     + "</details>")
    parts.append("</div>")
    return "".join(parts)


def _respond_hint(form: Form) -> str:
    first = form.actions[0].id if form.actions else "ACTION"
    values = ", ".join(f"{f.name!r}: ..." for f in form.fields)
    return f"run.respond({first!r}" + (f", {{{values}}})" if values else ")")


def _form_html(form: Form) -> str:
    """A paused run's form: where it waits, what it asks, and how to answer it."""
    actions = ", ".join(f"<code>{html.escape(a.id)}</code>" for a in form.actions)
    fields = ", ".join(f"<code>{html.escape(f.name)}</code>" for f in form.fields)
    return (f"waits for input at node <b>{html.escape(form.node_id)}</b>: "
            f"<pre style='white-space:pre-wrap;margin:2px 0'>{html.escape(short(form.content, 2000))}"
            f"</pre>actions {actions or 'none'}" + (f"; inputs {fields}" if fields else "")
            + f"; answer it with <code>{html.escape(_respond_hint(form))}</code>, in the "
            "editor's panel, or <code>cellwire respond</code>")


def run_text(result: RunResult) -> str:
    """The same summary as plain text, for a terminal."""
    lines = [(f"{result.workflow}: {result.status} (run {result.run_id[:12]}, "
             f"{result.elapsed_ms:.0f} ms, {result.total_tokens} tokens, "
             f"{_fmt_cost(result.total_cost)})")]
    if result.error:
        where = f" at node {result.error_node}" if result.error_node else ""
        lines.append(f"  error{where}: {short(result.error, 1000)}")
    if result.stored is False:
        lines.append(f"  not stored: {result.store_error}")
    lines.extend(f"  warning: {warning}" for warning in other_warnings(result))
    for form in result.forms:
        lines.extend("  " + line for line in form.describe().splitlines())
        lines.append(f"  answer it: {_respond_hint(form)}")
    for key, value in result.outputs.items():
        lines.append(f"  {key} = {short(value)}")
    if result.answer:
        lines.append(f"  answer: {short(result.answer, 2000)}")
    for r in run_rows(result)[:MAX_ROWS]:
        error = f"  {short(r['error'], 120)}" if r.get("error") else ""
        lines.append(f"    {r['node_id']:<20} {r['status']:<12} {(r['elapsed_ms'] or 0):8.1f} ms"
                     f"{error}")
    return "\n".join(lines)


def render_result(result: RunResult) -> Rendered:
    return Rendered(run_html(result), run_text(result))


# -- live status ---------------------------------------------------------------------------------


class LiveStatus:
    """An event sink that keeps a display up to date while a run is in flight.

    Updates are throttled to one per ``interval`` seconds; a pending change is flushed by a
    timer on the event loop, and the run's end always shows at once (as the result, when
    ``on_result`` hands it over).
    """

    def __init__(self, workflow: str, *, interval: float = 0.25,
                 publish: Callable[[Rendered], None] | None = None):
        self.workflow = workflow
        self.interval = interval
        self.run_id = ""
        self.status = "pending"
        self.nodes: dict[str, str] = {}
        self.tokens = 0
        self.cost = 0.0
        self.error = ""
        self.started = time.monotonic()
        self.updates = 0
        self._publish = publish or self._display
        self._handle: Any = None
        self._last = float("-inf")
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- the sink ---------------------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.run_id, self.status = event.run_id, "running"
        elif isinstance(event, NodeStarted):
            self.nodes[event.node_id] = "running"
        elif isinstance(event, NodeFinished):
            self.nodes[event.node_id] = trace_row(event)["status"]
            self.tokens += event.total_tokens
            self.cost += event.cost
        elif isinstance(event, NodeSkipped):
            self.nodes[event.node_id] = "skipped"
        elif isinstance(event, RUN_END_EVENTS):
            self.status = event.name.removeprefix("run_").replace("_", "-")
            if isinstance(event, RunFailed):
                self.error = event.error
            self.show()
            return
        self._maybe_show()

    def finish(self, result: RunResult) -> None:
        """Replace the status with the result's summary."""
        self._cancel_timer()
        self._publish(render_result(result))
        self.updates += 1

    # -- showing ----------------------------------------------------------------------------

    def _maybe_show(self) -> None:
        now = time.monotonic()
        wait = self._last + self.interval - now
        if wait <= 0:
            self.show()
            return
        if self._timer is None:
            try:
                self._loop = asyncio.get_running_loop()
            except RuntimeError:
                return  # no loop to flush later: the next event or the end shows it
            self._timer = self._loop.call_later(wait, self._flush)

    def _flush(self) -> None:
        self._timer = None
        self.show()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def show(self) -> None:
        self._cancel_timer()
        self._last = time.monotonic()
        self.updates += 1
        self._publish(self.render())

    def render(self) -> Rendered:
        elapsed = time.monotonic() - self.started
        counts: dict[str, int] = {}
        for state in self.nodes.values():
            counts[state] = counts.get(state, 0) + 1
        running = [n for n, s in self.nodes.items() if s == "running"]
        summary = ", ".join(f"{n} {s}" for s, n in counts.items()) or "starting"
        text = (f"{self.workflow}: {self.status} ({self.run_id[:12]}, {elapsed:.1f} s, "
                f"{summary}{'; running: ' + ', '.join(running) if running else ''})")
        chips = " ".join(f"<code>{html.escape(n)}</code> {_badge(s)}"
                         for n, s in self.nodes.items())
        error = (f'<div style="color:#cf222e">{html.escape(short(self.error, 500))}</div>'
                 if self.error else "")
        html_text = (f'<div class="cellwire-live {NO_MATH}" style="font-family:sans-serif">'
                     f"<b>{html.escape(self.workflow)}</b> {_badge(self.status)} "
                     f"<code>{html.escape(self.run_id[:12])}</code> · {elapsed:.1f} s · "
                     f"{self.tokens} tokens · {_fmt_cost(self.cost)}<div>{chips}</div>"
                     f"{error}</div>")
        return Rendered(html_text, text)

    def _display(self, rendered: Rendered) -> None:
        from IPython.display import display

        if self._handle is None:
            self._handle = display(rendered, display_id=True)
        else:
            self._handle.update(rendered)


def register_formatters(shell: Any) -> None:
    """Show RunResult as HTML in notebooks and as text in terminals; Figures as PNG."""
    formatters = shell.display_formatter.formatters
    formatters["text/html"].for_type(RunResult, run_html)
    formatters["text/plain"].for_type(
        RunResult, lambda obj, printer, cycle: printer.text(run_text(obj))
    )
    try:
        from matplotlib.figure import Figure
    except ImportError:  # matplotlib is an optional extra
        return
    from IPython.core.pylabtools import print_figure

    png = formatters["image/png"]
    if Figure not in png.type_printers:
        png.for_type(Figure, lambda fig: print_figure(fig, "png", bbox_inches="tight"))
