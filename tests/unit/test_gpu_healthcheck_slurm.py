"""mlhpc-gpu-healthcheck-slurm: what each Slurm hook does with the checker's three outcomes."""

from __future__ import annotations

import json

import pytest

from ansible_collections.mlhpc.cluster.tests.unit.conftest import load_script

hooks = load_script("roles/gpu_healthcheck/files/mlhpc-gpu-healthcheck-slurm")

SETTINGS = {
    "checker": "/usr/local/sbin/mlhpc-gpu-healthcheck",
    "config": "/etc/mlhpc/healthcheck.json",
    "node_name": "compute1",
    "scontrol": "/usr/bin/scontrol",
    "sinfo": "/usr/bin/sinfo",
    "state_dir": "/var/lib/mlhpc/healthcheck",
    "textfile": "/var/lib/prometheus/node-exporter/mlhpc_healthcheck.prom",
    "checks": {"prolog": [0, 2], "epilog": [0], "healthcheck": [0, 2, 3], "quarantine": [0, 1, 2, 3]},
    "checker_args": ["--sysfs-root", "/srv/sysfs"],
}


class FakeNode:
    """Stands in for the checker, sinfo and scontrol; records every command."""

    def __init__(self, checker=(0, "healthy"), state="idle", reason="none", scontrol_rc=0):
        self.checker = checker
        self.state = state
        self.reason = reason
        self.scontrol_rc = scontrol_rc
        self.calls = []

    def __call__(self, argv, timeout):
        self.calls.append(argv)
        if argv[0] == SETTINGS["checker"]:
            if isinstance(self.checker, Exception):
                raise self.checker
            code, line = self.checker
            return hooks.Completed(code, line + "\n")
        if argv[0] == SETTINGS["sinfo"]:
            return hooks.Completed(0, f"{self.state}|{self.reason}\n")
        if argv[0] == SETTINGS["scontrol"]:
            if self.scontrol_rc == 0:
                update = dict(arg.split("=", 1) for arg in argv[2:])
                if update.get("State") == "DRAIN":
                    self.state, self.reason = "drained", update["Reason"]
                elif update.get("State") == "RESUME":
                    self.state, self.reason = "idle", "none"
            return hooks.Completed(self.scontrol_rc, "", "" if self.scontrol_rc == 0 else "Access denied")
        raise AssertionError(f"unexpected command {argv}")

    def checker_calls(self):
        return [c for c in self.calls if c[0] == SETTINGS["checker"]]

    def scontrol_calls(self):
        return [c for c in self.calls if c[0] == SETTINGS["scontrol"]]


def run(hook, node, settings=SETTINGS, extra=()):
    messages = []
    hooks_object = hooks.Hooks(settings, node, messages.append)
    code = hooks_object.quarantine(**dict(extra)) if hook == "quarantine" else getattr(hooks_object, hook)()
    return code, messages


def test_prolog_runs_its_checks_and_lets_a_healthy_node_run_the_job():
    node = FakeNode()
    code, messages = run("prolog", node)
    assert code == 0 and messages == []
    (argv,) = node.checker_calls()
    assert argv[argv.index("--checks") + 1] == "0,2"
    assert argv[argv.index("--node-name") + 1] == "compute1"
    assert argv[argv.index("--json-out") + 1] == "/var/lib/mlhpc/healthcheck/prolog.json"
    assert argv[argv.index("--textfile") + 1] == SETTINGS["textfile"]
    assert argv[-2:] == ["--sysfs-root", "/srv/sysfs"]
    assert node.scontrol_calls() == []


def test_prolog_failure_drains_with_the_reason_and_keeps_the_job_off():
    node = FakeNode(checker=(1, "nvidia_smi: 7/8 GPUs visible"))
    code, messages = run("prolog", node)
    assert code == 1
    assert node.scontrol_calls() == [
        [
            "/usr/bin/scontrol",
            "update",
            "NodeName=compute1",
            "State=DRAIN",
            "Reason=mlhpc-healthcheck: nvidia_smi: 7/8 GPUs visible",
        ]
    ]
    assert "drained compute1" in messages[0]


@pytest.mark.parametrize(
    "checker",
    [
        (2, "fault: nvidia_smi: cannot run nvidia-smi: No such file or directory"),
        hooks.HookError("/usr/local/sbin/mlhpc-gpu-healthcheck timed out after 1800s"),
        (-9, ""),
    ],
)
def test_prolog_checker_fault_is_reported_and_never_drains(checker):
    node = FakeNode(checker=checker)
    code, messages = run("prolog", node)
    assert code == 0
    assert node.scontrol_calls() == []
    assert "checker fault, node left in service" in messages[0]


def test_epilog_drains_on_failure_but_always_exits_0():
    node = FakeNode(checker=(1, "efa: 31/32 EFA devices"))
    code, _ = run("epilog", node)
    assert code == 0
    assert node.reason == "mlhpc-healthcheck: efa: 31/32 EFA devices"
    assert node.checker_calls()[0][node.checker_calls()[0].index("--checks") + 1] == "0"


def test_healthcheck_keeps_the_reason_of_a_drained_node():
    node = FakeNode(checker=(1, "nvidia_smi: 7/8 GPUs visible"), state="drained", reason="replace: earlier")
    code, messages = run("healthcheck", node)
    assert code == 0
    assert node.scontrol_calls() == []
    assert node.reason == "replace: earlier"
    assert "reason kept" in messages[0]


def test_healthcheck_drains_a_node_in_service():
    node = FakeNode(checker=(1, "topology: GPU 3: 17/18 NVLinks active"), state="mixed")
    assert run("healthcheck", node)[0] == 0
    assert node.state == "drained"
    assert node.reason == "mlhpc-healthcheck: topology: GPU 3: 17/18 NVLinks active"


def test_drain_failure_is_logged_and_the_prolog_still_keeps_the_job_off():
    node = FakeNode(checker=(1, "nvidia_smi: 7/8 GPUs visible"), scontrol_rc=1)
    code, messages = run("prolog", node)
    assert code == 1
    assert "cannot drain" in messages[0] and "Access denied" in messages[0]


def test_quarantine_resumes_a_node_that_passes_every_check():
    node = FakeNode(state="drained", reason="mlhpc-healthcheck: nvidia_smi: 7/8 GPUs visible")
    code, messages = run("quarantine", node)
    assert code == 0
    argv = node.checker_calls()[0]
    assert argv[argv.index("--checks") + 1] == "0,1,2,3"
    assert node.scontrol_calls()[-1] == ["/usr/bin/scontrol", "update", "NodeName=compute1", "State=RESUME"]
    assert node.state == "idle"
    assert "resumed" in messages[0]


def test_quarantine_leaves_a_failing_node_drained_for_replacement():
    node = FakeNode(
        checker=(1, "dcgm: DCGM memory on GPU 2: uncorrectable"), state="drained", reason="Prolog error"
    )
    code, _ = run("quarantine", node)
    assert code == 1
    assert node.state == "drained"
    assert node.reason == "replace: dcgm: DCGM memory on GPU 2: uncorrectable"


def test_quarantine_leaves_the_node_alone_on_a_checker_fault():
    node = FakeNode(
        checker=(2, "fault: dcgm: dcgmi timed out after 900s"), state="drained", reason="mlhpc-healthcheck: x"
    )
    code, messages = run("quarantine", node)
    assert code == 2
    assert node.scontrol_calls() == []
    assert node.reason == "mlhpc-healthcheck: x"
    assert "left as it is" in messages[0]


@pytest.mark.parametrize(
    ("state", "reason", "expected"),
    [("idle", "none", "not drained"), ("draining", "mlhpc-healthcheck: x", "not drained")],
)
def test_quarantine_decides_only_drained_nodes(state, reason, expected):
    node = FakeNode(state=state, reason=reason)
    code, messages = run("quarantine", node)
    assert code == 3 and expected in messages[0]
    assert node.checker_calls() == []


def test_quarantine_leaves_nodes_drained_by_people_unless_forced():
    node = FakeNode(state="drained", reason="bad DIMM, ticket 4711")
    code, messages = run("quarantine", node)
    assert code == 3 and "--force" in messages[0]
    code, _ = run("quarantine", node, extra={"force": True})
    assert code == 0 and node.state == "idle"


def test_hook_is_chosen_by_program_name_and_settings_come_from_json(tmp_path):
    path = tmp_path / "hooks.json"
    path.write_text(json.dumps(SETTINGS))
    node = FakeNode(checker=(1, "nvidia_smi: 7/8 GPUs visible"))
    logged = []
    code = hooks.main(
        ["--hooks-config", str(path)],
        runner=node,
        log=logged.append,
        program="/usr/local/sbin/mlhpc-slurm-prolog",
    )
    assert code == 1
    assert node.reason.startswith("mlhpc-healthcheck: ")
    node = FakeNode(state="drained", reason="mlhpc-healthcheck: x")
    code = hooks.main(
        ["quarantine", "--hooks-config", str(path)], runner=node, log=logged.append, program="x"
    )
    assert code == 0 and node.state == "idle"


@pytest.mark.parametrize(("program", "expected"), [("mlhpc-slurm-prolog", 0), ("x", 2)])
def test_unreadable_settings_never_drain(tmp_path, program, expected):
    logged = []
    args = ["--hooks-config", str(tmp_path / "missing.json")]
    if program == "x":
        args.insert(0, "quarantine")
    code = hooks.main(args, runner=FakeNode(), log=logged.append, program=program)
    assert code == expected
    assert "fault: cannot read" in logged[0]


def test_settings_are_checked(tmp_path):
    path = tmp_path / "hooks.json"
    path.write_text(json.dumps({**SETTINGS, "checks": {"prolog": [0]}}))
    with pytest.raises(hooks.HookError, match="checks must map each of prolog, epilog"):
        hooks.load_settings(str(path))
    path.write_text(json.dumps({"checker": "x"}))
    with pytest.raises(hooks.HookError, match="lacks config, node_name"):
        hooks.load_settings(str(path))
