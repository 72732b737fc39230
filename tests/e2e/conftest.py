"""A real JupyterLab and Debian's Chromium for the widget's end-to-end tests.

One JupyterLab server and one browser per session; each test gets a fresh notebook in its own
browser context, and its kernel is shut down afterwards. The launcher lives in
benchmarks/_lab.py (shared with benchmarks/widget_render.py) and is loaded by path.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_LAB_FILE = Path(__file__).resolve().parents[2] / "benchmarks" / "_lab.py"


def _load_lab() -> Any:
    if "_cellwire_lab" in sys.modules:
        return sys.modules["_cellwire_lab"]
    spec = importlib.util.spec_from_file_location("_cellwire_lab", _LAB_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["_cellwire_lab"] = module
    spec.loader.exec_module(module)
    return module


lab = _load_lab()

# The scripted provider answers every LLM node offline, echoing its prompt.
SERVER_ENV = {"CELLWIRE_DEFAULT_MODEL": "scripted/echo"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = lab.chromium_missing()
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.e2e)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="package")
def lab_harness() -> Any:
    """benchmarks/_lab.py: the launcher and its Notebook driver."""
    return lab


@pytest.fixture(scope="package")
def lab_server() -> Iterator[Any]:
    with lab.LabServer(SERVER_ENV) as server:
        yield server


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = lab.launch_chromium(pw)
        yield chromium
        chromium.close()


@pytest.fixture(scope="package")
def lab_page(lab_server: Any, browser: Any) -> Iterator[Any]:
    """One JupyterLab page for the session; each test opens its notebook there as a tab."""
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    context.set_default_timeout(20_000)
    page = context.new_page()
    lab.open_lab(page, lab_server)
    yield page
    context.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


_FAILED = pytest.StashKey[bool]()


@pytest.fixture
def notebook(request: pytest.FixtureRequest, lab_server: Any, lab_page: Any,
             tmp_path: Path) -> Iterator[Any]:
    """A fresh notebook with its own kernel (idle), closed and shut down afterwards.

    A failed test leaves a screenshot of the page in its tmp_path (the path is printed).
    """
    nb = lab.Notebook.open(lab_page, lab_server)
    try:
        yield nb
    finally:
        if request.node.stash.get(_FAILED, False):
            shot = tmp_path / "page.png"
            lab_page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot of the failed test's page: {shot}")
        for _ in range(2):  # a dialog a failed test left open
            if lab_page.locator(".jp-Dialog").count():
                lab_page.keyboard.press("Escape")
        nb.close()
        lab_server.shutdown_kernels(nb.path)
