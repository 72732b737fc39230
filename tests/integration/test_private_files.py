"""What cellwire writes for itself is private to the user: folders 0700, the run store and its
-wal/-shm files 0600, whatever the umask; folders that already exist keep their modes."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import cellwire
from cellwire.engine import RunStatus
from cellwire.store import open_store

FLOW = """\
cellwire: 1
name: private
nodes:
  - {id: start, type: start}
  - id: end
    type: end
    outputs:
      - {variable: query, value_selector: [sys, query]}
edges:
  - {source: start, target: end}
"""


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask() -> Iterator[object]:
    """Set the process umask for one test; the old one comes back after."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


def test_cellwire_run_makes_its_home_and_store_private(tmp_path: Path) -> None:
    flow = tmp_path / "flow.yaml"
    flow.write_text(FLOW)
    home = tmp_path / "new" / "nested" / "home"
    done = subprocess.run(
        [sys.executable, "-m", "cellwire.cli", "run", str(flow), "--json"],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "CELLWIRE_HOME": str(home)},
        preexec_fn=lambda: os.umask(0o022))  # the usual umask: 644 files, 755 folders
    assert done.returncode == 0, done.stderr
    assert mode(tmp_path / "new") == 0o700
    assert mode(tmp_path / "new" / "nested") == 0o700
    assert mode(home) == 0o700
    assert mode(home / "runs.db") == 0o600


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o277], ids=["umask-000", "umask-022",
                                                             "umask-277"])
async def test_a_run_with_the_response_cache_keeps_every_file_private(
        tmp_path: Path, umask, mask: int) -> None:
    umask(mask)  # 0o277 even takes the user's own write bit: modes are set, not masked
    path = tmp_path / "state" / "runs.db"
    wf = cellwire.Workflow("cached")
    wf.add_node("start", "start")
    wf.add_node("llm", "llm", after="start", model={"provider": "scripted", "name": "echo"},
                prompt_template=[{"role": "user", "text": "hello"}], cache=True)
    first = await wf.arun(store=path)
    second = await wf.arun(store=path)
    assert first.status == second.status == RunStatus.SUCCEEDED, first.error
    assert open_store(path).runs()["run_id"].tolist() == [second.run_id, first.run_id]
    assert mode(path.parent) == 0o700
    for name in ("runs.db", "runs.db-wal", "runs.db-shm"):
        assert mode(path.parent / name) == 0o600, name
    open_store(path).close()


async def test_an_existing_folder_keeps_its_mode(tmp_path: Path, umask) -> None:
    shared = tmp_path / "team"
    shared.mkdir()
    shared.chmod(0o755)
    wf = cellwire.Workflow("team")
    wf.add_node("start", "start")
    result = await wf.arun(store=shared / "runs.db")
    assert result.stored
    assert mode(shared) == 0o755  # maybe shared on purpose: not ours to change
    assert mode(shared / "runs.db") == 0o600
    open_store(shared / "runs.db").close()


async def test_a_store_other_users_can_read_is_named_with_the_fix(tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    old.touch()
    old.chmod(0o644)  # as an older cellwire left it
    wf = cellwire.Workflow("old")
    wf.add_node("start", "start")
    with pytest.warns(UserWarning, match=f"{old} can be read by other users .*chmod 600"):
        result = await wf.arun(store=old)
    assert result.stored
    assert mode(old) == 0o644
    open_store(old).close()
