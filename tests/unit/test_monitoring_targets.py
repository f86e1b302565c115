"""Which exporters run where: module_utils.monitoring_targets and its filter."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.mlhpc.cluster.plugins.filter.monitoring_targets import FilterModule
from ansible_collections.mlhpc.cluster.plugins.module_utils.instance_profiles import get_profile
from ansible_collections.mlhpc.cluster.plugins.module_utils.monitoring_targets import build_targets

monitoring_targets = FilterModule().filters()["monitoring_targets"]


def host(*groups, facts=None, **host_vars):
    return {"groups": list(groups), "vars": host_vars, "facts": facts or {}}


def hosts_of(result, exporter):
    return [target["host"] for target in result[exporter]]


def test_every_monitored_host_gets_a_node_exporter_and_the_controller_the_slurm_exporter():
    result = build_targets(
        {
            "head": host("slurm_controller", "slurm_dbd", "monitoring"),
            "gpu1": host("slurm_compute", mlhpc_instance_type="p5.48xlarge"),
            "cpu1": host("slurm_compute"),
            "login": host("slurm_login"),
            "stranger": host("other"),
        }
    )
    assert result["errors"] == []
    assert hosts_of(result, "node_exporter") == ["head", "gpu1", "cpu1", "login"]
    assert hosts_of(result, "slurm_exporter") == ["head"]
    # The profile decides: a p5 has NVIDIA GPUs and EFA, an unknown host neither.
    assert hosts_of(result, "efa_exporter") == ["gpu1"]
    assert hosts_of(result, "dcgm_exporter") == ["gpu1"]
    assert result["by_host"] == {
        "head": ["node_exporter", "slurm_exporter"],
        "gpu1": ["node_exporter", "efa_exporter", "dcgm_exporter"],
        "cpu1": ["node_exporter"],
        "login": ["node_exporter"],
    }


def test_profiles_decide_gpu_and_efa_exporters_separately():
    result = build_targets(
        {
            "g5": host("slurm_compute", mlhpc_instance_type="g5.12xlarge"),  # 4 GPUs, no EFA
            "trn": host("slurm_compute", mlhpc_instance_type="trn1.32xlarge"),  # EFA, no NVIDIA
            "fact": host("slurm_compute", mlhpc_instance={"profile": get_profile("p4d.24xlarge")}),
        }
    )
    assert hosts_of(result, "dcgm_exporter") == ["g5", "fact"]
    assert hosts_of(result, "efa_exporter") == ["trn", "fact"]


def test_explicit_variables_win_over_the_profile():
    result = build_targets(
        {
            "head": host("slurm_controller"),
            "gpu1": host("slurm_compute", mlhpc_instance_type="p5.48xlarge", dcgm_exporter_enabled=False),
            "test1": host("slurm_compute", efa_exporter_enabled="yes", node_exporter_enabled="false"),
            "login": host("slurm_login", slurm_exporter_enabled=True),
        }
    )
    assert result["errors"] == []
    assert hosts_of(result, "dcgm_exporter") == []
    assert hosts_of(result, "efa_exporter") == ["gpu1", "test1"]
    assert hosts_of(result, "node_exporter") == ["head", "gpu1", "login"]
    # A host that sets slurm_exporter_enabled replaces the controller default.
    assert hosts_of(result, "slurm_exporter") == ["login"]


def test_slurm_exporter_switched_off_everywhere():
    result = build_targets(
        {"head": host("slurm_controller", slurm_exporter_enabled=False), "c1": host("slurm_compute")}
    )
    assert result["slurm_exporter"] == []


def test_target_names_addresses_and_ports():
    result = build_targets(
        {
            "head.example.org": host(
                "slurm_controller",
                facts={"hostname": "head", "default_ipv4": {"address": "10.0.0.10"}},
                ansible_host="192.0.2.10",
            ),
            "compute1.example.org": host("slurm_compute", ansible_host="10.0.0.11", node_exporter_port=9200),
            "10.0.0.12": host("slurm_compute", slurm_node_name="gpu-a"),
            "10.0.0.13": host("slurm_compute"),
        }
    )
    assert result["node_exporter"] == [
        {"host": "head.example.org", "name": "head", "address": "10.0.0.10", "port": 9100},
        {"host": "compute1.example.org", "name": "compute1", "address": "10.0.0.11", "port": 9200},
        {"host": "10.0.0.12", "name": "gpu-a", "address": "10.0.0.12", "port": 9100},
        {"host": "10.0.0.13", "name": "10.0.0.13", "address": "10.0.0.13", "port": 9100},
    ]
    assert result["slurm_exporter"][0]["port"] == 9341


def test_monitored_groups_can_be_narrowed():
    result = build_targets(
        {"head": host("slurm_controller"), "c1": host("slurm_compute"), "mon": host("monitoring")},
        monitored_groups=["slurm_compute"],
    )
    assert hosts_of(result, "node_exporter") == ["c1"]
    assert result["slurm_exporter"] == []


def test_every_problem_is_reported_with_the_variable_and_the_fix():
    result = build_targets(
        {
            "c1": host("slurm_compute", efa_exporter_enabled="perhaps", node_exporter_port=70000),
            "c2": host("slurm_compute", mlhpc_instance_type="p99.huge"),
            "c3": host("slurm_compute", mlhpc_instance_type=5, node_exporter_port=True),
        }
    )
    errors = " ".join(result["errors"])
    assert "Host 'c1': efa_exporter_enabled must be true or false, got 'perhaps'." in errors
    assert "Host 'c1': node_exporter_port must be a TCP port (1-65535), got 70000." in errors
    assert "Host 'c2': mlhpc_instance_type: unknown instance type 'p99.huge'" in errors
    assert "Host 'c3': mlhpc_instance_type must be an instance type string" in errors
    assert "Host 'c3': node_exporter_port must be a TCP port" in errors
    assert hosts_of(result, "node_exporter") == ["c2"]


def test_filter_reads_hostvars_and_groups():
    hostvars = {
        "head": {"ansible_facts": {"hostname": "head", "default_ipv4": {"address": "10.0.0.10"}}},
        "gpu1": {"ansible_host": "10.0.0.11", "mlhpc_instance_type": "p5.48xlarge", "unrelated": "x"},
    }
    groups = {"all": ["head", "gpu1"], "slurm_controller": ["head"], "slurm_compute": ["gpu1"]}
    result = monitoring_targets(hostvars, groups)
    assert hosts_of(result, "node_exporter") == ["head", "gpu1"]
    assert result["dcgm_exporter"] == [{"host": "gpu1", "name": "gpu1", "address": "10.0.0.11", "port": 9400}]
    assert result["slurm_exporter"][0]["address"] == "10.0.0.10"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (([], {}), "expects hostvars"),
        (({}, []), "expects the groups variable"),
        (({}, {}, "slurm_compute"), "monitored_groups must be a list"),
    ],
)
def test_filter_rejects_wrong_arguments(args, message):
    with pytest.raises(AnsibleFilterError, match=message):
        monitoring_targets(*args)
