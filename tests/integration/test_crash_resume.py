"""Crash and resume: `cellwire run` killed with SIGKILL at 50 points of its event stream, then
`cellwire resume` finishes each run.

The workflow has code nodes (trusted: they append to a side-effect file) and http-request
nodes (to a real loopback server that records each request), a parallel pair with a join and
an iteration. The kill points come from the event stream of a clean run: the subprocess is
the real command line with one extra layer (tests/integration/event_marker.py) that marks the
N-th event on stderr. Half the points pause the event loop at that event, so the kill lands
exactly there; the other half let the run go on, so the kill lands a moment later, anywhere
(mid-node, mid-commit). Runs alternate between `sync` and `async` durability. After each
kill: `PRAGMA integrity_check` is ok, the run is resumed with its id, its outputs equal the
clean run's, and no node whose checkpoint was committed before the kill ran again (its side
effect happened once), while every node ran at most twice. In `sync` runs, moreover, every
node whose successor had started (its side effect seen before the kill) was committed.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

import cellwire
from cellwire.store import RunStore

HARNESS = Path(__file__).with_name("event_marker.py")
SRC = Path(cellwire.__file__).parents[1]
KILLS = 50
#: Top-level nodes with a side effect, and the iteration's items.
EFFECT_NODES = ("c1", "h1", "c2a", "c2b", "h2", "c3")
ITEMS = (1, 2, 3)
#: The top-level nodes each side effect's node waits for.
UPSTREAM = {"h1": {"c1"}, "c2a": {"h1"}, "c2b": {"h1"}, "h2": {"c2a", "c2b"},
            **{f"ci{i}": {"h2"} for i in ITEMS}, "c3": {"it"}}

_CODE = """
import time
def main(log{args}):
    time.sleep(0.01)
    with open(log, "a") as f:
        f.write("{name}\\n")
    return {result}
"""


def _code(wf: cellwire.Workflow, node_id: str, after: str | list[str], result: str,
          variables: dict[str, list[str]], outputs: dict[str, str], *,
          name: str | None = None, parent: str | None = None) -> None:
    args = "".join(f", {v}" for v in variables)
    wf.add_node(node_id, "code", after=after, parent=parent,
                code=_CODE.format(args=args, name=name or node_id, result=result),
                variables=[{"variable": "log", "value_selector": ["start", "log"]}]
                + [{"variable": k, "value_selector": v} for k, v in variables.items()],
                outputs={k: {"type": t} for k, t in outputs.items()})


def _get(wf: cellwire.Workflow, node_id: str, after: str | list[str], url: str) -> None:
    wf.add_node(node_id, "http-request", after=after, method="get", url=url,
                authorization={"type": "no-auth"}, headers="", params="",
                body={"type": "none", "data": []})


def crash_workflow(server: str) -> cellwire.Workflow:
    """start -> c1 -> h1 -> (c2a | c2b) -> h2 -> it[ci] -> c3 -> end."""
    wf = cellwire.Workflow("crashy")
    wf.add_node("start", "start", variables=[{"variable": "log", "type": "text-input"},
                                             {"variable": "tag", "type": "text-input"}])
    _code(wf, "c1", "start", '{"n": 7, "items": [1, 2, 3]}', {},
          {"n": "number", "items": "array[number]"})
    tag = "tag={{#start.tag#}}"
    _get(wf, "h1", "c1", f"{server}/effect/h1?{tag}&n={{{{#c1.n#}}}}")
    _code(wf, "c2a", "h1", '{"v": body + "|a"}', {"body": ["h1", "body"]}, {"v": "string"})
    _code(wf, "c2b", "h1", '{"v": body + "|b"}', {"body": ["h1", "body"]}, {"v": "string"})
    _get(wf, "h2", ["c2a", "c2b"], f"{server}/effect/h2?{tag}&a={{{{#c2a.v#}}}}"
         "&b={{#c2b.v#}}")
    wf.add_node("it", "iteration", after="h2", iterator_selector=["c1", "items"],
                output_selector=["ci", "v"], start_node_id="its")
    wf.add_node("its", "iteration-start", parent="it")
    wf.add_node("ci", "code", after="its", parent="it",
                code=_CODE.format(args=", item", name='ci" + str(item) + "',
                                  result='{"v": item * 10}'),
                variables=[{"variable": "log", "value_selector": ["start", "log"]},
                           {"variable": "item", "value_selector": ["it", "item"]}],
                outputs={"v": {"type": "number"}})
    _code(wf, "c3", "it", '{"out": body + "/" + ",".join(map(str, rounds))}',
          {"body": ["h2", "body"], "rounds": ["it", "output"]}, {"out": "string"})
    wf.add_node("end", "end", after="c3", outputs=[
        {"variable": "final", "value_selector": ["c3", "out"]},
        {"variable": "n", "value_selector": ["c1", "n"]}])
    return wf


class EffectServer:
    """Records each request's tag and node; answers with the node and its query, a little
    later (so a run spends time in its HTTP nodes too)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                node = parts.path.rsplit("/", 1)[-1]
                with owner.lock:
                    owner.requests.append((query.pop("tag", [""])[0], node))
                time.sleep(0.01)
                body = f"{node}:{json.dumps(query, sort_keys=True)}".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: object, client_address: object) -> None:
                pass  # a client killed mid-request: expected here

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def effects(self, tag: str) -> Counter[str]:
        with self.lock:
            return Counter(node for t, node in self.requests if t == tag)


@pytest.fixture(scope="module")
def server() -> Iterator[EffectServer]:
    found = EffectServer()
    thread = threading.Thread(target=found.httpd.serve_forever, daemon=True)
    thread.start()
    yield found
    found.httpd.shutdown()
    found.httpd.server_close()


def _env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}


def _run(tmp: Path, wf_file: Path, db: Path, tag: str, at: int, pause: bool,
         durability: str = "async") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(HARNESS), "run", str(wf_file), "--db", str(db), "--trust", "--json",
         "-i", f"log={tmp / (tag + '.log')}", "-i", f"tag={tag}", "--durability", durability],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=_env(CRASH_AT=str(at), CRASH_PAUSE="1" if pause else "0",
                 CELLWIRE_CONFIG_DIR=str(tmp / "config")))


def _effects(tmp: Path, server: EffectServer, tag: str) -> Counter[str]:
    log = tmp / f"{tag}.log"
    found = Counter(log.read_text().split()) if log.exists() else Counter()
    return found + server.effects(tag)


def _integrity(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


def _committed(db: Path, run_id: str) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {row[0] for row in conn.execute(
            "SELECT node_id FROM checkpoint_writes WHERE run_id = ?", (run_id,))}


@pytest.mark.timeout(300)
def test_killed_runs_resume_with_the_clean_outputs_and_no_finished_node_run_twice(
        tmp_path: Path, server: EffectServer) -> None:
    wf_file = tmp_path / "crashy.yaml"
    cellwire.save(crash_workflow(server.url), wf_file)
    db = tmp_path / "runs.db"

    clean = _run(tmp_path, wf_file, db, "clean", 0, False)
    out, err = clean.communicate(timeout=60)
    assert clean.returncode == 0, err
    expected = json.loads(out)["outputs"]
    assert expected["final"].startswith("h2:") and expected["final"].endswith("/10,20,30")
    events = [line.split()[2] for line in err.splitlines() if line.startswith("EVENT ")]
    assert events[0] == "run_started" and events[-1] == "run_succeeded"
    assert _effects(tmp_path, server, "clean") == Counter(
        {**dict.fromkeys(EFFECT_NODES, 1), **{f"ci{i}": 1 for i in ITEMS}})

    # Events from the first node's start to the run's last node's end, spread evenly: each
    # once with the run paused there, and once with the run going on to wherever it is.
    inner = list(range(2, len(events)))
    half = KILLS // 2
    paused = [(inner[round(i * (len(inner) - 1) / (half - 1))], True) for i in range(half)]
    moving = [(inner[(i * len(inner)) // half], False) for i in range(half)]
    points = paused + moving
    assert len(set(points)) == KILLS, f"{len(events)} events give too few kill points"

    def crash_and_resume(index: int, at: int, pause: bool) -> str:
        tag = f"k{index}"
        durability = ("sync", "async")[index % 2]
        proc = _run(tmp_path, wf_file, db, tag, at, pause, durability)
        assert proc.stderr is not None
        marker = ""
        for line in proc.stderr:
            if line.startswith("CRASH "):
                marker = line
                break
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        assert marker, f"kill point {at} was never reached"
        run_id = marker.split()[1]
        assert _integrity(db) == "ok"
        committed = _committed(db, run_id)
        before = _effects(tmp_path, server, tag)
        with sqlite3.connect(db) as conn:
            (status,) = conn.execute("SELECT status FROM runs WHERE run_id = ?",
                                     (run_id,)).fetchone()
        if status == "succeeded":
            # The kill landed after the run had ended and committed: nothing to resume, and
            # its stored outputs must be the clean run's.
            with RunStore(db) as finished:
                assert finished.run(run_id)["outputs"] == expected
            assert all(before[name] == 1 for name in EFFECT_NODES), before
            return f"{durability} {at}{'p' if pause else 'm'}: {len(committed)} committed"
        resumed = subprocess.run(
            [sys.executable, "-m", "cellwire.cli", "resume", run_id, "--db", str(db),
             "--trust", "--json"], capture_output=True, text=True, timeout=60,
            env=_env(CELLWIRE_CONFIG_DIR=str(tmp_path / "config")), check=False)
        where = f"{durability} run killed at event {at} ({marker.split(maxsplit=2)[2].strip()}" \
                f", {'paused' if pause else 'moving'}), committed {sorted(committed)}"
        if durability == "sync":
            for name, upstream in UPSTREAM.items():
                if before[name]:
                    assert upstream <= committed, f"{where}: {name} started before {upstream}"
        assert resumed.returncode == 0, f"{where}: {resumed.stderr}"
        shown = json.loads(resumed.stdout)
        assert shown["run_id"] == run_id and shown["status"] == "succeeded", where
        assert shown["outputs"] == expected, where
        effects = _effects(tmp_path, server, tag)
        for node in committed & {*EFFECT_NODES}:
            assert effects[node] == 1, f"{where}: {node} ran again after its checkpoint"
        if "it" in committed:
            assert all(effects[f"ci{i}"] == 1 for i in ITEMS), f"{where}: {effects}"
        for name in [*EFFECT_NODES, *(f"ci{i}" for i in ITEMS)]:
            assert 1 <= effects[name] <= 2, f"{where}: {name} ran {effects[name]} times"
        assert _integrity(db) == "ok"
        return f"{durability} {at}{'p' if pause else 'm'}: {len(committed)} committed"

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        done = list(pool.map(lambda args: crash_and_resume(*args),
                             [(i, at, pause) for i, (at, pause) in enumerate(points)]))
    assert len(done) == KILLS
    # The kills landed all over the run: before any node was committed, and after most.
    counts = {int(line.split(": ")[1].split()[0]) for line in done}
    assert min(counts) <= 1 and max(counts) >= 7, done
    with sqlite3.connect(db) as conn:
        statuses = Counter(row[0] for row in conn.execute("SELECT status FROM runs"))
    assert statuses == Counter({"succeeded": KILLS + 1})
