"""`cellwire replay`: fork a stored run from a node with an edit, reusing the recorded
outputs of the nodes before it (a code node with a side effect shows it did not run again)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from cellwire.store import RunStore


def cli(*args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cellwire.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=120, check=False)


def test_replay_runs_the_edited_node_and_what_follows_and_reuses_the_rest(tmp_path: Path):
    log = tmp_path / "fetched.log"
    flow = tmp_path / "flow.yaml"
    flow.write_text(textwrap.dedent(f"""\
        cellwire: 1
        name: fork
        nodes:
          - {{id: start, type: start, variables: [{{variable: x, type: text-input}}]}}
          - id: fetch
            type: code
            code: |
              def main(x):
                  with open({str(log)!r}, "a") as f:
                      f.write("fetch\\n")
                  return {{"data": x.upper()}}
            variables: [{{variable: x, value_selector: [start, x]}}]
            outputs: {{data: {{type: string}}}}
          - id: draft
            type: template-transform
            template: "first {{{{ d }}}}"
            variables: [{{variable: d, value_selector: [fetch, data]}}]
          - {{id: end, type: end, outputs: [{{variable: out, value_selector: [draft, output]}}]}}
        edges:
          - {{source: start, target: fetch}}
          - {{source: fetch, target: draft}}
          - {{source: draft, target: end}}
        """))
    db = tmp_path / "runs.db"
    first = cli("run", flow, "--trust", "--input", "x=owls", "--db", db, "--json")
    assert first.returncode == 0, first.stderr
    old = json.loads(first.stdout)
    assert old["outputs"] == {"out": "first OWLS"}

    forked = cli("replay", old["run_id"][:8], "--from", "draft", "--set",
                 "draft.template=second {{ d }}", "--db", db, "--trust", "--json")
    assert forked.returncode == 0, forked.stderr
    new = json.loads(forked.stdout)
    assert new["outputs"] == {"out": "second OWLS"} and new["run_id"] != old["run_id"]
    assert log.read_text() == "fetch\n"  # fetch's recorded output was reused

    edited = tmp_path / "edited.yaml"
    edited.write_text(flow.read_text().replace("first", "third"))
    again = cli("replay", old["run_id"], "--from", "draft", "--workflow", edited, "--db", db,
                "--trust", "--json")
    assert json.loads(again.stdout)["outputs"] == {"out": "third OWLS"}
    assert log.read_text() == "fetch\n"

    bad = cli("replay", old["run_id"], "--from", "nowhere", "--db", db)
    assert bad.returncode == 2 and "is not a top-level node" in bad.stderr
    typo = cli("replay", old["run_id"], "--from", "draft", "--set", "drfat.template=x",
               "--db", db)
    assert typo.returncode == 2 and "no node 'drfat'" in typo.stderr

    with RunStore(db) as store:  # the forks are runs of their own; the original is kept
        statuses = dict(zip(store.runs().run_id, store.runs().status, strict=True))
    assert len(statuses) == 3 and statuses[old["run_id"]] == "succeeded"
