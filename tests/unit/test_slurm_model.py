"""The Slurm cluster model and the mlhpc.cluster.slurm_cluster and slurm_hostlist filters."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.mlhpc.cluster.plugins.filter.slurm_hostlist import FilterModule as HostlistFilters
from ansible_collections.mlhpc.cluster.plugins.filter.slurm_model import FilterModule as ClusterFilters
from ansible_collections.mlhpc.cluster.plugins.module_utils.instance_profiles import get_profile
from ansible_collections.mlhpc.cluster.plugins.module_utils.slurm_model import build_cluster, hostlist

slurm_cluster = ClusterFilters().filters()["slurm_cluster"]
slurm_hostlist = HostlistFilters().filters()["slurm_hostlist"]


def facts(hostname, *, sockets=2, cores=16, threads=2, memtotal_mb=256000, address=None):
    return {
        "hostname": hostname,
        "processor_count": sockets,
        "processor_cores": cores,
        "processor_threads_per_core": threads,
        "processor_vcpus": sockets * cores * threads,
        "memtotal_mb": memtotal_mb,
        "default_ipv4": {"address": address} if address else {},
        "architecture": "x86_64",
    }


def host(groups=("compute",), facts=None, **host_vars):
    return {"groups": list(groups), "vars": host_vars, "facts": facts or {}}


def inventory(**more):
    hosts = {"head": host(groups=["slurm_controller"], facts=facts("head", address="10.0.0.10"))}
    hosts.update(more)
    return hosts


def build(hosts, partitions=None, **kwargs):
    kwargs.setdefault("controller_hosts", ["head"])
    if partitions is None:
        partitions = [{"name": "batch", "groups": ["compute"], "default": True}]
    return build_cluster(hosts, partitions, **kwargs)


def node(result, inventory_hostname):
    (found,) = [n for n in result["nodes"] if n["inventory_hostname"] == inventory_hostname]
    return found


def one_error(result):
    assert len(result["errors"]) == 1, result["errors"]
    return result["errors"][0]


# --- nodes from facts ----------------------------------------------------------------------


def test_facts_give_topology_and_memory_less_the_reserve():
    result = build(inventory(c1=host(facts=facts("c1", sockets=2, cores=24, threads=2, address="10.0.0.11"))))
    assert result["errors"] == []
    assert node(result, "c1") == {
        "name": "c1",
        "inventory_hostname": "c1",
        "addr": "10.0.0.11",
        "cpus": 96,
        "sockets": 2,
        "cores_per_socket": 24,
        "threads_per_core": 2,
        "real_memory": 256000 - 1024,
        "gres": None,
        "gpu_type": None,
        "gpu_count": 0,
        "features": [],
        "instance_type": None,
        "source": "facts",
    }


def test_memory_reserve_is_configurable_and_memory_never_below_one():
    result = build(
        inventory(c1=host(facts=facts("c1", memtotal_mb=8000)), c2=host(facts=facts("c2", memtotal_mb=500))),
        memory_reserve_mib=2000,
    )
    assert node(result, "c1")["real_memory"] == 6000
    assert node(result, "c2")["real_memory"] == 1


def test_facts_win_over_the_profile_for_hardware_but_the_profile_gives_gres_and_features():
    hosts = inventory(
        c1=host(
            facts=facts("c1", sockets=2, cores=48, memtotal_mb=2063000), mlhpc_instance_type="p5.48xlarge"
        )
    )
    c1 = node(build(hosts), "c1")
    assert c1["source"] == "facts"
    assert c1["real_memory"] == 2063000 - 1024
    assert c1["gres"] == "gpu:h100:8"
    assert c1["features"] == ["p5.48xlarge", "h100", "efa"]


def test_name_comes_from_the_hostname_fact_then_the_first_label():
    hosts = inventory(
        **{
            "c1.cluster.example": host(facts=facts("ip-10-0-0-5")),
            "c2.cluster.example": host(mlhpc_instance_type="m5.2xlarge"),
        }
    )
    result = build(hosts)
    assert node(result, "c1.cluster.example")["name"] == "ip-10-0-0-5"
    assert node(result, "c2.cluster.example")["name"] == "c2"


def test_slurm_node_name_overrides_the_name():
    result = build(inventory(c1=host(facts=facts("ip-10-0-0-5"), slurm_node_name="gpu-a01")))
    assert node(result, "c1")["name"] == "gpu-a01"


def test_address_falls_back_to_ansible_host():
    result = build(inventory(c1=host(mlhpc_instance_type="m5.2xlarge", ansible_host="10.1.2.3")))
    assert node(result, "c1")["addr"] == "10.1.2.3"


def test_facts_without_the_hardware_subset_fall_back_to_the_profile():
    minimal = {"hostname": "c1", "default_ipv4": {"address": "10.0.0.11"}}
    c1 = node(build(inventory(c1=host(facts=minimal, mlhpc_instance_type="m5.2xlarge"))), "c1")
    assert c1["source"] == "profile"
    assert c1["addr"] == "10.0.0.11"
    assert c1["cpus"] == 8


# --- nodes from the instance profile ----------------------------------------------------------


def test_p5_profile_gives_gpu_gres_features_and_topology():
    result = build(inventory(c1=host(mlhpc_instance_type="p5.48xlarge", slurm_node_features=["ib", "h100"])))
    assert result["errors"] == []
    c1 = node(result, "c1")
    assert c1["gres"] == "gpu:h100:8"
    assert c1["gpu_type"] == "h100"
    assert c1["gpu_count"] == 8
    assert c1["features"] == ["p5.48xlarge", "h100", "efa", "ib"]
    assert (c1["cpus"], c1["sockets"], c1["cores_per_socket"], c1["threads_per_core"]) == (192, 2, 48, 2)
    assert c1["real_memory"] == 2048 * 1024 - 1024
    assert c1["source"] == "profile"
    assert c1["instance_type"] == "p5.48xlarge"


def test_profile_from_the_instance_facts_fact():
    fact = {"instance_type": "g5.12xlarge", "source": "imds", "profile": get_profile("g5.12xlarge")}
    c1 = node(build(inventory(c1=host(mlhpc_instance=fact))), "c1")
    assert c1["gres"] == "gpu:a10g:4"
    assert c1["features"] == ["g5.12xlarge", "a10g"]  # no EFA on g5.12xlarge


def test_neuron_profile_has_no_gpu_gres():
    c1 = node(build(inventory(c1=host(mlhpc_instance_type="trn1.32xlarge"))), "c1")
    assert (c1["gres"], c1["gpu_type"], c1["gpu_count"]) == (None, None, 0)
    assert c1["features"] == ["trn1.32xlarge", "trainium", "efa"]


def test_profile_memory_is_warned_about():
    result = build(inventory(c1=host(mlhpc_instance_type="p5.48xlarge")))
    (warning,) = result["warnings"]
    assert "'c1'" in warning
    assert "slurm_node_real_memory" in warning


# --- RealMemory override ----------------------------------------------------------------------


def test_override_within_memory_is_used():
    result = build(inventory(c1=host(facts=facts("c1", memtotal_mb=256000), slurm_node_real_memory=250000)))
    assert result["errors"] == []
    c1 = node(result, "c1")
    assert c1["real_memory"] == 250000
    assert c1["source"] == "override"


def test_override_above_memory_is_an_error_with_both_numbers_and_the_fix():
    result = build(inventory(c1=host(facts=facts("c1", memtotal_mb=256000), slurm_node_real_memory=300000)))
    message = one_error(result)
    assert "'c1'" in message
    assert "slurm_node_real_memory" in message
    assert "300000" in message
    assert "256000" in message
    assert f"at most {256000 - 1024}" in message


def test_override_above_the_profile_memory_is_an_error():
    result = build(inventory(c1=host(mlhpc_instance_type="m5.2xlarge", slurm_node_real_memory=40000)))
    message = one_error(result)
    assert "slurm_node_real_memory is 40000" in message
    assert "32768" in message


def test_override_must_be_a_whole_number():
    message = one_error(build(inventory(c1=host(facts=facts("c1"), slurm_node_real_memory="lots"))))
    assert "slurm_node_real_memory" in message
    assert "'lots'" in message


# --- errors -----------------------------------------------------------------------------------


def test_unknown_partition_nodes_are_named():
    partitions = [{"name": "batch", "nodes": ["c1", "c9", "c10"]}]
    message = one_error(build(inventory(c1=host(facts=facts("c1"))), partitions))
    assert "partition 'batch'" in message
    assert "'c9', 'c10'" in message
    assert "'c1'" not in message
    assert "'nodes' list" in message


def test_unknown_partition_groups_are_named():
    partitions = [{"name": "batch", "groups": ["compute", "gpus"], "default": True}]
    message = one_error(build(inventory(c1=host(facts=facts("c1"))), partitions))
    assert "partition 'batch'" in message
    assert "'gpus'" in message
    assert "'groups' list" in message


def test_partition_without_nodes():
    message = one_error(build(inventory(), [{"name": "empty", "default": True}]))
    assert "partition 'empty' has no nodes" in message
    assert "'nodes' list" in message


def test_duplicate_partition_names():
    partitions = [
        {"name": "batch", "groups": ["compute"], "default": True},
        {"name": "batch", "groups": ["compute"]},
    ]
    message = one_error(build(inventory(c1=host(facts=facts("c1"))), partitions))
    assert "'batch' is used more than once" in message
    assert "unique name" in message


def test_more_than_one_default_partition():
    partitions = [
        {"name": "a", "groups": ["compute"], "default": True},
        {"name": "b", "groups": ["compute"], "default": True},
    ]
    message = one_error(build(inventory(c1=host(facts=facts("c1"))), partitions))
    assert "'a', 'b'" in message
    assert "'default: true' on one partition only" in message


def test_two_hosts_with_the_same_node_name():
    hosts = inventory(c1=host(facts=facts("node1")), c2=host(facts=facts("node1")))
    message = one_error(build(hosts))
    assert "'c1', 'c2'" in message
    assert "'node1'" in message
    assert "slurm_node_name" in message


@pytest.mark.parametrize("name", ["gpu batch", "a,b", "x:y", ""])
def test_invalid_partition_names(name):
    partitions = [{"name": name, "groups": ["compute"], "default": True}]
    message = one_error(build(inventory(c1=host(facts=facts("c1"))), partitions))
    if name:
        assert f"partition name '{name}' is not a valid Slurm name" in message
    else:
        assert "has no 'name'" in message


def test_invalid_node_name_from_slurm_node_name():
    message = one_error(build(inventory(c1=host(facts=facts("c1"), slurm_node_name="gpu a01"))))
    assert "slurm_node_name 'gpu a01' is not a valid Slurm node name" in message


def test_invalid_node_name_from_the_hostname_fact_suggests_slurm_node_name():
    message = one_error(build(inventory(c1=host(facts=facts("c1,c2")))))
    assert "'c1,c2'" in message
    assert "hostname fact" in message
    assert "Set slurm_node_name" in message


def test_ip_address_inventory_name_without_facts_needs_a_name():
    message = one_error(build(inventory(**{"10.0.0.5": host(mlhpc_instance_type="m5.2xlarge")})))
    assert "'10.0.0.5'" in message
    assert "slurm_node_name" in message


def test_unknown_instance_type_uses_the_table_message():
    message = one_error(build(inventory(c1=host(mlhpc_instance_type="p9.96xlarge"))))
    assert "Host 'c1'" in message
    assert "mlhpc_instance_type" in message
    assert "unknown instance type 'p9.96xlarge'" in message
    assert "p5.48xlarge" in message


def test_no_facts_and_no_instance_type():
    message = one_error(build(inventory(c1=host())))
    assert "Host 'c1'" in message
    assert "unreachable" in message
    assert "set mlhpc_instance_type" in message


def test_no_controller_names_the_group():
    message = one_error(build(inventory(c1=host(facts=facts("c1"))), controller_hosts=[]))
    assert "'slurm_controller'" in message


def test_all_errors_are_collected():
    hosts = inventory(c1=host(), c2=host(mlhpc_instance_type="p9.96xlarge"))
    partitions = [
        {"name": "a b", "groups": ["compute"], "default": True},
        {"name": "x", "nodes": ["ghost"], "default": True},
    ]
    result = build(hosts, partitions, controller_hosts=[])
    text = "\n".join(result["errors"])
    for fragment in (
        "'a b'",
        "'ghost'",
        "more than one partition",
        "Host 'c1'",
        "p9.96xlarge",
        "slurm_controller",
    ):
        assert fragment in text
    assert len(result["errors"]) == 6


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"max_time": "two days"}, "max_time 'two days'"),
        ({"state": "RUNNING"}, "state 'RUNNING'"),
        ({"default": "maybe"}, "default 'maybe'"),
        ({"options": {"MaxTime": "1:00:00"}}, "'max_time' key"),
        ({"options": {"Max Nodes": 4}}, "'Max Nodes'"),
        ({"options": "OverSubscribe=EXCLUSIVE"}, "as a mapping"),
        ({"node": ["c1"]}, "unknown keys 'node'"),
        ({"nodes": "c1"}, "YAML list"),
    ],
)
def test_bad_partition_settings(settings, fragment):
    partition = {"name": "batch", "groups": ["compute"], "default": True, **settings}
    message = one_error(build(inventory(c1=host(facts=facts("c1"))), [partition]))
    assert "partition 'batch'" in message
    assert fragment in message


def test_bad_node_features():
    message = one_error(build(inventory(c1=host(facts=facts("c1"), slurm_node_features="ib"))))
    assert "slurm_node_features must be a list" in message


# --- partitions, warnings and ordering -----------------------------------------------------------


def test_partitions_render_settings_as_strings():
    partitions = [
        {
            "name": "gpu",
            "groups": ["compute"],
            "max_time": "2-00:00:00",
            "options": {
                "OverSubscribe": "EXCLUSIVE",
                "MaxNodes": 4,
                "Hidden": False,
                "AllowGroups": ["a", "b"],
            },
        }
    ]
    (gpu,) = build(inventory(c1=host(facts=facts("c1"))), partitions)["partitions"]
    assert gpu == {
        "name": "gpu",
        "inventory_hosts": ["c1"],
        "nodes": ["c1"],
        "hostlist": "c1",
        "default": True,
        "max_time": "2-00:00:00",
        "state": "UP",
        "options": {"OverSubscribe": "EXCLUSIVE", "MaxNodes": "4", "Hidden": "NO", "AllowGroups": "a,b"},
    }


def test_no_default_partition_warns_and_the_first_becomes_default():
    partitions = [{"name": "a", "groups": ["compute"]}, {"name": "b", "groups": ["compute"]}]
    result = build(inventory(c1=host(facts=facts("c1"))), partitions)
    assert result["errors"] == []
    assert [p["default"] for p in result["partitions"]] == [True, False]
    (warning,) = result["warnings"]
    assert "'a' becomes the default" in warning


def test_host_in_no_partition_is_not_a_node_and_not_an_error():
    hosts = inventory(c1=host(facts=facts("c1")), login=host(groups=["login"]))
    result = build(hosts)
    assert result["errors"] == []
    assert [n["inventory_hostname"] for n in result["nodes"]] == ["c1"]


def test_node_order_is_first_appearance_across_partitions_in_inventory_order():
    hosts = inventory(
        c1=host(groups=["cpu"], facts=facts("c1")),
        c2=host(groups=["gpu"], facts=facts("c2")),
        c3=host(groups=["gpu"], facts=facts("c3")),
        c4=host(groups=["cpu"], facts=facts("c4")),
    )
    partitions = [
        {"name": "gpu", "nodes": ["c3"], "groups": ["gpu"], "default": True},
        {"name": "all", "groups": ["cpu", "gpu"]},
    ]
    result = build(hosts, partitions)
    assert [n["name"] for n in result["nodes"]] == ["c2", "c3", "c1", "c4"]
    assert [p["name"] for p in result["partitions"]] == ["gpu", "all"]
    assert result["partitions"][1]["nodes"] == ["c1", "c2", "c3", "c4"]
    assert result["partitions"][1]["hostlist"] == "c[1-4]"


def test_controller_and_dbd():
    hosts = inventory(c1=host(facts=facts("c1")), db=host(groups=["slurm_dbd"], ansible_host="10.0.0.20"))
    result = build(hosts, dbd_hosts=["db"])
    assert result["controller"] == {"name": "head", "addr": "10.0.0.10", "inventory_hostname": "head"}
    assert result["dbd"] == {"name": "db", "addr": "10.0.0.20", "inventory_hostname": "db"}
    assert build(hosts)["dbd"] is None


# --- hostlist ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (
            ["compute1", "compute2", "compute3", "compute5", "gpu-a01", "gpu-a02"],
            "compute[1-3,5],gpu-a[01-02]",
        ),
        (["node08", "node09", "node10", "node11"], "node[08-11]"),
        (["node9", "node10", "node11"], "node[9-11]"),
        (["node08", "node9"], "node08,node9"),
        (["n001", "n002", "n1"], "n[001-002],n1"),
        (["c3", "c1", "c2", "c1"], "c[1-3]"),
        (["c1", "c3", "c5"], "c[1,3,5]"),
        (["head"], "head"),
        (["compute7"], "compute7"),
        (["gpu-a01"], "gpu-a01"),
        (["login", "c1", "c2", "login"], "login,c[1-2]"),
        (["ip-10-0-1-23", "ip-10-0-1-24", "ip-10-0-2-5"], "ip-10-0-1-[23-24],ip-10-0-2-5"),
        ([], ""),
    ],
)
def test_hostlist(names, expected):
    assert hostlist(names) == expected
    assert slurm_hostlist(names) == expected


def test_hostlist_filter_takes_a_single_name_and_refuses_non_strings():
    assert slurm_hostlist("head") == "head"
    with pytest.raises(AnsibleFilterError, match="slurm_hostlist"):
        slurm_hostlist(["c1", 2])


# --- the slurm_cluster filter ----------------------------------------------------------------------


class LazyVars(dict):
    """Stands in for a host's lazy variables: only ``get`` works, as the filter must use."""

    def __getitem__(self, key):
        raise AssertionError(f"hostvars[host][{key!r}] was used; use .get")


def test_filter_builds_hosts_from_hostvars_and_groups():
    hostvars = {
        "head": LazyVars(ansible_host="10.0.0.10", ansible_facts=facts("head", address="10.0.0.10")),
        "c1": LazyVars(ansible_facts=facts("c1", memtotal_mb=64000), slurm_node_features=["big"]),
        "c2": LazyVars(mlhpc_instance_type="p5.48xlarge", ansible_host="10.0.0.12"),
        "c3": LazyVars(ansible_facts={}),
        "stray": LazyVars(ansible_facts=facts("stray")),
    }
    groups = {
        "all": ["head", "c1", "c2", "c3"],
        "ungrouped": [],
        "slurm_controller": ["head"],
        "slurm_compute": ["c1", "c2"],
        "extra": ["c3", "stray"],
    }
    partitions = [{"name": "batch", "groups": ["slurm_compute"], "default": True}]
    result = slurm_cluster(hostvars, groups, partitions, memory_reserve_mib=2048)
    assert result["errors"] == []
    assert [n["name"] for n in result["nodes"]] == ["c1", "c2"]
    assert node(result, "c1")["real_memory"] == 64000 - 2048
    assert node(result, "c1")["features"] == ["big"]
    assert node(result, "c2")["gres"] == "gpu:h100:8"
    assert node(result, "c2")["addr"] == "10.0.0.12"
    assert result["controller"]["name"] == "head"
    assert result["dbd"] is None
    assert result["partitions"][0]["hostlist"] == "c[1-2]"


def test_filter_ignores_hosts_outside_groups_all():
    hostvars = {"head": LazyVars(ansible_facts=facts("head")), "stray": LazyVars(ansible_facts=facts("s"))}
    groups = {"all": ["head"], "slurm_controller": ["head"], "extra": ["stray"]}
    message = one_error(
        slurm_cluster(hostvars, groups, [{"name": "p", "groups": ["extra"], "default": True}])
    )
    assert "'extra'" in message


def test_filter_uses_the_named_controller_group():
    hostvars = {"h": LazyVars(ansible_facts=facts("h")), "c1": LazyVars(ansible_facts=facts("c1"))}
    groups = {"all": ["h", "c1"], "ctl": ["h"], "compute": ["c1"]}
    partitions = [{"name": "p", "groups": ["compute"], "default": True}]
    assert slurm_cluster(hostvars, groups, partitions, controller_group="ctl")["controller"]["name"] == "h"
    message = one_error(slurm_cluster(hostvars, groups, partitions))
    assert "'slurm_controller'" in message


def test_filter_refuses_arguments_in_the_wrong_order():
    with pytest.raises(AnsibleFilterError, match="groups"):
        slurm_cluster({}, [], [])
