"""mlhpc-efa-exporter: a fixture sysfs tree, a real HTTP server, a parsed exposition."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ansible_collections.mlhpc.cluster.tests.unit.conftest import load_script, parse_exposition

exporter = load_script("roles/efa_exporter/files/mlhpc-efa-exporter")

# Counters as a p5 port exposes them (names from the efa driver), with distinct values.
PORT_COUNTERS = {
    "rx_bytes": 918273645501,
    "tx_bytes": 918273600022,
    "rx_pkts": 112233445,
    "tx_pkts": 112233001,
    "rx_drops": 3,
    "send_bytes": 5544332211,
    "send_wrs": 77889,
    "recv_bytes": 5544330000,
    "recv_wrs": 77880,
    "rdma_read_bytes": 880011223344,
    "rdma_read_wrs": 1200345,
    "rdma_read_wr_err": 0,
    "rdma_read_resp_bytes": 870011223344,
    "rdma_write_bytes": 12345678901,
    "rdma_write_wrs": 45678,
    "rdma_write_wr_err": 0,
    "rdma_write_recv_bytes": 12345600000,
    "retrans_bytes": 4096,
    "retrans_pkts": 2,
    "retrans_timeout_events": 1,
    "impaired_remote_conn_events": 0,
    "unresponsive_remote_events": 0,
}


def make_port(device_dir: Path, port: str, counters: dict[str, int], state: str | None) -> Path:
    port_dir = device_dir / "ports" / port
    hw = port_dir / "hw_counters"
    hw.mkdir(parents=True)
    for name, value in counters.items():
        (hw / name).write_text(f"{value}\n")
    (hw / "lifespan").write_text("10\n")
    if state is not None:
        (port_dir / "state").write_text(f"{state}\n")
    return port_dir


@pytest.fixture
def sysfs(tmp_path: Path) -> Path:
    ib = tmp_path / "class" / "infiniband"
    # An EFA device named by rdma-core, with a driver link as on a live node.
    dev0 = ib / "rdmap0s31"
    port = make_port(dev0, "1", PORT_COUNTERS, "4: ACTIVE")
    (dev0 / "device").mkdir()
    (dev0 / "device" / "driver").symlink_to("../../../bus/pci/drivers/efa")
    # A garbled counter and a counter whose file vanished: both are scrape errors.
    (port / "hw_counters" / "rx_drops_garbled").write_text("not-a-number\n")
    (port / "hw_counters" / "tx_pkts_gone").symlink_to(port / "does-not-exist")
    # A second EFA device without a driver link (as in a copied tree), port down, with counters/.
    dev1 = ib / "efa_1"
    port1 = make_port(dev1, "1", {"rx_bytes": 42, "tx_bytes": 43, "rx_drops": 0}, "1: DOWN")
    (port1 / "counters").mkdir()
    (port1 / "counters" / "link_downed").write_text("7\n")
    # A non-EFA RDMA device: its driver says so; it must not be exported.
    mlx = ib / "mlx5_0"
    make_port(mlx, "1", {"rx_bytes": 999}, "4: ACTIVE")
    (mlx / "device").mkdir()
    (mlx / "device" / "driver").symlink_to("../../../bus/pci/drivers/mlx5_core")
    return tmp_path


@pytest.fixture
def served(sysfs: Path):
    collector = exporter.Collector(sysfs)
    server = exporter.make_server("127.0.0.1:0", collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    yield base, sysfs
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read().decode()


def scrape(base: str) -> tuple[dict, dict, dict]:
    status, content_type, body = get(base + "/metrics")
    assert status == 200
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    return parse_exposition(body)


def labels(device: str, port: str = "1") -> tuple:
    return (("device", device), ("port", port))


def test_scrape_exports_every_port_counter_with_its_value(served):
    base, _ = served
    samples, _, types = scrape(base)
    for name, value in PORT_COUNTERS.items():
        metric = f"efa_{name}_total"
        assert types[metric] == "counter"
        assert samples[(metric, labels("rdmap0s31"))] == value
    assert samples[("efa_rx_bytes_total", labels("efa_1"))] == 42
    assert samples[("efa_link_downed_total", labels("efa_1"))] == 7


def test_devices_ports_and_non_efa_devices(served):
    base, _ = served
    samples, _, types = scrape(base)
    assert samples[("efa_devices", ())] == 2
    assert types["efa_devices"] == "gauge"
    assert samples[("efa_port_state_up", labels("rdmap0s31"))] == 1
    assert samples[("efa_port_state_up", labels("efa_1"))] == 0
    assert not [key for key in samples if ("device", "mlx5_0") in key[1]]
    assert not [key for key in samples if key[0] == "efa_lifespan_total"]
    assert samples[("efa_exporter_build_info", (("version", exporter.VERSION),))] == 1


def test_unreadable_counters_are_skipped_and_counted(served):
    base, _ = served
    samples, _, _ = scrape(base)
    assert samples[("efa_exporter_scrape_errors_total", ())] == 2
    assert not [key for key in samples if key[0] in ("efa_rx_drops_garbled_total", "efa_tx_pkts_gone_total")]
    samples, _, _ = scrape(base)
    assert samples[("efa_exporter_scrape_errors_total", ())] == 4


def test_counters_are_read_at_scrape_time(served):
    base, sysfs = served
    counter = sysfs / "class/infiniband/rdmap0s31/ports/1/hw_counters/rx_drops"
    counter.write_text("11\n")
    samples, _, _ = scrape(base)
    assert samples[("efa_rx_drops_total", labels("rdmap0s31"))] == 11


def test_index_and_unknown_paths(served):
    base, _ = served
    status, content_type, body = get(base + "/")
    assert status == 200
    assert content_type.startswith("text/html")
    assert 'href="/metrics"' in body
    status, _, _ = get(base + "/metricz")
    assert status == 404
    status, _, _ = get(base + "/metrics?debug=1")
    assert status == 200


def test_node_without_infiniband_class(tmp_path: Path):
    families = exporter.Collector(tmp_path).collect()
    samples, _, _ = parse_exposition(exporter.render(families))
    assert samples[("efa_devices", ())] == 0
    assert samples[("efa_exporter_scrape_errors_total", ())] == 0


def test_label_values_and_help_are_escaped():
    family = exporter.Family("efa_test_total", "counter", "Back\\slash and\nnewline.")
    family.add(5, device='we"ird\\name\nx')
    text = exporter.render([family])
    assert "# HELP efa_test_total Back\\\\slash and\\nnewline.\n" in text
    assert 'efa_test_total{device="we\\"ird\\\\name\\nx"} 5\n' in text
    samples, _, _ = parse_exposition(text)
    assert samples[("efa_test_total", (("device", 'we"ird\\name\nx'),))] == 5


@pytest.mark.parametrize(
    ("listen", "expected"),
    [("0.0.0.0:9109", ("0.0.0.0", 9109)), (":9109", ("0.0.0.0", 9109)), ("[::]:9109", ("::", 9109))],
)
def test_parse_listen(listen, expected):
    assert exporter.parse_listen(listen) == expected


def test_parse_listen_rejects_a_missing_port():
    with pytest.raises(ValueError, match="HOST:PORT"):
        exporter.parse_listen("0.0.0.0")
