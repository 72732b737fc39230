"""``cellwire keys``: the API keys ``cellwire serve`` accepts, kept hashed in the run store.

``create --role ROLE [--app NAME] [--name NAME]`` prints the new key once (it is stored only as
a hash); ``list`` shows every key without it; ``revoke ID`` makes a key stop working.
Exit codes: 0 done, 1 no key has that id, 2 bad command line.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from cellwire.cli.app import cli
from cellwire.cli.common import EXIT_FAILED, fail
from cellwire.store.keys import ROLES, ApiKey

_DB_HELP = "The run store file (default: $CELLWIRE_HOME/runs.db)."


def _store(db: Path | None, *, create: bool) -> Any:
    from cellwire.store import open_store, runs_db_path

    path = db or runs_db_path()
    if not create and not path.exists():
        return None  # reading must not create a store as a side effect
    return open_store(path)


def _when(at: float | None) -> str | None:
    return None if at is None else datetime.fromtimestamp(at, tz=UTC).isoformat()


def _record(key: ApiKey) -> dict[str, Any]:
    record = asdict(key)
    for field in ("created_at", "last_used_at", "revoked_at"):
        record[field] = _when(record[field])
    return record


@cli.group("keys")
def keys() -> None:
    """API keys of `cellwire serve`: create, list, revoke."""


@keys.command("create")
@click.option("--role", type=click.Choice(ROLES), required=True,
              help="viewer: read runs; runner: also run, stop, answer forms; admin: also "
                   "manage keys and apps.")
@click.option("--app", metavar="NAME", default=None,
              help="The one app the key may use (default: every app the server serves).")
@click.option("--name", metavar="NAME", default=None, help="A label to tell keys apart.")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), help=_DB_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (with the key).")
def create(role: str, app: str | None, name: str | None, db: Path | None,
           as_json: bool) -> None:
    """Create a key and print it: the only time it is shown (only its hash is stored)."""
    from cellwire.store.keys import create_key

    store = _store(db, create=True)
    try:
        stored, plaintext = create_key(store, role, app=app, name=name)
    except ValueError as exc:
        fail([f"error: {exc}"])
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps({**_record(stored), "key": plaintext}))
        return
    click.echo(plaintext)
    bound = f"app {app}" if app else "every app"
    click.echo(f"key {stored.key_id}: role {role}, {bound}. Keep it now: it is shown only "
               "once.", err=True)


@keys.command("list")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), help=_DB_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
def list_command(db: Path | None, as_json: bool) -> None:
    """List the keys (never the keys themselves, nor their hashes), oldest first."""
    from cellwire.store.keys import list_keys

    store = _store(db, create=False)
    found: list[ApiKey] = []
    if store is not None:
        try:
            found = list_keys(store)
        finally:
            store.close()
    if as_json:
        click.echo(json.dumps([_record(k) for k in found]))
    elif not found:
        click.echo("no keys yet (create one with `cellwire keys create --role runner`)")
    else:
        click.echo(_table(found))


@keys.command("revoke")
@click.argument("key_id")
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), help=_DB_HELP)
def revoke(key_id: str, db: Path | None) -> None:
    """Revoke the key KEY_ID (see `cellwire keys list`): it stops working at once."""
    from cellwire.store.keys import list_keys, revoke_key

    store = _store(db, create=False)
    if store is None:
        fail([f"error: no key has id {key_id!r} (the run store has no keys yet)"], EXIT_FAILED)
    try:
        if not revoke_key(store, key_id):
            known = {k.key_id: k for k in list_keys(store)}
            why = "was revoked already" if key_id in known else "is not a key id"
            fail([f"error: {key_id!r} {why} (see `cellwire keys list`)"], EXIT_FAILED)
    finally:
        store.close()
    click.echo(f"revoked key {key_id}")


def _table(found: list[ApiKey]) -> str:
    header = ["KEY ID", "NAME", "ROLE", "APP", "CREATED (UTC)", "LAST USED (UTC)", "REVOKED"]
    lines = [[
        key.key_id, key.name or "", key.role, key.app or "*",
        (_when(key.created_at) or "")[:19].replace("T", " "),
        (_when(key.last_used_at) or "-")[:19].replace("T", " "),
        (_when(key.revoked_at) or "")[:19].replace("T", " "),
    ] for key in found]
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
                     for r in [header, *lines])
