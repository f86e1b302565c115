"""Dashboards and alert rules query only metrics that the collection's exporters serve.

The known metric names come from the exporters themselves: the EFA and Slurm exporters and
the health checker's textfile output are run against recorded inputs, the DCGM exporter's
names are the fields of the collector file the dcgm_exporter role writes, and the node
exporter's are the standard names in fixtures/monitoring/node_exporter_metrics.txt (the
monitoring scenario checks that the deployed node exporter serves each of them).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jinja2
import pytest
import yaml

from ansible_collections.mlhpc.cluster.tests.unit.conftest import FIXTURES, REPO_ROOT, load_script

DASHBOARDS = sorted((REPO_ROOT / "roles/grafana/files/dashboards").glob("*.json"))
RULES_TEMPLATE = REPO_ROOT / "roles/prometheus/templates/etc/prometheus/rules/mlhpc.yml.j2"
PANEL_TYPES = {"row", "timeseries", "stat", "table", "gauge", "bargauge", "text"}
# Prometheus's own series.
PROMETHEUS_METRICS = {"up", "ALERTS", "ALERTS_FOR_STATE", "scrape_duration_seconds"}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
PROMQL_WORDS |= {"and", "or", "unless", "atan2", "inf", "nan", "Inf", "NaN"}


def role_vars(role: str) -> dict:
    return yaml.safe_load((REPO_ROOT / f"roles/{role}/vars/main.yml").read_text())


def role_defaults(role: str) -> dict:
    return yaml.safe_load((REPO_ROOT / f"roles/{role}/defaults/main.yml").read_text())


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (Grafana variables allowed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    text = re.sub(r"\$\{?\w+\}?", "", text)
    text = re.sub(r"\{[^{}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text):
        word, call = match.groups()
        if not call and word not in PROMQL_WORDS:
            names.add(word)
    return names


# --- what the exporters serve ---------------------------------------------------------------


def efa_metrics(tmp_path: Path) -> set[str]:
    exporter = load_script("roles/efa_exporter/files/mlhpc-efa-exporter")
    port = tmp_path / "class/infiniband/rdmap0s31/ports/1"
    (port / "hw_counters").mkdir(parents=True)
    (port / "state").write_text("4: ACTIVE\n")
    for counter in exporter.COUNTER_HELP:
        (port / "hw_counters" / counter).write_text("1\n")
    return {family.name for family in exporter.Collector(tmp_path).collect()}


def slurm_metrics() -> set[str]:
    exporter = load_script("roles/slurm_exporter/files/mlhpc-slurm-exporter")
    recorded = {
        "sinfo_nodes": "sinfo_nodes_24.11.txt",
        "sinfo_partitions": "sinfo_partitions_24.11.txt",
        "squeue": "squeue_24.11.txt",
        "sdiag": "sdiag_24.11.txt",
    }
    by_argv = {tuple(argv): recorded[key] for key, argv in exporter.COMMANDS.items()}

    def runner(argv, timeout):
        return (FIXTURES / "slurm" / by_argv[tuple(argv)]).read_text()

    return {family.name for family in exporter.SlurmCollector(runner=runner).collect()}


def healthcheck_metrics() -> set[str]:
    checker = load_script("roles/gpu_healthcheck/files/mlhpc-gpu-healthcheck")
    text = checker.textfile_metrics([checker.CheckResult(0, "nvidia_smi")], "none", 0.0)
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}


def dcgm_metrics() -> set[str]:
    return {field["name"] for field in role_vars("dcgm_exporter")["__dcgm_exporter_fields"]}


def node_exporter_metrics() -> set[str]:
    lines = (FIXTURES / "monitoring/node_exporter_metrics.txt").read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


@pytest.fixture(scope="module")
def known_metrics(tmp_path_factory) -> set[str]:
    names = efa_metrics(tmp_path_factory.mktemp("sysfs")) | slurm_metrics() | healthcheck_metrics()
    return names | dcgm_metrics() | node_exporter_metrics() | PROMETHEUS_METRICS


# --- dashboards -----------------------------------------------------------------------------


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def queries(dashboard: dict):
    """(where, PromQL) for every panel target and query variable of a dashboard."""
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield f"panel '{panel['title']}' {target['refId']}", target["expr"]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", query)
            yield f"variable '{variable['name']}'", inner.group(1) if inner else query


def test_there_is_a_dashboard_for_nodes_gpus_efa_and_slurm():
    assert [path.stem for path in DASHBOARDS] == ["efa", "gpu", "node", "slurm"]
    assert {path.stem for path in DASHBOARDS} == set(role_defaults("grafana")["grafana_dashboards"])


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_is_valid_grafana_json(path):
    dashboard = load(path)
    assert dashboard["uid"] == f"mlhpc-{path.stem}"
    assert dashboard["title"] and isinstance(dashboard["schemaVersion"], int)
    assert "mlhpc" in dashboard["tags"]
    datasource = role_vars("grafana")["__grafana_datasource_uid"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in dashboard["panels"]:
        assert panel["type"] in PANEL_TYPES, panel["title"]
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) for k in "hwxy") and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": datasource}, panel["title"]
        refs = [target["refId"] for target in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target["datasource"]["uid"] == datasource
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]


def test_dashboards_have_unique_uids_and_titles():
    dashboards = [load(path) for path in DASHBOARDS]
    assert len({d["uid"] for d in dashboards}) == len({d["title"] for d in dashboards}) == len(DASHBOARDS)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_queries_only_metrics_the_exporters_serve(path, known_metrics):
    unknown = {}
    used = set()
    for where, expr in queries(load(path)):
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        used |= names
        if names - known_metrics:
            unknown[where] = sorted(names - known_metrics)
    assert unknown == {}
    # Each dashboard reads its own exporter.
    prefix = {"efa": "efa_", "gpu": "DCGM_FI_", "node": "node_", "slurm": "slurm_"}[path.stem]
    assert any(name.startswith(prefix) for name in used)


# --- alert rules ----------------------------------------------------------------------------


def render_rules(**overrides) -> dict:
    env = jinja2.Environment(trim_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["comment"] = lambda text: f"#\n# {text}\n#"
    env.filters["to_nice_yaml"] = lambda data, indent=4, sort_keys=True: yaml.safe_dump(
        data, indent=indent, sort_keys=sort_keys, default_flow_style=False
    )
    defaults = role_defaults("prometheus")
    variables = {
        "ansible_managed": "Managed by mlhpc.cluster",
        "__prometheus_alert_for": role_vars("prometheus")["__prometheus_alert_for_defaults"],
        "prometheus_alert_xid_ignore": defaults["prometheus_alert_xid_ignore"],
        "prometheus_alert_rules_extra": defaults["prometheus_alert_rules_extra"],
        **overrides,
    }
    return yaml.safe_load(env.from_string(RULES_TEMPLATE.read_text()).render(**variables))


def rules(document: dict):
    for group in document["groups"]:
        yield from group["rules"]


def test_rules_render_to_prometheus_rule_groups():
    document = render_rules()
    alerts = [rule["alert"] for rule in rules(document)]
    assert sorted(alerts) == sorted(role_vars("prometheus")["__prometheus_alert_for_defaults"])
    for rule in rules(document):
        assert rule["for"] == role_vars("prometheus")["__prometheus_alert_for_defaults"][rule["alert"]]
        assert rule["labels"]["severity"] in ("warning", "critical")
        # Prometheus's own templating survives Ansible's.
        assert "{{ $labels." in rule["annotations"]["summary"] + rule["annotations"]["description"] or (
            "{{ $value }}" in rule["annotations"]["summary"]
        )


def test_required_alerts_exist():
    alerts = {rule["alert"]: rule["expr"] for rule in rules(render_rules())}
    assert alerts["NodeDown"] == 'up{job="node"} == 0'
    assert alerts["GpuXidError"] == "DCGM_FI_DEV_XID_ERRORS > 0 != 13 != 31 != 43 != 45"
    assert "efa_rx_drops_total" in alerts["EfaRxDropsRising"]
    assert "efa_retrans_pkts_total" in alerts["EfaRetransmitsRising"]
    assert 'state=~"drained|draining"' in alerts["SlurmNodesDrained"]
    assert alerts["SlurmctldDown"] == "slurm_up == 0"


def test_extra_rule_groups_are_appended():
    extra = [{"name": "site", "rules": [{"alert": "Site", "expr": "up == 0"}]}]
    document = render_rules(prometheus_alert_rules_extra=extra)
    assert document["groups"][-1] == extra[0]


def test_rules_query_only_metrics_the_exporters_serve(known_metrics):
    unknown = {
        rule["alert"]: sorted(metric_names(rule["expr"]) - known_metrics)
        for rule in rules(render_rules())
        if metric_names(rule["expr"]) - known_metrics
    }
    assert unknown == {}


def test_dcgm_fields_cover_the_field_reference():
    fields = dcgm_metrics()
    for name in ("GPU_UTIL", "GPU_TEMP", "POWER_USAGE", "FB_USED", "FB_FREE", "XID_ERRORS"):
        assert f"DCGM_FI_DEV_{name}" in fields
    assert {"DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "DCGM_FI_PROF_DRAM_ACTIVE"} <= fields
    assert any(re.fullmatch(r"DCGM_FI_DEV_NVLINK_\w+_ERROR_COUNT_TOTAL", name) for name in fields)


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'sum by (instance) (rate(efa_rx_bytes_total{instance=~"$instance"}[$__rate_interval]))',
            {"efa_rx_bytes_total"},
        ),
        (
            "(mlhpc_healthcheck_status == 0) unless (mlhpc_healthcheck_fault == 1)",
            {"mlhpc_healthcheck_status", "mlhpc_healthcheck_fault"},
        ),
        ("time() - node_boot_time_seconds offset 5m", {"node_boot_time_seconds"}),
        ('count(up{job="node"} == 0) or vector(0)', {"up"}),
        ("a * on (instance) group_left (node) b > 1e3", {"a", "b"}),
    ],
)
def test_metric_names_of_an_expression(expr, names):
    assert metric_names(expr) == names
