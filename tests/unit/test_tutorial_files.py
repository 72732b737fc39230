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


def test_the_index_links_every_tutorial_by_its_title() -> None:
    """``make lab`` opens on 00-index.ipynb: a tutorial missing from it is one nobody finds."""
    index = next(p for p in NOTEBOOKS if p.name == "00-index.ipynb")
    text = "".join(json.loads(index.read_text(encoding="utf-8"))["cells"][0]["source"])
    for path in NOTEBOOKS:
        if path == index:
            continue
        first = json.loads(path.read_text(encoding="utf-8"))["cells"][0]["source"]
        title = "".join(first).splitlines()[0].lstrip("# ").strip()
        assert f"[{title}]({path.name})" in text, (
            f"00-index.ipynb does not link {path.name} as [{title}]({path.name}); add it")
