# Copyright: mlhpc.cluster maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

"""Filter mlhpc.cluster.workload_plan: the job scripts to render for a cluster."""

from __future__ import annotations

DOCUMENTATION = r"""
---
name: workload_plan
short_description: Plan the workload job scripts and manifests to render for a cluster
version_added: 0.1.0
description:
  - Checks a request for workloads against the workload catalogue (C(workloads/catalogue.yml))
    and a cluster description, and returns everything the workload templates need.
  - Every problem is collected in RV(_value.errors), each a sentence naming the variable at
    fault (V(workloads_selected), V(workloads_settings), V(workloads_cluster), ...) and what would
    be valid. The role M(mlhpc.cluster.workloads) fails when the list is not empty.
  - Without a selection, every workload some partition of the cluster can run is planned, on
    the default partition when it can, else on the first partition that can.
author:
  - mlhpc.cluster maintainers
positional: cluster
options:
  _input:
    description: The workload catalogue, a mapping with a C(workloads) mapping.
    type: dict
    required: true
  cluster:
    description:
      - The cluster, as C(workloads_cluster) describes it (one partition through C(partition),
        C(instance_type) and C(nodes), or a C(partitions) list), or as the
        P(mlhpc.cluster.workload_cluster#filter) filter describes a Slurm cluster model.
    type: dict
    required: true
  selected:
    description: Workloads to plan; empty plans every workload the cluster can run.
    type: list
    elements: str
    default: []
  settings:
    description:
      - Settings per workload name, each with some of C(partition), C(nodes), C(gpus_per_node),
        C(procs_per_node), C(preset), C(runtimes), C(vars), C(venv) and C(time).
    type: dict
    default: {}
  runtimes:
    description: Runtimes to render job scripts for, C(container) and/or C(host).
    type: list
    elements: str
    default: [container, host]
  kubernetes:
    description: Plan the Kubeflow manifests of the workloads that have them.
    type: bool
    default: true
  shared_dir:
    description: The cluster's shared directory, as the nodes see it.
    type: path
    default: /fsx
  workloads_dir:
    description: Where the rendered catalogue lives on the cluster.
    type: path
    default: <shared_dir>/workloads
  images_dir:
    description: Where container images (squashfs files) live on the cluster.
    type: path
    default: <shared_dir>/images
  versions:
    description:
      - Component versions (C(libfabric), C(aws_ofi_nccl), C(efa_installer), C(nccl), C(cuda))
        where a partition's own do not say.
    type: dict
    default: {}
seealso:
  - plugin: mlhpc.cluster.workload_cluster
    plugin_type: filter
    description: Describes the cluster of a Slurm cluster model for this filter.
  - plugin: mlhpc.cluster.nccl_env
    plugin_type: filter
    description: The EFA/NCCL environment the job scripts export.
"""

EXAMPLES = r"""
- name: Plan the workloads for two p5 nodes
  ansible.builtin.set_fact:
    plan: >-
      {{ lookup('ansible.builtin.file', 'workloads/catalogue.yml') | from_yaml
         | mlhpc.cluster.workload_plan({'instance_type': 'p5.48xlarge', 'nodes': 2, 'partition': 'gpu'},
                                       selected=['nccl-tests'], shared_dir='/fsx') }}

- name: Fail on a bad request
  ansible.builtin.assert:
    that: plan.errors | length == 0
    fail_msg: "{{ plan.errors | join(' ') }}"
"""

RETURN = r"""
_value:
  description: The plan.
  type: dict
  contains:
    workloads:
      description:
        - Workload name to its plan, with C(partition), C(instance_type), C(profile), C(kind),
          C(nodes), C(gpus_per_node), C(procs_per_node), C(runtimes), C(launchers),
          C(tasks_per_node), C(image), C(venv), C(preset), C(presets), C(defaults), C(versions),
          C(kernel), C(kubernetes), C(dir) and C(notes).
      type: dict
    files:
      description:
        - One entry per file to write, with C(workload), C(kind) (C(template) or C(file)),
          C(src) (relative to the catalogue's templates or files), C(dest) (relative to the
          rendered catalogue), C(mode) and C(runtime).
      type: list
      elements: dict
    skipped:
      description: Workloads the cluster cannot run, each with C(name) and C(reason).
      type: list
      elements: dict
    partitions:
      description: The cluster's partitions as checked.
      type: list
      elements: dict
    mounts:
      description: Shared filesystems to mount into containers.
      type: list
      elements: str
    dirs:
      description: C(shared_dir), C(workloads_dir) and C(images_dir).
      type: dict
    errors:
      description: Each problem as a sentence naming the variable. Empty when the request is sound.
      type: list
      elements: str
    notes:
      description: Things worth knowing that do not stop the rendering.
      type: list
      elements: str
"""

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError
from ansible.module_utils.parsing.convert_bool import boolean

from ansible_collections.mlhpc.cluster.plugins.module_utils.workloads import RUNTIMES, build_plan


def workload_plan(
    catalogue,
    cluster,
    selected=None,
    settings=None,
    runtimes=RUNTIMES,
    kubernetes=True,
    shared_dir="/fsx",
    workloads_dir=None,
    images_dir=None,
    versions=None,
):
    if not isinstance(catalogue, Mapping):
        raise AnsibleFilterError(
            f"workload_plan expects the workload catalogue (a mapping), got {type(catalogue).__name__}"
        )
    if not isinstance(shared_dir, str) or not shared_dir.startswith("/"):
        raise AnsibleFilterError(f"workload_plan: shared_dir must be an absolute path, got {shared_dir!r}")
    try:
        kubernetes = boolean(kubernetes, strict=True)
    except TypeError as err:
        raise AnsibleFilterError(f"workload_plan: kubernetes: {err}") from None
    return build_plan(
        catalogue,
        cluster,
        selected=selected or [],
        settings=settings,
        runtimes=runtimes,
        kubernetes=kubernetes,
        shared_dir=shared_dir,
        workloads_dir=workloads_dir,
        images_dir=images_dir,
        versions=versions,
    )


class FilterModule:
    def filters(self):
        return {"workload_plan": workload_plan}
