"""Consistency of the instance profile table."""

from __future__ import annotations

import pytest

from ansible_collections.mlhpc.cluster.plugins.module_utils.instance_profiles import (
    FABRIC_MANAGER_TYPES,
    PROFILES,
    UnknownInstanceType,
    get_profile,
)

ACCELERATOR_KINDS = {"nvidia", "neuron", "none"}
PROFILE_KEYS = {
    "instance_type",
    "family",
    "arch",
    "vcpus",
    "sockets",
    "cores_per_socket",
    "threads_per_core",
    "memory_mib",
    "accelerator",
    "efa_interfaces",
    "nvswitch",
    "nvlinks_per_gpu",
    "nvlink_generation",
    "nccl_busbw_floor_gbps",
    "efa_late_enumeration",
    "imex",
}
ACCELERATOR_KEYS = {"kind", "model", "count", "memory_gib", "cuda_arch", "neuron_cores"}
# The HGX and NVL boards with NVSwitch fabrics, written out rather than derived from the table.
NVSWITCH_TYPES = {
    "p4d.24xlarge",
    "p4de.24xlarge",
    "p5.48xlarge",
    "p5e.48xlarge",
    "p5en.48xlarge",
    "p6-b200.48xlarge",
    "p6e-gb200.36xlarge",
}

params = pytest.mark.parametrize("name", sorted(PROFILES))


@params
def test_profile_has_the_schema(name):
    profile = PROFILES[name]
    assert set(profile) == PROFILE_KEYS
    assert set(profile["accelerator"]) == ACCELERATOR_KEYS
    assert profile["instance_type"] == name
    assert profile["family"] == name.split(".")[0]
    assert profile["arch"] in {"x86_64", "arm64"}


@params
def test_cpu_topology_adds_up(name):
    profile = PROFILES[name]
    assert profile["threads_per_core"] in {1, 2}
    assert profile["threads_per_core"] * profile["cores_per_socket"] * profile["sockets"] == profile["vcpus"]


@params
def test_accelerator_kind_is_known_and_consistent(name):
    accel = PROFILES[name]["accelerator"]
    assert accel["kind"] in ACCELERATOR_KINDS
    if accel["kind"] == "none":
        assert accel["count"] == 0
        assert accel["model"] is None
    else:
        assert accel["count"] > 0
        assert accel["model"]
        assert accel["memory_gib"] > 0
    if accel["kind"] == "nvidia":
        assert accel["cuda_arch"] and accel["cuda_arch"].isdigit()
        assert accel["neuron_cores"] == 0
    else:
        assert accel["cuda_arch"] is None
    if accel["kind"] == "neuron":
        assert accel["neuron_cores"] >= accel["count"]


@params
def test_nvlink_fields_agree(name):
    profile = PROFILES[name]
    if profile["nvswitch"]:
        assert profile["accelerator"]["kind"] == "nvidia"
        assert profile["nvlinks_per_gpu"] > 0
        assert profile["nvlink_generation"] is not None
    if profile["nvlinks_per_gpu"] == 0:
        assert profile["nvlink_generation"] is None
    if profile["imex"]:
        assert profile["nvswitch"]
    if profile["nccl_busbw_floor_gbps"] is not None:
        assert profile["efa_interfaces"] > 0, "a multi-node bandwidth floor needs EFA"


def test_fabric_manager_types_are_exactly_the_nvswitch_types():
    assert set(FABRIC_MANAGER_TYPES) == NVSWITCH_TYPES
    assert {name for name, profile in PROFILES.items() if profile["nvswitch"]} == NVSWITCH_TYPES


def test_get_profile_returns_a_copy():
    profile = get_profile("p5.48xlarge")
    profile["accelerator"]["count"] = 0
    assert PROFILES["p5.48xlarge"]["accelerator"]["count"] == 8
    assert get_profile("p5.48xlarge")["accelerator"]["count"] == 8


def test_unknown_type_message_names_the_type_and_the_known_ones():
    with pytest.raises(UnknownInstanceType) as info:
        get_profile("p9.huge")
    message = str(info.value)
    assert "'p9.huge'" in message
    assert "p4d.24xlarge" in message and "trn2.48xlarge" in message
    assert info.value.instance_type == "p9.huge"
