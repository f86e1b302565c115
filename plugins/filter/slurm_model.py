# Copyright: mlhpc.cluster maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

"""Filter mlhpc.cluster.slurm_cluster: the Slurm cluster model from hostvars and groups."""

from __future__ import annotations

DOCUMENTATION = r"""
---
name: slurm_cluster
short_description: The Slurm cluster model (nodes, partitions, controller) from the inventory
version_added: 0.1.0
description:
  - Builds the data C(slurm.conf) and C(gres.conf) are rendered from, out of C(hostvars),
    C(groups) and the partition settings, and checks it. Every problem is collected in
    RV(_value.errors), each a sentence that names the variable at fault and the fix; a role
    should fail when that list is not empty and show RV(_value.warnings).
  - Only hosts in C(groups['all']) are considered, in that order. A host is a Slurm node when
    some partition takes it, through its O(partitions) C(nodes) or C(groups); a host in no
    partition is simply not in C(slurm.conf).
  - "Node hardware comes from the host's gathered facts when they hold the CPU and memory
    facts: C(CPUs=processor_vcpus), C(Sockets=processor_count),
    C(CoresPerSocket=processor_cores), C(ThreadsPerCore=processor_threads_per_core),
    C(RealMemory=memtotal_mb - memory_reserve_mib) (never below 1)."
  - Without those facts it comes from the instance profile, taken from the host's
    C(mlhpc_instance) fact (set by M(mlhpc.cluster.instance_facts)) or its
    C(mlhpc_instance_type) variable, with C(RealMemory) the profile's memory less
    O(memory_reserve_mib). A host with neither is an error.
  - GPU GRES (C(gpu:h100:8)) and the node features (the instance type, the accelerator model
    in lower case, C(efa) when the instance has EFA interfaces, then the host's
    C(slurm_node_features)) come from the instance profile whenever one is known.
  - "Per-host variables read: C(slurm_node_name) (the NodeName, default the hostname fact,
    else the first label of the inventory hostname), C(slurm_node_real_memory) (RealMemory in
    MiB, at most the host's memory), C(slurm_node_features) (a list), C(mlhpc_instance_type),
    C(mlhpc_instance) and C(ansible_host) (the node address when no default IPv4 fact is known)."
author:
  - mlhpc.cluster maintainers
positional: _input, groups, partitions
options:
  _input:
    description: C(hostvars), or any mapping of inventory hostname to that host's variables.
    type: raw
    required: true
  groups:
    description: The C(groups) magic variable, a mapping of group name to its hosts.
    type: dict
    required: true
  partitions:
    description:
      - The partitions, in the order C(slurm.conf) lists them.
      - Each has C(name) (required; letters, digits, C(-), C(_) and C(.)), C(nodes) (inventory
        hostnames) and/or C(groups) (inventory groups whose hosts are nodes), C(default) (one
        partition at most; the first is the default when none is marked), C(max_time) (a Slurm
        time limit or V(INFINITE), the default), C(state) (V(UP), the default, V(DOWN),
        V(DRAIN) or V(INACTIVE)) and C(options) (more Slurm partition keys, such as
        C(OverSubscribe=EXCLUSIVE) or C(MaxNodes=4), as a mapping; booleans become V(YES) or
        V(NO), lists are joined with commas).
    type: list
    elements: dict
    required: true
  memory_reserve_mib:
    description: Memory kept from Slurm jobs on every node, for the operating system and daemons.
    type: int
    default: 1024
  controller_group:
    description: The inventory group whose first host runs slurmctld.
    type: str
    default: slurm_controller
  dbd_group:
    description:
      - The inventory group whose first host runs slurmdbd.
      - An empty or missing group means no accounting daemon.
    type: str
    default: slurm_dbd
seealso:
  - module: mlhpc.cluster.instance_facts
    description: Sets the C(mlhpc_instance) fact this filter reads the instance profile from.
  - plugin: mlhpc.cluster.slurm_hostlist
    plugin_type: filter
    description: Compresses node names into Slurm hostlist syntax.
"""

EXAMPLES = r"""
- name: Build the Slurm cluster model
  ansible.builtin.set_fact:
    __slurm_cluster: >-
      {{ hostvars | mlhpc.cluster.slurm_cluster(groups, slurm_partitions,
                                                 memory_reserve_mib=slurm_memory_reserve_mib,
                                                 controller_group='slurm_controller') }}
  run_once: true
  vars:
    slurm_partitions:
      - name: gpu
        groups: [slurm_compute]
        default: true
        options:
          OverSubscribe: EXCLUSIVE

- name: Check the Slurm cluster model
  ansible.builtin.assert:
    that: __slurm_cluster.errors | length == 0
    fail_msg: "{{ __slurm_cluster.errors }}"
  run_once: true

# In templates/etc/slurm/slurm.conf.j2:
#   SlurmctldHost={{ __slurm_cluster.controller.name }}({{ __slurm_cluster.controller.addr }})
#   {% for node in __slurm_cluster.nodes %}
#   NodeName={{ node.name }} CPUs={{ node.cpus }} RealMemory={{ node.real_memory }} ...
#   {% endfor %}
#   {% for p in __slurm_cluster.partitions %}
#   PartitionName={{ p.name }} Nodes={{ p.hostlist }} Default={{ 'YES' if p.default else 'NO' }} ...
#   {% endfor %}
"""

RETURN = r"""
_value:
  description: The cluster model, and what is wrong with the inventory.
  type: dict
  contains:
    nodes:
      description:
        - One entry per Slurm node, in the order nodes first appear across the partitions
          (inventory order within a partition).
        - Keys C(name), C(inventory_hostname), C(addr) (default IPv4 fact, else C(ansible_host),
          else null), C(cpus), C(sockets), C(cores_per_socket), C(threads_per_core),
          C(real_memory) (MiB), C(gres) (such as C(gpu:h100:8); null without NVIDIA GPUs),
          C(gpu_type), C(gpu_count), C(features), C(instance_type) (null when unknown) and
          C(source) (C(facts), C(profile) or C(override)).
      type: list
      elements: dict
    partitions:
      description:
        - One entry per partition, in input order, with C(name), C(nodes) (Slurm node names),
          C(inventory_hosts), C(hostlist) (the nodes in Slurm hostlist syntax), C(default),
          C(max_time), C(state) and C(options) (all values strings).
      type: list
      elements: dict
    controller:
      description: C(name), C(addr) and C(inventory_hostname) of the slurmctld host; null when none.
      type: dict
    dbd:
      description: C(name), C(addr) and C(inventory_hostname) of the slurmdbd host; null when none.
      type: dict
    errors:
      description: Each problem as a sentence naming the variable and the fix. Empty when the model is sound.
      type: list
      elements: str
    warnings:
      description: Things worth knowing that do not stop the cluster from working.
      type: list
      elements: str
"""

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

from ansible_collections.mlhpc.cluster.plugins.module_utils.slurm_model import (
    CONTROLLER_GROUP,
    DBD_GROUP,
    DEFAULT_MEMORY_RESERVE_MIB,
    build_cluster,
)

# The host variables the model reads; nothing else is pulled (and templated) from hostvars.
HOST_VARS = (
    "slurm_node_name",
    "slurm_node_real_memory",
    "slurm_node_features",
    "mlhpc_instance_type",
    "mlhpc_instance",
    "ansible_host",
)


def _hosts_input(hostvars, groups):
    if not isinstance(hostvars, Mapping):
        raise AnsibleFilterError(
            f"slurm_cluster expects hostvars (a mapping of host to variables), got {type(hostvars).__name__}"
        )
    if not isinstance(groups, Mapping):
        raise AnsibleFilterError(
            f"slurm_cluster expects the groups variable as its first argument, got {type(groups).__name__}"
        )
    memberships = {}
    for group, members in groups.items():
        for host in members or ():
            memberships.setdefault(host, []).append(group)
    hosts = {}
    for host in groups.get("all") or ():
        if host not in hostvars:
            continue
        host_vars = hostvars[host]
        facts = host_vars.get("ansible_facts") or {}
        hosts[host] = {
            "groups": memberships.get(host, []),
            "vars": {key: host_vars.get(key) for key in HOST_VARS if host_vars.get(key) is not None},
            "facts": facts if isinstance(facts, Mapping) else {},
        }
    return hosts


def slurm_cluster(
    hostvars,
    groups,
    partitions,
    memory_reserve_mib=DEFAULT_MEMORY_RESERVE_MIB,
    controller_group=CONTROLLER_GROUP,
    dbd_group=DBD_GROUP,
):
    """Return build_cluster's model of the inventory described by ``hostvars`` and ``groups``."""
    hosts = _hosts_input(hostvars, groups)
    return build_cluster(
        hosts,
        partitions,
        memory_reserve_mib=memory_reserve_mib,
        controller_hosts=[host for host in groups.get(controller_group) or () if host in hosts],
        dbd_hosts=[host for host in groups.get(dbd_group) or () if host in hosts],
        controller_group=controller_group,
        dbd_group=dbd_group,
    )


class FilterModule:
    def filters(self):
        return {"slurm_cluster": slurm_cluster}
