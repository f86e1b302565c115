"""Behaviour of the common role on a converged host."""

import os
import re

SYSCTL_FILE = "/etc/sysctl.d/90-mlhpc-common.conf"


def _sysctl_file(host):
    values = {}
    for line in host.file(SYSCTL_FILE).content_string.splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def test_sysctl_file_has_defaults_and_extras(host):
    values = _sysctl_file(host)
    assert values["net.core.default_qdisc"] == "fq"
    assert values["net.ipv4.tcp_congestion_control"] == "bbr"
    assert values["net.core.rmem_max"] == "268435456"
    assert values["net.ipv4.tcp_slow_start_after_idle"] == "0"


def test_network_namespace_parameters_are_live(host):
    # In a container only net.ipv4/net.ipv6 belong to the host's own namespace.
    assert host.sysctl("net.ipv4.tcp_congestion_control") == "bbr"
    assert host.sysctl("net.ipv4.tcp_mtu_probing") == 1
    assert host.sysctl("net.ipv4.tcp_slow_start_after_idle") == 0
    live = host.check_output("sysctl -n net.ipv4.tcp_rmem").split()
    assert live == ["4096", "87380", "134217728"]


def test_login_shell_sees_limits(host):
    v = host.ansible.get_variables()
    nofile = str(v["common_limits_nofile"])
    memlock = str(v["common_limits_memlock"])
    # The host starts with soft nofile 1024 and soft memlock 64 KiB: only pam_limits
    # reading the role's file raises them in a new login session, for root and a user.
    for user in ("root", "nobody"):
        seen = host.check_output(f"su -s /bin/sh -l {user} -c 'ulimit -Sn; ulimit -Sl; ulimit -Ss'").split()
        assert seen == [nofile, memlock, "unlimited"], user


def test_timesync_configured_and_enabled(host):
    sources = host.file("/etc/chrony/sources.d/mlhpc.sources").content_string
    for server in host.ansible.get_variables()["common_timesync_servers"]:
        assert re.search(rf"^server {re.escape(server)} .*iburst", sources, re.M)
    assert host.service("chrony").is_enabled
    # chronyd accepts the whole configuration, sources directory included.
    assert host.run("chronyd -p").rc == 0


def test_packages(host):
    assert host.package("numactl").is_installed
    assert host.package("jq").is_installed
    assert host.run("numactl --hardware").rc == 0
    # Installed by prepare, purged by the role.
    assert not host.package("unattended-upgrades").is_installed


def test_cluster_hosts_resolve(host):
    # Every host resolves every other by hostname through the managed block.
    net = os.environ["MLHPC_NET"]
    assert "BEGIN mlhpc.cluster common" in host.file("/etc/hosts").content_string
    for peer, address in (("bookworm", f"{net}.11"), ("trixie", f"{net}.12")):
        assert host.check_output(f"getent hosts {peer}").split()[0] == address
