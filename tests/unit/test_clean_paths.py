"""The mlhpc.cluster.clean_paths module on a scratch tree."""

from __future__ import annotations

import os

import pytest

from ansible_collections.mlhpc.cluster.plugins.modules import clean_paths


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "a.deb").write_bytes(b"deb")
    (tmp_path / "cache" / "partial").mkdir()
    (tmp_path / "cache" / "partial" / "b.deb").write_bytes(b"deb")
    (tmp_path / "keep").write_text("keep")
    (tmp_path / "link").symlink_to(tmp_path / "keep")
    log = tmp_path / "dpkg.log"
    log.write_text("installed\n")
    log.chmod(0o640)
    (tmp_path / "empty.log").write_text("")
    return tmp_path


def test_absent_removes_files_directories_and_links_not_their_targets(run_module, tree):
    paths = [str(tree / "cache" / "a.deb"), str(tree / "cache" / "partial"), str(tree / "link")]
    failed, result = run_module(clean_paths, {"paths": [*paths, str(tree / "missing")]})
    assert not failed
    assert result["changed"]
    assert result["paths"] == paths
    assert sorted(os.listdir(tree / "cache")) == []
    assert not (tree / "link").is_symlink()
    assert (tree / "keep").read_text() == "keep"


def test_absent_is_idempotent(run_module, tree):
    args = {"paths": [str(tree / "cache")]}
    assert run_module(clean_paths, args)[1]["changed"]
    failed, result = run_module(clean_paths, args)
    assert not failed
    assert not result["changed"]
    assert result["paths"] == []


def test_check_mode_reports_and_changes_nothing(run_module, tree):
    failed, result = run_module(
        clean_paths,
        {"paths": [str(tree / "cache"), str(tree / "missing")], "_ansible_check_mode": True},
    )
    assert not failed
    assert result["changed"]
    assert result["paths"] == [str(tree / "cache")]
    assert (tree / "cache" / "a.deb").exists()


def test_empty_truncates_in_place_keeping_mode_and_inode(run_module, tree):
    log = tree / "dpkg.log"
    inode = log.stat().st_ino
    failed, result = run_module(
        clean_paths,
        {"paths": [str(log), str(tree / "empty.log"), str(tree / "missing")], "state": "empty"},
    )
    assert not failed
    assert result["paths"] == [str(log)]
    assert log.read_text() == ""
    assert log.stat().st_ino == inode
    assert log.stat().st_mode & 0o777 == 0o640
    assert not run_module(clean_paths, {"paths": [str(log)], "state": "empty"})[1]["changed"]


def test_empty_in_check_mode_keeps_content(run_module, tree):
    log = tree / "dpkg.log"
    failed, result = run_module(
        clean_paths, {"paths": [str(log)], "state": "empty", "_ansible_check_mode": True}
    )
    assert not failed and result["changed"]
    assert log.read_text() == "installed\n"


def test_empty_refuses_what_is_not_a_regular_file(run_module, tree):
    failed, result = run_module(clean_paths, {"paths": [str(tree / "cache")], "state": "empty"})
    assert failed
    assert "not a regular file" in result["msg"]
    assert str(tree / "cache") in result["msg"]


@pytest.mark.parametrize("path", ["relative/file", "/", "/tmp/.."])
def test_refuses_relative_paths_and_the_root(run_module, path):
    failed, result = run_module(clean_paths, {"paths": [path]})
    assert failed
    assert "absolute" in result["msg"] or "refusing to clean /" in result["msg"]
