"""File access policies: which local files a run may read, on real files and symlinks."""

from __future__ import annotations

import os

import pytest

from cellwire.engine.services import FileAccessDenied, FilePolicy
from cellwire.services.files import FolderPolicy, NoLocalFiles, working_folder


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "nb" / "data").mkdir(parents=True)
    (tmp_path / "nb" / "data" / "a.png").write_bytes(b"a")
    (tmp_path / "nb2").mkdir()
    (tmp_path / "nb2" / "b.png").write_bytes(b"b")
    return tmp_path


def test_inside_the_folder_resolves_and_relative_paths_start_at_the_folder(tree):
    policy: FilePolicy = FolderPolicy(tree / "nb")
    inside = (tree / "nb" / "data" / "a.png").resolve()
    assert policy.check(tree / "nb" / "data" / "a.png") == inside
    assert policy.check("data/a.png") == inside
    assert policy.check("data/../data/a.png") == inside
    os.symlink(tree / "nb" / "data" / "a.png", tree / "nb" / "alias.png")
    assert policy.check(tree / "nb" / "alias.png") == inside


@pytest.mark.parametrize("path", [
    "/etc/passwd", "../nb2/b.png", "data/../../nb2/b.png", "{tree}/nb2/b.png",
    "{tree}/nb/out.png",  # a symlink out of the folder
])
def test_outside_the_folder_is_refused_saying_what_is_allowed_and_how_to_grant(tree, path):
    os.symlink(tree / "nb2" / "b.png", tree / "nb" / "out.png")
    folder = (tree / "nb").resolve()
    with pytest.raises(FileAccessDenied) as caught:
        FolderPolicy(folder).check(path.format(tree=tree))
    message = str(caught.value)
    assert f"is outside the folder this run may read: {folder}." in message
    assert "copy it into that folder, or grant its folder too" in message
    assert f"cellwire.services.files.FolderPolicy('{folder}', '" in message


def test_a_sibling_folder_sharing_a_prefix_is_not_inside(tree):
    # /x/nb2 starts with the text /x/nb but is not inside it.
    with pytest.raises(FileAccessDenied):
        FolderPolicy(tree / "nb").check(tree / "nb2" / "b.png")
    assert FolderPolicy(tree / "nb", tree / "nb2").check(tree / "nb2" / "b.png").name == "b.png"


def test_no_local_files_refuses_everything(tree):
    with pytest.raises(FileAccessDenied, match="may read no local files. To read it, grant"):
        NoLocalFiles().check(tree / "nb" / "data" / "a.png")


def test_the_working_folder_policy_and_an_empty_folder_list(tree, monkeypatch):
    monkeypatch.chdir(tree / "nb")
    assert working_folder().folders == ((tree / "nb").resolve(),)
    assert working_folder().check("data/a.png").name == "a.png"
    with pytest.raises(ValueError, match="NoLocalFiles"):
        FolderPolicy()
