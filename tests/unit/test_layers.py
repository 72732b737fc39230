"""Layers isolated by the executor, and the store as a layer off the event loop: real runs,
real SQLite files."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable
from pathlib import Path

import pytest

import cellwire
import cellwire.store.sink
import cellwire.store.writer
from cellwire import Runtime, Workflow
from cellwire.engine.events import Event, RunStarted
from cellwire.engine.layers import Layer, Threaded
from cellwire.engine.result import RunResult
from cellwire.store import RunStore


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELLWIRE_HOME", str(tmp_path / "home"))


def chain(n: int = 3) -> Workflow:
    wf = Workflow("chain")
    wf.add_node("start", "start", variables=[{"variable": "x", "type": "text-input"}])
    prev = "start"
    for i in range(n):
        wf.add_node(f"t{i}", "template-transform", after=prev, template="{{ x }}!",
                    variables=[{"variable": "x", "value_selector": [prev if i else "start",
                                                                    "output" if i else "x"]}])
        prev = f"t{i}"
    wf.add_node("end", "end", after=prev,
                outputs=[{"variable": "out", "value_selector": [prev, "output"]}])
    return wf


class Boom(Layer):
    """Raises in one hook and counts every call it gets."""

    def __init__(self, hook: str, *, awaited: bool = False):
        self.hook = hook
        self.awaited = awaited
        self.calls: list[str] = []

    def on_run_start(self, event: RunStarted) -> None:
        self.calls.append("start")
        if self.hook == "on_run_start":
            raise ValueError("start hook broke")

    def on_event(self, event: Event) -> None:
        self.calls.append("event")
        if self.hook == "on_event":
            raise ValueError("event hook broke")

    def on_run_end(self, result: RunResult) -> Awaitable[None] | None:
        self.calls.append("end")
        if self.hook != "on_run_end":
            return None
        if not self.awaited:
            raise ValueError("end hook broke")

        async def later() -> None:
            await asyncio.sleep(0)
            raise ValueError("end hook broke")

        return later()


@pytest.mark.parametrize(("hook", "awaited", "calls"), [
    ("on_run_start", False, ["start"]),
    ("on_event", False, ["start", "event"]),
    ("on_run_end", False, None),
    ("on_run_end", True, None),
])
async def test_a_failing_layer_is_reported_once_and_the_run_is_stored_as_it_ended(
        tmp_path: Path, hook: str, awaited: bool, calls: list[str] | None) -> None:
    store = RunStore(tmp_path / "runs.db")
    boom = Boom(hook, awaited=awaited)
    result = await chain().arun(x="a", runtime=Runtime(layers=[boom]), store=store)
    assert result.status == "succeeded" and result.outputs == {"out": "a!!!"}
    assert len(result.warnings) == 1
    assert result.warnings[0].startswith(f"layer 'Boom' failed in {hook}: ValueError: ")
    # It got nothing after its failure.
    assert boom.calls == (calls or ["start", *["event"] * (len(result.events)), "end"])
    # The store, another layer, is untouched: the run ended succeeded there, not running.
    assert (result.stored, result.store_error) == (True, None)
    assert store.run(result.run_id)["status"] == "succeeded"
    store.close()


async def test_a_plain_callback_that_raises_is_named_in_the_warning() -> None:
    def progress(event: Event) -> None:
        raise KeyError("bar")

    result = await chain().arun(x="a", runtime=Runtime(layers=[progress]), store=False)
    assert result.ok and result.stored is None
    assert result.warnings == [
        ("layer 'test_a_plain_callback_that_raises_is_named_in_the_warning.<locals>.progress' "
         "failed in on_event: KeyError: 'bar'; it got nothing more from this run")]


async def test_a_slow_layer_on_its_own_thread_does_not_slow_the_run() -> None:
    seen: list[str] = []

    def slow(event: Event) -> None:
        time.sleep(0.05)
        seen.append(event.name)

    threaded = Threaded(slow)
    try:
        result = await chain(5).arun(x="a", runtime=Runtime(layers=[threaded]), store=False)
    finally:
        threaded.close()
    assert result.ok and result.warnings == []
    # 14 events at 50 ms each would take 0.7 s on the loop; the run itself took far less,
    # and the end still waited until the layer had every event.
    assert result.elapsed_ms < 150
    assert len(seen) == len(result.events)


class Keeper(Layer):
    """A persisting layer whose end never completes, or fails."""

    persists = True
    end_timeout = 0.2

    def __init__(self, fail: bool):
        self.fail = fail

    def on_run_end(self, result: RunResult) -> Awaitable[None]:
        async def wait() -> None:
            if self.fail:
                raise OSError("disk gone")
            await asyncio.Event().wait()

        return wait()


@pytest.mark.parametrize(("fail", "why"), [
    (True, "OSError: disk gone"), (False, "did not finish within its end_timeout of 0.2 s")])
async def test_a_failing_persisting_layer_says_the_run_was_not_stored(fail: bool,
                                                                      why: str) -> None:
    with pytest.warns(RuntimeWarning, match="could not store run"):
        result = await chain().arun(x="a", runtime=Runtime(layers=[Keeper(fail)]), store=False)
    assert result.ok
    assert (result.stored, result.store_error) == (False, why)
    assert "stored=False" in repr(result)


async def test_a_closed_store_warns_and_the_result_says_why(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "closed.db")
    store.close()
    with pytest.warns(RuntimeWarning, match="could not store run .* is closed"):
        result = await chain().arun(x="a", store=store)
    assert result.ok and result.stored is False
    assert f"the run store {store.path} is closed" in (result.store_error or "")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
async def test_a_killed_writer_never_leaves_a_run_running_without_saying_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = RunStore(tmp_path / "runs.db")
    real = cellwire.store.sink.write_end

    def die(*args: object, **kwargs: object) -> None:
        raise SystemExit("writer killed")  # ends the thread, as nothing else would

    def start_on_disk(event: Event) -> None:
        if event.name == "node_started":
            store.flush(5)  # the run's start is committed before the writer dies

    monkeypatch.setattr(cellwire.store.sink, "write_end", die)
    with pytest.warns(RuntimeWarning, match="writer thread .* died"):
        result = await chain().arun(x="a", store=store, runtime=Runtime(layers=[start_on_disk]))
    assert result.ok and result.stored is False
    assert "SystemExit: writer killed" in (result.store_error or "")
    # The start was committed before the writer died: the store shows it running, and the
    # result is what says it never ended there.
    assert store.run(result.run_id)["status"] == "running"
    # The next run gets a new writer and is stored.
    monkeypatch.setattr(cellwire.store.sink, "write_end", real)
    again = await chain().arun(x="b", store=store)
    assert again.stored is True and store.run(again.run_id)["status"] == "succeeded"
    store.close()


async def test_runs_that_end_together_share_commits(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    results = await asyncio.gather(*[chain().arun(x=str(i), store=store) for i in range(20)])
    assert all(r.stored for r in results)
    frame = store.runs()
    assert sorted(frame["run_id"]) == sorted(r.run_id for r in results)
    assert set(frame["status"]) == {"succeeded"}
    store.close()


def _writer_threads(folder: Path) -> list[threading.Thread]:
    # Only this test's stores: writers of earlier tests' stores may still be winding down.
    return [t for t in threading.enumerate()
            if t.name.startswith(f"cellwire-store-writer {folder}")]


async def test_writer_threads_start_lazily_and_do_not_outlive_their_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cellwire.store.writer, "IDLE_SECONDS", 0.1)
    before = len(_writer_threads(tmp_path))
    stores = [RunStore(tmp_path / f"s{i}.db") for i in range(10)]
    assert len(_writer_threads(tmp_path)) == before  # opening a store starts nothing
    for store in stores:
        assert (await chain().arun(x="a", store=store)).stored
    for store in stores[:5]:
        store.close()
        assert not store.writer.running
    # The stores left open let their writers go once idle.
    deadline = time.monotonic() + 5
    while len(_writer_threads(tmp_path)) > before and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert len(_writer_threads(tmp_path)) == before
    # ...and a later run starts one again.
    assert (await chain().arun(x="b", store=stores[5])).stored
    for store in stores[5:]:
        store.close()
