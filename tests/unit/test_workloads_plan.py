"""The workload plan (module_utils/workloads.py) and the workload_plan and workload_cluster filters."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from ansible.errors import AnsibleFilterError

from ansible_collections.mlhpc.cluster.plugins.filter.workload_cluster import FilterModule as ClusterFilters
from ansible_collections.mlhpc.cluster.plugins.filter.workload_plan import FilterModule as PlanFilters
from ansible_collections.mlhpc.cluster.plugins.module_utils.slurm_model import build_cluster
from ansible_collections.mlhpc.cluster.plugins.module_utils.workloads import (
    build_plan,
    cluster_from_model,
    describe_cluster,
    enroot_uri,
    versions_from_manifest,
)

ROOT = Path(__file__).resolve().parents[2]
CATALOGUE = yaml.safe_load((ROOT / "workloads/catalogue.yml").read_text())
P5 = {"partition": "gpu", "instance_type": "p5.48xlarge", "nodes": 2}

workload_plan = PlanFilters().filters()["workload_plan"]
workload_cluster = ClusterFilters().filters()["workload_cluster"]


def plan(cluster=None, **kwargs):
    return build_plan(CATALOGUE, P5 if cluster is None else cluster, **kwargs)


def one_error(result):
    assert len(result["errors"]) == 1, result["errors"]
    return result["errors"][0]


# --- the catalogue ---------------------------------------------------------------------------


def test_the_catalogue_is_valid_and_covers_the_test_cases():
    result = plan()
    assert result["errors"] == []
    assert set(CATALOGUE["workloads"]) == {
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
        "neuron-llama",
        "nccom-tests",
        "gpu-healthcheck",
    }


def test_every_launcher_of_the_skeleton_is_used():
    launchers = {launcher for w in CATALOGUE["workloads"].values() for launcher in w["runtimes"].values()}
    assert launchers == {
        "torchrun",
        "mpirun",
        "srun",
        "accelerate",
        "per_node",
        "neuron",
        "nccom",
        "per_node_check",
    }


def test_every_workload_has_its_template():
    for name in CATALOGUE["workloads"]:
        assert (ROOT / f"workloads/templates/{name}.sbatch.j2").is_file(), name


def test_a_catalogue_mistake_is_reported():
    broken = copy.deepcopy(CATALOGUE)
    broken["workloads"]["nccl-tests"]["runtimes"] = {"container": "docker-run"}
    broken["workloads"]["pytorch-ddp"]["defaults"]["PRESET"] = "x"
    errors = build_plan(broken, P5)["errors"]
    assert any("'nccl-tests': runtimes must map" in e for e in errors)
    assert any("'PRESET' is set by the job skeleton" in e for e in errors)


# --- selection and partitions ----------------------------------------------------------------


def test_without_a_selection_every_workload_the_hardware_runs_is_planned():
    result = plan()
    assert "neuron-llama" not in result["workloads"]
    assert {s["name"] for s in result["skipped"]} == {"neuron-llama", "nccom-tests"}
    assert "nccom-tests is not rendered: no partition has Neuron devices." in result["notes"]


def test_workloads_go_to_a_partition_that_can_run_them():
    cluster = {
        "partitions": [
            {"name": "gpu", "instance_type": "p5.48xlarge", "nodes": 4, "default": True},
            {"name": "trn", "instance_type": "trn1.32xlarge", "nodes": 2},
        ]
    }
    result = plan(cluster)
    assert result["errors"] == []
    assert result["workloads"]["nccl-tests"]["partition"] == "gpu"
    assert result["workloads"]["neuron-llama"]["partition"] == "trn"
    assert result["workloads"]["neuron-llama"]["procs_per_node"] == 32
    assert result["workloads"]["torchtitan"]["nodes"] == 4


def test_an_unknown_workload_is_an_error():
    assert one_error(plan(selected=["nccl-test"])).startswith(
        "workloads_selected names 'nccl-test', not in the catalogue; the workloads are nccl-tests,"
    )


def test_settings_for_an_unknown_workload_are_an_error():
    assert "workloads_settings has settings for 'fsdp'" in one_error(plan(settings={"fsdp": {"nodes": 1}}))


def test_a_selected_workload_without_suitable_hardware_is_an_error():
    message = one_error(plan(selected=["nccom-tests"]))
    assert message == (
        "workloads_selected names 'nccom-tests', which needs Neuron devices, but no partition of the cluster "
        "has them (gpu: p5.48xlarge)."
    )


def test_an_unknown_partition_is_an_error():
    message = one_error(plan(settings={"nccl-tests": {"partition": "h100"}}))
    assert message == (
        "workloads_settings['nccl-tests'].partition is 'h100', which is not a partition of the cluster; "
        "the partitions are gpu."
    )


def test_a_partition_with_the_wrong_accelerators_is_an_error():
    cluster = {
        "partitions": [
            {"name": "gpu", **{k: P5[k] for k in ("instance_type", "nodes")}},
            {"name": "cpu", "nodes": 2},
        ]
    }
    message = one_error(plan(cluster, settings={"nccl-tests": {"partition": "cpu"}}))
    assert "partition is 'cpu', whose nodes (no known instance type) have no accelerators" in message
    assert "nccl-tests needs NVIDIA GPUs" in message


# --- sizes -----------------------------------------------------------------------------------


def test_more_gpus_than_the_profile_has_is_an_error():
    message = one_error(plan(settings={"pytorch-ddp": {"gpus_per_node": 9}}))
    assert message == (
        "workloads_settings['pytorch-ddp'].gpus_per_node is 9 but the nodes of partition 'gpu' (p5.48xlarge) "
        "have 8 GPUs; set at most 8."
    )


def test_fewer_gpus_set_the_processes_per_node():
    workload = plan(settings={"pytorch-ddp": {"gpus_per_node": 4}})["workloads"]["pytorch-ddp"]
    assert (workload["gpus_per_node"], workload["procs_per_node"]) == (4, 4)


def test_more_nodes_than_the_partition_has_is_an_error_and_a_default_is_capped():
    assert "nodes is 3 but partition 'gpu' has 2 nodes" in one_error(
        plan(settings={"nccl-tests": {"nodes": 3}})
    )
    result = plan(selected=["torchtitan"])
    assert result["workloads"]["torchtitan"]["nodes"] == 2
    assert "The catalogue runs torchtitan on 4 nodes" in result["notes"][0]


def test_trl_grpo_needs_two_nodes():
    message = one_error(plan({**P5, "nodes": 1}, selected=["trl-grpo"]))
    assert message == "trl-grpo needs at least 2 nodes, but partition 'gpu' has 1."


def test_cpu_nodes_run_one_process_unless_told():
    cpu = {"partition": "batch", "nodes": 2}
    assert plan(cpu)["workloads"]["pytorch-ddp"]["procs_per_node"] == 1
    assert (
        plan(cpu, settings={"pytorch-ddp": {"procs_per_node": 2}})["workloads"]["pytorch-ddp"][
            "procs_per_node"
        ]
        == 2
    )
    assert list(plan(cpu)["workloads"]) == ["pytorch-ddp"]


# --- presets and variables -------------------------------------------------------------------


def test_an_unknown_preset_is_an_error_listing_the_presets():
    message = one_error(plan(settings={"pytorch-fsdp": {"preset": "llama4"}}))
    assert message == (
        "workloads_settings['pytorch-fsdp'].preset is 'llama4', which is not a preset of pytorch-fsdp; "
        "the presets are llama2-7b, llama2-13b, llama2-70b, llama3.1-8b, llama3.1-70b, llama3.2-1b, "
        "llama3.2-3b, mathstral-7b, mixtral-8x7b."
    )


def test_a_preset_on_a_workload_without_presets_is_an_error():
    assert one_error(plan(settings={"nccl-tests": {"preset": "x"}})) == (
        "workloads_settings['nccl-tests'].preset is set, but nccl-tests has no presets."
    )


def test_vars_replace_defaults_and_preset_values_and_unknown_ones_are_errors():
    result = plan(settings={"megatron-lm": {"vars": {"TENSOR_PARALLEL": 2, "TRAIN_ITERS": 10}}})
    workload = result["workloads"]["megatron-lm"]
    assert workload["defaults"]["TRAIN_ITERS"] == "10"
    assert workload["presets"]["gpt3-39b"]["vars"]["TENSOR_PARALLEL"] == "2"
    # A value set in settings is not overridden by the preset's node-count rules.
    assert workload["presets"]["gpt3-39b"]["scale"][0]["vars"] == {"PIPELINE_PARALLEL": "4"}
    message = one_error(plan(settings={"megatron-lm": {"vars": {"TP": 2}}}))
    assert message.startswith(
        "workloads_settings['megatron-lm'].vars sets 'TP', which megatron-lm does not use;"
    )


def test_unknown_setting_keys_are_errors():
    message = one_error(plan(settings={"nccl-tests": {"node": 2}}))
    assert message.startswith(
        "workloads_settings['nccl-tests'] has unknown keys 'node'; the settings are partition,"
    )


def test_paths_in_the_catalogue_follow_the_shared_directory():
    workload = plan(shared_dir="/home", selected=["pytorch-ddp"])["workloads"]["pytorch-ddp"]
    assert workload["defaults"]["TRAIN_SCRIPT"] == "/home/workloads/pytorch-ddp/ddp.py"
    assert workload["venv"] == "/home/venvs/pytorch"
    assert workload["image"]["path"] == "/home/images/pytorch-25.01.sqsh"


def test_runtimes_narrow_the_files():
    result = plan(runtimes=["host"], selected=["nccl-tests", "megatron-lm"])
    assert [
        f["dest"] for f in result["files"] if f["kind"] == "template" and f["dest"].endswith(".sbatch")
    ] == ["nccl-tests/nccl-tests.host.sbatch"]
    assert (
        "megatron-lm is not rendered: it runs only in container, which workloads_runtimes leaves out."
        in (result["notes"])
    )
    assert "nccl-tests/import-image.sh" not in [f["dest"] for f in result["files"]]


# --- images ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "uri"),
    [
        ("nvcr.io/nvidia/pytorch:25.01-py3", "docker://nvcr.io#nvidia/pytorch:25.01-py3"),
        ("public.ecr.aws/hpc-cloud/nccl-tests:latest", "docker://public.ecr.aws#hpc-cloud/nccl-tests:latest"),
        ("mosaicml/llm-foundry:2.5.1_cu124-latest", "docker://mosaicml/llm-foundry:2.5.1_cu124-latest"),
        ("localhost:5000/x:1", "docker://localhost:5000#x:1"),
    ],
)
def test_enroot_uris_separate_the_registry(source, uri):
    assert enroot_uri(source) == uri


def test_built_images_are_tagged_once_for_build_and_import():
    image = plan(selected=["deepspeed"])["workloads"]["deepspeed"]["image"]
    assert image["tag"] == "mlhpc/megatron-deepspeed:latest"
    assert image["path"] == "/fsx/images/megatron-deepspeed.sqsh"


# --- versions and the cluster model ----------------------------------------------------------


def test_manifest_versions_by_their_names_and_aliases():
    manifest = {
        "components": {
            "efa-installer": "1.38.0",
            "aws-ofi-nccl": "1.13.2-aws",
            "nccl": "2.23.4",
            "other": "1",
        }
    }
    assert versions_from_manifest(manifest) == {
        "efa_installer": "1.38.0",
        "aws_ofi_nccl": "1.13.2-aws",
        "nccl": "2.23.4",
    }
    assert versions_from_manifest({}) == {}
    assert versions_from_manifest(None) == {}


def test_partition_versions_win_over_the_fallback_and_say_where_they_came_from():
    cluster = {
        "partitions": [
            {
                "name": "gpu",
                "instance_type": "p5.48xlarge",
                "nodes": 2,
                "versions": {"nccl": "2.23.4"},
                "versions_source": "the manifest /etc/mlhpc/manifest.json of gpu1",
            }
        ]
    }
    workload = plan(cluster, versions={"nccl": "2.18.1", "libfabric": "1.22.0"})["workloads"]["nccl-tests"]
    assert workload["versions"] == {"nccl": "2.23.4", "libfabric": "1.22.0"}
    assert (
        workload["versions_source"] == "the manifest /etc/mlhpc/manifest.json of gpu1 and workloads_versions"
    )


def facts(hostname):
    return {
        "hostname": hostname,
        "processor_count": 1,
        "processor_cores": 2,
        "processor_threads_per_core": 1,
        "processor_vcpus": 2,
        "memtotal_mb": 8000,
    }


def test_a_slurm_model_becomes_a_cluster_description():
    hosts = {
        "head": {"groups": ["slurm_controller"], "vars": {}, "facts": facts("head")},
        "gpu1": {"groups": ["gpu"], "vars": {"mlhpc_instance_type": "p5.48xlarge"}, "facts": facts("gpu1")},
        "gpu2": {"groups": ["gpu"], "vars": {"mlhpc_instance_type": "p5.48xlarge"}, "facts": facts("gpu2")},
        "cpu1": {"groups": ["cpu"], "vars": {}, "facts": facts("cpu1")},
    }
    model = build_cluster(
        hosts,
        [{"name": "gpu", "groups": ["gpu"], "default": True}, {"name": "cpu", "groups": ["cpu"]}],
        controller_hosts=["head"],
    )
    assert model["errors"] == []
    node_info = {
        "gpu1": {
            "kernel": "6.8.0-1015-aws",
            "manifest": {"components": {"nccl": "2.23.4"}},
            "manifest_path": "/etc/mlhpc/manifest.json",
        }
    }
    described = workload_cluster(model, node_info, mounts=["/fsx"])
    assert described["warnings"] == []
    assert described["cluster"] == {
        "partitions": [
            {
                "name": "gpu",
                "instance_type": "p5.48xlarge",
                "nodes": 2,
                "default": True,
                "gres": True,
                "kernel": "6.8.0-1015-aws",
                "versions": {"nccl": "2.23.4"},
                "versions_source": "the manifest /etc/mlhpc/manifest.json of gpu1",
            },
            {"name": "cpu", "instance_type": None, "nodes": 1, "default": False, "gres": False},
        ],
        "mounts": ["/fsx"],
    }
    checked = describe_cluster(described["cluster"])
    assert checked["errors"] == []
    assert [p["kind"] for p in checked["partitions"]] == ["nvidia", "none"]


def test_a_partition_mixing_instance_types_is_described_by_its_first_node_with_a_warning():
    model = {
        "nodes": [
            {"name": "a", "inventory_hostname": "a", "instance_type": "p5.48xlarge", "gres": "gpu:h100:8"},
            {"name": "b", "inventory_hostname": "b", "instance_type": "p4d.24xlarge", "gres": "gpu:a100:8"},
        ],
        "partitions": [{"name": "gpu", "nodes": ["a", "b"], "default": True}],
    }
    described = cluster_from_model(model)
    assert described["cluster"]["partitions"][0]["instance_type"] == "p5.48xlarge"
    assert described["warnings"] == [
        "Partition 'gpu' mixes instance types 'p5.48xlarge', 'p4d.24xlarge'; its workloads are rendered "
        "for the first node's, p5.48xlarge."
    ]


def test_a_cluster_description_is_checked():
    assert describe_cluster({"instance_type": "p5.48xlarge", "nodes": 0})["errors"] == [
        "workloads_cluster.nodes is 0; set the number of nodes in the partition (1 or more)."
    ]
    errors = describe_cluster({"nodes": 2, "partitions": [], "flavour": "x"})["errors"]
    assert any("unknown keys 'flavour'" in e for e in errors)
    assert any("sets both 'partitions' and 'nodes'" in e for e in errors)
    errors = describe_cluster({"partitions": [{"name": "a", "nodes": 1}, {"name": "a", "nodes": 1}]})[
        "errors"
    ]
    assert errors == ["workloads_cluster: partition names 'a' are used more than once."]


# --- the filters -----------------------------------------------------------------------------


def test_the_filters_are_registered_under_their_names():
    assert set(PlanFilters().filters()) == {"workload_plan"}
    assert set(ClusterFilters().filters()) == {"workload_cluster"}


def test_the_plan_filter_refuses_what_is_not_a_catalogue_or_path():
    with pytest.raises(AnsibleFilterError, match="expects the workload catalogue"):
        workload_plan("catalogue.yml", P5)
    with pytest.raises(AnsibleFilterError, match="shared_dir must be an absolute path"):
        workload_plan(CATALOGUE, P5, shared_dir="fsx")
    assert workload_plan(CATALOGUE, P5, selected=["nccl-tests"])["errors"] == []


def test_the_cluster_filter_refuses_what_is_not_a_model():
    with pytest.raises(AnsibleFilterError, match="expects the Slurm cluster model"):
        workload_cluster({"nodes": []})
