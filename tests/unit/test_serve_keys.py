"""API keys in the run store (store/keys.py) and the `cellwire keys` commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cellwire.cli import cli
from cellwire.store import RunStore
from cellwire.store.keys import (
    create_key,
    find_key,
    key_hash,
    list_keys,
    revoke_key,
    touch_key,
)


@pytest.fixture
def store(tmp_path: Path):
    with RunStore(tmp_path / "runs.db") as opened:
        yield opened


def _file_bytes(db: Path) -> bytes:
    """The database and its -wal / -shm files, as they are on disk."""
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))


def test_only_the_hash_of_a_key_is_stored(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    with RunStore(db) as store:
        stored, plaintext = create_key(store, "runner", app="demo", name="ci")
        on_disk = _file_bytes(db)
    assert plaintext.startswith("app-") and len(plaintext) > 40
    assert plaintext.encode() not in on_disk
    # What is there instead: its hash (so the check above looked at the right bytes).
    assert key_hash(plaintext).encode() in on_disk
    assert stored.role == "runner" and stored.app == "demo" and stored.name == "ci"


def test_keys_are_found_by_the_key_listed_and_revoked(store: RunStore) -> None:
    first, key1 = create_key(store, "viewer")
    second, key2 = create_key(store, "admin", app="other")
    assert key1 != key2
    assert find_key(store, key1) == first
    assert find_key(store, key2) == second
    assert find_key(store, key1 + "x") is None
    assert [k.key_id for k in list_keys(store)] == [first.key_id, second.key_id]

    assert revoke_key(store, first.key_id) is True
    assert revoke_key(store, first.key_id) is False  # revoked already
    assert revoke_key(store, "no-such-id") is False
    found = find_key(store, key1)
    assert found is not None and found.revoked
    assert [k.key_id for k in list_keys(store, revoked=False)] == [second.key_id]


def test_last_use_is_recorded_and_never_goes_back(store: RunStore) -> None:
    stored, key = create_key(store, "runner")
    touch_key(store, stored.key_id, 2000.0)
    touch_key(store, stored.key_id, 1000.0)  # an older use arriving late
    assert store.flush(10)
    found = find_key(store, key)
    assert found is not None and found.last_used_at == 2000.0


def test_a_key_needs_a_known_role_and_a_real_app_name(store: RunStore) -> None:
    with pytest.raises(ValueError, match="unknown role 'owner'"):
        create_key(store, "owner")
    with pytest.raises(ValueError, match="must be a name"):
        create_key(store, "viewer", app="  ")
    assert list_keys(store) == []


# -- cellwire keys ----------------------------------------------------------------------------


def _invoke(*args: str | Path):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def test_keys_create_list_revoke_on_a_store(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    made = _invoke("keys", "create", "--role", "runner", "--app", "demo", "--name", "ci",
                   "--db", db, "--json")
    assert made.exit_code == 0, made.output
    record = json.loads(made.stdout)
    key, key_id = record["key"], record["key_id"]
    assert key.startswith("app-") and record["role"] == "runner" and record["app"] == "demo"

    listed = _invoke("keys", "list", "--db", db, "--json")
    assert listed.exit_code == 0
    rows = json.loads(listed.stdout)
    assert [r["key_id"] for r in rows] == [key_id]
    assert rows[0]["revoked_at"] is None and rows[0]["name"] == "ci"
    table = _invoke("keys", "list", "--db", db)
    # Neither the key nor its hash is ever printed by list.
    for output in (listed.stdout, table.stdout):
        assert key not in output and key_hash(key) not in output
    assert key_id in table.stdout and "demo" in table.stdout

    revoked = _invoke("keys", "revoke", key_id, "--db", db)
    assert revoked.exit_code == 0 and f"revoked key {key_id}" in revoked.stdout
    again = _invoke("keys", "revoke", key_id, "--db", db)
    assert again.exit_code == 1 and "revoked already" in again.stderr
    unknown = _invoke("keys", "revoke", "nope", "--db", db)
    assert unknown.exit_code == 1 and "is not a key id" in unknown.stderr
    assert json.loads(_invoke("keys", "list", "--db", db, "--json").stdout)[0]["revoked_at"]


def test_keys_refuse_an_unknown_role(tmp_path: Path) -> None:
    result = _invoke("keys", "create", "--role", "owner", "--db", tmp_path / "runs.db")
    assert result.exit_code == 2 and "owner" in result.stderr
    assert not (tmp_path / "runs.db").exists()


def test_keys_list_does_not_create_a_store(tmp_path: Path) -> None:
    result = _invoke("keys", "list", "--db", tmp_path / "runs.db")
    assert result.exit_code == 0 and "no keys yet" in result.stdout
    assert not (tmp_path / "runs.db").exists()


def test_keys_create_prints_the_key_once_into_the_default_store(tmp_path: Path) -> None:
    """As a process, without --db: the key goes to $CELLWIRE_HOME/runs.db like every run."""
    home = tmp_path / "home"
    env = {**os.environ, "CELLWIRE_HOME": str(home)}
    made = subprocess.run([sys.executable, "-m", "cellwire.cli", "keys", "create", "--role",
                           "viewer"], capture_output=True, text=True, env=env, timeout=60,
                          check=False)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("app-") and "\n" not in key
    assert "shown only once" in made.stderr and key not in made.stderr
    with RunStore(home / "runs.db") as store:
        found = find_key(store, key)
    assert found is not None and found.role == "viewer" and found.app is None
