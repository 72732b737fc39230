"""The arguments of ``%%workflow`` and ``%workflow``: one argparse parser per subcommand.

Kept apart from the commands (as jupysql does) so the grammar is read in one place and the
commands only act. A mistake is an IPython ``UsageError`` of one line with the usage.
"""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable

from IPython.core.error import UsageError

SUBCOMMANDS = ("list", "show", "run", "map", "stop", "runs", "trace", "costs", "latency", "export",
               "import", "delete", "tools", "kb", "serve", "help")


class Parser(argparse.ArgumentParser):
    """argparse that reports a mistake as one line instead of exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        usage = " ".join(self.format_usage().split()[1:])
        raise UsageError(f"{self.prog}: {message}; usage: {usage}")

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        raise UsageError(" ".join((message or self.format_usage()).split()))


def split(line: str) -> list[str]:
    """The words of a magic's line, shell-style."""
    try:
        return shlex.split(line)
    except ValueError as exc:
        raise UsageError(f"cannot read the options ({exc}); close the quotes") from None


def cell_parser() -> Parser:
    """``%%workflow NAME NODE_ID --type TYPE ...``."""
    p = Parser(prog="%%workflow", add_help=False)
    p.add_argument("name", help="the workflow")
    p.add_argument("node_id", help="the node this cell defines")
    p.add_argument("--type", "-t", required=True, dest="node_type")
    p.add_argument("--after", "-a", action="extend", nargs="+", default=[],
                   metavar="ID[:HANDLE]")
    p.add_argument("--title", default="")
    p.add_argument("--model", "-m", default="")
    p.add_argument("--system", default="")
    p.add_argument("--var", action="extend", nargs="+", default=[], metavar="PARAM=NODE.VAR")
    p.add_argument("--out", action="extend", nargs="+", default=[], metavar="NAME[:TYPE]")
    p.add_argument("--retry", type=int, default=None)
    p.add_argument("--timeout", type=float, default=None)
    p.add_argument("--error-strategy", choices=["fail", "default-value", "fail-branch"],
                   default="fail")
    return p


def _list(p: Parser) -> None:
    pass


def _show(p: Parser) -> None:
    p.add_argument("name")
    p.add_argument("--svg", action="store_true")


def _delete(p: Parser) -> None:
    p.add_argument("name")


def _run(p: Parser) -> None:
    p.add_argument("name")
    p.add_argument("inputs", nargs="*", metavar="KEY=VALUE")
    p.add_argument("--wait", "-w", action="store_true")
    p.add_argument("--model", default="")
    p.add_argument("--secret", "-s", action="append", default=[], metavar="VAR[=SOURCE]")
    p.add_argument("--stale", action="store_true")
    p.add_argument("--concurrency", type=int, default=None,
                   help="node executions in flight in this run (default: "
                        "%%config WorkflowMagics.concurrency)")


def _map(p: Parser) -> None:
    p.add_argument("name")
    p.add_argument("frame", metavar="DATAFRAME_VARIABLE")
    p.add_argument("--model", default="")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--resume", default=None, metavar="BATCH_ID")
    p.add_argument("--column", action="append", default=[], metavar="COLUMN=INPUT")
    p.add_argument("--no-progress", action="store_true")


def _serve(p: Parser) -> None:
    p.add_argument("name", nargs="?")
    p.add_argument("--stop", action="store_true")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0: a free port")


def _stop(p: Parser) -> None:
    p.add_argument("run", nargs="?")


def _runs(p: Parser) -> None:
    p.add_argument("--workflow", default=None)
    p.add_argument("--status", default=None)
    p.add_argument("--limit", type=int, default=20)


def _trace(p: Parser) -> None:
    p.add_argument("run", nargs="?")
    p.add_argument("--chart", action="store_true")


def _costs(p: Parser) -> None:
    p.add_argument("--by", default="model", choices=["model", "node", "node_type", "workflow", "day"])
    p.add_argument("--workflow", default=None)
    p.add_argument("--chart", action="store_true")


def _latency(p: Parser) -> None:
    p.add_argument("--by", default="node", choices=["node", "node_type", "model", "workflow"])
    p.add_argument("--workflow", default=None)
    p.add_argument("--chart", action="store_true")


def _export(p: Parser) -> None:
    p.add_argument("name")
    p.add_argument("--format", "-f", default="yaml", choices=["yaml", "dify", "python"])
    p.add_argument("--to", default=None, metavar="FILE")
    p.add_argument("--with-cells", action="store_true",
                   help="keep which notebook cell defined each node (node meta cell_id, "
                        "cell_refs)")


def _import(p: Parser) -> None:
    p.add_argument("file")
    p.add_argument("--name", default=None)
    p.add_argument("--trust", action="store_true")


def _tools(p: Parser) -> None:
    p.add_argument("sources", nargs="*", metavar="FILE.py|MODULE")
    p.add_argument("--mcp", action="append", default=[], metavar="CONFIG.json")
    p.add_argument("--map", default=None, metavar="FILE")


_ARGUMENTS: dict[str, Callable[[Parser], None]] = {
    "list": _list, "show": _show, "delete": _delete, "run": _run, "map": _map, "stop": _stop,
    "runs": _runs, "trace": _trace, "costs": _costs, "latency": _latency, "export": _export,
    "import": _import, "tools": _tools, "serve": _serve, "help": _list,
}


def parse(sub: str, words: list[str]) -> argparse.Namespace:
    """The arguments of ``%workflow SUB WORDS...``."""
    p = Parser(prog=f"%workflow {sub}", add_help=False)
    _ARGUMENTS[sub](p)
    return p.parse_args(words)


__all__ = ["SUBCOMMANDS", "Parser", "cell_parser", "parse", "split"]
