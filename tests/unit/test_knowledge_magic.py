"""``%workflow kb ...`` through an IPython InteractiveShell: the CLI's commands, and the view
of what a search retrieved and why."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from traitlets.config import Config

from cellwire.jupyter.display import Rendered
from cellwire.jupyter.knowledge import kb_command
from cellwire.jupyter.magics import WorkflowMagics
from cellwire.jupyter.session import Session


@pytest.fixture
def shell(tmp_path, monkeypatch):
    monkeypatch.setenv("CELLWIRE_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    ip = InteractiveShell(config=Config({"HistoryManager": {"enabled": False}}))
    ip.register_magics(WorkflowMagics(ip, session=Session()))
    (tmp_path / "tea.md").write_text("# Tea\n\nGreen tea is steamed.\n\nBlack tea is oxidised.")
    (tmp_path / "coffee.txt").write_text("Coffee beans are roasted.")
    return ip


def test_kb_magic_mirrors_the_cli(shell, capsys, monkeypatch):
    shell.run_line_magic("workflow", "kb create drinks --embedding hash-32")
    shell.run_line_magic("workflow", "kb add drinks tea.md coffee.txt --quiet")
    out = capsys.readouterr().out
    assert "created knowledge base drinks" in out and "2 added" in out
    shell.run_line_magic("workflow", "kb list")
    assert "drinks" in capsys.readouterr().out
    view = shell.run_line_magic("workflow", 'kb search drinks "green tea" --top-k 2')
    assert isinstance(view, Rendered)
    assert "<mark>Green</mark> <mark>tea</mark> is steamed" in view.html
    # Why it was found: each retriever's score, and the document and position of the chunk.
    assert "fulltext" in view.html and "vector" in view.html and "rrf" in view.html
    assert "tea.md #0" in view.html and view.text.startswith("drinks: 2 hit(s)")
    # --rerank as in the CLI: the scripted provider's stand-in rerank model re-scores.
    monkeypatch.setenv("CELLWIRE_DEFAULT_MODEL", "scripted/echo")
    reranked = shell.run_line_magic("workflow", 'kb search drinks "black tea oxidised" '
                                                '--top-k 1 --rerank scripted/rerank')
    assert "tea.md #0" in reranked.text and "rerank 1.000" in reranked.text
    with pytest.raises(UsageError, match="'nowhere/rerank'"):
        shell.run_line_magic("workflow", 'kb search drinks "tea" --rerank nowhere/rerank')
    shell.run_line_magic("workflow", 'kb search drinks "roasted" --json --mode fulltext')
    assert '"source"' in capsys.readouterr().out
    shell.run_line_magic("workflow", "kb drop drinks")
    assert "dropped drinks" in capsys.readouterr().out


def test_kb_magic_errors_are_one_line_usage_errors(shell):
    with pytest.raises(UsageError, match="no knowledge base is named .*cellwire kb create"):
        shell.run_line_magic("workflow", "kb search nothing-here query")
    with pytest.raises(UsageError, match="Missing argument"):
        shell.run_line_magic("workflow", "kb search")


async def test_kb_command_inside_a_running_event_loop(shell, capsys):
    # A notebook kernel runs cells inside its event loop: the commands must not call
    # asyncio.run on it.
    kb_command(["create", "loop"])
    kb_command(["add", "loop", "coffee.txt", "--quiet"])
    view = kb_command(["search", "loop", "coffee beans"])
    assert "Coffee beans are roasted." in view.text
