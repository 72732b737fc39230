"""Grant sources: specs, the user's private secrets file, the environment and the keyring."""

from __future__ import annotations

import stat
import sys
import types
from pathlib import Path

import pytest

from cellwire.services.secrets import (
    Grant,
    SecretError,
    delete_secret,
    grant_values,
    list_secrets,
    parse_grant,
    read_secrets,
    resolve_grants,
    secrets_path,
    set_secret,
)

VALUE = "sk-file-0123456789"


@pytest.fixture
def secrets_file(tmp_path: Path) -> Path:
    return tmp_path / "config" / "cellwire" / "secrets.yaml"


@pytest.mark.parametrize(("spec", "grant"), [
    ("OPENAI_API_KEY", Grant("OPENAI_API_KEY", "default", "OPENAI_API_KEY")),
    ("KEY=env:OTHER", Grant("KEY", "env", "OTHER")),
    (" KEY = env: ", Grant("KEY", "env", "KEY")),
    ("KEY=file:openai-prod", Grant("KEY", "file", "openai-prod")),
    ("KEY=keyring:api.example.com/me", Grant("KEY", "keyring", "api.example.com/me")),
    ("KEY=keyring:https://a/b/me", Grant("KEY", "keyring", "https://a/b/me")),
])
def test_grant_specs(spec, grant):
    assert parse_grant(spec) == grant


def test_keyring_entries_split_at_the_last_slash():
    assert parse_grant("K=keyring:https://a/b/me").keyring_entry == ("https://a/b", "me")
    assert parse_grant("K=keyring:me").keyring_entry == ("cellwire", "me")
    assert parse_grant("K=keyring:").keyring_entry == ("cellwire", "K")


@pytest.mark.parametrize("spec", ["KEY=sk-live-abcdef", "KEY=vault:x", "sk-live-abcdef",
                                  "1KEY", "KEY=http://sk-live-abcdef@x"])
def test_a_bad_spec_says_the_syntax_and_never_repeats_a_value(spec):
    with pytest.raises(SecretError) as caught:
        parse_grant(spec)
    message = str(caught.value)
    assert "VAR=env:NAME" in message and "sk-live" not in message


def test_the_secrets_file_is_private_and_keeps_names_apart_from_values(secrets_file: Path):
    assert list_secrets(secrets_file) == [] and read_secrets(secrets_file) == {}
    assert set_secret("OPENAI_API_KEY", VALUE, secrets_file) == secrets_file
    set_secret("b.other-1", "second-value", secrets_file)
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(secrets_file.parent.stat().st_mode) == 0o700
    assert list_secrets(secrets_file) == ["OPENAI_API_KEY", "b.other-1"]
    set_secret("OPENAI_API_KEY", "replaced-value", secrets_file)
    assert read_secrets(secrets_file)["OPENAI_API_KEY"] == "replaced-value"
    assert delete_secret("OPENAI_API_KEY", secrets_file) is True
    assert delete_secret("OPENAI_API_KEY", secrets_file) is False
    assert list_secrets(secrets_file) == ["b.other-1"]
    # Nothing else was left in the folder (temporary files are renamed or removed).
    assert sorted(p.name for p in secrets_file.parent.iterdir()) == \
        [".secrets.yaml.lock", "secrets.yaml"]


def test_numbers_and_yaml_lookalikes_stay_text(secrets_file: Path):
    for name, value in {"PIN": "0123", "YES": "yes!", "NULLISH": "null"}.items():
        set_secret(name, value, secrets_file)
    assert read_secrets(secrets_file) == {"PIN": "0123", "YES": "yes!", "NULLISH": "null"}


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o606, 0o620])
def test_a_secrets_file_others_can_reach_is_refused_with_the_fix(secrets_file: Path, mode):
    set_secret("KEY", VALUE, secrets_file)
    secrets_file.chmod(mode)
    with pytest.raises(SecretError, match=f"chmod 600 {secrets_file}") as caught:
        read_secrets(secrets_file)
    assert f"{mode:03o}" in str(caught.value)
    with pytest.raises(SecretError, match="chmod 600"):
        resolve_grants(["KEY"], environ={"KEY": "from-the-environment"}, path=secrets_file)


def test_a_hand_written_entry_that_is_not_text_is_named_not_shown(secrets_file: Path):
    secrets_file.parent.mkdir(parents=True)
    secrets_file.write_text("PIN: 98765432\n")
    secrets_file.chmod(0o600)
    with pytest.raises(SecretError, match="'PIN' is not text") as caught:
        read_secrets(secrets_file)
    assert "98765432" not in str(caught.value)


def test_set_refuses_bad_names_and_values_too_short_to_redact(secrets_file: Path):
    with pytest.raises(SecretError, match="letters, digits"):
        set_secret("has space", VALUE, secrets_file)
    with pytest.raises(SecretError, match="at least 4 characters"):
        set_secret("KEY", "abc", secrets_file)
    assert not secrets_file.exists()


def test_the_default_file_is_in_the_users_config_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("CELLWIRE_CONFIG_DIR", str(tmp_path / "mine"))
    assert secrets_path() == (tmp_path / "mine" / "secrets.yaml").resolve()
    set_secret("KEY", VALUE)
    assert resolve_grants(["KEY"], environ={}) == {"KEY": VALUE}


def test_a_bare_grant_takes_the_file_first_then_the_environment(secrets_file: Path):
    set_secret("A", "a-from-the-file", secrets_file)
    env = {"A": "a-from-the-env", "B": "b-from-the-env", "OTHER": "other-value"}
    assert resolve_grants(["A", "B", "C=env:OTHER", "D=file:A"], environ=env,
                          path=secrets_file) == {
        "A": "a-from-the-file", "B": "b-from-the-env", "C": "other-value",
        "D": "a-from-the-file"}


@pytest.mark.parametrize(("spec", "says"), [
    ("MISSING", ["secret MISSING", "has an entry MISSING", "`cellwire secret set MISSING`",
                 "export MISSING="]),
    ("K=env:NOPE", ["secret K", "environment variable NOPE is not set",
                    "export NOPE=..."]),
    ("K=env:EMPTY", ["secret K", "EMPTY is not set or is empty"]),
    ("K=file:nope", ["secret K", "has no entry nope", "`cellwire secret set nope`"]),
])
def test_a_source_without_a_value_names_variable_source_and_fix(secrets_file: Path, spec,
                                                                says):
    with pytest.raises(SecretError) as caught:
        resolve_grants([spec], environ={"EMPTY": ""}, path=secrets_file)
    for part in says:
        assert part in str(caught.value)


def test_keyring_without_the_package_says_how_to_install_it(monkeypatch, secrets_file):
    # None in sys.modules makes `import keyring` fail, as where it is not installed.
    monkeypatch.setitem(sys.modules, "keyring", None)
    with pytest.raises(SecretError, match="pip install keyring") as caught:
        resolve_grants(["K=keyring:svc/me"], environ={}, path=secrets_file)
    assert "secret K" in str(caught.value)


class _KeyringError(Exception):
    pass


def _keyring_double(monkeypatch, entries: dict[tuple[str, str], str],
                    broken: bool = False) -> None:
    """A test double of the ``keyring`` package (not installed here, and no keyring daemon
    runs on these machines): ``get_password`` over ``entries``."""
    module = types.ModuleType("keyring")
    errors = types.ModuleType("keyring.errors")
    errors.KeyringError = _KeyringError  # type: ignore[attr-defined]

    def get_password(service: str, user: str) -> str | None:
        if broken:
            raise _KeyringError("no backend")
        return entries.get((service, user))

    module.get_password = get_password  # type: ignore[attr-defined]
    module.errors = errors  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "keyring", module)
    monkeypatch.setitem(sys.modules, "keyring.errors", errors)


def test_keyring_grants(monkeypatch, secrets_file):
    _keyring_double(monkeypatch, {("svc", "me"): "kr-value-1", ("cellwire", "K"): "kr-value-2"})
    assert resolve_grants(["A=keyring:svc/me", "K=keyring:"], environ={},
                          path=secrets_file) == {"A": "kr-value-1", "K": "kr-value-2"}
    with pytest.raises(SecretError, match="no password for user 'x' at service 'svc'.*"
                                          "keyring set svc x"):
        resolve_grants(["A=keyring:svc/x"], environ={}, path=secrets_file)
    _keyring_double(monkeypatch, {}, broken=True)
    with pytest.raises(SecretError, match="keyring cannot be read: _KeyringError: no backend"):
        resolve_grants(["A=keyring:svc/x"], environ={}, path=secrets_file)


def test_python_secrets_take_values_or_specs(secrets_file):
    env = {"KEY": "env-value-1"}
    assert grant_values(None) is None
    assert grant_values({"A": "given-value"}) == {"A": "given-value"}
    assert grant_values(["KEY"], environ=env, path=secrets_file) == {"KEY": "env-value-1"}
    assert grant_values("B=env:KEY", environ=env, path=secrets_file) == {"B": "env-value-1"}
    with pytest.raises(SecretError, match="'A' is not name -> text"):
        grant_values({"A": 12345678})  # type: ignore[dict-item]



# -- the cellwire secret commands and --secret ------------------------------------------------


def test_cli_secret_set_list_delete_never_echo_the_value(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from cellwire.cli import cli
    from cellwire.services.secrets import read_secrets

    monkeypatch.setenv("CELLWIRE_CONFIG_DIR", str(tmp_path / "cfg"))
    runner = CliRunner()
    done = runner.invoke(cli, ["secret", "set", "API_TOKEN", "--stdin"],
                         input="s3cr3t-value-xyz\n")
    assert done.exit_code == 0, done.output
    assert "s3cr3t-value-xyz" not in done.output
    assert read_secrets() == {"API_TOKEN": "s3cr3t-value-xyz"}
    listed = runner.invoke(cli, ["secret", "list"])
    assert listed.output.split() == ["API_TOKEN"]
    assert runner.invoke(cli, ["secret", "delete", "API_TOKEN"]).exit_code == 0
    assert runner.invoke(cli, ["secret", "delete", "API_TOKEN"]).exit_code == 1
    assert read_secrets() == {}


def test_cli_run_refuses_a_grant_the_workflow_does_not_declare(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from cellwire.cli import cli

    flow = tmp_path / "flow.yml"
    flow.write_text("cellwire: 1\nname: f\nenvironment:\n  - {name: TOKEN, value_type: secret}\n"
                    "nodes:\n  - {id: start, type: start}\n  - {id: end, type: end}\n"
                    "edges:\n  - {source: start, target: end}\n")
    done = CliRunner().invoke(cli, ["run", str(flow), "--secret", "TOKNE=env:HOME"])
    assert done.exit_code == 2
    assert "declares no environment variable 'TOKNE'; declared: TOKEN" in done.stderr
    done = CliRunner().invoke(cli, ["run", str(flow), "--secret", "TOKEN=env:NO_SUCH_VAR_X"])
    assert done.exit_code == 2 and "NO_SUCH_VAR_X" in done.stderr
    done = CliRunner().invoke(cli, ["run", str(flow), "--store-timeout", "1"])
    assert "secret 'TOKEN' is not granted" in done.stderr
