"""Provider settings come from your config folder and the environment; a project folder's file
only when you opt in, and never to send your key somewhere else.

Two real OpenAI-compatible servers on 127.0.0.1: ``yours`` is where your environment sends
your key; ``theirs`` stands in for the server a cloned repository's config names.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from llm_server import LLMServer, llm_server

import cellwire
from cellwire.runner import Runner
from cellwire.services.llm.config import ConfigError, load_config

pytestmark = pytest.mark.timeout(120)

KEY = "sk-user-secret-0123456789"
SRC = Path(cellwire.__file__).parents[1]
FLOW = """\
cellwire: 1
name: ask
nodes:
  - {id: start, type: start, variables: [{variable: q, type: paragraph}]}
  - id: llm
    type: llm
    model: {provider: openai, name: gpt-4o-mini}
    prompt_template: [{role: user, text: "{{#start.q#}}"}]
  - id: end
    type: end
    outputs: [{variable: text, value_selector: [llm, text]}]
edges:
  - {source: start, target: llm}
  - {source: llm, target: end}
"""


@pytest.fixture
def yours() -> Iterator[LLMServer]:
    with llm_server("openai") as server:
        yield server


@pytest.fixture
def theirs() -> Iterator[LLMServer]:
    with llm_server("openai") as server:
        yield server


@pytest.fixture
def clone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, yours: LLMServer) -> Path:
    """A cloned repository as the current folder; your key and server in the environment,
    your config folder elsewhere."""
    folder = tmp_path / "clone"
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.setenv("CELLWIRE_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", yours.base_url)
    monkeypatch.delenv("CELLWIRE_PROJECT_CONFIG", raising=False)
    return folder


def ask(q: str = "hi") -> cellwire.RunResult:
    wf = cellwire.Workflow("ask")
    wf.add_node("start", "start", variables=[{"variable": "q", "type": "paragraph"}])
    wf.add_node("llm", "llm", after="start", model={"provider": "openai", "name": "gpt-4o-mini"},
                prompt_template=[{"role": "user", "text": "{{#start.q#}}"}])
    wf.add_node("end", "end", after="llm",
                outputs=[{"variable": "text", "value_selector": ["llm", "text"]}])
    return Runner(store=False).run(wf, {"q": q})


def keys_seen(server: LLMServer) -> list[str | None]:
    return [r.headers.get("authorization") for r in server.requests]


def redirect(theirs: LLMServer, **extra: str) -> str:
    settings = ", ".join(f"{k}: {v}" for k, v in {"base_url": theirs.base_url, **extra}.items())
    return f"providers:\n  openai: {{{settings}}}\n"


@pytest.mark.parametrize("name", ["cellwire.yaml", ".cellwire/providers.yaml"])
def test_a_cloned_folders_config_does_not_redirect_your_key(
        tmp_path: Path, yours: LLMServer, theirs: LLMServer, name: str) -> None:
    clone = tmp_path / "clone"
    (clone / ".cellwire").mkdir(parents=True)
    (clone / name).write_text(redirect(theirs))
    (clone / "flow.yaml").write_text(FLOW)
    env = {k: v for k, v in os.environ.items()
           if k not in ("CELLWIRE_HOME", "CELLWIRE_PROJECT_CONFIG")}  # the default home: ./.cellwire
    env.update(OPENAI_API_KEY=KEY, OPENAI_BASE_URL=yours.base_url, PYTHONPATH=str(SRC),
               CELLWIRE_CONFIG_DIR=str(tmp_path / "config"))
    done = subprocess.run([sys.executable, "-m", "cellwire.cli", "run", "flow.yaml", "--json",
                           "-i", "q=hi"], cwd=clone, env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["outputs"] == {"text": "echo: hi"}
    assert theirs.requests == []
    assert keys_seen(yours) == [f"Bearer {KEY}"]
    # Said once, naming the file and how to opt in.
    assert done.stderr.count("cellwire ignores the provider settings in") == 1
    assert name in done.stderr and "CELLWIRE_PROJECT_CONFIG=1" in done.stderr


def test_opting_in_does_not_let_the_file_redirect_your_key(
        clone: Path, yours: LLMServer, theirs: LLMServer, monkeypatch) -> None:
    (clone / "cellwire.yaml").write_text(redirect(theirs))
    monkeypatch.setenv("CELLWIRE_PROJECT_CONFIG", "1")
    with pytest.raises(ConfigError) as refused:
        ask()
    assert str(refused.value).startswith(str(clone / "cellwire.yaml"))
    assert "provider 'openai' would send your key (OPENAI_API_KEY)" in str(refused.value)
    assert "CELLWIRE_PROJECT_CONFIG=trust" in refused.value.hint
    assert theirs.requests == yours.requests == []


def test_opting_in_does_not_let_the_file_pick_a_variable_as_key(
        clone: Path, yours: LLMServer, theirs: LLMServer, monkeypatch) -> None:
    (clone / "cellwire.yaml").write_text(
        f"providers:\n  team: {{base_url: {theirs.base_url}, api_key_env: OPENAI_API_KEY}}\n"
        "models:\n  openai/gpt-4o-mini: team/gpt-4o-mini\n")
    monkeypatch.setenv("CELLWIRE_PROJECT_CONFIG", "1")
    with pytest.raises(ConfigError, match="provider 'team' names api_key_env 'OPENAI_API_KEY'"):
        ask()
    assert theirs.requests == []


def test_opting_in_applies_the_projects_keyless_servers_and_model_map(
        clone: Path, yours: LLMServer, theirs: LLMServer, monkeypatch) -> None:
    # The team's own server, no key of yours: the file's model map routes to it.
    (clone / "cellwire.yaml").write_text(
        f"providers:\n  team: {{base_url: {theirs.base_url}, free: true}}\n"
        "models:\n  openai/gpt-4o-mini: team/gpt-4o-mini\n")
    monkeypatch.setenv("CELLWIRE_PROJECT_CONFIG", "1")
    assert ask().outputs == {"text": "echo: hi"}
    assert keys_seen(theirs) == [None]
    assert yours.requests == []


def test_a_project_may_redirect_a_provider_with_its_own_key(
        clone: Path, yours: LLMServer, theirs: LLMServer, monkeypatch) -> None:
    (clone / "cellwire.yaml").write_text(redirect(theirs, api_key="sk-project-key"))
    monkeypatch.setenv("CELLWIRE_PROJECT_CONFIG", "1")
    assert ask().outputs == {"text": "echo: hi"}
    assert keys_seen(theirs) == ["Bearer sk-project-key"]
    assert yours.requests == []


def test_a_trusted_project_file_routes_your_key(
        clone: Path, yours: LLMServer, theirs: LLMServer, monkeypatch) -> None:
    (clone / "cellwire.yaml").write_text(redirect(theirs))
    monkeypatch.setenv("CELLWIRE_PROJECT_CONFIG", "trust")  # you confirmed this file
    assert ask().outputs == {"text": "echo: hi"}
    assert keys_seen(theirs) == [f"Bearer {KEY}"]


def test_a_project_file_named_by_path(clone: Path, tmp_path: Path, theirs: LLMServer,
                                      monkeypatch) -> None:
    team = tmp_path / "team.yaml"
    team.write_text(f"providers:\n  team: {{base_url: {theirs.base_url}}}\n"
                    "default: team/gpt-4o-mini\n")
    config = load_config(project=team)
    assert config.default == "team/gpt-4o-mini"
    monkeypatch.setenv("CELLWIRE_PROJECT_CONFIG", str(team))
    assert load_config().providers["team"].base_url == theirs.base_url
    monkeypatch.setenv("CELLWIRE_PROJECT_CONFIG", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="missing.yaml: no such file"):
        load_config()


def test_the_environment_wins_over_your_config_file(
        clone: Path, tmp_path: Path, yours: LLMServer, theirs: LLMServer, monkeypatch) -> None:
    mine = tmp_path / "config"
    mine.mkdir()
    # Your own file points openai at another server and names no key variable.
    (mine / "providers.yaml").write_text(
        f"providers:\n  openai: {{base_url: {theirs.base_url}, timeouts: {{connect: 5}}}}\n")
    assert ask("env").outputs == {"text": "echo: env"}
    assert keys_seen(yours) == [f"Bearer {KEY}"]  # OPENAI_BASE_URL won
    assert theirs.requests == []
    monkeypatch.delenv("OPENAI_BASE_URL")
    assert ask("file").outputs == {"text": "echo: file"}
    assert keys_seen(theirs) == [f"Bearer {KEY}"]  # the file's URL, the environment's key
