# Copyright: mlhpc.cluster maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

"""Filter mlhpc.cluster.slurm_hostlist: node names in Slurm hostlist syntax."""

from __future__ import annotations

DOCUMENTATION = r"""
---
name: slurm_hostlist
short_description: Compress Slurm node names into hostlist syntax
version_added: 0.1.0
description:
  - Returns node names in Slurm hostlist syntax, for C(Nodes=) lines of C(slurm.conf).
  - Names sharing a prefix and a numeric suffix are bracketed, such as C(compute[1-3,5]).
    A suffix with leading zeros keeps its width (C(gpu-a[01-02])), and an unpadded number of
    the same width joins it (C(node[08-10])). Names without a numeric suffix, and single
    names, are listed as they are.
  - Duplicates are dropped, and groups appear in the order their first name does.
author:
  - mlhpc.cluster maintainers
positional: _input
options:
  _input:
    description: The node names; a single string counts as a list of one name.
    type: list
    elements: str
    required: true
seealso:
  - plugin: mlhpc.cluster.slurm_cluster
    plugin_type: filter
    description: Builds the Slurm cluster model, whose partitions carry their hostlist.
"""

EXAMPLES = r"""
- name: Show a partition's nodes in hostlist syntax
  ansible.builtin.debug:
    msg: "{{ __nodes | mlhpc.cluster.slurm_hostlist }}"
  vars:
    __nodes: [compute1, compute2, compute3, compute5, gpu-a01, gpu-a02]
  # => compute[1-3,5],gpu-a[01-02]
"""

RETURN = r"""
_value:
  description: The names in Slurm hostlist syntax; an empty string for no names.
  type: str
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.mlhpc.cluster.plugins.module_utils.slurm_model import hostlist


def slurm_hostlist(names):
    """Return ``names`` in Slurm hostlist syntax; raise AnsibleFilterError for non-strings."""
    if isinstance(names, str):
        names = [names]
    try:
        return hostlist(names)
    except TypeError as err:
        raise AnsibleFilterError(f"slurm_hostlist: {err}") from None


class FilterModule:
    def filters(self):
        return {"slurm_hostlist": slurm_hostlist}
