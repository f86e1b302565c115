"""The rendered PyTorch DDP workload trains across two nodes when an ordinary user submits it.

Hosts are addressed by role rather than through the per-host ``host`` fixture: the cluster is
the unit under test.
"""

import itertools
import json
import os
import re
import time

import testinfra

RUN = os.environ["MLHPC_RUN"]
INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
SCRIPT = "/home/workloads/pytorch-ddp/pytorch-ddp.host.sbatch"
LOGS = "/home/workloads/logs"


def node(name):
    return testinfra.get_host(f"ansible://mlhpc-{RUN}-{name}", ansible_inventory=INVENTORY)


def as_alice(cmd):
    """Run ``cmd`` in a login shell of alice on the login node (head)."""
    return node("head").run(f"su - alice -c {json.dumps(cmd)}")


def sacct_state(job_id, timeout=60):
    deadline = time.time() + timeout
    state = ""
    while time.time() < deadline:
        out = node("head").run(f"sacct -n -X -P -j {job_id} -o State").stdout.split()
        state = out[0] if out else ""
        if state and state not in ("PENDING", "RUNNING"):
            return state
        time.sleep(2)
    return state


def submit(env=""):
    res = as_alice(f"cd && {env} sbatch --parsable --wait {SCRIPT}")
    job = res.stdout.strip().split(";")[0]
    assert job.isdigit(), res.stdout + res.stderr
    return job, res.rc


def test_the_script_is_rendered_for_the_slurm_model():
    script = node("head").file(SCRIPT).content_string
    assert "#SBATCH --partition=batch\n" in script
    assert "#SBATCH --nodes=2\n" in script
    assert "#SBATCH --ntasks-per-node=1\n" in script
    assert ': "${PROCS_PER_NODE:=2}"' in script
    assert ': "${VENV:=/home/venvs/pytorch}"' in script
    assert "--gpus-per-node" not in script


def test_the_environment_block_names_the_versions_of_the_node_manifest():
    script = node("head").file(SCRIPT).content_string
    kernel = node("compute1").check_output("uname -r")
    comment = " ".join(line.lstrip("# ") for line in script.splitlines() if line.startswith("#"))
    assert "versions aws_ofi_nccl 1.13.2-aws, libfabric 1.22.0, nccl 2.23.4" in comment
    assert "(from the manifest /etc/mlhpc/manifest.json of compute1)" in comment
    assert f"kernel {kernel}" in comment
    # No instance type: the modern settings, and the script says what it assumed.
    assert "instance profile unknown: assumed the modern EFA/NCCL settings" in comment
    assert 'export FI_EFA_USE_HUGE_PAGE="${FI_EFA_USE_HUGE_PAGE:-0}"' in script


def test_ddp_trains_on_two_nodes_with_a_falling_loss():
    job, rc = submit()
    assert rc == 0
    out = node("compute1").file(f"{LOGS}/pytorch-ddp_{job}.out").content_string
    err = node("compute1").file(f"{LOGS}/pytorch-ddp_{job}.err").content_string
    assert "training on 4 processes, backend gloo" in out, out + err[-3000:]
    hosts = set(re.findall(r"^rank \d of 4 on (\S+) \(cpu\)$", out, re.M))
    assert hosts == {"compute1", "compute2"}, out
    losses = [float(value) for value in re.findall(r"^epoch \d+ loss ([\d.]+)$", out, re.M)]
    assert len(losses) == 10, out
    assert losses[-1] < losses[0] / 10, losses
    assert all(later <= earlier * 1.05 for earlier, later in itertools.pairwise(losses)), losses
    assert sacct_state(job) == "COMPLETED"
    assert node("head").check_output(f"sacct -n -X -P -j {job} -o User") == "alice"


def test_a_missing_virtual_environment_stops_the_job_with_its_message():
    job, rc = submit("VENV=/home/alice/no-venv")
    assert rc != 0
    err = node("compute1").file(f"{LOGS}/pytorch-ddp_{job}.err").content_string
    assert "error: virtual environment /home/alice/no-venv is missing" in err
    assert sacct_state(job) == "FAILED"
