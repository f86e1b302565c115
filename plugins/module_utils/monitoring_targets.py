"""Where the exporters run and what Prometheus scrapes, decided from the inventory.

``build_targets(hosts, ...)`` turns inventory hosts (their groups, variables and gathered
facts) into one list of scrape targets per exporter. It is a pure function: the filter
``mlhpc.cluster.monitoring_targets`` feeds it from ``hostvars`` and ``groups``; the site
playbook runs each exporter on the hosts of its list and the Prometheus role scrapes the
same lists, so the rule that decides where an exporter runs is written once.

Every host of the monitored groups is a candidate, in inventory order:

* node exporter: every host, unless ``node_exporter_enabled`` is false;
* EFA exporter: ``efa_exporter_enabled``, else whether the instance profile has EFA interfaces;
* DCGM exporter: ``dcgm_exporter_enabled``, else whether the profile has NVIDIA GPUs;
* Slurm exporter: the hosts with ``slurm_exporter_enabled`` true; when no host sets that
  variable, the first host of the controller group (it has the Slurm client commands).

The instance profile is the ``mlhpc_instance`` fact's, or ``mlhpc_instance_type`` looked up
in the profile table. A target is ``{host, name, address, port}``: ``name`` is the Slurm node
name (``slurm_node_name``, else the hostname fact, else the first label of the inventory
hostname) and becomes the ``instance`` label, so that series join with Slurm's node names;
``address`` is the default IPv4 fact, else ``ansible_host``, else the inventory hostname.
Ports come from ``<exporter>_port`` host variables. ``by_host`` maps each candidate host
to the exporters it runs.

Problems are collected, never raised: each is a sentence naming the variable and the fix.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from ansible_collections.mlhpc.cluster.plugins.module_utils.instance_profiles import (
    UnknownInstanceType,
    get_profile,
)

EXPORTERS = ("node_exporter", "efa_exporter", "dcgm_exporter", "slurm_exporter")
DEFAULT_PORTS = {"node_exporter": 9100, "efa_exporter": 9109, "dcgm_exporter": 9400, "slurm_exporter": 9341}
DEFAULT_MONITORED_GROUPS = ("slurm_controller", "slurm_dbd", "slurm_compute", "slurm_login", "monitoring")
CONTROLLER_GROUP = "slurm_controller"

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def _flag(inventory_hostname, host_vars, key, errors):
    """The host's boolean variable ``key``: True, False, or None when it is not set."""
    value = host_vars.get(key)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    errors.append(f"Host '{inventory_hostname}': {key} must be true or false, got {value!r}.")
    return None


def _port(inventory_hostname, host_vars, exporter, errors):
    key = f"{exporter}_port"
    value = host_vars.get(key, DEFAULT_PORTS[exporter])
    try:
        port = int(value)
    except (TypeError, ValueError):
        port = 0
    if isinstance(value, bool) or not 0 < port < 65536:
        errors.append(f"Host '{inventory_hostname}': {key} must be a TCP port (1-65535), got {value!r}.")
        return None
    return port


def _profile(inventory_hostname, host_vars, errors):
    instance = host_vars.get("mlhpc_instance")
    if isinstance(instance, Mapping) and isinstance(instance.get("profile"), Mapping):
        return instance["profile"]
    instance_type = host_vars.get("mlhpc_instance_type")
    if instance_type in (None, ""):
        return None
    if not isinstance(instance_type, str):
        errors.append(
            f"Host '{inventory_hostname}': mlhpc_instance_type must be an instance type string such "
            f"as 'p5.48xlarge', got {instance_type!r}."
        )
        return None
    try:
        return get_profile(instance_type.strip())
    except UnknownInstanceType as err:
        errors.append(f"Host '{inventory_hostname}': mlhpc_instance_type: {err}.")
        return None


def _name(inventory_hostname, host_vars, facts):
    override = host_vars.get("slurm_node_name")
    if isinstance(override, str) and override:
        return override
    hostname = facts.get("hostname")
    if isinstance(hostname, str) and hostname:
        return hostname
    try:
        ipaddress.ip_address(inventory_hostname)
    except ValueError:
        return inventory_hostname.split(".", 1)[0]
    return inventory_hostname


def _address(inventory_hostname, host_vars, facts):
    default_ipv4 = facts.get("default_ipv4")
    if isinstance(default_ipv4, Mapping) and default_ipv4.get("address"):
        return default_ipv4["address"]
    return host_vars.get("ansible_host") or inventory_hostname


def _parts(host):
    host = host if isinstance(host, Mapping) else {}
    host_vars = host.get("vars") if isinstance(host.get("vars"), Mapping) else {}
    facts = host.get("facts") if isinstance(host.get("facts"), Mapping) else {}
    groups = host.get("groups") or []
    return list(groups), host_vars, facts


def build_targets(hosts, monitored_groups=DEFAULT_MONITORED_GROUPS, controller_group=CONTROLLER_GROUP):
    """Scrape targets per exporter for ``hosts`` ({inventory_hostname: {groups, vars, facts}}).

    ``hosts`` is in inventory order; the result keeps that order within each list.
    """
    result = {exporter: [] for exporter in EXPORTERS}
    errors: list[str] = []
    monitored = set(monitored_groups)
    candidates = [name for name, host in hosts.items() if monitored & set(_parts(host)[0])]

    explicit_slurm = False
    decided = {}
    for inventory_hostname in candidates:
        _, host_vars, facts = _parts(hosts[inventory_hostname])
        profile = _profile(inventory_hostname, host_vars, errors)
        accelerator = (profile or {}).get("accelerator") or {}
        defaults = {
            "node_exporter": True,
            "efa_exporter": bool((profile or {}).get("efa_interfaces")),
            "dcgm_exporter": accelerator.get("kind") == "nvidia",
            "slurm_exporter": False,
        }
        runs = {}
        for exporter in EXPORTERS:
            flag = _flag(inventory_hostname, host_vars, f"{exporter}_enabled", errors)
            if exporter == "slurm_exporter" and flag is not None:
                explicit_slurm = True
            runs[exporter] = defaults[exporter] if flag is None else flag
        decided[inventory_hostname] = runs

    if not explicit_slurm:
        controllers = [name for name in candidates if controller_group in _parts(hosts[name])[0]]
        if controllers:
            decided[controllers[0]]["slurm_exporter"] = True

    for inventory_hostname in candidates:
        _, host_vars, facts = _parts(hosts[inventory_hostname])
        for exporter in EXPORTERS:
            if not decided[inventory_hostname][exporter]:
                continue
            port = _port(inventory_hostname, host_vars, exporter, errors)
            if port is None:
                continue
            result[exporter].append(
                {
                    "host": inventory_hostname,
                    "name": _name(inventory_hostname, host_vars, facts),
                    "address": _address(inventory_hostname, host_vars, facts),
                    "port": port,
                }
            )
    by_host = {name: [] for name in candidates}
    for exporter in EXPORTERS:
        for target in result[exporter]:
            by_host[target["host"]].append(exporter)
    result["by_host"] = by_host
    result["errors"] = errors
    return result
