"""The workload catalogue rendered by playbooks/workloads.yml for clusters described by variables.

Every rendered script is valid bash, passes shellcheck, runs to its launcher under stand-in
Slurm commands with ``set -u`` (so no variable is used unset) and stops with a clear message
when a precondition fails. Manifests are valid YAML with the profile's resource counts. The
EFA/NCCL environment follows the rules for the instance type and versions. Bad requests fail
before anything is written, with a message naming the variable.
"""

from __future__ import annotations

import re
import socket
import subprocess

import pytest
import yaml

from ansible_collections.mlhpc.cluster.tests.workloads.conftest import SHARED, SHELLCHECK

P5 = {"workloads_cluster": {"partition": "gpu", "instance_type": "p5.48xlarge", "nodes": 2}}
G5 = {
    "workloads_cluster": {"partition": "g5", "instance_type": "g5.12xlarge", "nodes": 2},
    "workloads_selected": ["nccl-tests", "pytorch-ddp", "pytorch-fsdp"],
}
TRN1 = {"workloads_cluster": {"partition": "trn", "instance_type": "trn1.32xlarge", "nodes": 2}}
CPU = {"workloads_cluster": {"partition": "batch", "nodes": 2}}
NVIDIA_WORKLOADS = [
    "nccl-tests",
    "pytorch-ddp",
    "pytorch-fsdp",
    "megatron-lm",
    "nemo",
    "deepspeed",
    "torchtitan",
    "mosaicml",
    "trl-grpo",
    "jax-paxml",
    "gpu-healthcheck",
]
FSDP_PRESETS = [
    "llama2-7b",
    "llama2-13b",
    "llama2-70b",
    "llama3.1-8b",
    "llama3.1-70b",
    "llama3.2-1b",
    "llama3.2-3b",
    "mathstral-7b",
    "mixtral-8x7b",
]
ALL = {"p5": P5, "g5": G5, "trn1": TRN1, "cpu": CPU}


@pytest.fixture(scope="module", params=sorted(ALL))
def rendered(request, render_session):
    return render_session(request.param, **ALL[request.param])


@pytest.fixture(scope="module")
def p5(render_session):
    return render_session("p5", **P5)


def exports(script_text):
    """NAME -> default of every ``export NAME="${NAME:-default}"`` line (the EFA/NCCL block)."""
    return dict(re.findall(r'^export ([A-Z_0-9]+)="\$\{\1:-([^"]*)\}"$', script_text, re.M))


# --- what gets rendered --------------------------------------------------------------------


def test_p5_renders_every_gpu_workload_in_every_runtime_it_has(p5):
    names = {path.parent.name for path in p5.files("*.sbatch")}
    assert names == set(NVIDIA_WORKLOADS)
    assert (p5.dest / "nccl-tests/nccl-tests.container.sbatch").exists()
    assert (p5.dest / "nccl-tests/nccl-tests.host.sbatch").exists()
    assert (p5.dest / "pytorch-ddp/pytorch-ddp.host.sbatch").exists()
    assert (p5.dest / "gpu-healthcheck/gpu-healthcheck.host.sbatch").exists()
    index = p5.text("README.md")
    assert "nccom-tests (no partition has Neuron devices)" in index
    assert "neuron-llama (no partition has Neuron devices)" in index


def test_trn1_renders_the_neuron_workloads_only(render_session):
    trn1 = render_session("trn1", **TRN1)
    assert {path.name for path in trn1.files("*.sbatch")} == {
        "neuron-llama.host.sbatch",
        "neuron-llama.container.sbatch",
        "nccom-tests.host.sbatch",
    }


def test_cpu_nodes_get_ddp_with_one_process_per_node(render_session):
    cpu = render_session("cpu", **CPU)
    assert [path.name for path in cpu.files("*.sbatch")] == [
        "pytorch-ddp.container.sbatch",
        "pytorch-ddp.host.sbatch",
    ]
    script = cpu.text("pytorch-ddp/pytorch-ddp.host.sbatch")
    assert ': "${PROCS_PER_NODE:=1}"' in script
    assert "--gpus-per-node" not in script
    assert "instance profile unknown" in script


# --- every script is sound ----------------------------------------------------------------


def test_every_script_is_valid_bash(rendered):
    for script in rendered.scripts():
        proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
        assert proc.returncode == 0, f"{script}: {proc.stderr}"
        assert script.read_text().startswith("#!/bin/bash\n")


@pytest.mark.skipif(SHELLCHECK is None, reason="shellcheck is not installed")
def test_every_script_passes_shellcheck(rendered):
    scripts = [str(path) for path in rendered.scripts()]
    proc = subprocess.run(
        [SHELLCHECK, "--shell=bash", "--severity=style", *scripts],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout


# Variables a job script may use without setting: Slurm's, and the login environment's.
ENVIRONMENT = re.compile(r"^(SLURM_\w+|SLURMD_NODENAME|HOME|USER|PATH|SECONDS)$")
ASSIGNED = [
    re.compile(r"\$\{([A-Za-z_]\w*):="),  # : "${NAME:=default}"
    re.compile(r"^\s*(?:export\s+|local\s+)?([A-Za-z_]\w*)(?:\+)?=", re.M),  # NAME=, NAME+=
    re.compile(r"\bfor\s+([A-Za-z_]\w*)\s+in\b"),
    re.compile(r"\b(?:read\s+-r\s+-a|mapfile\s+-t)\s+([A-Za-z_]\w*)"),
    re.compile(r"^\s*local\s+([\w =]+)$", re.M),
]


def variables_used_but_never_set(text):
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    # Single-quoted strings expand later, in another shell (bash -c '...'), or never.
    code = re.sub(r"'[^'\n]*'", "''", code)
    used = set(re.findall(r"\$\{?#?([A-Za-z_]\w*)", code))
    assigned = set()
    for pattern in ASSIGNED:
        for match in pattern.findall(code):
            assigned.update(re.findall(r"[A-Za-z_]\w*", match.split("=")[0]) if " " in match else [match])
    return sorted(name for name in used - assigned if not ENVIRONMENT.match(name))


def test_no_script_uses_a_variable_it_never_sets(rendered):
    for script in rendered.scripts():
        assert variables_used_but_never_set(script.read_text()) == [], script


def dangling_continuations(text):
    """Lines ending in a backslash that continue into nothing (a blank line, a comment, the end)."""
    lines = text.split("\n")
    return [
        line
        for line, following in zip(lines, [*lines[1:], ""], strict=True)
        if line.rstrip().endswith("\\") and (not following.strip() or following.lstrip().startswith("#"))
    ]


def test_the_script_checks_catch_what_they_look_for():
    bad = 'set -u\n: "${KNOWN:=1}"\necho "$KNOWN" "$MODEL_DIR" "${lower}"\nsrun a \\\n  b \\\n\necho done\n'
    assert variables_used_but_never_set(bad) == ["MODEL_DIR", "lower"]
    assert dangling_continuations(bad) == ["  b \\"]


def test_no_continued_line_ends_a_command(rendered):
    for script in rendered.scripts():
        assert dangling_continuations(script.read_text()) == [], script


def test_every_file_is_rendered_completely(rendered):
    for path in rendered.files():
        text = path.read_text()
        assert "{{" not in text and "{%" not in text, path
        if path.suffix in (".sbatch", ".sh", ".yaml", ".md") or path.name == "Dockerfile":
            assert not re.search(r"^\s*None\s*$", text, re.M), path


def test_the_image_imported_is_the_image_the_job_runs(p5):
    for importer in p5.files("import-image.sh"):
        workload = importer.parent
        (image,) = re.findall(r'^: "\$\{IMAGE:=(.+)\}"$', importer.read_text(), re.M)
        assert image.startswith(f"{SHARED}/images/")
        for job in workload.glob("*.container.sbatch"):
            assert re.findall(r'^: "\$\{IMAGE:=(.+)\}"$', job.read_text(), re.M) == [image], job
        dockerfile = workload / "Dockerfile"
        if dockerfile.exists():
            (tag,) = re.findall(r"docker build --tag (\S+)", importer.read_text())
            assert f'enroot import --output "$partial" dockerd://{tag}' in importer.read_text()
            assert tag in dockerfile.read_text()
            assert dockerfile.read_text().count("\nFROM ") == 1


def test_every_job_writes_its_output_to_the_logs_directory(p5):
    for script in p5.files("*.sbatch"):
        text = script.read_text()
        assert f"#SBATCH --output={SHARED}/workloads/logs/%x_%j.out" in text
        assert f"#SBATCH --error={SHARED}/workloads/logs/%x_%j.err" in text
        assert "\nset -euxo pipefail\n" in text
        header = text.split("\nset -euxo pipefail\n")[0]
        assert "#SBATCH --exclusive" in header


# --- the EFA / NCCL environment -----------------------------------------------------------


def test_p5_nccl_tests_carry_the_reference_arguments_and_the_efa_environment(p5):
    for runtime in ("container", "host"):
        script = p5.text(f"nccl-tests/nccl-tests.{runtime}.sbatch")
        assert ': "${NCCL_TESTS_ARGS:=-b 8 -e 16G -f 2 -g 1 -c 1 -n 100}"' in script
        env = exports(script)
        assert env["FI_EFA_USE_HUGE_PAGE"] == "0"
        assert env["NCCL_SOCKET_IFNAME"] == "^docker,lo,veth"
        # Modern versions assumed: nothing the old stacks needed, and no RDMAV_* ever.
        for stale in ("FI_PROVIDER", "FI_EFA_USE_DEVICE_RDMA", "NCCL_PROTO", "FI_EFA_FORK_SAFE"):
            assert stale not in env
        assert "RDMAV_" not in script
        assert "#SBATCH --gpus-per-node=8" in script
        assert "Assumed where something is unknown" in script
        assert "aws_ofi_nccl version unknown: assumed >= 1.7" in script


def test_g5_gets_shm_cuda_memcpy_and_no_libfabric_settings(render_session):
    g5 = render_session("g5", **G5)
    for script in g5.files("*.sbatch"):
        env = exports(script.read_text())
        assert env["NCCL_SHM_USE_CUDA_MEMCPY"] == "1", script
        assert not [name for name in env if name.startswith("FI_")], script
        assert "#SBATCH --gpus-per-node=4" in script.read_text()


def test_known_versions_come_into_the_environment_and_the_comment(render):
    result = render(
        "modern",
        **P5,
        workloads_selected=["nccl-tests"],
        workloads_runtimes=["host"],
        workloads_versions={
            "libfabric": "1.22.0",
            "aws_ofi_nccl": "1.13.2-aws",
            "efa_installer": "1.38.0",
            "nccl": "2.23.4",
            "cuda": "12.4",
        },
    )
    assert result.rc == 0, result.output[-3000:]
    script = result.text("nccl-tests/nccl-tests.host.sbatch")
    env = exports(script)
    assert env["NCCL_TUNER_PLUGIN"] == "/opt/amazon/ofi-nccl/lib/libnccl-ofi-tuner.so"
    assert "Assumed where something is unknown" not in script
    assert "aws_ofi_nccl 1.13.2-aws" in script and "(from workloads_versions)" in script
    # mpirun passes every variable of the block to the ranks.
    for name in env:
        assert f"  -x {name}\n" in script


def test_old_versions_get_the_settings_their_rules_require(render):
    result = render(
        "old",
        workloads_cluster={
            "partitions": [
                {
                    "name": "p4",
                    "instance_type": "p4d.24xlarge",
                    "nodes": 4,
                    "kernel": "5.10.220-209.869.amzn2.x86_64",
                    "versions": {"aws_ofi_nccl": "1.5.0", "efa_installer": "1.28.0", "nccl": "2.19.3"},
                }
            ]
        },
        workloads_selected=["nccl-tests"],
        workloads_kubernetes=False,
    )
    assert result.rc == 0, result.output[-3000:]
    env = exports(result.text("nccl-tests/nccl-tests.container.sbatch"))
    assert env["FI_PROVIDER"] == "efa"
    assert env["NCCL_PROTO"] == "simple"
    assert env["FI_EFA_SET_CUDA_SYNC_MEMOPS"] == "0"
    assert env["FI_EFA_FORK_SAFE"] == "1"
    assert not (result.dest / "nccl-tests/kubernetes").exists()


# --- Kubernetes manifests -----------------------------------------------------------------


def manifests(result):
    return {
        path.relative_to(result.dest).as_posix(): yaml.safe_load(path.read_text())
        for path in result.files("*.yaml")
    }


def pod_specs(doc):
    replicas = doc["spec"].get("pytorchReplicaSpecs") or doc["spec"]["mpiReplicaSpecs"]
    return {role: spec["template"]["spec"] for role, spec in replicas.items()}


def test_p5_manifests_have_the_kinds_and_resource_counts_of_the_profile(p5):
    docs = manifests(p5)
    assert {name: doc["kind"] for name, doc in docs.items()} == {
        "nccl-tests/kubernetes/mpijob.yaml": "MPIJob",
        "pytorch-ddp/kubernetes/pytorchjob.yaml": "PyTorchJob",
        "pytorch-fsdp/kubernetes/pytorchjob.yaml": "PyTorchJob",
    }
    for name, doc in docs.items():
        specs = pod_specs(doc)
        worker = specs["Worker"]
        resources = worker["containers"][0]["resources"]
        assert resources["limits"] == {"nvidia.com/gpu": 8, "vpc.amazonaws.com/efa": 32}, name
        assert resources["requests"] == resources["limits"]
        volumes = {v["name"]: v for v in worker["volumes"]}
        assert volumes["shm"]["emptyDir"] == {"medium": "Memory"}
        mounts = {m["name"]: m["mountPath"] for m in worker["containers"][0]["volumeMounts"]}
        assert mounts["shm"] == "/dev/shm"
        assert mounts["shared"] == SHARED
    mpijob = docs["nccl-tests/kubernetes/mpijob.yaml"]
    assert mpijob["apiVersion"] == "kubeflow.org/v2beta1"
    assert mpijob["spec"]["slotsPerWorker"] == 8
    launcher = pod_specs(mpijob)["Launcher"]["containers"][0]
    assert " ".join(launcher["command"]).endswith("all_reduce_perf -b 8 -e 16G -f 2 -g 1 -c 1 -n 100")
    assert {"name": "FI_EFA_USE_HUGE_PAGE", "value": "0"} in launcher["env"]
    ddp = docs["pytorch-ddp/kubernetes/pytorchjob.yaml"]
    assert ddp["spec"]["elasticPolicy"]["rdzvBackend"] == "c10d"
    assert ddp["spec"]["pytorchReplicaSpecs"]["Worker"]["replicas"] == 2
    container = pod_specs(ddp)["Worker"]["containers"][0]
    assert container["command"][:3] == ["torchrun", "--nproc_per_node=8", "$(TRAIN_SCRIPT)"]
    env = {item["name"]: item["value"] for item in container["env"]}
    assert env["TRAIN_SCRIPT"] == f"{SHARED}/workloads/pytorch-ddp/ddp.py"


def test_fsdp_manifest_sets_the_default_preset_and_no_home_directory(p5):
    doc = yaml.safe_load(p5.text("pytorch-fsdp/kubernetes/pytorchjob.yaml"))
    env = {item["name"]: item["value"] for item in pod_specs(doc)["Worker"]["containers"][0]["env"]}
    assert env["HIDDEN_SIZE"] == "4096" and env["NUM_KV_HEADS"] == "8"  # llama3.1-8b
    assert env["CHECKPOINT_DIR"] == f"{SHARED}/checkpoints/pytorch-fsdp"


def test_trn1_manifest_asks_for_neuron_devices_and_efa(render_session):
    trn1 = render_session("trn1", **TRN1)
    doc = yaml.safe_load(trn1.text("neuron-llama/kubernetes/pytorchjob.yaml"))
    container = pod_specs(doc)["Worker"]["containers"][0]
    assert container["resources"]["limits"] == {"aws.amazon.com/neuron": 16, "vpc.amazonaws.com/efa": 8}
    assert doc["spec"]["nprocPerNode"] == "32"


def test_g5_without_efa_asks_for_gpus_only(render_session):
    g5 = render_session("g5", **G5)
    doc = yaml.safe_load(g5.text("pytorch-ddp/kubernetes/pytorchjob.yaml"))
    assert pod_specs(doc)["Worker"]["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": 4}


# --- presets ------------------------------------------------------------------------------


def test_fsdp_script_carries_the_nine_presets(p5):
    script = p5.text("pytorch-fsdp/pytorch-fsdp.container.sbatch")
    assert re.findall(r"^  ([\w.-]+)\)$", script, re.M) == FSDP_PRESETS
    assert ': "${PRESET:=llama3.1-8b}"' in script


def test_a_preset_chosen_in_settings_becomes_the_default(render):
    result = render(
        "fsdp70",
        **P5,
        workloads_selected=["pytorch-fsdp"],
        workloads_settings={"pytorch-fsdp": {"preset": "llama3.1-70b", "vars": {"MAX_STEPS": 10}}},
        workloads_kubernetes=False,
    )
    assert result.rc == 0, result.output[-3000:]
    script = result.text("pytorch-fsdp/pytorch-fsdp.host.sbatch")
    assert ': "${PRESET:=llama3.1-70b}"' in script
    assert ': "${MAX_STEPS:=10}"' in script


# --- dry runs of the rendered scripts ------------------------------------------------------


def make_file(path, executable=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    if executable:
        path.chmod(0o755)
    return str(path)


def environment_for(workload, runtime, tmp_path):
    """Settings that satisfy a workload's preconditions, with files under tmp_path."""
    env = {}
    if runtime == "container":
        env["IMAGE"] = make_file(tmp_path / "image.sqsh")
    elif workload in ("pytorch-ddp", "pytorch-fsdp", "neuron-llama"):
        env["VENV"] = str(tmp_path / "venv")
        make_file(tmp_path / "venv/bin/python", executable=True)
    if workload in ("pytorch-ddp", "pytorch-fsdp", "trl-grpo", "neuron-llama"):
        env["TRAIN_SCRIPT"] = make_file(tmp_path / "train.py")
    if workload in ("megatron-lm", "deepspeed", "nemo"):
        prefix = tmp_path / "data/text_document"
        make_file(prefix.with_suffix(".bin"))
        make_file(prefix.with_suffix(".idx"))
        env["DATA_PREFIX"] = str(prefix)
    if workload in ("megatron-lm", "deepspeed"):
        env["VOCAB_FILE"] = make_file(tmp_path / "data/vocab.json")
        env["MERGE_FILE"] = make_file(tmp_path / "data/merges.txt")
    if workload == "nccl-tests" and runtime == "host":
        env["MPI_DIR"] = str(tmp_path / "mpi")
        make_file(tmp_path / "mpi/bin/mpirun", executable=True)
        env["NCCL_TESTS_DIR"] = str(tmp_path / "nccl-tests")
        make_file(tmp_path / "nccl-tests/all_reduce_perf", executable=True)
    if workload == "gpu-healthcheck":
        env["HEALTHCHECK"] = make_file(tmp_path / "healthcheck", executable=True)
        env["NCCL_TESTS_DIR"] = str(tmp_path / "nccl-tests")
        make_file(tmp_path / "nccl-tests/all_reduce_perf", executable=True)
    if workload == "neuron-llama":
        (tmp_path / "model").mkdir()
        (tmp_path / "data").mkdir(exist_ok=True)
        env.update(MODEL_CONFIG_DIR=str(tmp_path / "model"), DATA_DIR=str(tmp_path / "data"))
    if workload == "nccom-tests":
        env["NCCOM_TEST"] = make_file(tmp_path / "nccom-test", executable=True)
    return env


@pytest.fixture
def vllm_port():
    """A listening socket standing in for the vLLM server."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    yield server.getsockname()[1]
    server.close()


def launched(result):
    """Every command the job started through srun or mpirun, as argument lists."""
    return result.calls("srun") + [["mpirun", *call] for call in result.calls("mpirun")]


def test_every_job_script_runs_to_its_launcher(rendered, dry_run, tmp_path, vllm_port):
    for script in rendered.files("*.sbatch"):
        workload, runtime = script.parent.name, script.name.split(".")[-2]
        env = environment_for(workload, runtime, tmp_path / f"{workload}-{runtime}")
        nodes = ("node1", "node2")
        if workload == "trl-grpo":
            env.update(
                SLURM_JOB_NODELIST_HET_GROUP_0="node1",
                SLURM_JOB_NODELIST_HET_GROUP_1="127.0.0.1",
                VLLM_PORT=str(vllm_port),
            )
        if workload == "nccom-tests":
            nodes = ("localhost", "localhost")
        if workload == "nccl-tests" and runtime == "host":
            # mpirun is called by its path under MPI_DIR: record it there.
            (tmp_path / f"{workload}-{runtime}/mpi/bin/mpirun").write_text(
                (dry_run.bin_dir / "mpirun").read_text()
            )
        result = dry_run(script, env, nodes=nodes)
        assert result.rc == 0, f"{script}:\n{result.stderr[-3000:]}"
        if workload == "nccom-tests":
            continue  # it starts nccom-test itself
        assert launched(result), f"{script} launched nothing"


def test_ddp_launches_torchrun_with_c10d_on_the_first_node(p5, dry_run, tmp_path):
    script = p5.dest / "pytorch-ddp/pytorch-ddp.host.sbatch"
    result = dry_run(script, environment_for("pytorch-ddp", "host", tmp_path))
    (call,) = result.calls("srun")
    assert call[:2] == ["--ntasks-per-node=1", "torchrun"]
    assert "--rdzv_backend=c10d" in call
    assert "--rdzv_endpoint=node1:29500" in call
    assert "--rdzv_id=42" in call
    assert "--nnodes=2" in call and "--nproc_per_node=8" in call
    script_at = call.index(str(tmp_path / "train.py"))
    assert call[script_at + 1 :] == [
        "--backend=auto",
        "--epochs=10",
        "--steps-per-epoch=20",
        "--batch-size=64",
        "--lr=0.05",
    ]


def test_container_jobs_run_in_pyxis_with_the_image_and_mounts(p5, dry_run, tmp_path):
    script = p5.dest / "nccl-tests/nccl-tests.container.sbatch"
    env = environment_for("nccl-tests", "container", tmp_path)
    result = dry_run(script, env)
    (call,) = result.calls("srun")
    assert call[:2] == ["--mpi=pmix", "--ntasks-per-node=8"]
    assert f"--container-image={env['IMAGE']}" in call
    assert f"--container-mounts={SHARED}:{SHARED}" in call
    assert "--no-container-remap-root" in call
    reference = ["-b", "8", "-e", "16G", "-f", "2", "-g", "1", "-c", "1", "-n", "100"]
    assert call[-13:] == ["/opt/nccl-tests/build/all_reduce_perf", *reference]


def test_settings_are_overridden_from_the_environment(p5, dry_run, tmp_path):
    script = p5.dest / "nccl-tests/nccl-tests.container.sbatch"
    env = environment_for("nccl-tests", "container", tmp_path)
    env.update(NCCL_TESTS="all_reduce_perf all_gather_perf", NCCL_TESTS_ARGS="-b 1M -e 1G")
    result = dry_run(script, env)
    calls = result.calls("srun")
    assert [call[-5:] for call in calls] == [
        ["/opt/nccl-tests/build/all_reduce_perf", "-b", "1M", "-e", "1G"],
        ["/opt/nccl-tests/build/all_gather_perf", "-b", "1M", "-e", "1G"],
    ]


def test_megatron_parallelism_follows_the_node_count(p5, dry_run, tmp_path):
    script = p5.dest / "megatron-lm/megatron-lm.container.sbatch"
    env = environment_for("megatron-lm", "container", tmp_path)
    for nodes, tp, pp in ((2, 4, 2), (8, 8, 4)):
        result = dry_run(script, env, nodes=tuple(f"node{i}" for i in range(1, nodes + 1)))
        assert result.rc == 0, result.stderr[-2000:]
        (call,) = result.calls("srun")
        assert f"--tensor-model-parallel-size={tp}" in call
        assert f"--pipeline-model-parallel-size={pp}" in call
    tokenizer = make_file(tmp_path / "data/tokenizer.model")
    result = dry_run(script, {**env, "PRESET": "llama2-70b", "TOKENIZER_MODEL": tokenizer})
    assert result.rc == 0, result.stderr[-2000:]
    (call,) = result.calls("srun")
    assert "--tensor-model-parallel-size=4" in call and "--pipeline-model-parallel-size=4" in call
    assert "--num-query-groups" in call and "--swiglu" in call


def test_trl_grpo_is_a_heterogeneous_job_with_a_vllm_node(p5, dry_run, tmp_path, vllm_port):
    script = p5.dest / "trl-grpo/trl-grpo.container.sbatch"
    header = script.read_text().split("\nset -euxo pipefail\n")[0]
    first, second = header.split("#SBATCH hetjob\n")
    assert "#SBATCH --nodes=1" in first and "#SBATCH --nodes=1" in second
    env = environment_for("trl-grpo", "container", tmp_path)
    env.update(
        SLURM_JOB_NODELIST_HET_GROUP_0="node1",
        SLURM_JOB_NODELIST_HET_GROUP_1="127.0.0.1",
        VLLM_PORT=str(vllm_port),
    )
    result = dry_run(script, env)
    assert result.rc == 0, result.stderr[-2000:]
    server, trainer = result.calls("srun")
    assert server[0] == "--het-group=1" and "vllm-serve" in server
    assert trainer[0] == "--het-group=0" and "accelerate" in trainer
    assert "--vllm-server-host" in trainer and "127.0.0.1" in trainer


def test_mosaicml_starts_one_launcher_per_node_with_its_rank(p5, dry_run, tmp_path):
    script = p5.dest / "mosaicml/mosaicml.container.sbatch"
    result = dry_run(script, environment_for("mosaicml", "container", tmp_path))
    calls = result.calls("srun")
    assert [call[2] for call in calls] == ["--nodelist=node1", "--nodelist=node2"]
    for rank, call in enumerate(calls):
        assert call[call.index("--node_rank") + 1] == str(rank)
        assert call[call.index("--master_addr") + 1] == "node1"


def test_neuron_llama_precompiles_then_trains(render_session, dry_run, tmp_path):
    trn1 = render_session("trn1", **TRN1)
    script = trn1.dest / "neuron-llama/neuron-llama.host.sbatch"
    result = dry_run(script, environment_for("neuron-llama", "host", tmp_path))
    compile_call, train_call = result.calls("srun")
    assert compile_call[1:3] == ["neuron_parallel_compile", "torchrun"]
    assert "--nproc_per_node=32" in train_call
    assert "--tensor_parallel_size=8" in train_call


# --- preconditions ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("relative", "missing", "message"),
    [
        ("nccl-tests/nccl-tests.container.sbatch", "IMAGE", "container image /nowhere is missing"),
        ("pytorch-ddp/pytorch-ddp.host.sbatch", "VENV", "virtual environment /nowhere is missing"),
        ("pytorch-ddp/pytorch-ddp.host.sbatch", "TRAIN_SCRIPT", "training script /nowhere is missing"),
        ("megatron-lm/megatron-lm.container.sbatch", "DATA_PREFIX", "dataset /nowhere.bin is missing"),
        ("gpu-healthcheck/gpu-healthcheck.host.sbatch", "HEALTHCHECK", "/nowhere is missing"),
    ],
)
def test_a_missing_precondition_stops_the_job_with_a_message(
    p5, dry_run, tmp_path, relative, missing, message
):
    workload, runtime = relative.split("/")[0], relative.split(".")[-2]
    env = environment_for(workload, runtime, tmp_path)
    env[missing] = "/nowhere"
    result = dry_run(p5.dest / relative, env)
    assert result.rc == 1
    assert f"error: {message}" in result.stderr
    assert result.calls("srun") == []


def test_an_unknown_preset_at_submission_stops_the_job(p5, dry_run, tmp_path):
    env = environment_for("pytorch-fsdp", "container", tmp_path)
    result = dry_run(p5.dest / "pytorch-fsdp/pytorch-fsdp.container.sbatch", {**env, "PRESET": "llama9"})
    assert result.rc == 1
    assert "PRESET is 'llama9', which is not a preset of pytorch-fsdp" in result.stderr


# --- bad requests -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        (
            {"workloads_selected": ["pytorch-ddp", "no-such-workload"]},
            "workloads_selected names 'no-such-workload', not in the catalogue",
        ),
        (
            {"workloads_settings": {"pytorch-fsdp": {"preset": "llama9"}}},
            "workloads_settings['pytorch-fsdp'].preset is 'llama9', which is not a preset of pytorch-fsdp; "
            "the presets are llama2-7b,",
        ),
        (
            {"workloads_settings": {"nccl-tests": {"gpus_per_node": 16}}},
            "workloads_settings['nccl-tests'].gpus_per_node is 16 but the nodes of partition 'gpu' "
            "(p5.48xlarge) have 8 GPUs; set at most 8.",
        ),
        (
            {"workloads_settings": {"nccl-tests": {"partition": "cpu"}}},
            "workloads_settings['nccl-tests'].partition is 'cpu', which is not a partition of the cluster; "
            "the partitions are gpu.",
        ),
        (
            {"workloads_settings": {"megatron-lm": {"vars": {"TENSOR_PARALEL": 8}}}},
            "workloads_settings['megatron-lm'].vars sets 'TENSOR_PARALEL', which megatron-lm does not use",
        ),
        (
            {"workloads_settings": {"pytorch-ddp": {"nodes": 3}}},
            "workloads_settings['pytorch-ddp'].nodes is 3 but partition 'gpu' has 2 nodes",
        ),
    ],
    ids=[
        "unknown-workload",
        "unknown-preset",
        "too-many-gpus",
        "unknown-partition",
        "unknown-var",
        "too-many-nodes",
    ],
)
def test_a_bad_request_fails_before_writing_with_a_message_naming_the_variable(render, variables, message):
    result = render(**P5, **variables)
    assert result.rc != 0
    assert message in result.output
    assert "Cannot render the workloads." in result.output
    assert not list(result.dest.rglob("*.sbatch"))


def test_an_unknown_instance_type_fails_naming_the_variable(render):
    result = render(workloads_cluster={"partition": "gpu", "instance_type": "p9.48xlarge", "nodes": 2})
    assert result.rc != 0
    assert "workloads_cluster.instance_type: unknown instance type 'p9.48xlarge'" in result.output


def test_a_wrongly_typed_setting_fails_the_argument_spec(render):
    result = render(**P5, workloads_runtimes=["container", "docker"])
    assert result.rc != 0
    assert "workloads_runtimes" in result.output
    assert "docker" in result.output


# --- idempotence and check mode -----------------------------------------------------------


def test_a_second_render_changes_nothing_and_check_mode_agrees(render):
    first = render("again", **CPU)
    assert first.rc == 0, first.output[-3000:]
    assert first.recap["changed"] > 0
    second = render("again", **CPU)
    assert second.rc == 0 and second.recap["changed"] == 0, second.output[-3000:]
    checked = render("again", check=True, **CPU)
    assert checked.rc == 0 and checked.recap["changed"] == 0, checked.output[-3000:]
