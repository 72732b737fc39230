"""The sandbox's parts that need no jail: its limits, the allowed packages, the jail's
command line, and the executor that refuses untrusted code where no sandbox can run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from cellwire.engine import usercode
from cellwire.engine.services import CodeFailed
from cellwire.services import sandbox
from cellwire.services.sandbox import (
    DEFAULT_PACKAGES,
    ENV_VAR,
    Limits,
    PackageNotFound,
    RefusingExecutor,
    Sandbox,
    sandbox_unavailable,
)
from cellwire.services.sandbox.jail import Jail, base_python
from cellwire.services.sandbox.packages import from_env, import_hint, locate


def test_limits_are_positive_and_the_cpu_limit_follows_the_time_limit():
    with pytest.raises(ValueError, match="Limits.memory_mb must be positive, not 0"):
        Limits(memory_mb=0)
    assert Limits().cpu_for(2.5) == 4  # a second past the wall clock, which stops it first
    assert Limits(cpu_seconds=1.5).cpu_for(30) == 2


def test_packages_come_from_the_defaults_and_the_environment():
    assert from_env({}) == DEFAULT_PACKAGES
    assert from_env({ENV_VAR: " numpy, ,dateutil,pandas "}) == (*DEFAULT_PACKAGES, "numpy",
                                                                 "pandas")


def test_locating_packages():
    found = locate(["json", "yaml", "sortedcontainers"])
    assert "json" not in found  # the standard library is always there
    assert [p.name for p in found["yaml"]] == ["yaml"]
    assert found["sortedcontainers"][0].is_dir()
    with pytest.raises(PackageNotFound, match="'no_such_pkg_x' is not installed"):
        locate(["no_such_pkg_x"])
    with pytest.raises(PackageNotFound, match="not a top-level import name"):
        locate(["dateutil.parser"])


def test_an_import_hint_says_how_to_allow_or_install():
    assert f"allow it with {ENV_VAR}=sortedcontainers" in import_hint("sortedcontainers", [])
    assert "'no_such_pkg_x' is not installed: pip install it" in import_hint("no_such_pkg_x", [])
    assert "is allowed but 'yaml.nope' is not part of it" in import_hint("yaml.nope", ["yaml"])


def test_the_jail_sees_no_network_environment_home_or_project():
    packages = locate(["yaml"])
    argv = Jail(packages=packages, map_nobody=False).command("{}", info_fd=5,
                                                             userns_block_fd=None)
    flags = set(argv)
    assert {"--unshare-all", "--die-with-parent", "--new-session", "--clearenv"} <= flags
    assert "--share-net" not in flags
    assert "--bind" not in flags and "--dev-bind" not in flags  # nothing writable
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
    assert argv[argv.index("--uid") + 1] == "65534"
    assert argv[argv.index(str(base_python())) - 1] == "--clearenv"
    # What is bound, read-only, is the system, the interpreter, the allowed packages and the
    # worker's own files: no /etc, no home, no project, no venv, no store.
    inside = Path(sandbox.__file__).with_name("inside")
    allowed = {"/usr", sys.base_prefix, *(str(p) for p in packages["yaml"]),
               str(inside / "boot.py"), str(inside / "main.js"), usercode.__file__}
    bound = {argv[i + 1] for i, a in enumerate(argv) if a == "--ro-bind"}
    assert bound <= allowed | {str(base_python())}
    masked = [argv[i + 1] for i, a in enumerate(argv) if a == "--tmpfs"]
    assert any(m.endswith("site-packages") for m in masked)


def test_as_root_the_jail_maps_the_sandbox_user_to_nobody():
    argv = Jail(map_nobody=True).command("{}", info_fd=5, userns_block_fd=6)
    assert argv[argv.index("--userns-block-fd") + 1] == "6"
    assert "--uid" not in argv
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--cap-add"] == [
        "CAP_SETUID", "CAP_SETGID"]


def test_a_missing_bubblewrap_makes_the_sandbox_unavailable():
    reason = sandbox_unavailable("/nonexistent/bwrap")
    assert reason == "bubblewrap (/nonexistent/bwrap) is not installed"


async def test_the_refusing_executor_says_why_and_how_to_fix_it():
    refusing = RefusingExecutor.unavailable("bubblewrap (bwrap) is not installed")
    for _ in range(2):
        with pytest.raises(CodeFailed) as info:
            await refusing.run("python3", "def main():\n    return {}\n", {})
        failure = info.value
        assert str(failure) == ("this code came from a file and is untrusted, so it runs only in "
                                "the sandbox, which is unavailable: bubblewrap (bwrap) is not "
                                "installed")
        assert "apt-get install bubblewrap" in failure.hint
        assert "cellwire trust FILE" in failure.hint and "--trust" in failure.hint
        assert (failure.field, failure.error_type) == ("code", "SandboxUnavailable")


async def test_an_unknown_language_names_the_field():
    with Sandbox() as box, pytest.raises(CodeFailed, match="unknown code_language 'cobol'") as info:
        await box.run("cobol", "", {})
    assert info.value.field == "code_language"


async def test_javascript_without_node_says_how_to_get_it():
    with Sandbox(node=os.devnull + "/node") as box, pytest.raises(
            CodeFailed, match="JavaScript runs on Node.js, which is not installed") as info:
        await box.run("javascript", "function main() { return {} }", {})
    assert "apt-get install nodejs" in (info.value.hint or "")
