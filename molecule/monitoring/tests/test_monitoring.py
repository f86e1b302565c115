"""The deployed monitoring watches the cluster: real exporters, Prometheus, alerts, health checks.

Prometheus and Alertmanager are asked over their HTTP APIs from this machine; the hosts are
driven over the scenario's inventory. The compute nodes' EFA devices and GPUs are test
fixtures (prepare.yml): a recorded sysfs tree and a fake nvidia-smi whose GPU count the
tests change.
"""

import json
import os
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import testinfra

RUN = os.environ["MLHPC_RUN"]
NET = os.environ["MLHPC_NET"]
INVENTORY = os.environ["MOLECULE_INVENTORY_FILE"]
ROOT = Path(os.environ["MLHPC_ROOT"])
PROMETHEUS = f"http://{NET}.10:9090"
ALERTMANAGER = f"http://{NET}.10:9093"
COMPUTE = ["compute1", "compute2"]
SYSFS = "/var/lib/mlhpc-test/sysfs/class/infiniband"
GPU_COUNT = "/var/lib/mlhpc-test/gpu-count"


def node(name):
    return testinfra.get_host(f"ansible://mlhpc-{RUN}-{name}", ansible_inventory=INVENTORY)


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as answer:
        return json.load(answer)


def series(promql):
    """Instant query: the result's series, each a dict of labels and 'value'."""
    data = get_json(f"{PROMETHEUS}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
    assert data["status"] == "success", data
    return [{**r["metric"], "value": float(r["value"][1])} for r in data["data"]["result"]]


def query(promql):
    """Instant query: {frozenset of labels without __name__: value}."""
    return {
        frozenset((k, v) for k, v in r.items() if k not in ("__name__", "value")): r["value"]
        for r in series(promql)
    }


def value(promql):
    result = query(promql)
    assert len(result) == 1, f"{promql}: {result}"
    return next(iter(result.values()))


def eventually(check, timeout=60, interval=1, what="condition"):
    """Call ``check`` until it returns a truthy value; return it, or fail after ``timeout``."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = check()
        except (AssertionError, OSError, KeyError) as err:
            last = err
        else:
            if last:
                return last
        time.sleep(interval)
    pytest.fail(f"{what} not reached in {timeout} s (last: {last!r})")


def firing(alertname, **labels):
    alerts = get_json(f"{PROMETHEUS}/api/v1/alerts")["data"]["alerts"]
    return [
        a
        for a in alerts
        if a["labels"]["alertname"] == alertname
        and a["state"] == "firing"
        and all(a["labels"].get(k) == v for k, v in labels.items())
    ]


def node_state(name):
    return node("head").check_output(f"sinfo -h -N -n {name} -o '%T|%E'").split("|", 1)


def set_gpus(name, count):
    node(name).run_expect([0], f"echo {count} > {GPU_COUNT}")


@pytest.fixture(autouse=True, scope="module")
def healthy_cluster():
    """Leave both compute nodes idle with healthy fixtures, whatever a test left behind."""
    yield
    for name in COMPUTE:
        set_gpus(name, 2)
        node(name).run("systemctl start prometheus-node-exporter")
        if node_state(name)[0].startswith("drain"):
            node("head").run(f"scontrol update NodeName={name} State=RESUME")


def test_prometheus_scrapes_every_exporter():
    expected = {
        ("node", "head"),
        ("node", "compute1"),
        ("node", "compute2"),
        ("efa", "compute1"),
        ("efa", "compute2"),
        ("slurm", "head"),
        ("prometheus", "head"),
        ("alertmanager", "head"),
    }

    def all_up():
        targets = get_json(f"{PROMETHEUS}/api/v1/targets")["data"]["activeTargets"]
        seen = {(t["labels"]["job"], t["labels"]["instance"]): t["health"] for t in targets}
        assert set(seen) == expected, seen
        return all(health == "up" for health in seen.values())

    eventually(all_up, what="every target up")


def test_exporters_run_as_their_own_hardened_users():
    for name, service, user in [
        ("compute1", "prometheus-node-exporter", "node-exporter"),
        ("compute1", "mlhpc-efa-exporter", "efa-exporter"),
        ("head", "mlhpc-slurm-exporter", "slurm-exporter"),
    ]:
        show = node(name).check_output(
            f"systemctl show {service} -p User -p ProtectSystem -p NoNewPrivileges -p ActiveState"
        )
        props = dict(line.split("=", 1) for line in show.splitlines())
        assert props == {
            "User": user,
            "ProtectSystem": "strict",
            "NoNewPrivileges": "yes",
            "ActiveState": "active",
        }


def test_slurm_exporter_counts_the_idle_compute_nodes():
    eventually(lambda: value('slurm_nodes{state="idle"}') == len(COMPUTE), what="idle nodes == compute nodes")
    assert value("slurm_up") == 1
    assert value('slurm_partition_cpus{partition="batch",state="total"}') > 0


def test_efa_exporter_serves_the_recorded_counters():
    for name in COMPUTE:
        assert value(f'efa_devices{{instance="{name}"}}') == 2
        for device in ("rdmap0s6", "rdmap0s7"):
            recorded = int(node(name).file(f"{SYSFS}/{device}/ports/1/hw_counters/rx_bytes").content_string)
            served = value(f'efa_rx_bytes_total{{instance="{name}",device="{device}",port="1"}}')
            assert served == recorded
            assert value(f'efa_port_state_up{{instance="{name}",device="{device}"}}') == 1


def test_node_exporter_serves_the_metrics_the_dashboards_use():
    listed = (ROOT / "tests/unit/fixtures/monitoring/node_exporter_metrics.txt").read_text().split("\n")
    names = {line.strip() for line in listed if line.strip() and not line.startswith("#")}
    served = {r["__name__"] for r in series('group by (__name__) ({job="node",instance="compute1"})')}
    assert names <= served, names - served


def test_health_checks_publish_node_metrics():
    # A job runs the prolog and epilog on the node: the checks pass and say so.
    node("head").run_expect([0], "srun -N1 -w compute1 true")
    eventually(
        lambda: value('mlhpc_healthcheck_status{instance="compute1",check="nvidia_smi"}') == 1,
        what="health-check metric of compute1",
    )
    assert value('mlhpc_healthcheck_action{instance="compute1",action="none"}') == 1


def test_alert_fires_when_a_compute_node_exporter_stops():
    def in_alertmanager():
        alerts = get_json(f"{ALERTMANAGER}/api/v2/alerts?filter=alertname%3D%22NodeDown%22")
        return [a for a in alerts if a["labels"].get("instance") == "compute2"]

    node("compute2").run_expect([0], "systemctl stop prometheus-node-exporter")
    try:
        alert = eventually(lambda: firing("NodeDown", instance="compute2"), what="NodeDown firing")
        assert alert[0]["labels"]["severity"] == "critical"
        assert not firing("NodeDown", instance="compute1")
        eventually(in_alertmanager, timeout=30, what="NodeDown in Alertmanager")
    finally:
        node("compute2").run_expect([0], "systemctl start prometheus-node-exporter")
    eventually(lambda: not firing("NodeDown", instance="compute2"), timeout=60, what="NodeDown resolved")


def test_efa_drops_alert_fires_when_the_counter_rises():
    path = f"{SYSFS}/rdmap0s7/ports/1/hw_counters/rx_drops"
    before = int(node("compute1").file(path).content_string)
    node("compute1").run_expect([0], f"echo {before + 500} > {path}")
    eventually(
        lambda: firing("EfaRxDropsRising", instance="compute1", device="rdmap0s7"),
        timeout=60,
        what="EfaRxDropsRising firing",
    )


def test_failed_check_drains_the_node_and_quarantine_decides():
    set_gpus("compute1", 1)  # the checker expects 2
    try:
        failed_check_drains_and_quarantine_decides()
    finally:
        set_gpus("compute1", 2)


def failed_check_drains_and_quarantine_decides():
    job = node("head").check_output("sbatch --parsable -N1 -w compute1 --wrap true").split(";")[0]
    try:
        state = eventually(
            lambda: node_state("compute1")[0] == "drained" and node_state("compute1"), what="compute1 drained"
        )
        # The job went back to the queue, not held (nohold_on_prolog_fail), and did not run.
        queued = node("head").check_output(f"squeue -h -j {job} -o '%T|%r'")
        assert queued.startswith("PENDING|") and "Held" not in queued, queued
    finally:
        node("head").run(f"scancel {job}")
    assert state[1] == "mlhpc-healthcheck: nvidia_smi: 1/2 GPUs visible"
    eventually(lambda: firing("SlurmNodesDrained"), timeout=30, what="SlurmNodesDrained firing")
    eventually(
        lambda: firing("GpuHealthCheckFailed", instance="compute1", check="nvidia_smi"),
        timeout=30,
        what="GpuHealthCheckFailed firing",
    )

    # Still failing: the quarantine leaves it drained, for replacement.
    still = node("compute1").run("mlhpc-slurm-quarantine")
    assert still.rc == 1, still.stderr
    assert node_state("compute1") == ["drained", "replace: nvidia_smi: 1/2 GPUs visible"]

    # Healthy again: the quarantine resumes it, and jobs run there.
    set_gpus("compute1", 2)
    healed = node("compute1").run("mlhpc-slurm-quarantine")
    assert healed.rc == 0, healed.stderr
    # slurmd answers again within a moment (idle* until then).
    eventually(lambda: node_state("compute1")[0] == "idle", what="compute1 idle after the quarantine")
    node("head").run_expect([0], "srun -N1 -w compute1 true")


def test_checker_fault_is_reported_and_never_drains():
    node("compute2").run_expect([0], f"echo fault > {GPU_COUNT}")
    try:
        checker_fault_is_reported_and_never_drains()
    finally:
        set_gpus("compute2", 2)


def checker_fault_is_reported_and_never_drains():
    run = node("head").run("srun -N1 -w compute2 true")
    assert run.rc == 0, run.stderr
    # The epilog faults the same way after the job: still no drain.
    eventually(lambda: node_state("compute2")[0] == "idle", what="compute2 idle after the job")
    eventually(
        lambda: value('mlhpc_healthcheck_fault{instance="compute2",check="nvidia_smi"}') == 1,
        what="checker fault metric",
    )
    log = node("compute2").check_output("journalctl -t mlhpc-gpu-healthcheck --no-pager -q -n 5")
    assert "checker fault, node left in service" in log
