# Copyright: mlhpc.cluster maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
name: instance_profile
short_description: The hardware profile of an instance type
version_added: 0.1.0
description:
  - Returns the profile of an EC2 instance type from the collection's instance profile table
    (C(plugins/module_utils/instance_profiles.py)), the same table the
    M(mlhpc.cluster.instance_facts) module reads.
  - Use it where there is no host to ask, such as rendering a Slurm configuration for a queue
    of a given instance type from the controller.
  - An instance type the table does not know is an error that names the type and the known ones.
author:
  - mlhpc.cluster maintainers
positional: _input
options:
  _input:
    description: The instance type, for example C(p5.48xlarge).
    type: str
    required: true
seealso:
  - module: mlhpc.cluster.instance_facts
    description: Decides the instance type of a host and sets its profile as a fact.
"""

EXAMPLES = r"""
- name: Show how many GPUs a p5.48xlarge carries
  ansible.builtin.debug:
    msg: "{{ ('p5.48xlarge' | mlhpc.cluster.instance_profile).accelerator.count }}"
  # => 8

- name: Decide whether a queue's nodes need the NVIDIA fabric manager
  ansible.builtin.set_fact:
    queue_needs_fabric_manager: "{{ (slurm_queue_instance_type | mlhpc.cluster.instance_profile).nvswitch }}"
"""

RETURN = r"""
_value:
  description:
    - The profile, a new copy on every call.
    - Keys are C(instance_type), C(family), C(arch), C(vcpus), C(sockets), C(cores_per_socket),
      C(threads_per_core), C(memory_mib), C(accelerator) (C(kind), C(model), C(count),
      C(memory_gib), C(cuda_arch), C(neuron_cores)), C(efa_interfaces), C(nvswitch),
      C(nvlinks_per_gpu), C(nvlink_generation), C(nccl_busbw_floor_gbps),
      C(efa_late_enumeration) and C(imex).
  type: dict
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.mlhpc.cluster.plugins.module_utils.instance_profiles import (
    UnknownInstanceType,
    get_profile,
)


def instance_profile(instance_type):
    """Return the profile of ``instance_type``; raise AnsibleFilterError for unknown types."""
    if not isinstance(instance_type, str):
        raise AnsibleFilterError(
            f"instance_profile expects an instance type string, got {type(instance_type).__name__}"
        )
    try:
        return get_profile(instance_type.strip())
    except UnknownInstanceType as exc:
        raise AnsibleFilterError(str(exc)) from None


class FilterModule:
    def filters(self):
        return {"instance_profile": instance_profile}
