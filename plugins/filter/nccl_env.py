"""Filter mlhpc.cluster.nccl_env: EFA/NCCL job environment for an instance type."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.text.converters import to_text
from ansible.module_utils.parsing.convert_bool import boolean

from ansible_collections.mlhpc.cluster.plugins.module_utils.instance_profiles import (
    UnknownInstanceType,
    get_profile,
)
from ansible_collections.mlhpc.cluster.plugins.module_utils.nccl_env import compute_env

DOCUMENTATION = r"""
name: nccl_env
positional: versions
short_description: EFA and NCCL environment variables for training jobs on an instance type
version_added: 0.1.0
author: mlhpc.cluster maintainers
description:
  - Returns the environment variables a distributed training job should export on an
    instance, decided from its hardware (the collection's instance profile table) and the
    versions of libfabric, aws-ofi-nccl, the EFA installer and NCCL installed on it.
  - The rules follow the aws-ofi-nccl EFA cheatsheet. With libfabric >= 1.18 and
    aws-ofi-nccl >= 1.7 only C(FI_EFA_USE_HUGE_PAGE=0) is set among the C(FI_*) variables;
    older versions add C(FI_EFA_USE_DEVICE_RDMA=1) (on the GPUDirect RDMA hosts p4, p5 and p6) or
    C(FI_PROVIDER=efa) and C(NCCL_PROTO=simple) (aws-ofi-nccl <= 1.5).
    EFA installers older than 1.29.1 with NCCL >= 2.19 get C(FI_EFA_SET_CUDA_SYNC_MEMOPS=0).
  - C(FI_EFA_FORK_SAFE=1) is set only for kernels older than 5.15, and no C(RDMAV_*) variable
    is ever set. Hosts without NVLink (g5, g6) get C(NCCL_SHM_USE_CUDA_MEMCPY=1); hosts
    without EFA get no C(FI_*) variable.
  - On p5 and p6 hosts with aws-ofi-nccl >= 1.8 (the first release with the tuner) and NCCL
    >= 2.19 (or NCCL unknown), C(NCCL_TUNER_PLUGIN) points at the aws-ofi-nccl tuner.
  - Neuron instances with EFA get the settings the Neuron SDK documents for its collectives
    (C(FI_PROVIDER=efa), C(FI_EFA_USE_DEVICE_RDMA=1), C(FI_EFA_FORK_SAFE=1) unless the kernel
    is 5.15 or newer) and no C(NCCL_*) variable. CPU instances with EFA get only
    C(FI_EFA_USE_HUGE_PAGE=0) (and C(FI_EFA_FORK_SAFE=1) on old kernels).
  - A version that is missing or unreadable on an EFA GPU instance is taken to be modern;
    the result's O(notes) says which version was unknown and what was assumed.
options:
  _input:
    description:
      - An instance type such as V(p5.48xlarge), or an instance profile dict as the
        collection's instance profile table holds it.
      - V(null) means unknown hardware; the modern EFA/NCCL settings are returned with a note.
    type: raw
    required: true
  versions:
    description:
      - Installed software versions, each a string such as V(1.22.0), V(1.7.3-aws) or
        V(2.18.6-1+cuda12.2). Only the leading numeric part is compared.
      - Quote versions in YAML; an unquoted V(1.20) is the number 1.2, and numbers are
        refused.
      - Keys C(libfabric), C(aws_ofi_nccl), C(efa_installer), C(nccl), C(cuda); any other key
        is an error. C(cuda) only feeds the recommended-version notes for p5 hosts.
    type: dict
    default: {}
  ofi_nccl_prefix:
    description: Install prefix of aws-ofi-nccl, for C(NCCL_TUNER_PLUGIN).
    type: path
    default: /opt/amazon/ofi-nccl
  ofi_nccl_libdir:
    description:
      - Library directory of aws-ofi-nccl when it is not C(<ofi_nccl_prefix>/lib), for
        example C(/opt/amazon/ofi-nccl/lib/x86_64-linux-gnu) where Debian-family packages put it.
    type: path
  kernel:
    description:
      - The running kernel release, usually C(ansible_facts.kernel). Decides
        C(FI_EFA_FORK_SAFE). When omitted, it is not set, except on Neuron instances.
    type: str
  debug:
    description: Add C(NCCL_DEBUG=INFO). Has no effect on Neuron and CPU instances.
    type: bool
    default: false
  socket_ifname:
    description: Value of C(NCCL_SOCKET_IFNAME).
    type: str
    default: ^docker,lo,veth
"""

EXAMPLES = r"""
- name: Compute the job environment for p5 nodes
  ansible.builtin.set_fact:
    job_nccl: >-
      {{ 'p5.48xlarge' | mlhpc.cluster.nccl_env({'libfabric': '1.22.0', 'aws_ofi_nccl': '1.13.2-aws',
                                                  'efa_installer': '1.38.0', 'nccl': '2.23.4-1'},
                                                 kernel=ansible_facts.kernel) }}
  # job_nccl.env:
  #   FI_EFA_USE_HUGE_PAGE: "0"
  #   NCCL_TUNER_PLUGIN: /opt/amazon/ofi-nccl/lib/libnccl-ofi-tuner.so
  #   NCCL_SOCKET_IFNAME: ^docker,lo,veth
  #   TORCH_NCCL_ASYNC_ERROR_HANDLING: "1"

- name: Show what was assumed
  ansible.builtin.debug:
    msg: "{{ job_nccl.notes }}"
  when: job_nccl.notes | length > 0

- name: Write the export block of a job script
  ansible.builtin.copy:
    dest: /etc/profile.d/mlhpc-nccl.sh
    mode: "0644"
    content: |
      {% for name, value in job_nccl.env.items() %}
      export {{ name }}={{ value | quote }}
      {% endfor %}
"""

RETURN = r"""
_value:
  description: The environment and the notes explaining any assumption.
  type: dict
  contains:
    env:
      description: Variable name to value, all values strings, FI_* first, then NCCL_*, then TORCH_NCCL_*.
      type: dict
    notes:
      description:
        - Versions that were unknown and what was assumed instead.
        - Versions below the recommended floor on p5 hosts.
      type: list
      elements: str
"""


def nccl_env(
    profile_or_type,
    versions=None,
    ofi_nccl_prefix=None,
    ofi_nccl_libdir=None,
    kernel=None,
    debug=False,
    socket_ifname=None,
):
    if isinstance(profile_or_type, str):
        try:
            profile = get_profile(to_text(profile_or_type))
        except UnknownInstanceType as err:
            raise AnsibleFilterError(f"nccl_env: {err}") from None
    else:
        profile = profile_or_type
    try:
        debug = boolean(debug, strict=True)
    except TypeError as err:
        raise AnsibleFilterError(f"nccl_env: debug: {err}") from None
    try:
        return compute_env(
            profile,
            versions,
            ofi_nccl_prefix=ofi_nccl_prefix,
            ofi_nccl_libdir=ofi_nccl_libdir,
            kernel=kernel,
            debug=debug,
            socket_ifname=socket_ifname,
        )
    except ValueError as err:
        raise AnsibleFilterError(f"nccl_env: {err}") from None


class FilterModule:
    def filters(self):
        return {"nccl_env": nccl_env}
