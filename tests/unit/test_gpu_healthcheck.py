"""mlhpc-gpu-healthcheck: recorded nvidia-smi, kernel log and dcgmi output of an 8x H100 node."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from ansible_collections.mlhpc.cluster.tests.unit.conftest import FIXTURES, load_script, parse_exposition

checker = load_script("roles/gpu_healthcheck/files/mlhpc-gpu-healthcheck")
Completed = checker.Completed
GPU = FIXTURES / "gpu"

# p5.48xlarge, as the instance profile describes it.
P5 = {
    "gpu_count": 8,
    "efa_interfaces": 32,
    "nvlinks_per_gpu": 18,
    "nvswitch": True,
    "nccl_busbw_floor_gbps": 800,
}


def fixture(name: str, returncode: int = 0) -> Completed:
    return Completed(returncode, (GPU / name).read_text())


class FakeNode:
    """The command runner: recorded output per tool, or an exception to raise; every call is kept."""

    def __init__(self, responses: dict | None = None, **tools):
        self.responses = {
            "nvidia-smi --query-gpu": fixture("nvidia_smi_query_gpu_healthy.csv"),
            "nvidia-smi --query-remapped-rows": fixture("nvidia_smi_remapped_rows_healthy.csv"),
            "nvidia-smi nvlink": fixture("nvidia_smi_nvlink_healthy.txt"),
            "journalctl": fixture("kernel_log_healthy.txt"),
            "dmesg": fixture("kernel_log_healthy.txt"),
            "dcgmi": fixture("dcgmi_diag_r2_pass.json"),
            "fi_info": Completed(0, "provider: efa\n    fabric: efa\n    domain: rdmap16s0-rdm\n"),
            "systemctl": Completed(0, "active\n"),
            "scontrol": Completed(0, ""),
        }
        overrides = {**(responses or {}), **tools}
        assert set(overrides) <= set(self.responses), (
            f"no such command: {set(overrides) - set(self.responses)}"
        )
        self.responses.update(overrides)
        self.calls: list[tuple[list[str], float]] = []

    def __call__(self, argv: list[str], timeout: float) -> Completed:
        self.calls.append((argv, timeout))
        tool = os.path.basename(argv[0])
        key = f"{tool} {argv[1].split('=')[0]}" if tool == "nvidia-smi" else tool
        response = self.responses[key]
        if callable(response):
            return response(argv, timeout)
        if isinstance(response, Exception):
            raise response
        return response

    def tools(self) -> list[str]:
        return [os.path.basename(argv[0]) for argv, _ in self.calls]


@pytest.fixture
def node(tmp_path: Path) -> Path:
    """A p5 node's /sys (32 EFA devices) and /proc, and a config file for it."""
    ib = tmp_path / "sys" / "class" / "infiniband"
    for index in range(32):
        device = ib / f"rdmap{index + 16}s0"
        (device / "device").mkdir(parents=True)
        (device / "device" / "driver").symlink_to("../../../../bus/pci/drivers/efa")
    (tmp_path / "proc" / "self").mkdir(parents=True)
    shutil.copy(GPU / "proc_modules.txt", tmp_path / "proc" / "modules")
    shutil.copy(GPU / "proc_self_limits.txt", tmp_path / "proc" / "self" / "limits")
    write_config(tmp_path)
    return tmp_path


def write_config(root: Path, **overrides) -> Path:
    path = root / "healthcheck.json"
    path.write_text(json.dumps({**P5, **overrides}))
    return path


def run(root: Path, runner: FakeNode, *args: str, sleep=None) -> tuple[int, dict, dict]:
    """Run the checker on the fixture node; return exit code, JSON report and textfile samples."""
    code = checker.main(
        [
            "--config", str(root / "healthcheck.json"),
            "--sysfs-root", str(root / "sys"),
            "--proc-root", str(root / "proc"),
            "--json-out", str(root / "result.json"),
            "--textfile", str(root / "mlhpc_healthcheck.prom"),
            "--node-name", "gpu-st-p5-3",
            *args,
        ],
        runner=runner,
        sleep=sleep or (lambda seconds: None),
    )  # fmt: skip
    report = json.loads((root / "result.json").read_text())
    samples, _, types = parse_exposition((root / "mlhpc_healthcheck.prom").read_text())
    assert types == dict.fromkeys(
        [
            "mlhpc_healthcheck_status",
            "mlhpc_healthcheck_fault",
            "mlhpc_healthcheck_action",
            "mlhpc_healthcheck_last_run_timestamp_seconds",
        ],
        "gauge",
    )
    return code, report, samples


def status(samples: dict, check: str) -> float:
    return samples[("mlhpc_healthcheck_status", (("check", check),))]


def action(samples: dict) -> str:
    chosen = [
        dict(labels)["action"]
        for (name, labels), value in samples.items()
        if name == "mlhpc_healthcheck_action" and value == 1
    ]
    assert len(chosen) == 1
    return chosen[0]


def check(report: dict, name: str) -> dict:
    return next(result for result in report["checks"] if result["name"] == name)


def test_healthy_node(node, capsys):
    runner = FakeNode()
    code, report, samples = run(node, runner, "--drain")
    assert code == 0
    assert capsys.readouterr().out == "healthy\n"
    assert report["outcome"] == "healthy"
    assert [result["status"] for result in report["checks"]] == ["pass"] * 4
    for name in ("nvidia_smi", "dcgm", "efa", "topology"):
        assert status(samples, name) == 1
        assert samples[("mlhpc_healthcheck_fault", (("check", name),))] == 0
    assert action(samples) == "none"
    assert samples[("mlhpc_healthcheck_last_run_timestamp_seconds", ())] == pytest.approx(report["timestamp"])
    assert "scontrol" not in runner.tools()
    # The healthy log holds an Xid 31 from a crashing user program: ignored by default, not otherwise.
    assert check(report, "nvidia_smi")["details"]["xids"] == []
    write_config(node, xid_ignore=[])
    code, report, _ = run(node, FakeNode(), "--checks", "0")
    assert (code, report["action"], report["reason"]) == (1, "reset", "nvidia_smi: Xid 31 on PCI:0000:53:00")


def test_xid_79_asks_for_a_reboot(node, capsys):
    runner = FakeNode(
        {"nvidia-smi --query-gpu": fixture("nvidia_smi_query_gpu_xid79.txt", returncode=15)},
        journalctl=fixture("kernel_log_xid79.txt"),
    )
    code, report, samples = run(node, runner, "--checks", "0,2")
    assert code == 1
    reason = capsys.readouterr().out.strip()
    assert reason.startswith("nvidia_smi: Xid 79 on PCI:0000:a8:00; 7/8 GPUs visible")
    assert report["action"] == "reboot"
    assert action(samples) == "reboot"
    assert status(samples, "nvidia_smi") == 0
    assert status(samples, "efa") == 1
    assert check(report, "nvidia_smi")["details"]["gpus_lost"] == ["0000:A8:00.0"]


def test_missing_gpu_isolates_the_node(node, capsys):
    runner = FakeNode({"nvidia-smi --query-gpu": fixture("nvidia_smi_query_gpu_missing.csv")})
    code, report, samples = run(node, runner, "--checks", "0")
    assert code == 1
    assert capsys.readouterr().out == "nvidia_smi: 7/8 GPUs visible\n"
    assert report["action"] == "isolate"
    assert action(samples) == "isolate"


def test_nvlink_down_isolates_the_node(node, capsys):
    runner = FakeNode({"nvidia-smi nvlink": fixture("nvidia_smi_nvlink_down.txt")})
    code, report, samples = run(node, runner, "--checks", "3")
    assert code == 1
    assert capsys.readouterr().out == "topology: GPU 2: 16/18 NVLinks active\n"
    assert action(samples) == "isolate"
    assert check(report, "topology")["details"]["nvlinks_active"]["2"] == 16


def test_fabric_manager_down_asks_for_a_reboot(node):
    code, report, _ = run(node, FakeNode(systemctl=Completed(3, "failed\n")), "--checks", "3")
    assert (code, report["action"], report["reason"]) == (
        1,
        "reboot",
        "topology: nvidia-fabricmanager is failed",
    )


def test_missing_nvidia_smi_is_a_fault_and_never_drains(node, capsys):
    write_config(node, commands={"nvidia-smi": str(node / "usr/bin/nvidia-smi")})
    runner = FakeNode({"nvidia-smi --query-gpu": checker.run_command})
    code, report, samples = run(node, runner, "--checks", "0,2", "--drain")
    assert code == 2
    out = capsys.readouterr().out
    assert out.startswith("fault: nvidia_smi: cannot run ")
    assert "No such file or directory" in out
    assert report["outcome"] == "fault"
    assert status(samples, "nvidia_smi") == 0
    assert samples[("mlhpc_healthcheck_fault", (("check", "nvidia_smi"),))] == 1
    assert status(samples, "efa") == 1
    assert "scontrol" not in runner.tools()


def test_a_hanging_tool_times_out_as_a_fault(node, capsys):
    hanging = node / "bin" / "nvidia-smi"
    hanging.parent.mkdir()
    hanging.write_text("#!/bin/sh\nsleep 10\n")
    hanging.chmod(0o755)
    write_config(node, commands={"nvidia-smi": str(hanging)}, timeouts={"nvidia-smi": 0.3})
    runner = FakeNode({"nvidia-smi --query-gpu": checker.run_command})
    code, _, _ = run(node, runner, "--checks", "0", "--drain")
    assert code == 2
    assert capsys.readouterr().out == f"fault: nvidia_smi: {hanging} timed out after 0.3s\n"
    assert "scontrol" not in runner.tools()


def test_drain_runs_one_scontrol_update_on_failure(node, capsys):
    write_config(node, commands={"scontrol": "/opt/slurm/bin/scontrol"})
    runner = FakeNode({"nvidia-smi --query-gpu": fixture("nvidia_smi_query_gpu_missing.csv")})
    code, _, _ = run(node, runner, "--checks", "0,2", "--drain")
    assert code == 1
    drains = [(argv, timeout) for argv, timeout in runner.calls if argv[0].endswith("scontrol")]
    assert drains == [
        (
            [
                "/opt/slurm/bin/scontrol",
                "update",
                "NodeName=gpu-st-p5-3",
                "State=DRAIN",
                "Reason=mlhpc-healthcheck: nvidia_smi: 7/8 GPUs visible",
            ],
            60,
        )
    ]
    assert capsys.readouterr().out == "nvidia_smi: 7/8 GPUs visible\n"


def test_a_failure_outranks_a_fault(node):
    runner = FakeNode(
        {"nvidia-smi --query-gpu": fixture("nvidia_smi_query_gpu_missing.csv")},
        fi_info=checker.Fault("cannot run /opt/amazon/efa/bin/fi_info: No such file or directory"),
    )
    code, report, _ = run(node, runner, "--checks", "2,0", "--drain")
    assert code == 1
    assert check(report, "efa")["status"] == "fault"
    assert runner.tools().count("scontrol") == 1


def test_fast_checks_only(node):
    runner = FakeNode()
    code, report, _ = run(node, runner, "--checks", "0,2")
    assert code == 0
    assert [result["id"] for result in report["checks"]] == [0, 2]
    assert "dcgmi" not in runner.tools()
    assert "systemctl" not in runner.tools()


def test_dcgm_failures_map_by_error_severity(node):
    runner = FakeNode(dcgmi=fixture("dcgmi_diag_r2_fail.json", returncode=226))
    code, report, _ = run(node, runner, "--checks", "1")
    result = check(report, "dcgm")
    assert code == 1
    assert result["action"] == "isolate"
    assert report["reason"] == "dcgm: DCGM GPU Memory on GPU 3: Found 8 faulty memory elements on GPU 3"
    assert {finding["action"] for finding in result["findings"]} == {"isolate", "reset", "monitor"}
    assert result["details"]["tests"]["GPU Memory"] == "fail"
    assert result["details"]["tests"]["Denylist"] == "pass"
    assert ["dcgmi", "diag", "-r", "2", "-j"] in [argv for argv, _ in runner.calls]


def test_dcgm_reset_and_monitor_levels(node):
    document = json.loads((GPU / "dcgmi_diag_r2_fail.json").read_text())
    hardware = document["DCGM GPU Diagnostic"]["test_categories"][2]["tests"][0]["results"]
    hardware[3] = {"gpu_id": "3", "status": "Pass"}
    code, report, _ = run(node, FakeNode(dcgmi=Completed(226, json.dumps(document))), "--checks", "1")
    assert (code, report["action"]) == (1, "reset")
    pending = "GPU 6 had memory errors and row remappings are pending"
    assert report["reason"] == f"dcgm: DCGM Page Retirement/Row Remap on GPU 6: {pending}"
    deployment = document["DCGM GPU Diagnostic"]["test_categories"][0]["tests"]
    deployment[6]["results"] = [{"status": "Pass"}]
    code, report, samples = run(node, FakeNode(dcgmi=Completed(226, json.dumps(document))), "--checks", "1")
    assert (code, report["action"], check(report, "dcgm")["status"]) == (0, "monitor", "warn")
    assert status(samples, "dcgm") == 1


def test_dcgm_4_documents(node):
    runner = FakeNode(dcgmi=fixture("dcgmi4_diag_r2_fail.json", returncode=226))
    code, report, _ = run(node, runner, "--checks", "1")
    assert (code, report["action"]) == (1, "reset")
    assert report["reason"].startswith("dcgm: DCGM memory on GPU 4: GPU 4 had memory errors")


@pytest.mark.parametrize(
    "output",
    [
        '{\n\t"DCGM GPU Diagnostic" : \n\t{\n\t\t"runtime_error" : '
        '"Error: GPUs are in use by other processes.",\n\t\t"version" : "3.3.9"\n\t}\n}\n',
        "Error: unable to establish a connection to the specified host: localhost\n",
    ],
)
def test_dcgm_that_cannot_run_is_a_fault(node, output):
    code, report, _ = run(node, FakeNode(dcgmi=Completed(255, output)), "--checks", "1", "--drain")
    assert code == 2
    assert check(report, "dcgm")["status"] == "fault"


def test_efa_device_count_modules_memlock_and_provider(node):
    shutil.rmtree(node / "sys/class/infiniband/rdmap47s0")
    modules = node / "proc" / "modules"
    modules.write_text("".join(line for line in modules.read_text().splitlines(True) if "gdrdrv" not in line))
    limits = node / "proc" / "self" / "limits"
    limits.write_text(
        limits.read_text().replace("Max locked memory         unlimited", "Max locked memory         65536")
    )
    runner = FakeNode(fi_info=Completed(1, "", "fi_getinfo: -61 (No data available)\n"))
    code, report, _ = run(node, runner, "--checks", "2")
    assert (code, report["action"]) == (1, "isolate")
    assert [finding["reason"] for finding in check(report, "efa")["findings"]] == [
        "31/32 EFA devices",
        "kernel modules not loaded: gdrdrv",
        "memlock limit is 65536 bytes, not unlimited",
        "fi_info finds no efa provider (fi_getinfo: -61 (No data available))",
    ]


def test_efa_devices_that_appear_late_are_waited_for(node):
    late = node / "sys/class/infiniband/rdmap47s0"
    shutil.rmtree(late)
    naps = []

    def sleep(seconds):
        naps.append(seconds)
        late.mkdir()

    write_config(node, efa_settle_seconds=10)
    code, report, _ = run(node, FakeNode(), "--checks", "2", sleep=sleep)
    assert code == 0
    assert naps == [2]
    assert check(report, "efa")["details"]["efa_devices"] == 32


@pytest.mark.parametrize(
    ("column", "value", "expected"),
    [
        (3, "Disabled", (0, "monitor", "healthy")),
        (4, "2", (1, "reset", "nvidia_smi: GPU 4: 2 volatile uncorrectable ECC errors")),
        (5, "Yes", (1, "reset", "nvidia_smi: GPU 4: retired pages pending")),
    ],
)
def test_per_gpu_state(node, column, value, expected):
    lines = (GPU / "nvidia_smi_query_gpu_healthy.csv").read_text().splitlines(True)
    fields = lines[4].split(", ")
    fields[column] = value
    lines[4] = ", ".join(fields).rstrip("\n") + "\n"
    code, report, _ = run(
        node, FakeNode({"nvidia-smi --query-gpu": Completed(0, "".join(lines))}), "--checks", "0"
    )
    assert (code, report["action"], report["reason"]) == expected


def test_row_remapping_failure_isolates(node):
    remapped = (
        (GPU / "nvidia_smi_remapped_rows_healthy.csv").read_text().replace("B9:00.0, 0, 0", "B9:00.0, 0, 1")
    )
    code, report, _ = run(
        node, FakeNode({"nvidia-smi --query-remapped-rows": Completed(0, remapped)}), "--checks", "0"
    )
    assert (code, report["action"], report["reason"]) == (
        1,
        "isolate",
        "nvidia_smi: GPU 6: row remapping failed",
    )


def test_driver_not_responding_asks_for_a_reboot(node):
    message = (
        "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
        "Make sure that the latest NVIDIA driver is installed and running.\n"
    )
    code, report, _ = run(node, FakeNode({"nvidia-smi --query-gpu": Completed(9, message)}), "--checks", "0")
    assert (code, report["action"], report["reason"]) == (
        1,
        "reboot",
        "nvidia_smi: NVIDIA driver not responding",
    )


def test_kernel_log_source_and_lookback(node):
    write_config(node, xid_lookback_seconds=3600)
    runner = FakeNode()
    run(node, runner, "--checks", "0")
    journal = next(argv for argv, _ in runner.calls if argv[0] == "journalctl")
    assert journal[:5] == ["journalctl", "-k", "-b", "--no-pager", "-q"]
    assert journal[5].startswith("--since=@")
    write_config(node, kernel_log="dmesg")
    runner = FakeNode()
    run(node, runner, "--checks", "0")
    assert "dmesg" in runner.tools()
    assert "journalctl" not in runner.tools()


def test_node_without_gpus_or_efa_skips(node):
    write_config(node, gpu_count=0, efa_interfaces=0, nvlinks_per_gpu=0, nvswitch=False)
    runner = FakeNode()
    code, report, samples = run(node, runner)
    assert code == 0
    assert [result["status"] for result in report["checks"]] == ["skipped"] * 4
    assert runner.calls == []
    assert status(samples, "efa") == 1


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"gpu_count": 8}, "missing config keys: efa_interfaces, nvlinks_per_gpu, nvswitch"),
        ({**P5, "gpus": 8}, "unknown config keys: gpus"),
        ({**P5, "gpu_count": "8"}, "gpu_count must be an integer >= 0, got '8'"),
        ({**P5, "checks": [0, 5]}, "checks must be a non-empty list drawn from [0, 1, 2, 3], got [0, 5]"),
        ({**P5, "nvswitch": 1}, "nvswitch must be true or false, got 1"),
        ({**P5, "timeouts": {"dcgmi": 0}}, "timeouts must be a map of tool name to seconds > 0"),
    ],
)
def test_bad_config_is_a_fault(tmp_path, capsys, config, message):
    path = tmp_path / "healthcheck.json"
    path.write_text(json.dumps(config))
    runner = FakeNode()
    assert checker.main(["--config", str(path)], runner=runner) == 2
    assert capsys.readouterr().out.startswith(f"fault: {message}")
    assert runner.calls == []


def test_missing_config_is_a_fault(tmp_path, capsys):
    assert checker.main(["--config", str(tmp_path / "absent.json")], runner=FakeNode()) == 2
    assert "cannot read config" in capsys.readouterr().out


def test_unknown_check_is_a_usage_error(node):
    with pytest.raises(SystemExit) as exit_info:
        checker.main(["--config", str(node / "healthcheck.json"), "--checks", "0,5"], runner=FakeNode())
    assert exit_info.value.code == 2


def test_outputs_are_replaced_atomically(node):
    umask = os.umask(0o077)  # as under a service with a strict umask: node_exporter must still read it
    try:
        run(node, FakeNode(), "--checks", "0")
        run(node, FakeNode(), "--checks", "0")
    finally:
        os.umask(umask)
    assert sorted(path.name for path in node.iterdir() if path.is_file()) == [
        "healthcheck.json",
        "mlhpc_healthcheck.prom",
        "result.json",
    ]
    assert oct((node / "mlhpc_healthcheck.prom").stat().st_mode & 0o777) == "0o644"
