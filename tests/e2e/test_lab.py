"""The e2e harness itself: JupyterLab runs cells typed into a notebook and reports their
output, and what JupyterLab's own keys do to cells (the trap the widget must avoid)."""

from __future__ import annotations


def test_a_typed_cell_runs_in_the_kernel_and_its_output_is_read_back(notebook):
    assert notebook.run("import os\nprint(6 * 7, os.environ['CELLWIRE_DEFAULT_MODEL'])") \
        == "42 scripted/echo"
    # Each run() adds a cell below the last one and the kernel keeps its state between them.
    assert notebook.run("x = 5\nx * 2") == "10"
    assert notebook.run("print(x + 1)") == "6"
    assert notebook.cell_count() == 3


def test_cellwire_home_is_the_servers_temporary_folder(notebook, lab_server):
    assert notebook.run("import os; print(os.environ['CELLWIRE_HOME'])") == str(lab_server.home)


def test_notebook_keys_in_command_mode(notebook):
    """What the widget's keyboard isolation guards against: in command mode ``a`` adds a
    cell and ``d d`` deletes one, while Backspace and Delete on a selected cell do nothing."""
    notebook.run("1")
    notebook.run("2")
    assert notebook.cell_count() == 2
    notebook.cell(1).locator(".jp-InputPrompt").click()
    page = notebook.page
    page.keyboard.press("Escape")
    for key in ("Backspace", "Delete"):
        page.keyboard.press(key)
        assert notebook.cell_count() == 2, key
    page.keyboard.press("a")
    notebook.wait_cell_count(3)
    page.keyboard.press("d")
    page.keyboard.press("d")
    notebook.wait_cell_count(2)
    assert notebook.cell_count() == 2
