"""The root ``cellwire`` group and its core commands: run, resume, validate, import, export,
diff, trust, secrets and runs."""

from __future__ import annotations

import json
import math
import sqlite3
import sys
import warnings
from collections.abc import Hashable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any, NoReturn

import click

from cellwire.cli.common import (
    EXIT_FAILED,
    EXIT_NOT_STORED,
    EXIT_OK,
    EXIT_PAUSED,
    fail,
    format_ms,
    json_object,
    json_or_text,
    key_value,
    load_checked_workflow,
    load_workflow,
    parse_inputs,
    report,
)
from cellwire.cli.tool_options import load_cli_tools, tool_options, tool_secrets
from cellwire.engine.checkpoint import DEFAULT_DURABILITY, DURABILITIES
from cellwire.engine.executor import DEFAULT_CONCURRENCY
from cellwire.engine.secrets import missing_secrets
from cellwire.model import Workflow, WorkflowError
from cellwire.model.validate import missing_inputs, unknown_inputs


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cellwire", prog_name="cellwire")
def cli() -> None:
    """Run, check and inspect cellwire workflows (native YAML or Dify DSL files)."""


@cli.command("run")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--input", "-i", "pairs", multiple=True, metavar="KEY=VALUE",
              help="An input; VALUE is read as JSON (3, true, [1,2]) or else as text. "
                   "Repeatable.")
@click.option("--inputs-json", metavar="JSON", help="All inputs as one JSON object.")
@click.option("--query", "-q", metavar="TEXT", help="The user's message (sys.query).")
@click.option("--conversation", "-c", metavar="ID",
              help="The conversation this run is a turn of (sys.conversation_id): it starts "
                   "with the conversation variables and chat memory its earlier turns left.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path),
              help="The run store file (default: $CELLWIRE_HOME/runs.db).")
@click.option("--model", "-m", metavar="PROVIDER/MODEL",
              help="Route every LLM node to this model, e.g. scripted/echo or openai/gpt-4o.")
@click.option("--store-timeout", type=click.FloatRange(min=0), metavar="SECONDS",
              help="How long to wait for a store another process holds locked "
                   "(default: $CELLWIRE_STORE_TIMEOUT, else 300).")
@click.option("--trust", "trust_file", is_flag=True,
              help="Trust FILE for this run: its code runs in this process, not the sandbox, "
                   "and its HTTP nodes may reach loopback and private addresses "
                   "(`cellwire trust FILE` remembers it).")
@click.option("--secret", "-s", "grants", multiple=True, metavar="VAR[=SOURCE]",
              help="Grant the workflow's secret VAR: from your secrets file (`cellwire secret "
                   "set VAR`), else the environment variable VAR; or from SOURCE: env:NAME, "
                   "file:ENTRY, keyring:SERVICE/USER. Repeatable. A workflow gets no secret "
                   "you do not grant.")
@click.option("--durability", type=click.Choice(DURABILITIES), default=DEFAULT_DURABILITY,
              show_default=True,
              help="When the run's checkpoints are committed: sync (before the nodes after a "
                   "node start), async (in the background), exit (only the run's end; it "
                   "cannot be resumed). See `cellwire resume`.")
@click.option("--concurrency", type=click.IntRange(min=1), default=DEFAULT_CONCURRENCY,
              show_default=True, metavar="N",
              help="Node executions in flight at once (a wide fan-out of LLM calls runs at "
                   "once up to N; each model's rate limits still apply).")
@tool_options
def run_command(file: Path, pairs: Sequence[str], inputs_json: str | None, query: str | None,
                conversation: str | None, as_json: bool, db: Path | None, model: str | None,
                store_timeout: float | None, trust_file: bool, grants: Sequence[str],
                durability: str, concurrency: int, tool_sources: Sequence[str],
                mcp_configs: Sequence[str], tool_map: str | None) -> None:
    """Run the workflow in FILE and print its outputs.

    Unless FILE is trusted (`cellwire trust FILE`, or --trust), its code nodes run in the
    sandbox and its HTTP nodes may not reach loopback or private addresses.
    """
    from cellwire.engine.secrets import unknown_grants
    from cellwire.services.secrets import SecretError, resolve_grants

    renames = load_cli_tools(tool_sources, mcp_configs, tool_map)
    workflow, checked = load_checked_workflow(file, trusted=True if trust_file else None)
    try:
        secrets = resolve_grants(grants)
    except SecretError as exc:
        fail([f"error: {exc}"])
    declared = ", ".join(v.name for v in workflow.environment) or "none"
    unknown = set(unknown_grants(workflow, secrets))
    if unknown:  # tool_secrets() loads the tool service: only asked when it can matter
        unknown -= tool_secrets()
    for name in unknown:
        fail([(f"{file}: --secret {name}: the workflow declares no environment variable "
                f"{name!r}; declared: {declared} (and no tool of --tools reads it)")])
    inputs = parse_inputs(workflow, pairs, inputs_json)
    if query is not None:
        inputs["sys.query"] = query
    if conversation is not None:
        inputs["sys.conversation_id"] = conversation
    problems = checked + missing_inputs(workflow, inputs) + unknown_inputs(workflow, inputs)
    report(file, problems)
    for problem in problems:
        click.echo(f"{file}: {problem}", err=True)
    for name in missing_secrets(workflow, secrets):
        click.echo(f"warning: secret {name!r} is not granted: a node that reads env.{name} "
                   f"fails; grant it with --secret {name} (from `cellwire secret set {name}` "
                   f"or the environment variable {name})", err=True)
    if model is not None and "/" not in model.strip("/"):
        raise click.BadParameter(f"{model!r} is not PROVIDER/MODEL, e.g. openai/gpt-4o",
                                 param_hint="--model")
    result = _execute(file, workflow, inputs, db, model, store_timeout, secrets, durability,
                      concurrency, renames)
    _finish(result, as_json, said={str(p).removeprefix("warning: ") for p in problems})


def _continue(runner: Any, workflow: Workflow, options: dict[str, Any],
              as_json: bool) -> NoReturn:
    """Run a stored run on (``options`` from ``prepare_resume``/``prepare_respond``), print
    it and exit with its code."""
    try:
        with warnings.catch_warnings():
            # The command reports a run it could not store itself, with its own exit code.
            warnings.filterwarnings("ignore", "cellwire could not store run")
            result = runner.run(workflow, None, **options)
    except KeyboardInterrupt:
        fail(["interrupted"], 130)
    _finish(result, as_json)


def _finish(result: Any, as_json: bool, said: AbstractSet[str] = frozenset()) -> NoReturn:
    """Print a finished run (its outputs, or one JSON object) and exit with its code; the
    warnings in ``said`` were printed before the run."""
    shown = result.as_dict()  # the engine has already replaced secret values with ***
    if as_json:
        click.echo(json.dumps(shown, ensure_ascii=False, default=str, allow_nan=False))
    else:
        for key, value in shown["outputs"].items():
            click.echo(f"{key}: {_text(value)}")
        if shown["answer"]:
            click.echo(shown["answer"])
        if shown["error"]:
            click.echo(f"error: {shown['error']}", err=True)  # it names the node that failed
        click.echo(_summary(shown), err=True)
    for warning in result.warnings:
        if warning in said:
            continue
        if result.store_error is None or result.store_error not in warning:
            click.echo(f"warning: {warning}", err=True)
    if result.stored is False:
        click.echo(f"error: run {result.run_id} ran ({result.status}) but was not stored: "
                   f"{result.store_error}", err=True)
        sys.exit(EXIT_NOT_STORED)
    if result.forms:
        if not as_json:
            for form in result.forms:
                click.echo(form.describe(), err=True)
                first = form.actions[0].id if form.actions else "ID"
                fields = "".join(f" --input {f.name}=..." for f in form.fields)
                click.echo(f"answer it with: cellwire respond {result.run_id} --action {first}"
                           f"{fields}", err=True)
        sys.exit(EXIT_PAUSED)
    sys.exit(EXIT_OK if result.ok else EXIT_FAILED)


@cli.command("resume")
@click.argument("run_id")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path),
              help="The run store file (default: $CELLWIRE_HOME/runs.db).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--secret", "-s", "grants", multiple=True, metavar="VAR[=SOURCE]",
              help="Grant the run's secret VAR again, as for `cellwire run` (their values are "
                   "never stored). Repeatable.")
@click.option("--trust", "trust_run", is_flag=True,
              help="Run the recorded workflow's code in this process, not the sandbox, and let "
                   "its HTTP nodes reach loopback and private addresses.")
@click.option("--durability", type=click.Choice(DURABILITIES),
              help="When checkpoints are committed (default: as the run was started).")
@click.option("--store-timeout", type=click.FloatRange(min=0), metavar="SECONDS",
              help="How long to wait for a store another process holds locked.")
def resume_command(run_id: str, db: Path | None, as_json: bool, grants: Sequence[str],
                   trust_run: bool, durability: str | None,
                   store_timeout: float | None) -> None:
    """Continue run RUN_ID (a unique prefix is enough) from its checkpoint: finished nodes
    are not run again, the run keeps its id and runs the workflow version it recorded.

    Exit codes as for `cellwire run`; 2 when the run cannot be resumed (the message says why).
    """
    from cellwire.durable import NotResumable, prepare_resume
    from cellwire.runner import default_runner
    from cellwire.services.secrets import SecretError, resolve_grants
    from cellwire.store import RunNotFound, open_store, runs_db_path

    path = db or runs_db_path()
    if not path.exists():
        fail([f"error: no run store at {path} (give --db PATH)"])
    try:
        secrets = resolve_grants(grants)
        store = open_store(path)
        if store_timeout is not None:
            store.timeout = store_timeout
        runner = default_runner()
        workflow, options = prepare_resume(run_id, runner=runner, store=store,
                                           secrets=secrets or None, trust=trust_run,
                                           durability=durability)
    except (SecretError, NotResumable, RunNotFound, ValueError) as exc:
        fail([f"error: {exc}"])
    except WorkflowError as exc:
        fail(f"run {run_id}: {problem}" for problem in exc.problems)
    _continue(runner, workflow, options, as_json)


@cli.command("respond")
@click.argument("run_id")
@click.option("--action", "-a", required=True, metavar="ID",
              help="The user action to answer with (one of the form's buttons).")
@click.option("--input", "-i", "pairs", multiple=True, metavar="NAME=VALUE",
              help="A value for one of the form's inputs (text). Repeatable; inputs left out "
                   "take their defaults.")
@click.option("--inputs-json", metavar="JSON", help="All input values as one JSON object.")
@click.option("--node", metavar="ID", help="The human-input node whose form to answer, when "
                                           "the run waits on several.")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path),
              help="The run store file (default: $CELLWIRE_HOME/runs.db).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--secret", "-s", "grants", multiple=True, metavar="VAR[=SOURCE]",
              help="Grant the run's secret VAR again, as for `cellwire resume`. Repeatable.")
@click.option("--trust", "trust_run", is_flag=True,
              help="Run the recorded workflow's code in this process, as for `cellwire resume`.")
def respond_command(run_id: str, action: str, pairs: Sequence[str], inputs_json: str | None,
                    node: str | None, db: Path | None, as_json: bool, grants: Sequence[str],
                    trust_run: bool) -> None:
    """Answer the form that paused run RUN_ID waits on, then resume the run to its next end.

    Exit codes as for `cellwire run` (4 when it pauses again, at another form); 2 when the
    answer does not fit the form, or the run waits on no form (the message says why).
    """
    from cellwire.durable import NotResumable, prepare_respond
    from cellwire.engine.forms import FormError
    from cellwire.runner import default_runner
    from cellwire.services.secrets import SecretError, resolve_grants
    from cellwire.store import RunNotFound, open_store, runs_db_path

    path = db or runs_db_path()
    if not path.exists():
        fail([f"error: no run store at {path} (give --db PATH)"])
    # Form inputs are text: values are taken as typed, never parsed as JSON.
    values = {**json_object(inputs_json), **dict(key_value(pair) for pair in pairs)}
    try:
        secrets = resolve_grants(grants)
        store = open_store(path)
        runner = default_runner()
        workflow, options = prepare_respond(run_id, action, values, node=node, runner=runner,
                                            store=store, secrets=secrets or None,
                                            trust=trust_run)
    except (SecretError, NotResumable, RunNotFound, FormError, ValueError) as exc:
        fail([f"error: {exc}"])
    except WorkflowError as exc:
        fail(f"run {run_id}: {problem}" for problem in exc.problems)
    _continue(runner, workflow, options, as_json)


@cli.command("replay")
@click.argument("run_id")
@click.option("--from", "from_node", required=True, metavar="NODE",
              help="The top-level node to run again; the nodes before it keep their recorded "
                   "outputs.")
@click.option("--workflow", "-w", "edited", type=click.Path(dir_okay=False, path_type=Path),
              help="Run this (edited) workflow file instead of the version the run recorded; "
                   "its node ids must match.")
@click.option("--set", "changes", multiple=True, metavar="NODE.FIELD=VALUE",
              help="Change one config field of a node first (VALUE is JSON, or text), e.g. "
                   "--set draft.template='Shorter: {{ x }}'. Repeatable.")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path),
              help="The run store file (default: $CELLWIRE_HOME/runs.db).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--secret", "-s", "grants", multiple=True, metavar="VAR[=SOURCE]",
              help="Grant the run's secret VAR again, as for `cellwire resume`. Repeatable.")
@click.option("--trust", "trust_run", is_flag=True,
              help="Run the recorded workflow's code in this process, as for `cellwire resume`.")
def replay_command(run_id: str, from_node: str, edited: Path | None, changes: Sequence[str],
                   db: Path | None, as_json: bool, grants: Sequence[str],
                   trust_run: bool) -> None:
    """Fork run RUN_ID: a new run that runs NODE and what follows it again (with the edits
    given), reusing the recorded outputs of the nodes before it from the run's checkpoint.

    Compare the two runs with cellwire.compare(OLD, NEW) in Python. Exit codes as for
    `cellwire run`; 2 when the run cannot be replayed (the message says why).
    """
    import asyncio

    from cellwire.durable import NotResumable, replay, stored_result
    from cellwire.services.secrets import SecretError, resolve_grants
    from cellwire.store import RunNotFound, open_store, runs_db_path

    path = db or runs_db_path()
    if not path.exists():
        fail([f"error: no run store at {path} (give --db PATH)"])
    try:
        secrets = resolve_grants(grants)
        store = open_store(path)
        workflow = load_workflow(edited, trusted=True if trust_run else None) \
            if edited is not None else None
        if changes:
            if workflow is None:
                workflow = stored_result(run_id, store=store)[1]
                workflow.mark_origin(workflow.origin, trusted=trust_run)
            for change in changes:
                _apply_change(workflow, change)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "cellwire could not store run")
            result = asyncio.run(replay(run_id, from_node, workflow=workflow, store=store,
                                        secrets=secrets or None, trust=trust_run))
    except (SecretError, NotResumable, RunNotFound, ValueError) as exc:
        fail([f"error: {exc}"])
    except WorkflowError as exc:
        fail(f"run {run_id}: {problem}" for problem in exc.problems)
    except KeyboardInterrupt:
        fail(["interrupted"], 130)
    _finish(result, as_json)


def _apply_change(workflow: Workflow, change: str) -> None:
    target, sep, raw = change.partition("=")
    node_id, dot, field = target.partition(".")
    if not sep or not dot or not field:
        raise click.BadParameter(f"{change!r} is not NODE.FIELD=VALUE", param_hint="--set")
    if node_id not in workflow.nodes:
        raise click.BadParameter(f"no node {node_id!r}; the workflow's nodes are "
                                 f"{', '.join(workflow.nodes)}", param_hint="--set")
    workflow.update_node(node_id, **{field: json_or_text(raw)})


@cli.command("validate")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--strict", is_flag=True,
              help="Fail (exit 2) on warnings too: what Dify imports but a run treats "
                   "specially, and what cannot run here.")
@tool_options
def validate_command(file: Path, strict: bool, tool_sources: Sequence[str],
                     mcp_configs: Sequence[str], tool_map: str | None) -> None:
    """Check the workflow in FILE without running it.

    Errors (the graph cannot be built or run) exit 2. Warnings are printed after `valid`:
    what Dify would import and how a run treats it (a reference to nothing reads as None, an
    edge to a missing node is ignored, a branch leading nowhere ends the run there), and the
    node types this install cannot run, with why (not built here, needs a tool binding,
    needs a knowledge base). With --strict, warnings exit 2 as well.
    """
    from cellwire.formats.runnable import unrunnable_types
    from cellwire.services.trust import describe

    load_cli_tools(tool_sources, mcp_configs, tool_map)
    workflow, problems = load_checked_workflow(file)
    report(file, problems)
    lines = [f"{file}: {problem}" for problem in problems]
    unrunnable = unrunnable_types(workflow)
    if unrunnable:
        lines.append(f"{file}: node types this install cannot run: " + "; ".join(
            f"{kind} ({', '.join(reasons)})" for kind, reasons in sorted(unrunnable.items())))
    if strict and problems:
        fail([*lines, f"{file}: {len(problems)} warning(s), and --strict fails on warnings"])
    click.echo("valid")
    for line in lines:
        click.echo(line)
    click.echo(describe(workflow))


@cli.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--output", "-o", "out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the native YAML here (default: standard output).")
@tool_options
def import_command(file: Path, out: Path | None, tool_sources: Sequence[str],
                   mcp_configs: Sequence[str], tool_map: str | None) -> None:
    """Import a Dify DSL FILE and write it as native YAML; prints what cannot run here
    (tools no registered tool binds to among it)."""
    from cellwire.formats import dump
    from cellwire.formats.dify import import_dify
    from cellwire.model.yaml12 import read_text
    from cellwire.services.trust import describe, is_trusted

    load_cli_tools(tool_sources, mcp_configs, tool_map)
    try:
        text = read_text(file)
        result = import_dify(text, source=str(file))
    except OSError as exc:
        fail([f"{file}: cannot read the file: {exc.strerror or exc}"])
    except WorkflowError as exc:
        fail(f"{file}: {problem}" for problem in exc.problems)
    for problem in result.problems:
        click.echo(f"{file}: {problem}", err=True)
    click.echo(describe(result.workflow.mark_origin(str(file), trusted=is_trusted(text))),
               err=True)
    _write(dump(result.workflow), out)


@cli.command("diff")
@click.argument("old")
@click.argument("new")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path),
              help="The run store holding the runs named (default: $CELLWIRE_HOME/runs.db).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list of changes.")
def diff_command(old: str, new: str, db: Path | None, as_json: bool) -> None:
    """Compare two versions of a workflow node by node. OLD and NEW are workflow files, or
    ids of stored runs (the version each one ran). Exit 0: the same; 1: they differ."""
    from dataclasses import asdict

    from cellwire.model.diff import diff

    changes = diff(_version(old, db), _version(new, db))
    if as_json:
        click.echo(json.dumps([asdict(c) for c in changes], ensure_ascii=False))
    else:
        for change in changes:
            click.echo(str(change))
        if not changes:
            click.echo("no changes")
    sys.exit(EXIT_FAILED if changes else EXIT_OK)


def _version(ref: str, db: Path | None) -> Workflow:
    """The workflow in file ``ref``, else the version stored run ``ref`` ran."""
    if Path(ref).is_file():
        return load_workflow(Path(ref))
    from cellwire.formats.native import load_native
    from cellwire.runner import resolve_store
    from cellwire.store.sqlite import RunNotFound

    store = resolve_store(db if db is not None else True)
    if store is None:
        fail([f"error: {ref} is not a file, and there is no run store to look it up in"])
    try:
        digest, definition = store.version(ref)
    except RunNotFound as exc:
        fail([f"error: {ref} is not a file, and {exc.args[0]}"])
    return load_native(definition, source=f"run {ref} (version {digest[:12]})")


@cli.command("trust")
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--revoke", is_flag=True, help="Forget the trust in FILES instead.")
@click.option("--list", "list_all", is_flag=True, help="List the trusted files.")
def trust_command(files: Sequence[Path], revoke: bool, list_all: bool) -> None:
    """Trust the current contents of workflow FILES: their code nodes then run in the kernel,
    not the sandbox, and their HTTP nodes may reach loopback and private addresses.

    Trust is by content hash, kept in the user's config folder: editing a file un-trusts it.
    """
    from cellwire.services.trust import records_path, trust, trusted_files, untrust

    if list_all:
        for record in trusted_files():
            click.echo(f"{record['hash'][:19]}  {record['trusted_at']}  {record['path']}")
        return
    if not files:
        raise click.UsageError("name the FILES to trust (or --list)")
    for file in files:
        if revoke:
            try:
                forgot = untrust(file)
            except (OSError, WorkflowError) as exc:
                fail([f"{file}: cannot read the file: {exc}"])
            click.echo(f"{file}: {'no longer trusted' if forgot else 'was not trusted'}")
            continue
        load_workflow(file)  # trust only what is a valid workflow, and say so if it is not
        try:
            digest = trust(file)
        except (OSError, WorkflowError) as exc:
            fail([f"{file}: cannot record the trust in {records_path()}: {exc}"])
        click.echo(f"{file}: trusted ({digest[:19]}...); editing the file un-trusts it")


@cli.group("secret")
def secret_group() -> None:
    """Keep secrets in your private secrets file, to grant them to workflows with --secret."""


@secret_group.command("set")
@click.argument("name")
@click.option("--stdin", "from_stdin", is_flag=True,
              help="Read the value from standard input (one line) instead of a hidden prompt.")
def secret_set(name: str, from_stdin: bool) -> None:
    """Store the value of NAME (asked for, never taken from the command line)."""
    from cellwire.services.secrets import SecretError, set_secret

    value = (sys.stdin.readline().rstrip("\r\n") if from_stdin
             else click.prompt(f"value of {name}", hide_input=True, err=True))
    try:
        path = set_secret(name, value)
    except (SecretError, ValueError, OSError) as exc:
        fail([f"error: {exc}"])
    click.echo(f"stored {name} in {path}; grant it with --secret {name}")


@secret_group.command("list")
def secret_list() -> None:
    """The names in your secrets file (never their values)."""
    from cellwire.services.secrets import SecretError, list_secrets

    try:
        names = list_secrets()
    except SecretError as exc:
        fail([f"error: {exc}"])
    for name in names:
        click.echo(name)


@secret_group.command("delete")
@click.argument("name")
def secret_delete(name: str) -> None:
    """Remove NAME from your secrets file."""
    from cellwire.services.secrets import SecretError, delete_secret

    try:
        found = delete_secret(name)
    except SecretError as exc:
        fail([f"error: {exc}"])
    click.echo(f"deleted {name}" if found else f"{name} was not in the secrets file")
    if not found:
        sys.exit(EXIT_FAILED)


@cli.command("export")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--format", "-f", "fmt", type=click.Choice(["yaml", "dify", "python"]),
              default="yaml", show_default=True, help="yaml: native YAML; dify: Dify DSL "
              "(see --dsl-version); python: a script that rebuilds the workflow.")
@click.option("--dsl-version", metavar="VERSION",
              help="The Dify DSL version to write with --format dify: 0.7.0 (Dify 1.16, the "
                   "default) or 0.6.0 (Dify 1.15 and before, which hold a newer file as "
                   "pending).")
@click.option("--output", "-o", "out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write here (default: standard output).")
def export_command(file: Path, fmt: str, dsl_version: str | None, out: Path | None) -> None:
    """Write the workflow in FILE (native YAML or Dify DSL) in another format."""
    from cellwire.formats import dump
    from cellwire.formats.dify import DSL_VERSION, DSL_VERSIONS, dump_dify
    from cellwire.formats.python_export import export_python

    if dsl_version is not None and fmt != "dify":
        raise click.BadParameter("applies to --format dify only", param_hint="--dsl-version")
    version = DSL_VERSION if dsl_version is None else dsl_version.strip().lstrip("v")
    if version not in DSL_VERSIONS:
        raise click.BadParameter(f"{dsl_version!r} is not a Dify DSL version cellwire writes; "
                                 f"use one of {', '.join(DSL_VERSIONS)}",
                                 param_hint="--dsl-version")
    workflow = load_workflow(file)
    try:
        if fmt == "dify":
            text = dump_dify(workflow, version)
        elif fmt == "python":
            text = export_python(workflow)
        else:
            text = dump(workflow)
    except WorkflowError as exc:
        fail(f"{file}: {problem}" for problem in exc.problems)
    _write(text, out)


def _write(text: str, out: Path | None) -> None:
    if out is None:
        click.echo(text, nl=not text.endswith("\n"))
    else:
        out.write_text(text, encoding="utf-8")


@cli.group("runs", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path),
              help="The run store file (default: $CELLWIRE_HOME/runs.db).")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=20, show_default=True,
              help="How many of the newest runs to show.")
@click.pass_context
def runs_command(ctx: click.Context, as_json: bool, db: Path | None, limit: int) -> None:
    """List recent runs, newest first (`cellwire runs prune` deletes old ones).

    A run whose process died (killed, or its machine went down) shows as `interrupted`.
    """
    if ctx.invoked_subcommand is not None:
        return
    from cellwire.store import open_store, runs_db_path

    path = db or runs_db_path()
    if not path.exists():
        # Listing must not create a store as a side effect.
        click.echo("[]" if as_json else f"no runs yet (store: {path})")
        return
    store = open_store(path)
    try:
        frame = store.runs(limit=limit)
    finally:
        store.close()
    rows = [_run_row(record) for record in frame.to_dict("records")]
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, default=str, allow_nan=False))
    elif not rows:
        click.echo(f"no runs yet (store: {path})")
    else:
        click.echo(_table(rows))


@runs_command.command("prune")
@click.option("--older-than", metavar="DURATION",
              help="Delete runs started longer ago than this: 90m, 12h, 30d (s, m, h, d, w).")
@click.option("--keep", type=click.IntRange(min=0), metavar="N",
              help="Keep the newest N runs of the store (of --workflow, when given); "
                   "delete the rest.")
@click.option("--workflow", "-w", metavar="NAME", help="Only prune runs of this workflow.")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path),
              help="The run store file (default: $CELLWIRE_HOME/runs.db).")
@click.option("--dry-run", is_flag=True, help="Say what would be deleted; delete nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def prune_command(older_than: str | None, keep: int | None, workflow: str | None,
                  db: Path | None, dry_run: bool, as_json: bool) -> None:
    """Delete old runs (their node executions, and values no other run uses), then shrink
    the store file. Runs still running in a live process are kept.

    With both --older-than and --keep, a run goes when it is older and not among the newest N.
    """
    from cellwire.store import open_store, runs_db_path
    from cellwire.store.retention import parse_duration

    if older_than is None and keep is None:
        raise click.UsageError("say what to prune: --older-than DURATION and/or --keep N")
    if older_than is not None:
        try:
            parse_duration(older_than)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--older-than") from None
    path = db or runs_db_path()
    if not path.exists():
        click.echo(json.dumps({"dry_run": dry_run, "deleted": {}}) if as_json
                   else f"nothing to prune (no store at {path})")
        return
    store = open_store(path)
    try:
        report = store.prune(older_than=older_than, keep=keep, workflow=workflow,
                             dry_run=dry_run)
    except sqlite3.OperationalError as exc:
        fail([(f"error: cannot prune {path}: {exc}; another program holds it locked? "
                "try again when its runs have ended")], EXIT_FAILED)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(report.as_dict()))
        return
    deleted = report.deleted
    verb = "would delete" if dry_run else "deleted"
    click.echo(f"{verb} {report.runs} run(s), {deleted.get('node_executions', 0)} node "
               f"execution(s), {deleted.get('blobs', 0)} stored value(s), "
               f"{deleted.get('conversations', 0)} conversation(s)")
    if report.spared:
        click.echo(f"kept {len(report.spared)} run(s) still running: {', '.join(report.spared)}")
    if not dry_run:
        click.echo(f"{path}: {_bytes(report.size_before)} -> {_bytes(report.size_after)}")
    if report.wal_busy:
        click.echo("note: another program is reading the store; the rest of the space comes "
                   "back once it stops", err=True)


def _bytes(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    value = size / 1024
    for unit in ("KB", "MB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def main(argv: Sequence[str] | None = None) -> None:
    """The console entry point."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="cellwire")


def _execute(file: Path, workflow: Workflow, inputs: dict[str, Any], db: Path | None,
             model: str | None = None, store_timeout: float | None = None,
             secrets: Mapping[str, str] | None = None,
             durability: str = DEFAULT_DURABILITY,
             concurrency: int = DEFAULT_CONCURRENCY,
             tool_map: Mapping[str, str] | None = None) -> Any:
    from cellwire.runner import default_runner, resolve_store

    try:
        store = resolve_store(db if db is not None else True)
    except ValueError as exc:  # a CELLWIRE_STORE_TIMEOUT that is not a number
        fail([f"error: {exc}"])
    if store is not None and store_timeout is not None:
        store.timeout = store_timeout
    try:
        with warnings.catch_warnings():
            # The command reports a run it could not store itself, with its own exit code.
            warnings.filterwarnings("ignore", "cellwire could not store run")
            return default_runner().run(workflow, inputs,
                                        store=store if store is not None else False,
                                        model=model, secrets=secrets or None,
                                        durability=durability, concurrency=concurrency,
                                        tool_map=tool_map or None)
    except WorkflowError as exc:
        fail(f"{file}: {problem}" for problem in exc.problems)
    except KeyboardInterrupt:
        fail(["interrupted"], 130)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _summary(shown: dict[str, Any]) -> str:
    cost = shown["total_cost"]  # None when a model's price is unknown
    return (f"{shown['status']} in {format_ms(shown['elapsed_ms'])}, {shown['total_tokens']} tokens, "
            f"{'cost unknown' if cost is None else f'${cost:.4f}'}, run {shown['run_id']}")


_RUN_FIELDS = ("run_id", "workflow", "status", "started_at", "elapsed_ms", "total_tokens",
               "total_cost", "error", "inputs", "outputs")


def _run_row(record: Mapping[Hashable, Any]) -> dict[str, Any]:
    row = {}
    for key in _RUN_FIELDS:
        value: Any = record.get(key)
        if hasattr(value, "isoformat"):
            value = None if str(value) == "NaT" else value.isoformat()
        elif isinstance(value, float) and math.isnan(value):
            value = None
        elif hasattr(value, "item"):  # numpy scalars
            value = value.item()
        row[key] = value
    return row


def _table(rows: list[dict[str, Any]]) -> str:
    header = ["RUN ID", "STARTED (UTC)", "WORKFLOW", "STATUS", "TIME", "TOKENS", "COST"]
    lines = [[
        row["run_id"],
        (row["started_at"] or "")[:19].replace("T", " "),
        row["workflow"] or "",
        row["status"] or "",
        format_ms(row["elapsed_ms"]),
        str(row["total_tokens"] or 0),
        f"${row['total_cost'] or 0:.4f}",
    ] for row in rows]
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
                     for r in [header, *lines])

