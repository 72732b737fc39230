"""Every tutorial, as a user runs it: opened in JupyterLab in Chromium and run with Run All
(JupyterLab sends real cell ids, which nbval does not). Fails on an error output, a widget
that says "model not found" or does not draw, or a cell that never ran."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

NOTEBOOKS = Path(__file__).parents[2] / "notebooks"
TUTORIALS = sorted(p.name for p in NOTEBOOKS.glob("[0-9][0-9]-*.ipynb"))

_RUN_ALL_JS = """async (id) => {
  const panel = window.__cwPanels[id];
  await window.jupyterapp.commands.execute('notebook:run-all-cells');
  return panel.content.model.cells.length;
}"""
# Done when the kernel is idle and every code cell shows an execution count, or a cell
# failed (Run All stops there).
_DONE_JS = """(id) => {
  const panel = window.__cwPanels[id];
  const kernel = panel.sessionContext.session?.kernel;
  if (!kernel || kernel.status !== 'idle') return false;
  const cells = Array.from(panel.content.model.cells).filter((c) => c.type === 'code');
  const failed = cells.some((c) => Array.from({length: c.outputs.length},
                                              (_, k) => c.outputs.get(k).toJSON())
    .some((o) => o.output_type === 'error' || (o.name === 'stderr' && /^\\w*Error\\b/m.test(o.text))));
  return failed || cells.every((c) => c.executionCount !== null);
}"""
_NOT_RUN_JS = """(id) => Array.from(window.__cwPanels[id].content.model.cells)
  .map((c, i) => [i, c]).filter(([i, c]) => c.type === 'code' && c.executionCount === null)
  .map(([i, c]) => `cell ${i}: ${c.sharedModel.getSource().split('\\n')[0]}`)"""
_ERRORS_JS = """(id) => {
  const panel = window.__cwPanels[id];
  const found = [];
  Array.from(panel.content.model.cells).forEach((c, i) => {
    if (c.type !== 'code') return;
    for (let k = 0; k < c.outputs.length; k++) {
      const out = c.outputs.get(k).toJSON();
      if (out.output_type === 'error') found.push(`cell ${i}: ${out.ename}: ${out.evalue}`);
      // IPython prints a UsageError on stderr, and Run All stops there.
      else if (out.name === 'stderr' && /^\\w*Error\\b/m.test(out.text)) found.push(`cell ${i}: ${out.text}`);
    }
  });
  return found;
}"""


@pytest.fixture(scope="module")
def tutorials_root(lab_server: Any) -> Path:
    for item in NOTEBOOKS.iterdir():
        target = lab_server.root / item.name
        if item.is_dir():
            shutil.copytree(item, target, dirs_exist_ok=True)
        else:
            shutil.copy(item, target)
    return lab_server.root


@pytest.mark.parametrize("name", TUTORIALS)
def test_a_tutorial_runs_with_run_all_in_jupyterlab(name: str, tutorials_root: Path,
                                                    lab_server: Any, lab_page: Any,
                                                    lab_harness: Any) -> None:
    nb = lab_harness.Notebook.open(lab_page, lab_server, name)
    try:
        lab_page.evaluate(_RUN_ALL_JS, nb.panel_id)
        try:
            lab_page.wait_for_function(_DONE_JS, arg=nb.panel_id, timeout=120_000, polling=500)
        except Exception as exc:
            waiting = lab_page.evaluate(_NOT_RUN_JS, nb.panel_id)
            raise AssertionError(f"{name}: Run All did not finish; not run: {waiting}") from exc
        errors = lab_page.evaluate(_ERRORS_JS, nb.panel_id)
        assert not errors, f"{name}: " + "; ".join(errors)
        assert not lab_page.evaluate(_NOT_RUN_JS, nb.panel_id), f"{name}: cells did not run"
        text = nb.root.inner_text()
        assert "model not found" not in text, f"{name}: a widget says model not found"
        assert "Error displaying widget" not in text, f"{name}: a widget failed to display"
        for view in nb.root.locator(".jp-OutputArea-output:has(.react-flow)").all():
            assert view.locator(".react-flow__node").count() > 0, f"{name}: an empty editor"
    finally:
        nb.close()
        lab_server.shutdown_kernels(name)
