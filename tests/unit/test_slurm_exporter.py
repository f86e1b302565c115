"""mlhpc-slurm-exporter: recorded sinfo/squeue/sdiag output of Slurm 22.05 and 24.11."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request

import pytest

from ansible_collections.mlhpc.cluster.tests.unit.conftest import FIXTURES, load_script, parse_exposition

exporter = load_script("roles/slurm_exporter/files/mlhpc-slurm-exporter")

FIXTURE_FILES = {
    "sinfo_nodes": "sinfo_nodes_{}.txt",
    "sinfo_partitions": "sinfo_partitions_{}.txt",
    "squeue": "squeue_{}.txt",
    "sdiag": "sdiag_{}.txt",
}


class RecordedSlurm:
    """A command runner that answers with recorded output, or fails the commands it is told to."""

    def __init__(self, version: str, failing: tuple[str, ...] = ()):
        self.version = version
        self.failing = failing
        self.calls: list[tuple[list[str], float]] = []

    def __call__(self, argv: list[str], timeout: float) -> str:
        self.calls.append((argv, timeout))
        key = next(key for key, command in exporter.COMMANDS.items() if argv[1:] == command[1:])
        if key in self.failing:
            raise exporter.CommandError(
                "sinfo exited 1: slurm_load_partitions: Unable to contact slurm controller (connect failure)"
            )
        return (FIXTURES / "slurm" / FIXTURE_FILES[key].format(self.version)).read_text()


def scrape(collector) -> dict:
    samples, _, types = parse_exposition(exporter.render(collector.collect()))
    return samples, types


def by_label(samples: dict, name: str, label: str) -> dict:
    return {dict(labels)[label]: value for (metric, labels), value in samples.items() if metric == name}


def by_partition(samples: dict, name: str) -> dict:
    return {
        (dict(labels)["partition"], dict(labels)["state"]): value
        for (metric, labels), value in samples.items()
        if metric == name
    }


def test_slurm_22_05_nodes_by_state_and_flag():
    samples, types = scrape(exporter.SlurmCollector(RecordedSlurm("22.05")))
    assert samples[("slurm_up", ())] == 1
    assert by_label(samples, "slurm_nodes", "state") == {
        "allocated": 3,
        "completing": 0,
        "down": 1,
        "drained": 1,
        "draining": 1,
        "fail": 0,
        "idle": 5,
        "mixed": 1,
        "planned": 0,
    }
    assert types["slurm_nodes"] == "gauge"
    flags = by_label(samples, "slurm_node_flags", "flag")
    assert flags["powered_down"] == 4
    assert flags["powering_up"] == 1
    assert flags["powering_down"] == 1
    assert flags["not_responding"] == 1
    assert flags["reboot_pending"] == 0


def test_slurm_22_05_partitions():
    samples, _ = scrape(exporter.SlurmCollector(RecordedSlurm("22.05")))
    nodes = by_partition(samples, "slurm_partition_nodes")
    assert nodes[("gpu", "allocated")] == 2
    assert nodes[("gpu", "idle")] == 1
    assert nodes[("gpu", "down")] == 1
    assert nodes[("gpu", "draining")] == 1
    assert nodes[("gpu", "drained")] == 1
    assert nodes[("cpu", "idle")] == 4
    assert nodes[("gpu-long", "allocated")] == 2
    cpus = by_partition(samples, "slurm_partition_cpus")
    assert {kind: cpus[("gpu", kind)] for kind in ("allocated", "idle", "other", "total")} == {
        "allocated": 288,
        "idle": 96,
        "other": 192,
        "total": 576,
    }
    assert {kind: cpus[("cpu", kind)] for kind in ("allocated", "idle", "other", "total")} == {
        "allocated": 10,
        "idle": 38,
        "other": 0,
        "total": 48,
    }


def test_slurm_22_05_jobs():
    samples, _ = scrape(exporter.SlurmCollector(RecordedSlurm("22.05")))
    assert by_label(samples, "slurm_jobs", "state") == {
        "completing": 1,
        "configuring": 1,
        "pending": 4,
        "running": 5,
        "suspended": 1,
    }
    jobs = by_partition(samples, "slurm_partition_jobs")
    assert jobs[("gpu", "running")] == 2
    assert jobs[("gpu-long", "running")] == 1
    # The job pending in "gpu-long,gpu" is queued in both partitions.
    assert jobs[("gpu", "pending")] == 4
    assert jobs[("gpu-long", "pending")] == 1
    assert jobs[("cpu", "configuring")] == 1


def test_slurm_22_05_scheduler_statistics():
    samples, types = scrape(exporter.SlurmCollector(RecordedSlurm("22.05")))
    expected = {
        "slurm_scheduler_threads": 3,
        "slurm_scheduler_agent_queue_size": 0,
        "slurm_scheduler_dbd_agent_queue_size": 0,
        "slurm_scheduler_jobs_submitted_total": 1843,
        "slurm_scheduler_jobs_started_total": 1790,
        "slurm_scheduler_jobs_completed_total": 1702,
        "slurm_scheduler_jobs_canceled_total": 61,
        "slurm_scheduler_jobs_failed_total": 4,
        "slurm_scheduler_main_cycle_last_seconds": 0.001432,
        "slurm_scheduler_main_cycle_mean_seconds": 0.002106,
        "slurm_scheduler_main_cycle_max_seconds": 0.093211,
        "slurm_scheduler_main_queue_length": 5,
        "slurm_scheduler_backfill_cycle_last_seconds": 0.008812,
        "slurm_scheduler_backfill_cycle_mean_seconds": 0.011873,
        "slurm_scheduler_backfill_cycle_max_seconds": 0.402117,
        "slurm_scheduler_backfill_last_depth": 5,
        "slurm_scheduler_backfill_queue_length": 5,
        "slurm_scheduler_backfilled_jobs_total": 3904,
    }
    assert {name: samples[(name, ())] for name in expected} == pytest.approx(expected)
    assert types["slurm_scheduler_jobs_submitted_total"] == "counter"
    assert types["slurm_scheduler_main_cycle_last_seconds"] == "gauge"


def test_slurm_24_11_nodes_and_new_states():
    samples, _ = scrape(exporter.SlurmCollector(RecordedSlurm("24.11")))
    nodes = by_label(samples, "slurm_nodes", "state")
    assert nodes == {
        "allocated": 3,
        "completing": 1,
        "down": 1,
        "drained": 1,
        "draining": 1,
        "fail": 0,
        "idle": 5,
        "inval": 1,
        "mixed": 2,
        "planned": 1,
    }
    flags = by_label(samples, "slurm_node_flags", "flag")
    assert flags["reboot_pending"] == 1
    assert flags["planned"] == 1
    assert flags["powered_down"] == 2
    cpus = by_partition(samples, "slurm_partition_cpus")
    assert cpus[("gpu", "allocated")] == 864
    assert cpus[("gpu", "total")] == 1920


def test_slurm_24_11_scheduler_sections_are_told_apart():
    samples, _ = scrape(exporter.SlurmCollector(RecordedSlurm("24.11")))
    assert samples[("slurm_scheduler_main_cycle_last_seconds", ())] == pytest.approx(0.002871)
    assert samples[("slurm_scheduler_backfill_cycle_last_seconds", ())] == pytest.approx(0.019034)
    assert samples[("slurm_scheduler_agent_queue_size", ())] == 2
    assert samples[("slurm_scheduler_backfilled_jobs_total", ())] == 48211
    jobs = by_label(samples, "slurm_jobs", "state")
    assert jobs["running"] == 6
    assert jobs["pending"] == 9


def test_parse_sdiag_ignores_exit_sections_and_rpc_tables():
    values = exporter.parse_sdiag((FIXTURES / "slurm/sdiag_24.11.txt").read_text())
    assert values[("main", "Total cycles")] == 3011
    assert values[("backfill", "Total cycles")] == 1220
    assert values[("main_exit", "End of job queue")] == 2994
    assert values[("backfill_exit", "End of job queue")] == 1203
    assert not [key for key in values if "REQUEST_" in key[1]]


def test_controller_down_sets_slurm_up_to_zero_and_counts_errors():
    collector = exporter.SlurmCollector(RecordedSlurm("24.11", failing=tuple(exporter.COMMANDS)))
    samples, _ = scrape(collector)
    assert samples[("slurm_up", ())] == 0
    assert by_label(samples, "slurm_exporter_command_errors_total", "command") == dict.fromkeys(
        exporter.COMMANDS, 1
    )
    assert not [key for key in samples if key[0].startswith(("slurm_nodes", "slurm_jobs", "slurm_scheduler"))]
    samples, _ = scrape(collector)
    assert samples[("slurm_exporter_command_errors_total", (("command", "sinfo_nodes"),))] == 2


def test_one_failing_command_keeps_the_others():
    samples, _ = scrape(exporter.SlurmCollector(RecordedSlurm("24.11", failing=("sdiag",))))
    assert samples[("slurm_up", ())] == 0
    errors = by_label(samples, "slurm_exporter_command_errors_total", "command")
    assert errors == {"sinfo_nodes": 0, "sinfo_partitions": 0, "squeue": 0, "sdiag": 1}
    assert samples[("slurm_nodes", (("state", "idle"),))] == 5
    assert not [key for key in samples if key[0].startswith("slurm_scheduler")]


def test_commands_run_from_the_bin_dir_with_the_timeout():
    runner = RecordedSlurm("24.11")
    exporter.SlurmCollector(runner, bin_dir="/opt/slurm/bin", timeout=4.5).collect()
    assert [argv for argv, _ in runner.calls] == [
        ["/opt/slurm/bin/sinfo", "-h", "-N", "-o", "%N|%T|%R"],
        ["/opt/slurm/bin/sinfo", "-h", "-o", "%R|%C|%D|%T"],
        ["/opt/slurm/bin/squeue", "-h", "-a", "-r", "-o", "%T|%P"],
        ["/opt/slurm/bin/sdiag"],
    ]
    assert {timeout for _, timeout in runner.calls} == {4.5}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("idle", ("idle", [])),
        ("idle*", ("idle", ["not_responding"])),
        ("down~", ("down", ["powered_down"])),
        ("alloc", ("allocated", [])),
        ("mix", ("mixed", [])),
        ("MIXED-", ("mixed", ["planned"])),
        ("drng", ("draining", [])),
        ("drain", ("drained", [])),
        ("drained*", ("drained", ["not_responding"])),
        ("draining@", ("draining", ["reboot_pending"])),
        ("idle#", ("idle", ["powering_up"])),
        ("comp", ("completing", [])),
    ],
)
def test_normalise_state(raw, expected):
    assert exporter.normalise_state(raw) == expected


def test_run_command_reports_failures():
    assert exporter.run_command(["/bin/sh", "-c", "echo ok"], 5) == "ok\n"
    with pytest.raises(exporter.CommandError, match="exited 3: no controller"):
        exporter.run_command(["/bin/sh", "-c", "echo no controller >&2; exit 3"], 5)
    with pytest.raises(exporter.CommandError, match="timed out"):
        exporter.run_command(["/bin/sh", "-c", "sleep 5"], 0.2)
    with pytest.raises(exporter.CommandError, match="/nonexistent/sinfo"):
        exporter.run_command(["/nonexistent/sinfo"], 5)


def test_http_server_serves_metrics():
    server = exporter.make_server("127.0.0.1:0", exporter.SlurmCollector(RecordedSlurm("22.05")))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with urllib.request.urlopen(base + "/metrics", timeout=5) as response:
            assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
            samples, _, _ = parse_exposition(response.read().decode())
        assert samples[("slurm_up", ())] == 1
        assert samples[("slurm_exporter_build_info", (("version", exporter.VERSION),))] == 1
        with urllib.request.urlopen(base + "/", timeout=5) as response:
            assert 'href="/metrics"' in response.read().decode()
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(base + "/nodes", timeout=5)
        assert err.value.code == 404
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_a_failing_command_is_logged_once_until_it_recovers(capsys):
    runner = RecordedSlurm("24.11", failing=("sdiag",))
    collector = exporter.SlurmCollector(runner)
    collector.collect()
    collector.collect()
    assert capsys.readouterr().err.count("mlhpc-slurm-exporter: sdiag: ") == 1
    runner.failing = ()
    samples, _ = scrape(collector)
    assert samples[("slurm_up", ())] == 1
    assert samples[("slurm_exporter_command_errors_total", (("command", "sdiag"),))] == 2
    assert capsys.readouterr().err == "mlhpc-slurm-exporter: sdiag: works again\n"
