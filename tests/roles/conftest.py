"""Run a role's preflight against inventory hosts that are never touched.

Every host uses the local connection and the play runs in check mode, so nothing on this
machine changes even if a role misbehaved. Facts can be replaced per host (``facts``) to
stand for platforms or hardware this machine does not have. The JSON callback gives the
ordered task results, from which tests decide where, and why, a run failed.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PREFLIGHT_ACTIONS = {
    "ansible.builtin.assert",
    "ansible.builtin.validate_argument_spec",
    "ansible.builtin.set_fact",
    "ansible.builtin.include_vars",
    "ansible.builtin.fail",
    "ansible.builtin.gather_facts",
    "ansible.builtin.setup",
    "ansible.builtin.import_tasks",
    "ansible.builtin.include_tasks",
    "ansible.builtin.include_role",
    "assert",
    "validate_argument_spec",
    "set_fact",
    "include_vars",
    "fail",
    "gather_facts",
    "setup",
}


@dataclass
class RoleRun:
    rc: int
    tasks: list = field(default_factory=list)
    stdout: str = ""

    @property
    def failures(self):
        """(task name, host, message) for every failed task result."""
        out = []
        for task in self.tasks:
            for host, res in task["hosts"].items():
                if res.get("failed") and not res.get("skipped"):
                    msg = " ".join(
                        [str(res.get("msg", ""))]
                        + [str(r.get("msg", "")) for r in res.get("results", []) if r.get("failed")]
                    )
                    out.append((task["task"]["name"], host, str(msg)))
        return out

    @property
    def messages(self):
        return " ".join(msg for _, _, msg in self.failures)

    def changed_before_failure(self):
        """Tasks that changed something or were not preflight checks, before the first failure."""
        seen = []
        for task in self.tasks:
            results = task["hosts"].values()
            if any(r.get("failed") for r in results):
                break
            acting = [r for r in results if not r.get("skipped")]
            if any(r.get("changed") or r.get("action") not in PREFLIGHT_ACTIONS for r in acting):
                seen.append(task["task"]["name"])
        return seen


@pytest.fixture
def run_role(tmp_path):
    def run(role, *, hosts, group_vars=None, host_vars=None, facts=None, tasks_from="main"):
        """Run role ``role`` on ``hosts`` ({name: [groups]}) in check mode.

        ``facts`` maps a host to facts that replace gathered ones (e.g. distribution).
        """
        inventory = {"all": {"hosts": {}, "children": {}, "vars": group_vars or {}}}
        for host, groups in hosts.items():
            inventory["all"]["hosts"][host] = {
                "ansible_connection": "local",
                "ansible_python_interpreter": "{{ ansible_playbook_python }}",
                "mlhpc_test_facts": (facts or {}).get(host, {}),
                **(host_vars or {}).get(host, {}),
            }
            for g in groups:
                inventory["all"]["children"].setdefault(g, {"hosts": {}})["hosts"][host] = None
        play = [
            {
                "name": f"Preflight of {role}",
                "hosts": "all",
                "gather_facts": True,
                "tasks": [
                    {
                        "name": "Stand in facts for this host",
                        "ansible.builtin.set_fact": {
                            "cacheable": True,
                            **{
                                k: f"{{{{ mlhpc_test_facts['{k}'] | default(ansible_facts['{k}']) }}}}"
                                for k in _fact_keys(facts)
                            },
                        },
                        "when": "mlhpc_test_facts | length > 0",
                    },
                    {
                        "name": "Run the role",
                        "ansible.builtin.include_role": {
                            "name": f"mlhpc.cluster.{role}",
                            "tasks_from": tasks_from,
                        },
                    },
                ],
            }
        ]
        (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory))
        (tmp_path / "play.yml").write_text(yaml.safe_dump(play, sort_keys=False))
        env = dict(
            os.environ,
            ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
            ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
            ANSIBLE_CACHE_PLUGIN="memory",
            ANSIBLE_LOCALHOST_WARNING="false",
            ANSIBLE_INVENTORY_UNPARSED_WARNING="false",
        )
        proc = subprocess.run(
            [str(ROOT / ".venv/bin/ansible-playbook"), "--check", "-i", "inventory.yml", "play.yml"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        try:
            doc = json.loads(proc.stdout[proc.stdout.index("{") :])
        except ValueError:
            pytest.fail(
                f"no JSON from ansible-playbook (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        tasks = [t for play in doc["plays"] for t in play["tasks"]]
        return RoleRun(rc=proc.returncode, tasks=tasks, stdout=proc.stdout)

    return run


def _fact_keys(facts):
    keys = set()
    for f in (facts or {}).values():
        keys.update(f)
    return sorted(keys)
