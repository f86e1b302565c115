"""The deployed cluster runs real multi-node jobs, accounts them and survives faults.

These tests address hosts by role rather than through the per-host ``host`` fixture:
the cluster is the unit under test.
"""

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import testinfra

RUN = os.environ["MLHPC_RUN"]
INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
ROOT = Path(os.environ["MLHPC_ROOT"])
COMPUTE = ["compute1", "compute2"]


def node(name):
    return testinfra.get_host(f"ansible://mlhpc-{RUN}-{name}", ansible_inventory=INVENTORY)


def as_user(cmd, user="alice"):
    """Run ``cmd`` in a login shell of ``user`` on the login node."""
    return node("login").run(f"su - {user} -c {json.dumps(cmd)}")


def sacct_state(job_id, timeout=60):
    """The job's accounted state, once slurmdbd has recorded an end state."""
    deadline = time.time() + timeout
    state = ""
    while time.time() < deadline:
        out = node("login").run(f"sacct -n -X -P -j {job_id} -o State").stdout.split()
        state = out[0] if out else ""
        if state and state not in ("PENDING", "RUNNING"):
            return state
        time.sleep(2)
    return state


def held_job(name, nodes):
    """Submit a job that runs until ``release(name)``; return its id once it runs."""
    node("login").run_expect([0], f"rm -f /home/alice/{name}.release")
    job = submit(f"--wrap 'while [ ! -e /home/alice/{name}.release ]; do sleep 1; done'", f"-N{nodes}")
    deadline = time.time() + 60
    while node("login").check_output(f"squeue -h -j {job} -o %T") != "RUNNING":
        assert time.time() < deadline, f"job {job} did not start"
        time.sleep(1)
    return job


def release(name):
    node("login").run_expect([0], f"touch /home/alice/{name}.release")


def submit(script, *args):
    res = as_user(f"sbatch --parsable {' '.join(args)} {script}")
    assert res.rc == 0, res.stderr
    return res.stdout.strip().split(";")[0]


def wait_job(job_id, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not node("login").run(f"squeue -h -j {job_id}").stdout.strip():
            return
        time.sleep(2)
    pytest.fail(f"job {job_id} still in the queue after {timeout} s")


def playbook(*args, env=None):
    """Run site.yml against this scenario's inventory with fresh ssh connections."""
    cp = Path(os.environ["MLHPC_RUN_DIR"]) / f"cp-{time.time_ns()}"
    cp.mkdir()
    return subprocess.run(
        [
            str(ROOT / ".venv/bin/ansible-playbook"),
            "-i",
            INVENTORY,
            *args,
            str(ROOT / "playbooks/site.yml"),
        ],
        env={**os.environ, "ANSIBLE_SSH_CONTROL_PATH_DIR": str(cp), "ANSIBLE_TIMEOUT": "8", **(env or {})},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def recap(output):
    return {
        m.group(1): {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
        for m in re.finditer(r"^(\S+)\s+:\s+(ok=.*)$", output, re.M)
    }


def test_sinfo_shows_compute_nodes_with_model_hardware():
    lines = node("login").check_output("sinfo -h -N -p batch -o '%N %T %c %m'").splitlines()
    seen = {n: (state, int(cpus), int(mem)) for n, state, cpus, mem in (ln.split() for ln in lines)}
    assert sorted(seen) == COMPUTE
    for name in COMPUTE:
        facts = node(name).ansible("setup", "gather_subset=hardware")["ansible_facts"]
        state, cpus, mem = seen[name]
        assert state == "idle"
        assert cpus == facts["ansible_processor_vcpus"]
        assert mem == facts["ansible_memtotal_mb"] - 2048  # slurm_memory_reserve_mib


def test_partitions_from_model():
    parts = node("login").check_output("sinfo -h -o '%P %D %l'").splitlines()
    assert "batch* 2 1:00:00" in parts
    assert "debug 1 10:00" in parts


def test_srun_spans_both_nodes_as_ordinary_user():
    res = as_user("srun -N2 --ntasks-per-node=1 hostname")
    assert res.rc == 0, res.stderr
    assert sorted(res.stdout.split()) == COMPUTE


def test_sbatch_completes_and_is_accounted():
    script = (
        "#!/bin/bash\n"
        "#SBATCH --nodes=2 --ntasks-per-node=1 --output=/home/alice/job-%j.out\n"
        'srun bash -c "echo rank \\$SLURM_PROCID on \\$(hostname)"\n'
    )
    node("login").run_expect([0], f"cat > /home/alice/job.sbatch <<'EOF'\n{script}EOF")
    job = submit("/home/alice/job.sbatch", "--wait")
    out = node("compute1").file(f"/home/alice/job-{job}.out").content_string
    assert sorted(re.findall(r"on (\S+)", out)) == COMPUTE
    assert sacct_state(job) == "COMPLETED"
    user = node("login").check_output(f"sacct -n -X -P -j {job} -o User")
    assert user == "alice"


def test_memory_limit_is_enforced():
    # Ask for 64 MiB and touch 512 MiB: the job's cgroup kills it.
    res = as_user("srun -N1 --mem=64M python3 -c \"s = 'x' * (512 * 1024 * 1024)\"")
    assert res.rc != 0
    job = node("login").check_output("sacct -n -X -P -u alice -o JobID --starttime now-5minutes | tail -1")
    assert sacct_state(job) == "OUT_OF_MEMORY"


def test_job_survives_slurmctld_restart():
    job = held_job("ctld-restart", 1)
    node("head").run_expect([0], "systemctl restart slurmctld")
    node("head").run_expect([0], "timeout 60 sh -c 'until scontrol ping | grep -q UP; do sleep 1; done'")
    assert node("login").check_output(f"squeue -h -j {job} -o %T") == "RUNNING"
    release("ctld-restart")
    wait_job(job)
    assert sacct_state(job) == "COMPLETED"


def test_unreachable_node_fails_alone_and_a_rerun_heals():
    container = f"mlhpc-{RUN}-compute2"
    subprocess.run(["podman", "pause", container], check=True)
    try:
        run = playbook()
    finally:
        subprocess.run(["podman", "unpause", container], check=True)
    out = run.stdout + run.stderr
    assert run.returncode != 0
    counts = recap(run.stdout)
    assert counts[container]["unreachable"] == 1
    assert "UNREACHABLE!" in out and container in out
    for name in ("head", "compute1", "login"):
        assert counts[f"mlhpc-{RUN}-{name}"]["failed"] == 0, out[-3000:]
        assert counts[f"mlhpc-{RUN}-{name}"]["unreachable"] == 0
    healed = playbook()
    assert healed.returncode == 0, healed.stdout[-3000:]
    assert all(c["failed"] == 0 and c["unreachable"] == 0 for c in recap(healed.stdout).values())
    assert node("login").check_output("sinfo -h -n compute2 -o %T") == "idle"


def test_node_added_with_limit_joins_without_disturbing_a_running_job(tmp_path):
    job = held_job("node-added", 2)
    nodelist = node("login").check_output(f"squeue -h -j {job} -o %N")
    extra = tmp_path / "compute3.yml"
    extra.write_text(f"slurm_compute:\n  hosts:\n    mlhpc-{RUN}-compute3:\n")
    run = playbook("-i", str(extra), "--limit", f"mlhpc-{RUN}-compute3")
    assert run.returncode == 0, run.stdout[-3000:]
    deadline = time.time() + 60
    while node("login").run("sinfo -h -n compute3 -o %T").stdout.strip() != "idle" and time.time() < deadline:
        time.sleep(2)
    assert node("login").check_output("sinfo -h -n compute3 -o %T") == "idle"
    # The job ran on across the restarts of slurmctld and slurmd, on the same nodes.
    assert node("login").check_output(f"squeue -h -j {job} -o %T") == "RUNNING"
    assert node("login").check_output(f"squeue -h -j {job} -o %N") == nodelist
    release("node-added")
    wait_job(job)
    assert sacct_state(job) == "COMPLETED"
