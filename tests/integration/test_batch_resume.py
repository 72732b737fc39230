"""`cellwire map` killed with SIGKILL half-way through a batch, then `--resume ID`: the rest of
the rows run, and no row whose run had ended reaches the OpenAI-wire test server again (it
counts the requests of each row). Also the command's summary, exit codes and retries."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

import cellwire
from cellwire.store import open_store
from cellwire.store.batches import finished_rows

sys.path.insert(0, str(Path(__file__).parent))
from llm_server import llm_server

pytestmark = pytest.mark.timeout(120)

SRC = Path(cellwire.__file__).parents[1]
ROWS = 16

FLOW = """\
cellwire: 1
name: resumable
nodes:
  - {id: start, type: start, variables: [{variable: question, type: paragraph, required: true}]}
  - id: llm
    type: llm
    model: {provider: openai, name: gpt-4o-mini, mode: chat}
    prompt_template: [{role: user, text: "Q: {{#start.question#}}"}]
  - {id: end, type: end, outputs: [{variable: text, value_selector: [llm, text]}]}
edges:
  - {source: start, target: llm}
  - {source: llm, target: end}
"""


def _env(tmp: Path, server) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH")) if p)
    env = {k: v for k, v in os.environ.items() if k != "CELLWIRE_DEFAULT_MODEL"}
    return {**env, "PYTHONPATH": path, "OPENAI_API_KEY": "sk-test",
            "OPENAI_BASE_URL": server.base_url, "CELLWIRE_HOME": str(tmp / "home"),
            "CELLWIRE_CONFIG_DIR": str(tmp / "config")}


def _map(tmp: Path, server, *extra: str, input_name: str = "rows.csv",
         output: str = "out.csv") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cellwire.cli", "map", str(tmp / "flow.yml"), "--input",
         str(tmp / input_name), "--output", str(tmp / output), "--db", str(tmp / "runs.db"),
         "--concurrency", "2", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(tmp, server))


def _per_row(server) -> Counter[str]:
    return Counter(body["messages"][-1]["content"] for body in server.chat_requests())


@pytest.fixture
def table(tmp_path: Path) -> Path:
    (tmp_path / "flow.yml").write_text(FLOW)
    pd.DataFrame({"question": [f"question {i}" for i in range(ROWS)],
                  "id": range(ROWS)}).to_csv(tmp_path / "rows.csv", index=False)
    return tmp_path


def test_a_killed_batch_resumes_without_repeating_finished_rows(table: Path) -> None:
    tmp = table
    # Each answer takes a while, so the kill lands with rows done, rows in flight, rows left.
    with llm_server(latency=0.25) as server:
        proc = _map(tmp, server)
        deadline = time.monotonic() + 60
        while len(server.chat_requests()) < ROWS // 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=30)
        assert len(server.chat_requests()) < ROWS, "the batch ended before the kill"
        batch_id = err.split()[1]  # "batch <id> (...)", the first line
        assert not (tmp / "out.csv").exists()

        store = open_store(tmp / "runs.db")
        done = finished_rows(store, batch_id)
        store.close()
        assert 0 < len(done) < ROWS
        before = _per_row(server)

        resumed = _map(tmp, server, "--resume", batch_id, "--json")
        out, err = resumed.communicate(timeout=60)
        assert resumed.returncode == 0, err
        summary = json.loads(out)
        assert summary["batch_id"] == batch_id
        assert (summary["rows"], summary["succeeded"], summary["failed"]) == (ROWS, ROWS, 0)

        after = _per_row(server)
    result = pd.read_csv(tmp / "out.csv")
    assert result["text"].tolist() == [f"echo: Q: question {i}" for i in range(ROWS)]
    assert result["id"].tolist() == list(range(ROWS))
    for position in range(ROWS):
        prompt = f"Q: question {position}"
        if position in done:
            # Ended before the kill: taken from the store, never asked again.
            assert after[prompt] == before[prompt] == 1, position
            assert result.loc[position, "run_id"] == done[position].run_id
        else:
            # In flight at the kill (asked twice at most) or never started (asked once now).
            assert after[prompt] - before[prompt] == 1, position
    assert sum(after.values()) <= ROWS + 2  # at most the two rows in flight, again


def test_resume_needs_a_known_batch_over_the_same_rows(table: Path) -> None:
    tmp = table
    with llm_server() as server:
        first = _map(tmp, server, "--json")
        out, err = first.communicate(timeout=60)
        assert first.returncode == 0, err
        batch_id = json.loads(out)["batch_id"]
        asked = len(server.chat_requests())
        assert asked == ROWS

        # Resuming a finished batch asks the server nothing and writes the same result.
        again = _map(tmp, server, "--resume", batch_id, output="again.csv")
        _, err = again.communicate(timeout=60)
        assert again.returncode == 0, err
        assert len(server.chat_requests()) == asked
        # (Latency as stored is the run's, timed by the store's writer: a little apart.)
        pd.testing.assert_frame_equal(pd.read_csv(tmp / "again.csv").drop(columns="latency"),
                                      pd.read_csv(tmp / "out.csv").drop(columns="latency"))
        assert f"batch {batch_id}: {ROWS} rows, {ROWS} succeeded, 0 failed" in err

        unknown = _map(tmp, server, "--resume", "nope")
        _, err = unknown.communicate(timeout=60)
        assert unknown.returncode == 2
        assert "has no batch by that id" in err

        pd.read_csv(tmp / "rows.csv").head(3).to_csv(tmp / "fewer.csv", index=False)
        other = _map(tmp, server, "--resume", batch_id, input_name="fewer.csv")
        _, err = other.communicate(timeout=60)
        assert other.returncode == 2
        assert "ran over other inputs" in err


def test_failed_rows_exit_1_and_unknown_columns_are_reported_once(table: Path) -> None:
    tmp = table
    frame = pd.read_csv(tmp / "rows.csv").head(3)
    frame.loc[1, "question"] = None
    frame.to_csv(tmp / "gap.csv", index=False)
    with llm_server() as server:
        proc = _map(tmp, server, input_name="gap.csv", output="gap.jsonl")
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert err.count("column 'id' is not an input of workflow 'resumable'") == 1
    assert "map a column to an input with --column COLUMN=INPUT" in err
    assert "row 1: " in err and "'question'" in err
    out = pd.read_json(tmp / "gap.jsonl", lines=True)
    assert out["status"].tolist() == ["succeeded", "failed", "succeeded"]


def test_map_on_a_dask_scheduler_reads_jsonl_and_writes_parquet(table: Path, monkeypatch):
    distributed = pytest.importorskip("distributed")
    tmp = table
    pd.read_csv(tmp / "rows.csv").head(5).to_json(tmp / "rows.jsonl", orient="records",
                                                  lines=True)
    with llm_server() as server, distributed.LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, protocol="tcp",
            host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster:
        # The workers live in this process: they build their providers from its environment.
        for key, value in _env(tmp, server).items():
            if key.startswith(("OPENAI_", "CELLWIRE_")):
                monkeypatch.setenv(key, value)
        proc = _map(tmp, server, "--scheduler", cluster.scheduler_address, "--json",
                    input_name="rows.jsonl", output="out.parquet")
        out, err = proc.communicate(timeout=60)
        assert len(server.chat_requests()) == 5
    assert proc.returncode == 0, err
    assert json.loads(out)["succeeded"] == 5
    result = pd.read_parquet(tmp / "out.parquet")
    assert result["text"].tolist() == [f"echo: Q: question {i}" for i in range(5)]
    stored = open_store(tmp / "runs.db").runs().set_index("run_id")
    assert stored.loc[result["run_id"], "status"].tolist() == ["succeeded"] * 5


def test_ctrl_c_exits_130_and_the_batch_resumes(table: Path) -> None:
    tmp = table
    with llm_server(latency=0.25) as server:
        proc = _map(tmp, server)
        deadline = time.monotonic() + 60
        while len(server.chat_requests()) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        batch_id = err.split()[1]
        assert f"interrupted; resume with --resume {batch_id}" in err
        before = _per_row(server)
        assert sum(before.values()) < ROWS

        resumed = _map(tmp, server, "--resume", batch_id)
        _, err = resumed.communicate(timeout=60)
        assert resumed.returncode == 0, err
        after = _per_row(server)
    result = pd.read_csv(tmp / "out.csv")
    assert result["status"].eq("succeeded").all()
    assert result["text"].tolist() == [f"echo: Q: question {i}" for i in range(ROWS)]
    # Every row asked once to the end; a row cut short by Ctrl-C, at most once more.
    assert all(1 <= after[f"Q: question {i}"] <= 2 for i in range(ROWS))
    assert sum(after.values()) <= ROWS + 2
