"""The ``cellwire`` command, run as a real process (and in-process through click for the
many small input-parsing cases). CELLWIRE_HOME points at tmp_path, so stores stay there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cellwire.cli import cli

ECHO = """\
cellwire: 1
name: echo
nodes:
  - id: start
    type: start
    variables:
      - {variable: name, type: text-input, required: true}
      - {variable: n, type: number}
      - {variable: data, type: json_object}
      - {variable: flag, type: checkbox}
  - id: end
    type: end
    outputs:
      - {variable: name, value_selector: [start, name]}
      - {variable: n, value_selector: [start, n]}
      - {variable: data, value_selector: [start, data]}
      - {variable: flag, value_selector: [start, flag]}
      - {variable: query, value_selector: [sys, query]}
edges:
  - {source: start, target: end}
"""

SECRET = """\
cellwire: 1
name: leaky
environment:
  - {name: TOKEN, value_type: secret, value: null}
nodes:
  - {id: start, type: start}
  - id: end
    type: end
    outputs:
      - {variable: token, value_selector: [env, TOKEN]}
edges:
  - {source: start, target: end}
"""

RESULT_KEYS = {"run_id", "status", "outputs", "answer", "error", "elapsed_ms", "total_tokens",
               "total_cost", "stored", "store_error", "warnings"}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "home"
    monkeypatch.setenv("CELLWIRE_HOME", str(folder))
    monkeypatch.chdir(tmp_path)
    return folder


@pytest.fixture
def echo(tmp_path: Path) -> Path:
    path = tmp_path / "echo.yaml"
    path.write_text(ECHO)
    return path


def cellwire(*args: str | Path, env: dict[str, str] | None = None,
             ) -> subprocess.CompletedProcess[str]:
    """Run the command in a fresh Python process."""
    return subprocess.run(
        [sys.executable, "-m", "cellwire.cli", *map(str, args)],
        capture_output=True, text=True, timeout=60, env={**os.environ, **(env or {})},
        check=False,
    )


def invoke(*args: str | Path):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


# -- cellwire run, as a process ---------------------------------------------------------------


def test_run_json_prints_exactly_one_result_object(home: Path, echo: Path):
    done = cellwire("run", echo, "--input", "name=Ada", "--input", "n=42", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert set(result) == RESULT_KEYS
    assert result["status"] == "succeeded"
    assert result["outputs"]["name"] == "Ada" and result["outputs"]["n"] == 42
    assert len(result["run_id"]) >= 8 and result["total_tokens"] == 0
    assert (result["stored"], result["store_error"], result["warnings"]) == (True, None, [])
    # The default store lives in CELLWIRE_HOME.
    assert (home / "runs.db").exists()


def test_a_failed_run_exits_1(home: Path, echo: Path):
    done = cellwire("run", echo, "--input", "name=Ada", "--input", "n=abc", "--json")
    assert done.returncode == 1
    result = json.loads(done.stdout)
    assert result["status"] == "failed" and "not a number" in result["error"]


def test_an_invalid_file_exits_2_listing_each_problem(home: Path, tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("cellwire: 1\nnodes:\n  - id: a\n  - {id: b, type: nope}\n"
                    "edges:\n  - {source: a}\n")
    done = cellwire("run", path, "--json")
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert f"{path}: node 'a' field 'type': the node has no type" in lines[0]
    assert any("node 'a' field 'edges[0].target'" in line for line in lines)
    assert "Traceback" not in done.stderr


def test_a_secret_is_not_taken_from_the_environment_and_never_printed(home: Path,
                                                                      tmp_path: Path):
    path = tmp_path / "leaky.yaml"
    path.write_text(SECRET)
    done = cellwire("run", path, "--json", env={"TOKEN": "s3cr3t-value"})
    assert done.returncode == 1, done.stderr
    shown = json.loads(done.stdout)
    assert shown["status"] == "failed" and "env.TOKEN was not granted" in shown["error"]
    assert "--secret TOKEN" in shown["error"]
    assert "s3cr3t" not in done.stdout + done.stderr


def test_validate_and_runs(home: Path, echo: Path, tmp_path: Path):
    db = tmp_path / "other.db"
    first = json.loads(cellwire("run", echo, "-i", "name=A", "--json", "--db", db).stdout)
    second = json.loads(cellwire("run", echo, "-i", "name=B", "--json", "--db", db).stdout)
    listed = cellwire("runs", "--json", "--db", db)
    assert listed.returncode == 0
    rows = json.loads(listed.stdout)
    assert [r["run_id"] for r in rows] == [second["run_id"], first["run_id"]]
    assert rows[0]["status"] == "succeeded" and rows[0]["workflow"] == "echo"
    assert rows[0]["outputs"]["name"] == "B"
    # --db kept these runs out of the default store.
    assert not (home / "runs.db").exists()

    checked = cellwire("validate", echo)
    assert checked.returncode == 0
    assert checked.stdout.splitlines()[0] == "valid"
    assert checked.stdout.splitlines()[1].startswith(f"{echo}: not trusted;")


def test_the_console_script_is_installed(home: Path, echo: Path):
    script = Path(sys.executable).parent / "cellwire"
    if not script.exists():
        pytest.skip("cellwire is not installed as a console script in this environment")
    done = subprocess.run([str(script), "validate", str(echo)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert (done.returncode, done.stdout.splitlines()[0]) == (0, "valid")


# -- cellwire run, in-process -----------------------------------------------------------------


def run_json(*args: str | Path) -> dict:
    result = invoke("run", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_input_values_are_json_or_text(home: Path, echo: Path):
    out = run_json(echo, "-i", "name=true", "-i", "n=2.5", "-i", "data={\"a\": [1, 2]}",
                   "-i", "flag=false")["outputs"]
    # A declared text input keeps exactly what was typed.
    assert out["name"] == "true"
    assert out["n"] == 2.5 and out["data"] == {"a": [1, 2]} and out["flag"] is False
    out = run_json(echo, "-i", "name=x=y", "-i", "flag=yes")["outputs"]
    assert out["name"] == "x=y" and out["flag"] is True


def test_inputs_json_and_query(home: Path, echo: Path):
    out = run_json(echo, "--inputs-json", '{"name": "Ada", "n": 1}', "-i", "n=2",
                   "--query", "hello there")["outputs"]
    assert out["name"] == "Ada" and out["n"] == 2 and out["query"] == "hello there"


@pytest.mark.parametrize("args", [
    ["-i", "novalue"], ["-i", "=3"], ["--inputs-json", "[1]"], ["--inputs-json", "{bad"],
])
def test_bad_command_lines_exit_2(home: Path, echo: Path, args: list[str]):
    result = invoke("run", echo, *args)
    assert result.exit_code == 2


def test_missing_required_input_exits_2_with_the_fix(home: Path, echo: Path):
    result = invoke("run", echo)
    assert result.exit_code == 2
    assert "node 'start' field 'variables.name'" in result.stderr
    assert "--input name=" in result.stderr


def test_a_misspelt_input_exits_2_naming_the_closest_declared_one(home: Path, echo: Path):
    result = invoke("run", echo, "--input", "name=Ada", "--input", "flgg=true")
    assert result.exit_code == 2
    assert "unknown input 'flgg' (fix: did you mean 'flag'?)" in result.stderr


def test_unreadable_file_exits_2(home: Path, tmp_path: Path):
    result = invoke("run", tmp_path / "missing.yaml")
    assert result.exit_code == 2
    assert "missing.yaml: cannot read the file" in result.stderr


def test_text_output(home: Path, echo: Path):
    result = invoke("run", echo, "-i", "name=Ada", "-i", 'data=["x"]')
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "name: Ada", "n: null", 'data: ["x"]', "flag: null", "query: null"]
    summary = result.stderr.strip().splitlines()[-1]
    assert summary.startswith("succeeded in ") and "0 tokens" in summary and "$0.0000" in summary


def test_partial_success_exits_0(home: Path, tmp_path: Path):
    path = tmp_path / "partial.yaml"
    path.write_text(ECHO.replace("    type: start\n", "    type: start\n"
                                 "    error_strategy: default-value\n"
                                 "    default_value: {name: fallback}\n", 1))
    result = invoke("run", path, "-i", "name=Ada", "-i", "n=abc", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["status"] == "partial-succeeded"


# -- cellwire validate / runs, in-process -----------------------------------------------------


def test_validate_lists_problems_and_warnings(home: Path, tmp_path: Path, echo: Path):
    path = tmp_path / "island.yaml"
    path.write_text(ECHO + "  - {source: end, target: start}\n")
    bad = invoke("validate", path)
    assert bad.exit_code == 2
    assert "cycle" in bad.stderr
    path.write_text(ECHO.replace("edges:", "  - {id: lonely, type: end}\nedges:"))
    warned = invoke("validate", path)
    assert warned.exit_code == 0
    assert warned.stdout.splitlines()[0] == "valid"
    assert "warning: node 'lonely'" in warned.stdout


def test_runs_table_and_empty_store(home: Path, echo: Path):
    empty = invoke("runs")
    assert empty.exit_code == 0 and "no runs yet" in empty.stdout
    assert not (home / "runs.db").exists()
    assert invoke("runs", "--json").stdout.strip() == "[]"
    run_id = run_json(echo, "-i", "name=Ada")["run_id"]
    table = invoke("runs", "--limit", "5").stdout.splitlines()
    assert table[0].split()[:2] == ["RUN", "ID"]
    assert table[1].startswith(run_id) and "echo" in table[1] and "succeeded" in table[1]
