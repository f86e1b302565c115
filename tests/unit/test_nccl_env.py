"""Unit tests for the EFA/NCCL environment rules and the mlhpc.cluster.nccl_env filter."""

from __future__ import annotations

import itertools

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.mlhpc.cluster.plugins.filter.nccl_env import FilterModule
from ansible_collections.mlhpc.cluster.plugins.module_utils.instance_profiles import (
    PROFILES,
    get_profile,
)
from ansible_collections.mlhpc.cluster.plugins.module_utils.nccl_env import (
    compute_env,
    parse_version,
    version_at_least,
)

MODERN = {
    "libfabric": "1.22.0amzn4.0",
    "aws_ofi_nccl": "1.7.3-aws",
    "efa_installer": "1.30.0",
    "nccl": "2.18.6-1+cuda12.2",
    "cuda": "12.2",
}
OLD_KERNEL = "5.10.210-201.852.amzn2.x86_64"
NEW_KERNEL = "6.1.0-18-cloud-amd64"
TUNER = "/opt/amazon/ofi-nccl/lib/libnccl-ofi-tuner.so"
RDMA_EFA_TYPES = ["p4d.24xlarge", "p5.48xlarge"]


def env_for(instance_type, versions=None, **kwargs):
    return compute_env(get_profile(instance_type), versions, **kwargs)["env"]


def with_versions(**changes):
    return {**MODERN, **changes}


def fi_keys(env):
    return {name for name in env if name.startswith("FI_")}


filter_nccl_env = FilterModule().filters()["nccl_env"]


# --- version parsing ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.22.0", (1, 22, 0)),
        ("1.7.3-aws", (1, 7, 3)),
        ("v1.8.0-aws", (1, 8, 0)),
        ("2.18.6-1+cuda12.2", (2, 18, 6)),
        ("1.22.0amzn4.0", (1, 22, 0)),
        ("2.4.0amzn5.0", (2, 4, 0)),
        ("12.2", (12, 2)),
        (" 1.29.1 ", (1, 29, 1)),
        ("5.10.210-201.852.amzn2.x86_64", (5, 10, 210)),
        (2, (2,)),
        (None, None),
        ("", None),
    ],
)
def test_parse_version_reads_the_leading_numbers(text, expected):
    assert parse_version(text) == expected


def test_parse_version_refuses_text_without_a_number():
    with pytest.raises(ValueError, match="does not start with a version number"):
        parse_version("latest")


@pytest.mark.parametrize("value", [1.2, True, ["1", "2"]])
def test_parse_version_refuses_non_strings(value):
    with pytest.raises(TypeError):
        parse_version(value)


@pytest.mark.parametrize(
    ("version", "minimum", "expected"),
    [
        ((1, 7), (1, 7, 0), True),
        ((1, 7, 0), (1, 7), True),
        ((1, 6, 9), (1, 7), False),
        ((1, 29, 0), (1, 29, 1), False),
        ((1, 29, 1), (1, 29, 1), True),
        ((2, 19), (2, 18, 5), True),
    ],
)
def test_version_at_least_pads_missing_components(version, minimum, expected):
    assert version_at_least(version, minimum) is expected


# --- aws-ofi-nccl / libfabric bands on GPUDirect RDMA hosts --------------------------------


@pytest.mark.parametrize("instance_type", RDMA_EFA_TYPES)
def test_modern_libfabric_and_ofi_nccl_set_only_huge_page(instance_type):
    env = env_for(instance_type, MODERN)
    assert fi_keys(env) == {"FI_EFA_USE_HUGE_PAGE"}
    assert env["FI_EFA_USE_HUGE_PAGE"] == "0"
    assert "NCCL_PROTO" not in env


@pytest.mark.parametrize("instance_type", RDMA_EFA_TYPES)
@pytest.mark.parametrize("ofi", ["1.6.0", "1.6.9-aws"])
def test_ofi_nccl_1_6_adds_device_rdma(instance_type, ofi):
    env = env_for(instance_type, with_versions(aws_ofi_nccl=ofi))
    assert fi_keys(env) == {"FI_EFA_USE_HUGE_PAGE", "FI_EFA_USE_DEVICE_RDMA"}
    assert env["FI_EFA_USE_DEVICE_RDMA"] == "1"
    assert "NCCL_PROTO" not in env


@pytest.mark.parametrize("instance_type", RDMA_EFA_TYPES)
def test_libfabric_before_1_18_adds_device_rdma_even_with_modern_ofi_nccl(instance_type):
    assert env_for(instance_type, with_versions(libfabric="1.17.1"))["FI_EFA_USE_DEVICE_RDMA"] == "1"
    assert "FI_EFA_USE_DEVICE_RDMA" not in env_for(instance_type, with_versions(libfabric="1.18.0"))


@pytest.mark.parametrize("instance_type", RDMA_EFA_TYPES)
@pytest.mark.parametrize("ofi", ["1.5.0", "1.5.0-aws", "1.4.0"])
def test_ofi_nccl_1_5_and_older_select_efa_and_simple_protocol(instance_type, ofi):
    env = env_for(instance_type, with_versions(aws_ofi_nccl=ofi))
    assert env["FI_PROVIDER"] == "efa"
    assert env["NCCL_PROTO"] == "simple"
    assert env["FI_EFA_USE_DEVICE_RDMA"] == "1"


@pytest.mark.parametrize(
    ("ofi", "provider", "device_rdma"),
    [("1.5.0", True, True), ("1.6.0", False, True), ("1.6.1", False, True), ("1.7.0", False, False)],
)
def test_band_boundaries_on_p5(ofi, provider, device_rdma):
    env = env_for("p5.48xlarge", with_versions(aws_ofi_nccl=ofi))
    assert ("FI_PROVIDER" in env) is provider
    assert ("NCCL_PROTO" in env) is provider
    assert ("FI_EFA_USE_DEVICE_RDMA" in env) is device_rdma


# --- hosts without GPUDirect RDMA, without EFA, without NVLink --------------------------------


@pytest.mark.parametrize("versions", [MODERN, with_versions(aws_ofi_nccl="1.5.0"), {}])
def test_g5_without_efa_gets_no_fi_settings_and_shm_cuda_memcpy(versions):
    env = env_for("g5.12xlarge", versions, kernel=OLD_KERNEL)
    assert fi_keys(env) == set()
    assert env["NCCL_SHM_USE_CUDA_MEMCPY"] == "1"
    assert "NCCL_PROTO" not in env
    assert "NCCL_TUNER_PLUGIN" not in env
    assert compute_env(get_profile("g5.12xlarge"), versions)["notes"] == []


def test_p5_with_nvswitch_and_32_efa_does_not_get_shm_cuda_memcpy():
    env = env_for("p5.48xlarge", MODERN)
    assert "NCCL_SHM_USE_CUDA_MEMCPY" not in env
    assert "FI_EFA_USE_HUGE_PAGE" in env


def test_nvlink_without_nvswitch_gets_no_shm_cuda_memcpy():
    profile = {**get_profile("g5.48xlarge"), "nvlinks_per_gpu": 4}
    assert "NCCL_SHM_USE_CUDA_MEMCPY" not in compute_env(profile, MODERN)["env"]


def test_g5_with_one_efa_has_no_device_rdma_in_any_band():
    assert "FI_EFA_USE_DEVICE_RDMA" not in env_for("g5.48xlarge", with_versions(aws_ofi_nccl="1.6.0"))
    legacy = env_for("g5.48xlarge", with_versions(aws_ofi_nccl="1.5.0"))
    assert legacy["FI_PROVIDER"] == "efa"
    assert legacy["NCCL_PROTO"] == "simple"
    assert "FI_EFA_USE_DEVICE_RDMA" not in legacy
    assert legacy["NCCL_SHM_USE_CUDA_MEMCPY"] == "1"


# --- efa-installer / NCCL sync memops ----------------------------------------------------------


@pytest.mark.parametrize(
    ("installer", "nccl", "expected"),
    [
        ("1.29.0", "2.19.0", True),
        ("1.29.1", "2.19.0", False),
        ("1.29.0", "2.18.6-1+cuda12.2", False),
        ("1.29.1", "2.18.6-1", False),
        ("1.26.0", "2.19.3-1+cuda12.3", True),
        ("1.30.0", "2.21.5", False),
    ],
)
@pytest.mark.parametrize("instance_type", ["p5.48xlarge", "p4d.24xlarge"])
def test_sync_memops_only_for_old_installer_with_nccl_2_19(instance_type, installer, nccl, expected):
    env = env_for(instance_type, with_versions(efa_installer=installer, nccl=nccl))
    assert ("FI_EFA_SET_CUDA_SYNC_MEMOPS" in env) is expected
    if expected:
        assert env["FI_EFA_SET_CUDA_SYNC_MEMOPS"] == "0"


def test_sync_memops_needs_efa():
    env = env_for("g5.12xlarge", with_versions(efa_installer="1.26.0", nccl="2.19.3"))
    assert "FI_EFA_SET_CUDA_SYNC_MEMOPS" not in env


# --- kernel and fork safety --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kernel", "expected"),
    [
        (OLD_KERNEL, True),
        ("5.14.21", True),
        ("5.15.0-1051-aws", False),
        (NEW_KERNEL, False),
        (None, False),
    ],
)
@pytest.mark.parametrize("instance_type", ["p5.48xlarge", "c5n.18xlarge"])
def test_fork_safe_only_below_kernel_5_15(instance_type, kernel, expected):
    env = env_for(instance_type, MODERN, kernel=kernel)
    assert ("FI_EFA_FORK_SAFE" in env) is expected


def test_fork_safe_needs_efa():
    assert "FI_EFA_FORK_SAFE" not in env_for("g5.12xlarge", MODERN, kernel=OLD_KERNEL)
    assert "FI_EFA_FORK_SAFE" not in env_for("m5.2xlarge", MODERN, kernel=OLD_KERNEL)


def test_unreadable_kernel_is_noted_and_ignored():
    result = compute_env(get_profile("p5.48xlarge"), MODERN, kernel="unknown")
    assert "FI_EFA_FORK_SAFE" not in result["env"]
    assert any(note.startswith("kernel:") for note in result["notes"])


# --- tuner ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ofi", "nccl", "expected"),
    [
        ("1.7.4-aws", "2.19.3", False),
        ("1.8.0-aws", "2.19.3", True),
        ("1.13.2-aws", "2.23.4-1", True),
        ("1.9.1-aws", "2.18.6-1+cuda12.2", False),
        ("1.9.1-aws", None, True),
    ],
)
@pytest.mark.parametrize("instance_type", ["p5.48xlarge", "p5en.48xlarge", "p6-b200.48xlarge"])
def test_tuner_from_ofi_nccl_1_8_with_nccl_2_19(instance_type, ofi, nccl, expected):
    env = env_for(instance_type, with_versions(aws_ofi_nccl=ofi, nccl=nccl))
    assert env.get("NCCL_TUNER_PLUGIN") == (TUNER if expected else None)


@pytest.mark.parametrize("instance_type", ["p4d.24xlarge", "g5.48xlarge", "g5.12xlarge"])
def test_no_tuner_outside_its_families(instance_type):
    versions = with_versions(aws_ofi_nccl="1.13.2", nccl="2.23.4")
    assert "NCCL_TUNER_PLUGIN" not in env_for(instance_type, versions)


def test_tuner_path_follows_prefix_and_libdir():
    versions = with_versions(aws_ofi_nccl="1.9.1", nccl="2.21.5")
    assert env_for("p5.48xlarge", versions, ofi_nccl_prefix="/opt/aws-ofi-nccl/")["NCCL_TUNER_PLUGIN"] == (
        "/opt/aws-ofi-nccl/lib/libnccl-ofi-tuner.so"
    )
    libdir = "/opt/amazon/ofi-nccl/lib/x86_64-linux-gnu"
    assert env_for("p5.48xlarge", versions, ofi_nccl_libdir=libdir)["NCCL_TUNER_PLUGIN"] == (
        f"{libdir}/libnccl-ofi-tuner.so"
    )


@pytest.mark.parametrize(
    ("instance_type", "ofi"),
    itertools.product(PROFILES, ["1.4.0", "1.5.0", "1.6.0", "1.7.3", "1.8.0", "1.13.2", None]),
)
def test_tuner_never_meets_nccl_proto(instance_type, ofi):
    env = env_for(instance_type, with_versions(aws_ofi_nccl=ofi, nccl="2.21.5"))
    assert not ("NCCL_TUNER_PLUGIN" in env and "NCCL_PROTO" in env)


# --- unknown versions and unknown hardware --------------------------------------------------------


@pytest.mark.parametrize("instance_type", RDMA_EFA_TYPES)
def test_unknown_versions_give_the_modern_set_with_notes(instance_type):
    result = compute_env(get_profile(instance_type), {})
    assert result["env"] == {
        "FI_EFA_USE_HUGE_PAGE": "0",
        "NCCL_SOCKET_IFNAME": "^docker,lo,veth",
        "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
    }
    notes = "\n".join(result["notes"])
    for key in ("aws_ofi_nccl", "libfabric", "efa_installer"):
        assert f"{key} version unknown" in notes
    assert all("modern EFA settings" in note for note in result["notes"])


def test_missing_versions_argument_is_the_same_as_empty():
    assert compute_env(get_profile("p5.48xlarge")) == compute_env(get_profile("p5.48xlarge"), {})


def test_one_unknown_version_is_named_and_the_rest_still_apply():
    result = compute_env(get_profile("p5.48xlarge"), with_versions(aws_ofi_nccl="latest", libfabric="1.17.0"))
    assert result["env"]["FI_EFA_USE_DEVICE_RDMA"] == "1"
    assert "FI_PROVIDER" not in result["env"]
    assert any("versions.aws_ofi_nccl" in note and "treated as unknown" in note for note in result["notes"])
    assert any(note.startswith("aws_ofi_nccl version unknown") for note in result["notes"])


def test_unknown_nccl_with_old_installer_is_noted_and_sync_memops_not_set():
    result = compute_env(get_profile("p5.48xlarge"), with_versions(efa_installer="1.28.0", nccl=None))
    assert "FI_EFA_SET_CUDA_SYNC_MEMOPS" not in result["env"]
    assert any(note.startswith("nccl version unknown") for note in result["notes"])


def test_known_versions_give_no_notes():
    assert compute_env(get_profile("p5.48xlarge"), MODERN)["notes"] == []


def test_unknown_hardware_gets_the_modern_set_and_a_note():
    result = compute_env(None, with_versions(aws_ofi_nccl="1.5.0"))
    assert result["env"] == {
        "FI_EFA_USE_HUGE_PAGE": "0",
        "NCCL_SOCKET_IFNAME": "^docker,lo,veth",
        "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
    }
    assert len(result["notes"]) == 1
    assert "instance profile unknown" in result["notes"][0]


# --- Neuron and CPU ------------------------------------------------------------------------------------


@pytest.mark.parametrize("instance_type", ["trn1.32xlarge", "trn1n.32xlarge", "trn2.48xlarge"])
def test_neuron_gets_efa_settings_and_no_nccl_variables(instance_type):
    result = compute_env(
        get_profile(instance_type), with_versions(aws_ofi_nccl="1.5.0"), kernel=OLD_KERNEL, debug=True
    )
    assert result["env"] == {"FI_PROVIDER": "efa", "FI_EFA_USE_DEVICE_RDMA": "1", "FI_EFA_FORK_SAFE": "1"}
    assert result["notes"] == []


def test_neuron_fork_safe_follows_the_kernel():
    assert "FI_EFA_FORK_SAFE" not in env_for("trn1.32xlarge", kernel=NEW_KERNEL)
    unknown = compute_env(get_profile("trn1.32xlarge"))
    assert unknown["env"]["FI_EFA_FORK_SAFE"] == "1"
    assert any(note.startswith("kernel version unknown") for note in unknown["notes"])


def test_neuron_without_efa_gets_nothing():
    assert env_for("inf2.48xlarge", MODERN, kernel=OLD_KERNEL) == {}


def test_cpu_profiles_get_only_efa_basics():
    assert env_for("m5.2xlarge", MODERN, kernel=OLD_KERNEL, debug=True) == {}
    assert env_for("c5n.18xlarge", with_versions(aws_ofi_nccl="1.5.0"), debug=True) == {
        "FI_EFA_USE_HUGE_PAGE": "0"
    }
    assert env_for("c6i.32xlarge", MODERN, kernel=OLD_KERNEL) == {
        "FI_EFA_USE_HUGE_PAGE": "0",
        "FI_EFA_FORK_SAFE": "1",
    }


# --- variables that must never appear, job-level settings, order ------------------------------------


@pytest.mark.parametrize("instance_type", sorted(PROFILES))
@pytest.mark.parametrize(
    "versions",
    [
        MODERN,
        {},
        with_versions(aws_ofi_nccl="1.5.0", libfabric="1.16.0"),
        with_versions(aws_ofi_nccl="1.6.0", efa_installer="1.26.0", nccl="2.19.3"),
    ],
)
@pytest.mark.parametrize("kernel", [OLD_KERNEL, NEW_KERNEL, None])
def test_no_rdmav_and_no_untuned_channel_or_buffer_settings(instance_type, versions, kernel):
    env = env_for(instance_type, versions, kernel=kernel, debug=True)
    assert not [name for name in env if name.startswith("RDMAV_")]
    assert "NCCL_MIN_CHANNELS" not in env
    assert "NCCL_BUFFSIZE" not in env
    assert all(isinstance(value, str) for value in env.values())


def test_unknown_hardware_never_sets_rdmav():
    assert not [name for name in compute_env(None, {}, kernel=OLD_KERNEL)["env"] if name.startswith("RDMAV_")]


def test_debug_socket_ifname_and_async_error_handling():
    env = env_for("p5.48xlarge", MODERN)
    assert "NCCL_DEBUG" not in env
    assert env["NCCL_SOCKET_IFNAME"] == "^docker,lo,veth"
    assert env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1"
    env = env_for("p5.48xlarge", MODERN, debug=True, socket_ifname="en")
    assert env["NCCL_DEBUG"] == "INFO"
    assert env["NCCL_SOCKET_IFNAME"] == "en"


def test_env_order_is_fi_then_nccl_then_torch():
    versions = with_versions(aws_ofi_nccl="1.5.0", efa_installer="1.26.0", nccl="2.19.3", libfabric="1.16.0")
    names = list(env_for("p4d.24xlarge", versions, kernel=OLD_KERNEL, debug=True))
    assert names == [
        "FI_PROVIDER",
        "FI_EFA_USE_DEVICE_RDMA",
        "FI_EFA_USE_HUGE_PAGE",
        "FI_EFA_SET_CUDA_SYNC_MEMOPS",
        "FI_EFA_FORK_SAFE",
        "NCCL_PROTO",
        "NCCL_SOCKET_IFNAME",
        "NCCL_DEBUG",
        "TORCH_NCCL_ASYNC_ERROR_HANDLING",
    ]


def test_p5_versions_below_the_recommended_floor_are_noted():
    notes = compute_env(get_profile("p5.48xlarge"), with_versions(cuda="11.8", nccl="2.18.3"))["notes"]
    assert any("cuda >= 12.0" in note and "11.8" in note for note in notes)
    assert any("nccl >= 2.18.5" in note for note in notes)
    assert compute_env(get_profile("p4d.24xlarge"), with_versions(cuda="11.8"))["notes"] == []


# --- bad input -------------------------------------------------------------------------------------------


def test_unknown_version_key_is_an_error():
    with pytest.raises(ValueError, match="aws-ofi-nccl"):
        compute_env(get_profile("p5.48xlarge"), {"aws-ofi-nccl": "1.9.1"})


def test_float_version_is_an_error():
    with pytest.raises(ValueError, match=r"versions\.nccl"):
        compute_env(get_profile("p5.48xlarge"), {"nccl": 2.2})


def test_malformed_profile_is_an_error():
    with pytest.raises(ValueError, match="lacks 'efa_interfaces'"):
        compute_env({"instance_type": "x", "family": "x", "accelerator": {"kind": "nvidia"}})


# --- the filter ----------------------------------------------------------------------------------------


def test_filter_on_a_type_string_matches_the_profile():
    versions = with_versions(aws_ofi_nccl="1.9.1-aws", nccl="2.21.5-1")
    result = filter_nccl_env("p5.48xlarge", versions, kernel=OLD_KERNEL)
    assert result == compute_env(get_profile("p5.48xlarge"), versions, kernel=OLD_KERNEL)
    assert result["env"]["NCCL_TUNER_PLUGIN"] == TUNER
    assert result["env"]["FI_EFA_FORK_SAFE"] == "1"


def test_filter_accepts_a_profile_dict_and_none():
    assert filter_nccl_env(get_profile("g5.12xlarge")) == compute_env(get_profile("g5.12xlarge"))
    assert "instance profile unknown" in filter_nccl_env(None)["notes"][0]


def test_filter_reads_debug_as_a_boolean():
    assert filter_nccl_env("p5.48xlarge", MODERN, debug="yes")["env"]["NCCL_DEBUG"] == "INFO"
    with pytest.raises(AnsibleFilterError, match="debug"):
        filter_nccl_env("p5.48xlarge", MODERN, debug="sometimes")


def test_filter_unknown_type_raises_with_the_table_message():
    with pytest.raises(AnsibleFilterError) as excinfo:
        filter_nccl_env("p9.large", MODERN)
    message = str(excinfo.value)
    assert "unknown instance type 'p9.large'" in message
    assert "p5.48xlarge" in message
    assert "instance_profiles.py" in message


def test_filter_turns_bad_versions_into_filter_errors():
    with pytest.raises(AnsibleFilterError, match="quote versions"):
        filter_nccl_env("p5.48xlarge", {"nccl": 2.2})
