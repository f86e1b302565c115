"""Render the workload catalogue with the playbook, for clusters described by variables.

``render(name, **variables)`` runs ``playbooks/workloads.yml`` on localhost (no inventory) with
``workloads_cluster`` and the other variables as extra variables, into a fresh directory, and
returns what it did. Full renders of the catalogue are shared by the tests of a module.

``dry_run(script, env)`` runs a rendered job script outside Slurm: ``srun``, ``scontrol``,
``sbatch`` and the other cluster commands are stand-ins that record how they were called.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = ROOT / "playbooks/workloads.yml"
SHELLCHECK = shutil.which("shellcheck")

# The shared directory the rendered scripts name; tests never write there.
SHARED = "/fsx"


@dataclass
class Render:
    rc: int
    output: str
    dest: Path

    @property
    def recap(self):
        match = re.search(r"^localhost\s+:\s+(ok=.*)$", self.output, re.M)
        assert match, self.output[-3000:]
        return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", match.group(1))}

    def files(self, pattern="*"):
        return sorted(path for path in self.dest.rglob(pattern) if path.is_file())

    def scripts(self):
        return sorted({*self.files("*.sbatch"), *self.files("*.sh")})

    def text(self, relative):
        return (self.dest / relative).read_text()


def run_playbook(dest, variables, *, check=False):
    dest.mkdir(parents=True, exist_ok=True)
    extra = dest.parent / f"{dest.name}.vars.json"
    extra.write_text(json.dumps({"workloads_dest": str(dest), "workloads_shared_dir": SHARED, **variables}))
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_FACT_CACHING="memory",
        ANSIBLE_LOCALHOST_WARNING="false",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_STDOUT_CALLBACK="default",
    )
    command = [str(ROOT / ".venv/bin/ansible-playbook"), str(PLAYBOOK), "-e", f"@{extra}"]
    if check:
        command.append("--check")
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
    return Render(proc.returncode, proc.stdout + proc.stderr, dest)


@pytest.fixture(scope="session")
def render_session(tmp_path_factory):
    """Renders shared across the session, keyed by name."""
    cache = {}

    def render(name, **variables):
        if name not in cache:
            dest = tmp_path_factory.mktemp("render") / name
            cache[name] = run_playbook(dest, variables)
            assert cache[name].rc == 0, cache[name].output[-4000:]
        return cache[name]

    return render


@pytest.fixture
def render(tmp_path):
    """A fresh render into this test's directory (for failures and reruns)."""

    def run(name="render", *, check=False, **variables):
        return run_playbook(tmp_path / name, variables, check=check)

    return run


# --- dry runs ----------------------------------------------------------------------------

STUB = """#!/bin/bash
# Stand-in for {name}: record the arguments, one per line, then a separator.
{{ printf '%s\\n' "$@"; echo '--'; }} >>"$STUB_LOG/{name}"
{body}
"""

STUB_BODIES = {
    # scontrol show hostnames a,b,c -> one name per line.
    "scontrol": 'if [ "$1 $2" = "show hostnames" ]; then tr , "\\n" <<<"$3"; fi',
    "hostname": 'echo "${STUB_HOSTNAME:-node1}"',
}
STUBS = ("srun", "scontrol", "sbatch", "mpirun", "hostname", "enroot", "docker")


@dataclass
class DryRun:
    rc: int
    stdout: str
    stderr: str
    log: Path

    def calls(self, command):
        """The argument lists ``command`` was called with, in order."""
        path = self.log / command
        if not path.exists():
            return []
        calls, current = [], []
        for line in path.read_text().split("\n")[:-1]:
            if line == "--":
                calls.append(current)
                current = []
            else:
                current.append(line)
        return calls


@pytest.fixture
def dry_run(tmp_path):
    bin_dir = tmp_path / "stub-bin"
    log = tmp_path / "stub-log"
    bin_dir.mkdir()
    log.mkdir()
    for name in STUBS:
        path = bin_dir / name
        path.write_text(STUB.format(name=name, body=STUB_BODIES.get(name, "exit 0")))
        path.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()

    def run(script, env=None, nodes=("node1", "node2")):
        full_env = {
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "HOME": str(home),
            "USER": "alice",
            "STUB_LOG": str(log),
            "SLURM_JOB_ID": "42",
            "SLURM_JOB_NAME": Path(script).stem,
            "SLURM_JOB_NODELIST": ",".join(nodes),
            "SLURM_JOB_NUM_NODES": str(len(nodes)),
            "SLURM_NNODES": str(len(nodes)),
            "SLURM_NTASKS": str(len(nodes)),
            "SLURM_SUBMIT_DIR": str(tmp_path),
            **(env or {}),
        }
        for path in log.iterdir():
            path.unlink()
        proc = subprocess.run(
            ["bash", str(script)],
            env=full_env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return DryRun(proc.returncode, proc.stdout, proc.stderr, log)

    run.bin_dir = bin_dir
    run.home = home
    return run
