# Copyright: mlhpc.cluster maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

"""Filter mlhpc.cluster.workload_cluster: a Slurm cluster model as a workload cluster description."""

from __future__ import annotations

DOCUMENTATION = r"""
---
name: workload_cluster
short_description: Describe a Slurm cluster model for the workload plan
version_added: 0.1.0
description:
  - Turns the Slurm cluster model (P(mlhpc.cluster.slurm_cluster#filter)) into the cluster
    description P(mlhpc.cluster.workload_plan#filter) reads, one entry per partition with its
    node count, instance type (of its first node), whether GPUs are scheduled as GRES, and the
    kernel and component versions of its first node.
  - Versions come from the node manifest (C(/etc/mlhpc/manifest.json), written by the
    M(mlhpc.cluster.manifest) role), under the component names C(libfabric), C(aws_ofi_nccl),
    C(efa_installer), C(nccl) and C(cuda) (C(aws-ofi-nccl), C(efa-installer) and C(efa) are
    read as well).
  - A partition whose nodes are of several instance types is described by its first node's, with
    a warning.
author:
  - mlhpc.cluster maintainers
positional: node_info
options:
  _input:
    description: The Slurm cluster model.
    type: dict
    required: true
  node_info:
    description:
      - Inventory hostname to what was read on it, C(kernel) (the running kernel release),
        C(manifest) (the parsed node manifest) and C(manifest_path).
    type: dict
    default: {}
  mounts:
    description: Shared filesystems to mount into containers.
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: Describe the cluster for the workload plan
  ansible.builtin.set_fact:
    described: >-
      {{ hostvars | mlhpc.cluster.slurm_cluster(groups, slurm_partitions)
         | mlhpc.cluster.workload_cluster({'compute1': {'kernel': '6.8.0-1015-aws', 'manifest': manifest,
                                                       'manifest_path': '/etc/mlhpc/manifest.json'}},
                                          mounts=['/fsx']) }}
  # described.cluster.partitions:
  #   - {name: gpu, instance_type: p5.48xlarge, nodes: 2, default: true, gres: true,
  #      kernel: 6.8.0-1015-aws, versions: {nccl: 2.23.4, ...}, versions_source: ...}
"""

RETURN = r"""
_value:
  description: The description and what is worth knowing about it.
  type: dict
  contains:
    cluster:
      description:
        - C(partitions) (a list of C(name), C(instance_type), C(nodes), C(default), C(gres), and
          where known C(kernel), C(versions) and C(versions_source)) and C(mounts).
      type: dict
    warnings:
      description: Partitions that mix instance types.
      type: list
      elements: str
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.mlhpc.cluster.plugins.module_utils.workloads import cluster_from_model


def workload_cluster(model, node_info=None, mounts=None):
    try:
        return cluster_from_model(model, node_info or {}, mounts or [])
    except ValueError as err:
        raise AnsibleFilterError(f"workload_cluster: {err}") from None


class FilterModule:
    def filters(self):
        return {"workload_cluster": workload_cluster}
