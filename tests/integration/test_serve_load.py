"""Load on loopback: 50 concurrent clients send 2,000 blocking runs; none fails, and every
run is in the store. Bounded in count (and by a generous timeout, never an asserted time)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from serve_support import serving, write_apps

CLIENTS = 50
REQUESTS = 2000


async def drive(url: str, key: str) -> list[tuple[int, str]]:
    """Every answer's status and run id, from ``CLIENTS`` clients sharing ``REQUESTS``."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(REQUESTS):
        queue.put_nowait(i)
    answers: list[tuple[int, str]] = []
    limits = httpx.Limits(max_connections=CLIENTS)

    async def one_client(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            i = queue.get_nowait()
            response = await client.post("/workflows/run", json={
                "inputs": {"name": f"n{i}"}, "response_mode": "blocking", "user": f"u{i % 7}"})
            run_id = response.json().get("workflow_run_id", "") \
                if response.status_code == 200 else response.text
            answers.append((response.status_code, run_id))

    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits,
                                 headers={"Authorization": f"Bearer {key}"}) as client:
        await asyncio.gather(*(one_client(client) for _ in range(CLIENTS)))
    return answers


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_fifty_clients_two_thousand_runs_no_error_all_stored(tmp_path: Path):
    apps = write_apps(tmp_path / "apps", ("greet",))
    with serving(apps, tmp_path / "runs.db") as served:
        store = served.store
        answers = asyncio.run(drive(served.url, served.new_key("runner", app="greet")))
        assert len(answers) == REQUESTS
        errors = [a for a in answers if a[0] != 200]
        assert errors == []
        store.flush(30)
        runs = store.runs(workflow="greet")
    ids = {run_id for _, run_id in answers}
    assert len(ids) == REQUESTS
    assert set(runs["run_id"]) == ids
    assert set(runs["status"]) == {"succeeded"}
