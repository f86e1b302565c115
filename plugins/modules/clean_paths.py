#!/usr/bin/python
# Copyright: mlhpc.cluster maintainers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: clean_paths
short_description: Remove or empty many paths in one step
version_added: 0.1.0
description:
  - Removes a list of paths (O(state=absent)) or truncates a list of regular files to zero
    bytes (O(state=empty)) in one module run, where a loop over M(ansible.builtin.file)
    would take one run per path. Meant for image hygiene over lists found with
    M(ansible.builtin.find).
  - Idempotent. A path that is already gone (or already empty) is not reported; the task
    changes only when at least one path changed.
  - O(state=empty) keeps each file's inode, owner and mode, so services holding the file open
    keep writing to it.
author:
  - mlhpc.cluster maintainers
options:
  paths:
    description:
      - Absolute paths to remove or empty. Globs are not expanded.
    type: list
    elements: path
    required: true
  state:
    description:
      - V(absent) removes files, links and directories (with their content). A link is removed,
        not what it points to.
      - V(empty) truncates regular files to zero bytes. Missing paths are skipped; a path that
        exists and is not a regular file fails the task.
    type: str
    choices: [absent, empty]
    default: absent
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: posix
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
seealso:
  - module: ansible.builtin.find
  - module: ansible.builtin.file
"""

EXAMPLES = r"""
- name: Find downloaded packages
  ansible.builtin.find:
    paths: /var/cache/apt/archives
    patterns: ["*.deb"]
  register: debs

- name: Remove downloaded packages
  mlhpc.cluster.clean_paths:
    paths: "{{ debs.files | map(attribute='path') | list }}"

- name: Truncate logs, keeping their owners and modes
  mlhpc.cluster.clean_paths:
    paths: [/var/log/dpkg.log, /var/log/apt/history.log]
    state: empty
"""

RETURN = r"""
paths:
  description: The paths that were removed or emptied (in check mode, that would have been).
  returned: always
  type: list
  elements: str
  sample: [/var/cache/apt/pkgcache.bin]
"""

import os
import shutil
import stat

from ansible.module_utils.basic import AnsibleModule


def _lstat(path):
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def remove(path, check_mode):
    """Remove ``path``; return True when it existed."""
    st = _lstat(path)
    if st is None:
        return False
    if not check_mode:
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    return True


def empty(path, check_mode):
    """Truncate the regular file ``path`` to zero bytes; return True when it had content."""
    st = _lstat(path)
    if st is None:
        return False
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path} is not a regular file; state=empty truncates regular files only")
    if st.st_size == 0:
        return False
    if not check_mode:
        os.truncate(path, 0)
    return True


def main():
    module = AnsibleModule(
        argument_spec=dict(
            paths=dict(type="list", elements="path", required=True),
            state=dict(type="str", choices=["absent", "empty"], default="absent"),
        ),
        supports_check_mode=True,
    )
    paths = module.params["paths"]
    relative = [p for p in paths if not os.path.isabs(p)]
    if relative:
        module.fail_json(msg=f"paths must be absolute: {', '.join(relative)}")

    action = remove if module.params["state"] == "absent" else empty
    changed = []
    for path in dict.fromkeys(os.path.normpath(p) for p in paths):
        if path == os.sep:
            module.fail_json(msg="refusing to clean /", paths=changed)
        try:
            if action(path, module.check_mode):
                changed.append(path)
        except (OSError, ValueError) as exc:
            module.fail_json(msg=f"cannot clean {path}: {exc}", paths=changed)
    module.exit_json(changed=bool(changed), paths=changed)


if __name__ == "__main__":
    main()
