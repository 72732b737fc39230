"""Conformance over the shared Dify DSL corpus; prints a per-collection report at the end."""

from __future__ import annotations

from pathlib import Path

import pytest
from corpus_report import CORPUS, REPORT


@pytest.fixture
def corpus() -> Path:
    if not CORPUS.is_dir():
        pytest.skip(f"the Dify DSL corpus is not at {CORPUS} (clone shared/ beside the repo)")
    return CORPUS


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not REPORT:
        return
    tr = terminalreporter
    tr.section("Dify DSL corpus")
    tr.write_line(f"{'collection':45} {'files':>5} {'imported':>8} {'runnable':>8} "
                  f"{'rejected':>8}")
    totals = [0, 0, 0, 0]
    for collection in sorted(REPORT):
        files = REPORT[collection]
        row = [len(files), sum(f.get("imported", False) for f in files.values()),
               sum(f.get("runnable", False) for f in files.values()),
               sum(f.get("rejected", False) for f in files.values())]
        totals = [a + b for a, b in zip(totals, row, strict=True)]
        tr.write_line(f"{collection:45} {row[0]:>5} {row[1]:>8} {row[2]:>8} {row[3]:>8}")
    tr.write_line(f"{'total':45} {totals[0]:>5} {totals[1]:>8} {totals[2]:>8} {totals[3]:>8}")
    tr.write_line("runnable: the run succeeded (or partially, or paused at a human-input form) "
                  "on the scripted provider with sample inputs; the others end failed at a node "
                  "that needs something absent "
                  "here (a Dify tool, a knowledge base, the network, a package).")
