# Copyright: mlhpc.cluster maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

"""Filter mlhpc.cluster.monitoring_targets: which exporters run where, and what Prometheus scrapes."""

from __future__ import annotations

DOCUMENTATION = r"""
---
name: monitoring_targets
short_description: The exporters of each host and the Prometheus scrape targets, from the inventory
version_added: 0.1.0
description:
  - Decides, for every host of the monitored groups, which exporters run on it, and returns one
    list of scrape targets per exporter. The site playbook runs each exporter on the hosts of its
    list and the C(prometheus) role scrapes the same lists.
  - The node exporter runs on every host unless C(node_exporter_enabled) is false.
  - The EFA exporter runs where C(efa_exporter_enabled) is true, or, when it is not set, where the
    instance profile has EFA interfaces.
  - The DCGM exporter runs where C(dcgm_exporter_enabled) is true, or, when it is not set, where
    the instance profile has NVIDIA GPUs.
  - The Slurm exporter runs on the hosts with C(slurm_exporter_enabled) true; when no host sets
    it, on the first host of O(controller_group).
  - The instance profile is the host's C(mlhpc_instance) fact (M(mlhpc.cluster.instance_facts)),
    or its C(mlhpc_instance_type) looked up in the profile table.
  - Ports come from the host variables C(node_exporter_port), C(efa_exporter_port),
    C(dcgm_exporter_port) and C(slurm_exporter_port) (defaults 9100, 9109, 9400 and 9341); set
    them in the inventory, where every play sees them.
author:
  - mlhpc.cluster maintainers
positional: _input, groups
options:
  _input:
    description: C(hostvars), or any mapping of inventory hostname to that host's variables.
    type: raw
    required: true
  groups:
    description: The C(groups) magic variable, a mapping of group name to its hosts.
    type: dict
    required: true
  monitored_groups:
    description: Inventory groups whose hosts are monitored.
    type: list
    elements: str
    default: [slurm_controller, slurm_dbd, slurm_compute, slurm_login, monitoring]
  controller_group:
    description: The group of the slurmctld host, where the Slurm exporter runs by default.
    type: str
    default: slurm_controller
"""

EXAMPLES = r"""
- name: Decide which exporters run where
  ansible.builtin.set_fact:
    monitoring: "{{ hostvars | mlhpc.cluster.monitoring_targets(groups) }}"
  run_once: true

- name: Run the EFA exporter where it belongs
  ansible.builtin.include_role:
    name: mlhpc.cluster.efa_exporter
  when: "'efa_exporter' in monitoring.by_host[inventory_hostname] | default([])"
"""

RETURN = r"""
_value:
  description:
    - One list per exporter, in inventory order, and the problems found.
    - Each target has C(host) (the inventory hostname), C(name) (the Slurm node name, else the
      hostname fact, else the first label of the inventory hostname; Prometheus's C(instance)
      label), C(address) (the default IPv4 fact, else C(ansible_host), else the inventory
      hostname) and C(port).
  type: dict
  contains:
    node_exporter:
      description: Node exporter targets.
      type: list
      elements: dict
    efa_exporter:
      description: EFA exporter targets.
      type: list
      elements: dict
    dcgm_exporter:
      description: DCGM exporter targets.
      type: list
      elements: dict
    slurm_exporter:
      description: Slurm exporter targets.
      type: list
      elements: dict
    by_host:
      description: The exporters of each monitored host, by inventory hostname.
      type: dict
    errors:
      description: Each problem as a sentence naming the variable and the fix; empty when none.
      type: list
      elements: str
"""

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

from ansible_collections.mlhpc.cluster.plugins.module_utils.monitoring_targets import (
    CONTROLLER_GROUP,
    DEFAULT_MONITORED_GROUPS,
    EXPORTERS,
    build_targets,
)

# The host variables read; nothing else is pulled (and templated) from hostvars.
HOST_VARS = (
    *(f"{exporter}_enabled" for exporter in EXPORTERS),
    *(f"{exporter}_port" for exporter in EXPORTERS),
    "slurm_node_name",
    "mlhpc_instance_type",
    "mlhpc_instance",
    "ansible_host",
)


def monitoring_targets(
    hostvars, groups, monitored_groups=DEFAULT_MONITORED_GROUPS, controller_group=CONTROLLER_GROUP
):
    if not isinstance(hostvars, Mapping):
        raise AnsibleFilterError(
            "monitoring_targets expects hostvars (a mapping of host to variables), "
            f"got {type(hostvars).__name__}"
        )
    if not isinstance(groups, Mapping):
        raise AnsibleFilterError(
            "monitoring_targets expects the groups variable as its first argument, "
            f"got {type(groups).__name__}"
        )
    if isinstance(monitored_groups, str) or not all(isinstance(g, str) for g in monitored_groups):
        raise AnsibleFilterError("monitoring_targets: monitored_groups must be a list of group names")
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
    return build_targets(hosts, monitored_groups, controller_group)


class FilterModule:
    def filters(self):
        return {"monitoring_targets": monitoring_targets}
