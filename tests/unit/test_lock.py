"""The lock files in requirements/ agree with pyproject.toml: every requirement of each extra
that `make install` / `make lab` installs is pinned there at a version that satisfies it, so
a change to pyproject.toml without `make lock` fails here rather than on a fresh clone."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
#: lock file -> the extras it is resolved for (the Makefile's `lock` target).
LOCKS = {"dev.lock": ["dev"], "lab.lock": ["dev", "lab"], "local.lock": ["dev", "lab", "local"]}
#: Python 3.11 on Linux, the machine `make install` sets up.
ENVIRONMENT = {"python_version": "3.11", "python_full_version": "3.11.7", "sys_platform": "linux",
               "platform_system": "Linux", "platform_python_implementation": "CPython",
               "implementation_name": "cpython", "os_name": "posix"}


def _pins(lock: Path) -> dict[str, list[tuple[Version, Marker | None]]]:
    """name -> [(version, marker)] of each `name==version [; marker]` line."""
    pins: dict[str, list[tuple[Version, Marker | None]]] = {}
    for line in lock.read_text(encoding="utf-8").splitlines():
        if not line or line[0] in "# -":
            continue
        spec, _, marker = line.partition(";")
        name, _, version = spec.strip().partition("==")
        assert version, f"{lock.name}: {line!r} is not pinned with =="
        pins.setdefault(canonicalize_name(name), []).append(
            (Version(version), Marker(marker) if marker.strip() else None))
    return pins


def _installed_version(pins: dict, name: str) -> Version | None:
    """The version the lock installs on ENVIRONMENT, None when it installs none there."""
    chosen = [v for v, marker in pins.get(canonicalize_name(name), [])
              if marker is None or marker.evaluate(ENVIRONMENT)]
    assert len(chosen) <= 1, f"{name} is pinned twice for Python 3.11 on Linux: {chosen}"
    return chosen[0] if chosen else None


def _requirements(extras: list[str]) -> list[Requirement]:
    project = PYPROJECT["project"]
    lines = [*project["dependencies"], *PYPROJECT["build-system"]["requires"]]
    for extra in extras:
        lines += project["optional-dependencies"][extra]
    lines += [line for line in (ROOT / "requirements/install.in").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    return [Requirement(line) for line in lines]


@pytest.mark.parametrize(("lock", "extras"), LOCKS.items())
def test_every_requirement_is_pinned_at_a_version_that_satisfies_it(lock, extras):
    pins = _pins(ROOT / "requirements" / lock)
    for req in _requirements(extras):
        if req.marker is not None and not req.marker.evaluate(ENVIRONMENT):
            continue
        version = _installed_version(pins, req.name)
        assert version is not None, f"{req.name} is not in requirements/{lock}: run make lock"
        assert req.specifier.contains(version, prereleases=True), (
            f"requirements/{lock} pins {req.name}=={version}, outside {req}: run make lock")


def test_lab_and_local_keep_the_versions_dev_installs():
    dev = _pins(ROOT / "requirements/dev.lock")
    for lock in ("lab.lock", "local.lock"):
        pins = _pins(ROOT / "requirements" / lock)
        for name in dev:
            assert _installed_version(pins, name) == _installed_version(dev, name), (lock, name)


def test_the_lock_installs_no_torch():
    # An unpinned torch would pull a CUDA build of several GB; no extra needs it.
    for lock in LOCKS:
        assert "torch" not in _pins(ROOT / "requirements" / lock)


def test_debian_packages_are_locked_at_exact_versions():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    wanted = next(line.split(":=")[1].split() for line in makefile.splitlines()
                  if line.startswith("APT_PACKAGES :="))
    lines = [line for line in (ROOT / "requirements/apt.lock").read_text().splitlines()
             if line and not line.startswith("#")]
    locked = dict(line.split("=", 1) for line in lines)
    assert sorted(locked) == sorted(wanted)
    assert all(version and " " not in version for version in locked.values())
