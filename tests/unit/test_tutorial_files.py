"""The tutorials are committed without outputs: a checkout shows no stale widget, and running
them (make lab works on a copy) never dirties the repository."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parents[2] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_a_tutorial_is_saved_without_outputs(path: Path) -> None:
    notebook = json.loads(path.read_text(encoding="utf-8"))
    with_outputs = [i for i, cell in enumerate(notebook["cells"])
                    if cell.get("outputs") or cell.get("execution_count") is not None]
    assert not with_outputs, (f"{path.name}: cells {with_outputs} keep outputs; clear them "
                              "(Edit > Clear Outputs of All Cells) before committing")
    assert "widgets" not in notebook.get("metadata", {}), f"{path.name} keeps widget state"
