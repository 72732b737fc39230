"""``cellwire serve`` as a user starts it: a process of its own with two uvicorn workers on
one store, a key from ``cellwire keys create``, and a clean stop."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from serve_support import write_apps


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cellwire(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cellwire.cli", *args], capture_output=True,
                          text=True, timeout=60, env=env, check=False)


def test_two_workers_share_one_store_and_every_run_is_recorded(tmp_path: Path):
    env = {**os.environ, "CELLWIRE_HOME": str(tmp_path / "home")}
    apps = write_apps(tmp_path / "apps", ("greet", "notes"))
    db = tmp_path / "runs.db"
    made = cellwire("keys", "create", "--role", "runner", "--app", "greet", "--db", str(db),
                    "--json", env=env)
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)["key"]
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "cellwire.cli", "serve", str(apps), "--port", str(port),
         "--db", str(db), "--workers", "2", "--trust"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}/v1"
        headers = {"Authorization": f"Bearer {key}"}
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/info", headers=headers, timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        ids = []
        with httpx.Client(base_url=base, headers=headers, timeout=30) as c:
            for i in range(40):  # new connections: both workers take some
                answer = c.post("/workflows/run", json={"inputs": {"name": f"n{i}"},
                                                        "response_mode": "blocking",
                                                        "user": "u"},
                                headers={"Connection": "close"})
                assert answer.status_code == 200, answer.text
                assert answer.json()["data"]["status"] == "succeeded"
                ids.append(answer.json()["workflow_run_id"])
            # Any worker answers for a run any worker stored.
            for run_id in ids:
                detail = c.get(f"/workflows/run/{run_id}", headers={"Connection": "close"})
                assert detail.json()["status"] == "succeeded"
            assert c.get("/info").json()["name"] == "greet"
            assert c.get("/info", params={"app": "notes"}).status_code == 403
        assert httpx.get(f"{base}/info", timeout=5).status_code == 401
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    from cellwire.store import RunStore

    with RunStore(db) as store:
        stored = store.runs(workflow="greet")
    assert set(stored["run_id"]) == set(ids)
    assert server.returncode == 0


def test_a_path_without_workflows_is_exit_2_saying_so(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    done = cellwire("serve", str(tmp_path / "empty"), env=dict(os.environ))
    assert done.returncode == 2
    assert "no workflow file" in done.stderr
