"""Bad input to the cluster's roles fails before any change, naming the variable and the fix.

Three inventory hosts stand for a head node and two compute nodes; each gets its own
hostname fact, since they all run on this machine.
"""

import base64

import pytest

HOSTS = {"head": ["slurm_controller", "slurm_dbd"], "c1": ["slurm_compute"], "c2": ["slurm_compute"]}
FACTS = {h: {"hostname": h} for h in HOSTS}
VALID = {"slurm_accounting_storage_pass": "correct-horse-battery"}


@pytest.fixture
def preflight(run_role):
    def run(*, group_vars=None, hosts=HOSTS, facts=FACTS, host_vars=None, role="slurm"):
        return run_role(
            role,
            hosts=hosts,
            facts=facts,
            host_vars=host_vars,
            group_vars={**VALID, **(group_vars or {})},
            tasks_from="preflight",
        )

    return run


def assert_fails_before_change(run, *needles):
    assert run.rc != 0
    for needle in needles:
        assert needle in run.messages, (needle, run.messages)
    assert run.changed_before_failure() == []


def test_valid_cluster_passes(preflight):
    run = preflight()
    assert run.rc == 0, run.failures


def test_partition_with_unknown_nodes(preflight):
    run = preflight(group_vars={"slurm_partitions": [{"name": "batch", "nodes": ["c1", "ghost1", "ghost2"]}]})
    assert_fails_before_change(run, "slurm_partitions", "batch", "ghost1", "ghost2")


def test_duplicate_node_names(preflight):
    facts = {**FACTS, "c2": {"hostname": "c1"}}
    run = preflight(facts=facts)
    assert_fails_before_change(run, "c1", "c2", "slurm_node_name")


def test_real_memory_above_host_memory(preflight):
    run = preflight(host_vars={"c1": {"slurm_node_real_memory": 10**9}})
    assert_fails_before_change(run, "slurm_node_real_memory", "c1", str(10**9))


def test_no_controller(preflight):
    hosts = {"c1": ["slurm_compute"], "c2": ["slurm_compute"]}
    run = preflight(hosts=hosts)
    assert_fails_before_change(run, "slurm_controller")


@pytest.mark.parametrize("name", ["My Cluster", "9lives", "a" * 41, "dash-ed"])
def test_invalid_cluster_name(preflight, name):
    run = preflight(group_vars={"slurm_cluster_name": name})
    assert_fails_before_change(run, "slurm_cluster_name", "lower-case")


def test_accounting_without_password(run_role):
    run = run_role("slurm", hosts=HOSTS, facts=FACTS, tasks_from="preflight")
    assert_fails_before_change(run, "slurm_accounting_storage_pass", "vault")


@pytest.mark.parametrize("size", [16, 2048])
def test_munge_key_of_wrong_size(preflight, size):
    key = base64.b64encode(b"k" * size).decode()
    run = preflight(role="munge", group_vars={"munge_key": key})
    assert_fails_before_change(run, "munge_key", f"decodes to {size} bytes", "openssl rand")
    assert key not in run.stdout  # the key itself is never printed


def test_munge_key_of_right_size_passes(preflight):
    run = preflight(role="munge", group_vars={"munge_key": base64.b64encode(b"k" * 1024).decode()})
    assert run.rc == 0, run.failures


def test_topology_with_unknown_node(preflight):
    topology = [{"switch": "leaf1", "nodes": ["c1", "ghost"]}, {"switch": "spine", "switches": ["leaf1"]}]
    run = preflight(group_vars={"slurm_topology": topology})
    assert_fails_before_change(run, "slurm_topology", "unknown: ghost")


def test_valid_topology_passes(preflight):
    topology = [{"switch": "leaf1", "nodes": ["c1", "c2"]}, {"switch": "spine", "switches": ["leaf1"]}]
    run = preflight(group_vars={"slurm_topology": topology})
    assert run.rc == 0, run.failures
