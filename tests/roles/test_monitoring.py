"""Bad input to the monitoring and health-check roles fails before any change, naming the fix."""

import pytest

HOSTS = {"head": ["slurm_controller", "monitoring"], "c1": ["slurm_compute"]}
FACTS = {h: {"hostname": h} for h in HOSTS}


@pytest.fixture
def preflight(run_role):
    def run(role, *, group_vars=None, host_vars=None, hosts=HOSTS, tasks_from="preflight"):
        return run_role(
            role, hosts=hosts, facts=FACTS, group_vars=group_vars, host_vars=host_vars, tasks_from=tasks_from
        )

    return run


def assert_fails_before_change(run, *needles):
    assert run.rc != 0
    for needle in needles:
        assert needle in run.messages, (needle, run.messages)
    assert run.changed_before_failure() == []


def test_health_checks_take_the_profile_or_expectations(preflight):
    run = preflight(
        "gpu_healthcheck",
        host_vars={
            "head": {"mlhpc_instance_type": "p5.48xlarge"},
            "c1": {"gpu_healthcheck_expected": {"gpu_count": 2}},
        },
    )
    assert run.rc == 0, run.failures
    said = [t for t in run.tasks if "Say that this node expects" in t["task"]["name"]]
    assert all(r.get("skipped") for r in said[0]["hosts"].values())


def test_health_checks_keep_dcgm_out_of_the_prolog(preflight):
    run = preflight("gpu_healthcheck", group_vars={"gpu_healthcheck_prolog_checks": [0, 1]})
    assert_fails_before_change(run, "gpu_healthcheck_prolog_checks ([0, 1]) must leave out 1")


def test_health_check_expectations_are_checked(preflight):
    run = preflight("gpu_healthcheck", group_vars={"gpu_healthcheck_expected": {"gpus": 8}})
    assert_fails_before_change(run, "gpu_healthcheck_expected {'gpus': 8} is invalid", "gpu_count")


def test_dcgm_exporter_needs_a_mirror_and_checksum(preflight):
    run = preflight("dcgm_exporter")
    assert_fails_before_change(run, "set dcgm_exporter_mirror_url", "dcgm_exporter_checksums['amd64']")


def test_prometheus_rejects_unknown_alerts_and_bad_durations(preflight):
    run = preflight("prometheus", group_vars={"prometheus_alert_for": {"NodeDown": "soon"}})
    assert_fails_before_change(run, "prometheus_alert_for.NodeDown is 'soon'")
    run = preflight("prometheus", group_vars={"prometheus_alert_for": {"NodeGone": "1m"}})
    assert_fails_before_change(run, "prometheus_alert_for names unknown alerts", "NodeDown")


def test_prometheus_rejects_bad_monitoring_variables(preflight):
    run = preflight("prometheus", host_vars={"c1": {"efa_exporter_enabled": "perhaps"}})
    assert_fails_before_change(run, "Host 'c1': efa_exporter_enabled must be true or false, got 'perhaps'.")


def test_grafana_requires_an_admin_password(preflight):
    run = preflight("grafana", tasks_from="main")
    assert_fails_before_change(run, "grafana_admin_password")


def test_node_exporter_rejects_bad_collector_names(preflight):
    run = preflight("node_exporter", group_vars={"node_exporter_collectors_enabled": ["systemd --x"]})
    assert_fails_before_change(run, "collector names such as 'systemd'")
