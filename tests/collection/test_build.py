"""The collection builds, installs into an empty path and documents its roles."""

import os
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv/bin"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    out = tmp_path_factory.mktemp("build")
    subprocess.run(
        [BIN / "ansible-galaxy", "collection", "build", "--output-path", out, ROOT],
        check=True,
        capture_output=True,
    )
    (tarball,) = out.glob("mlhpc-cluster-*.tar.gz")
    path = tmp_path_factory.mktemp("collections")
    subprocess.run(
        [BIN / "ansible-galaxy", "collection", "install", "--force", "--no-deps", "-p", path, tarball],
        check=True,
        capture_output=True,
    )
    return tarball, path


def test_tarball_leaves_out_development_files(installed):
    tarball, _ = installed
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    assert "roles/common/meta/argument_specs.yml" in names
    assert "galaxy.yml" not in names  # replaced by MANIFEST.json
    for prefix in ("molecule/", "tests/", "scripts/", ".ci/", "bench/", ".venv/"):
        assert not [n for n in names if n.startswith(prefix)], prefix


def test_ansible_doc_shows_argument_specs(installed):
    _, path = installed
    cfg = path / "ansible.cfg"
    cfg.write_text("[defaults]\n")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(path), ANSIBLE_CONFIG=str(cfg), ANSIBLE_NOCOLOR="1")
    doc = subprocess.run(
        [BIN / "ansible-doc", "-t", "role", "mlhpc.cluster.common"],
        env=env,
        cwd=path,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert str(path) in doc  # documented from the installed copy, not this checkout
    for entry_point in ("main", "install", "configure"):
        assert re.search(rf"ENTRY POINT: \W*{entry_point}\b", doc), entry_point
    for option in ("common_sysctl", "common_limits_memlock", "common_hosts_manage"):
        assert option in doc
