"""Fixtures for the Packer image builds: an EC2 emulator and a podman host standing in for
the build instance.

The emulator is moto_server on a free port of 127.0.0.1, loaded with one Debian image of our
own (MOTO_AMIS_PATH); Packer reaches it through custom_endpoint_ec2 with dummy credentials.
The instance Packer "launches" there is never real: ssh_host/ssh_port send Packer and Ansible
to a podman host from localhost/mlhpc-trixie instead, on a published port of 127.0.0.1,
logged into as root with a key made for the run. The finalizers remove all of it.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess

import pytest

from ansible_collections.mlhpc.cluster.tests.fixtures.packer_build import (
    BASE_AMI,
    HOST_IMAGE,
    TIMINGS,
    VENV_BIN,
    BuildHost,
    Emulator,
    base_env,
    free_port,
    wait_for_port,
)


@pytest.fixture(scope="session")
def packer():
    path = shutil.which("packer")
    if path is None:
        pytest.skip("packer is not installed (scripts/setup installs it: apt-get install packer)")
    return path


@pytest.fixture(scope="module")
def ec2_emulator(tmp_path_factory):
    moto_server = VENV_BIN / "moto_server"
    if not moto_server.exists():
        pytest.skip("moto_server is not in .venv (scripts/setup installs requirements-dev.txt)")
    work = tmp_path_factory.mktemp("moto")
    amis = work / "amis.json"
    amis.write_text(json.dumps([BASE_AMI]))
    port = free_port()
    with (work / "moto.log").open("w") as log:
        proc = subprocess.Popen(
            [moto_server, "-H", "127.0.0.1", "-p", str(port)],
            env=base_env(MOTO_AMIS_PATH=amis),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port(port, proc)
            yield Emulator(endpoint=f"http://127.0.0.1:{port}", base_ami=BASE_AMI)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _podman_missing():
    if shutil.which("podman") is None:
        return "podman is not installed (scripts/setup)"
    if subprocess.run(["podman", "image", "exists", HOST_IMAGE], capture_output=True).returncode != 0:
        return f"{HOST_IMAGE} is missing (scripts/image trixie)"
    return None


@pytest.fixture(scope="module")
def build_host(tmp_path_factory):
    missing = _podman_missing()
    if missing:
        pytest.skip(missing)
    work = tmp_path_factory.mktemp("host")
    key = work / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mlhpc-packer-test", "-f", str(key)], check=True
    )
    name = f"mlhpc-pk-{secrets.token_hex(4)}"
    port = free_port()
    hard = subprocess.run(["sh", "-c", "ulimit -Hn"], capture_output=True, text=True).stdout.strip()
    nofile = "1048576" if hard == "unlimited" else hard
    try:
        subprocess.run(
            [
                "podman", "run", "-d", "--name", name, "--hostname", "image-build", "--systemd", "always",
                "--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", "nproc=32768:32768",
                "-p", f"127.0.0.1:{port}:22",
                "-v", f"{key}.pub:/root/.ssh/authorized_keys:ro",
                HOST_IMAGE,
            ],
            check=True,
            capture_output=True,
            text=True,
        )  # fmt: skip
        host = BuildHost(name=name, port=port, key=key)
        host.sh("systemctl is-system-running --wait >/dev/null || true")
        wait_for_port(port)
        yield host
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    timings = config.stash.get(TIMINGS, None)
    if timings:
        terminalreporter.write_sep("-", "packer build timings")
        for line in timings.values():
            terminalreporter.write_line(line)
