"""The Slurm cluster model: nodes, partitions and controller, validated from the inventory.

``build_cluster(hosts, partitions, ...)`` turns inventory hosts (their groups, variables
and gathered facts) and the partition settings into the data that ``slurm.conf`` and
``gres.conf`` are rendered from. It is a pure function: the filter
``mlhpc.cluster.slurm_cluster`` feeds it from ``hostvars`` and ``groups``, and the Slurm
role renders its result, so every rule about node hardware and partition membership is
written once.

It never stops at the first problem: every error and warning is collected, each a complete
sentence naming the variable at fault and the fix, so one run reports them all.

Hardware of a node, in order of preference:

* the host's gathered facts (``processor_count`` sockets, ``processor_cores`` cores per
  socket, ``processor_threads_per_core``, ``processor_vcpus``, ``memtotal_mb``);
  RealMemory is ``memtotal_mb - memory_reserve_mib``, never below 1;
* else the instance profile (the ``mlhpc_instance`` fact's profile, or
  ``mlhpc_instance_type`` looked up in the instance profile table); RealMemory is the
  profile's ``memory_mib - memory_reserve_mib``;
* else an error: the host is unreachable or its facts were not gathered, and no instance
  type says what it is.

``slurm_node_real_memory`` overrides RealMemory. GPU GRES and node features come from the
instance profile whenever one is known, with facts or without.

``hostlist(names)`` compresses node names into Slurm hostlist syntax for ``Nodes=`` lines.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping

from ansible_collections.mlhpc.cluster.plugins.module_utils.instance_profiles import (
    UnknownInstanceType,
    get_profile,
)

DEFAULT_MEMORY_RESERVE_MIB = 1024
CONTROLLER_GROUP = "slurm_controller"
DBD_GROUP = "slurm_dbd"

# Names Slurm takes without quoting in slurm.conf and hostlist expressions.
_SAFE_NAME_RE = re.compile(r"^[A-Za-z0-9._-]+$")
_SAFE_NAME_HINT = "use only letters, digits, '-', '_' and '.'"
# Partition option keys as slurm.conf spells them (MaxNodes, OverSubscribe, AllowGroups).
_OPTION_KEY_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")
# Slurm time limits: minutes, minutes:seconds, hours:minutes:seconds, days-hours,
# days-hours:minutes, days-hours:minutes:seconds.
_TIME_RE = re.compile(r"^(?:\d+(?::\d+){0,2}|\d+-\d+(?::\d+){0,2})$")
_INFINITE = ("INFINITE", "UNLIMITED")
_STATES = ("UP", "DOWN", "DRAIN", "INACTIVE")
_NUMERIC_SUFFIX_RE = re.compile(r"^(.*?)(\d+)$")

PARTITION_KEYS = ("name", "nodes", "groups", "default", "max_time", "state", "options")
# Options set through a partition's own keys; options may not repeat them.
_RESERVED_OPTIONS = {
    "partitionname": "name",
    "nodes": "nodes",
    "default": "default",
    "maxtime": "max_time",
    "state": "state",
}
_HARDWARE_FACTS = (
    "processor_count",
    "processor_cores",
    "processor_threads_per_core",
    "processor_vcpus",
    "memtotal_mb",
)


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _as_list(value):
    """Return ``value`` as a list of strings, or None when it is not a list of strings."""
    if value is None:
        return []
    if isinstance(value, (str, bytes, Mapping)):
        return None
    try:
        items = list(value)
    except TypeError:
        return None
    if not all(isinstance(item, str) for item in items):
        return None
    return items


def _unique(items):
    seen = set()
    return [item for item in items if not (item in seen or seen.add(item))]


def _quoted(names):
    return ", ".join(f"'{name}'" for name in names)


# --- hostlist ----------------------------------------------------------------------------


def _ranges(numbers):
    """Yield (first, last) runs of consecutive numbers from a sorted list."""
    first = last = numbers[0]
    for number in numbers[1:]:
        if number == last + 1:
            last = number
            continue
        yield first, last
        first = last = number
    yield first, last


def hostlist(names):
    """Compress node names into Slurm hostlist syntax.

    ``["compute1", "compute2", "compute3", "compute5", "gpu-a01", "gpu-a02"]`` becomes
    ``"compute[1-3,5],gpu-a[01-02]"``. Names sharing a prefix and a numeric suffix are
    bracketed; a suffix with leading zeros keeps its width (``gpu-a[01-02]``), and an
    unpadded number of that same width joins it (``node[08-10]``). Names without a numeric
    suffix, and single names, are listed as they are. Duplicates are dropped; groups appear
    in the order their first name does. An empty list gives an empty string.
    """
    names = list(names)
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"hostlist expects node name strings, got {name!r}")
    # (prefix, width) -> digit strings; width 0 means no zero padding.
    groups = {}
    plain = {}
    padded_widths = set()
    parsed = []
    for name in _unique(names):
        match = _NUMERIC_SUFFIX_RE.match(name)
        if not match:
            parsed.append((name, None, None))
            continue
        prefix, digits = match.groups()
        if len(digits) > 1 and digits.startswith("0"):
            padded_widths.add((prefix, len(digits)))
        parsed.append((name, prefix, digits))
    order = []
    for name, prefix, digits in parsed:
        if prefix is None:
            key = ("", name)
            plain[key] = name
        else:
            width = len(digits) if (prefix, len(digits)) in padded_widths else 0
            key = (prefix, width)
            groups.setdefault(key, []).append(int(digits))
        if key not in order:
            order.append(key)
    parts = []
    for key in order:
        if key in plain:
            parts.append(plain[key])
            continue
        prefix, width = key
        numbers = sorted(set(groups[key]))
        if len(numbers) == 1:
            parts.append(f"{prefix}{numbers[0]:0{width}d}")
            continue
        runs = []
        for first, last in _ranges(numbers):
            if first == last:
                runs.append(f"{first:0{width}d}")
            else:
                runs.append(f"{first:0{width}d}-{last:0{width}d}")
        parts.append(f"{prefix}[{','.join(runs)}]")
    return ",".join(parts)


# --- hosts -------------------------------------------------------------------------------


def _host_parts(host):
    host = host if isinstance(host, Mapping) else {}
    host_vars = host.get("vars") or {}
    facts = host.get("facts") or {}
    return (
        host_vars if isinstance(host_vars, Mapping) else {},
        facts if isinstance(facts, Mapping) else {},
    )


def _node_name(inventory_hostname, host_vars, facts, errors):
    """Return (name, origin) for a host, or (None, None) after recording an error."""
    override = host_vars.get("slurm_node_name")
    if override is not None:
        if not isinstance(override, str) or not _SAFE_NAME_RE.match(override):
            errors.append(
                f"Host '{inventory_hostname}': slurm_node_name {override!r} is not a valid Slurm "
                f"node name; {_SAFE_NAME_HINT}."
            )
            return None, None
        return override, "slurm_node_name"
    hostname = facts.get("hostname")
    if isinstance(hostname, str) and hostname:
        name, origin = hostname, "the host's hostname fact"
    else:
        try:
            ipaddress.ip_address(inventory_hostname)
        except ValueError:
            name, origin = inventory_hostname.split(".", 1)[0], "the inventory hostname"
        else:
            errors.append(
                f"Host '{inventory_hostname}': no Slurm node name can be derived from an IP address "
                "without facts. Gather facts from the host, or set slurm_node_name for it."
            )
            return None, None
    if not _SAFE_NAME_RE.match(name):
        errors.append(
            f"Host '{inventory_hostname}': Slurm node name '{name}' (from {origin}) is not valid; "
            f"{_SAFE_NAME_HINT}. Set slurm_node_name for the host to a valid name."
        )
        return None, None
    return name, origin


def _address(host_vars, facts):
    default_ipv4 = facts.get("default_ipv4")
    if isinstance(default_ipv4, Mapping) and default_ipv4.get("address"):
        return default_ipv4["address"]
    return host_vars.get("ansible_host") or None


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


def _hardware_facts(facts):
    """Return the facts' CPU and memory numbers, or None when they were not gathered."""
    values = {}
    for key in _HARDWARE_FACTS:
        try:
            value = int(facts[key])
        except (KeyError, TypeError, ValueError):
            return None
        if value < 1:
            return None
        values[key] = value
    return values


def _features(inventory_hostname, host_vars, profile, errors):
    features = []
    if profile:
        features.append(profile["instance_type"])
        model = profile["accelerator"].get("model")
        if model:
            features.append(model.lower())
        if profile.get("efa_interfaces"):
            features.append("efa")
    extra = _as_list(host_vars.get("slurm_node_features"))
    if extra is None:
        errors.append(
            f"Host '{inventory_hostname}': slurm_node_features must be a list of feature names, got "
            f"{host_vars.get('slurm_node_features')!r}. Write it as a YAML list."
        )
        extra = []
    bad = [feature for feature in extra if not _SAFE_NAME_RE.match(feature)]
    if bad:
        errors.append(
            f"Host '{inventory_hostname}': slurm_node_features has invalid feature names {_quoted(bad)}; "
            f"{_SAFE_NAME_HINT}."
        )
    features.extend(feature for feature in extra if feature not in bad)
    return _unique(features)


def _real_memory_override(inventory_hostname, host_vars, hardware, profile, reserve, errors):
    override = host_vars.get("slurm_node_real_memory")
    if override is None:
        return None
    if not _is_int(override) or override < 1:
        errors.append(
            f"Host '{inventory_hostname}': slurm_node_real_memory must be a whole number of MiB above 0, "
            f"got {override!r}. Set it to the RealMemory Slurm should use, or remove it."
        )
        return None
    if hardware is not None:
        total, source = hardware["memtotal_mb"], "memtotal_mb fact"
    elif profile:
        total, source = profile["memory_mib"], f"{profile['instance_type']} instance profile"
    else:
        return override
    if override > total:
        errors.append(
            f"Host '{inventory_hostname}': slurm_node_real_memory is {override} MiB but the host has "
            f"only {total} MiB ({source}). Set slurm_node_real_memory to at most "
            f"{max(total - reserve, 1)} MiB, or remove it to use memory minus memory_reserve_mib."
        )
        return None
    return override


def _build_node(inventory_hostname, host, reserve, errors):
    """Return the node dict of a host, or None when its hardware is not known."""
    host_vars, facts = _host_parts(host)
    name, _ = _node_name(inventory_hostname, host_vars, facts, errors)
    profile = _profile(inventory_hostname, host_vars, errors)
    hardware = _hardware_facts(facts)
    features = _features(inventory_hostname, host_vars, profile, errors)
    override = _real_memory_override(inventory_hostname, host_vars, hardware, profile, reserve, errors)
    if hardware is not None:
        topology = {
            "cpus": hardware["processor_vcpus"],
            "sockets": hardware["processor_count"],
            "cores_per_socket": hardware["processor_cores"],
            "threads_per_core": hardware["processor_threads_per_core"],
            "real_memory": max(hardware["memtotal_mb"] - reserve, 1),
        }
        source = "facts"
    elif profile:
        topology = {
            "cpus": profile["vcpus"],
            "sockets": profile["sockets"],
            "cores_per_socket": profile["cores_per_socket"],
            "threads_per_core": profile["threads_per_core"],
            "real_memory": max(profile["memory_mib"] - reserve, 1),
        }
        source = "profile"
    else:
        if not host_vars.get("mlhpc_instance_type"):
            errors.append(
                f"Host '{inventory_hostname}' is a Slurm node but has no hardware facts (unreachable, or "
                "facts not gathered?) and no instance type. Make it reachable and gather facts, or set "
                "mlhpc_instance_type for it."
            )
        return None
    if override is not None:
        topology["real_memory"] = override
        source = "override"
    accelerator = (profile or {}).get("accelerator") or {}
    gpu_type = gres = None
    gpu_count = 0
    if accelerator.get("kind") == "nvidia" and accelerator.get("count"):
        gpu_type = accelerator["model"].lower()
        gpu_count = accelerator["count"]
        gres = f"gpu:{gpu_type}:{gpu_count}"
    if name is None:
        return None
    return {
        "name": name,
        "inventory_hostname": inventory_hostname,
        "addr": _address(host_vars, facts),
        **topology,
        "gres": gres,
        "gpu_type": gpu_type,
        "gpu_count": gpu_count,
        "features": features,
        "instance_type": profile["instance_type"] if profile else None,
        "source": source,
    }


def _service_host(role, group, candidates, hosts, errors, required):
    """Return {name, addr, inventory_hostname} of the first of ``candidates``."""
    candidates = _as_list(candidates)
    if candidates is None:
        errors.append(f"The {role} hosts must be a list of inventory hostnames.")
        return None
    unknown = [host for host in candidates if host not in hosts]
    if unknown:
        errors.append(
            f"The {role} hosts {_quoted(unknown)} are not inventory hosts. "
            f"Put inventory hosts in the group '{group}'."
        )
    known = [host for host in candidates if host in hosts]
    if not known:
        if required and not unknown:
            errors.append(
                f"No host is in the inventory group '{group}'. Add the host that runs {role} to "
                f"the group '{group}'."
            )
        return None
    inventory_hostname = known[0]
    host_vars, facts = _host_parts(hosts[inventory_hostname])
    name, _ = _node_name(inventory_hostname, host_vars, facts, errors)
    if name is None:
        return None
    return {
        "name": name,
        "addr": _address(host_vars, facts),
        "inventory_hostname": inventory_hostname,
    }


# --- partitions --------------------------------------------------------------------------


def _option_value(value):
    if isinstance(value, bool):
        return "YES" if value else "NO"
    if isinstance(value, (int, float, str)):
        return str(value)
    items = _as_list(value)
    if items is not None:
        return ",".join(items)
    return None


def _check_partition_settings(label, partition, errors):
    """Return the validated default, max_time, state and options of a partition."""
    unknown = [key for key in partition if key not in PARTITION_KEYS]
    if unknown:
        errors.append(
            f"slurm_partitions: partition {label} has unknown keys {_quoted(sorted(map(str, unknown)))}; "
            f"the keys are {', '.join(PARTITION_KEYS)}. Put other Slurm partition settings under 'options'."
        )
    default = partition.get("default", False)
    if not isinstance(default, bool):
        errors.append(
            f"slurm_partitions: partition {label} has default {default!r}; set it to true or false."
        )
        default = False

    max_time = partition.get("max_time", "INFINITE")
    if _is_int(max_time) and max_time >= 0:
        max_time = str(max_time)
    elif isinstance(max_time, str) and max_time.strip().upper() in _INFINITE:
        max_time = max_time.strip().upper()
    elif not (isinstance(max_time, str) and _TIME_RE.match(max_time.strip())):
        errors.append(
            f"slurm_partitions: partition {label} has max_time {max_time!r}, which is not a Slurm time "
            "limit. Use minutes, 'HH:MM:SS', 'D-HH:MM:SS' or INFINITE."
        )
        max_time = "INFINITE"
    else:
        max_time = max_time.strip()

    state = partition.get("state", "UP")
    if isinstance(state, str) and state.strip().upper() in _STATES:
        state = state.strip().upper()
    else:
        errors.append(
            f"slurm_partitions: partition {label} has state {state!r}; use one of {', '.join(_STATES)}."
        )
        state = "UP"

    raw_options = partition.get("options") or {}
    options = {}
    if not isinstance(raw_options, Mapping):
        errors.append(
            f"slurm_partitions: partition {label} has options {raw_options!r}; write them as a mapping "
            "of Slurm partition keys to values, such as {OverSubscribe: EXCLUSIVE}."
        )
        raw_options = {}
    for key, value in raw_options.items():
        if not isinstance(key, str) or not _OPTION_KEY_RE.match(key):
            errors.append(
                f"slurm_partitions: partition {label} has option key {key!r}, which is not a Slurm "
                "partition key. Spell it as slurm.conf does, such as MaxNodes."
            )
            continue
        own_key = _RESERVED_OPTIONS.get(key.lower())
        if own_key:
            errors.append(
                f"slurm_partitions: partition {label} sets {key} under options; set it with the "
                f"partition's '{own_key}' key instead."
            )
            continue
        rendered = _option_value(value)
        if rendered is None or rendered == "":
            errors.append(
                f"slurm_partitions: partition {label} option {key} has value {value!r}; use a string, "
                "a number, true/false or a list of strings."
            )
            continue
        options[key] = rendered
    return default, max_time, state, options


def _partition_members(label, partition, inventory, group_members, errors):
    """Return the inventory hosts of a partition, in inventory order."""
    members = set()
    listed = {}
    for key in ("nodes", "groups"):
        items = _as_list(partition.get(key))
        if items is None:
            errors.append(
                f"slurm_partitions: partition {label} has {key} {partition.get(key)!r}; write it as a "
                "YAML list of names."
            )
            items = []
        listed[key] = items
    unknown_hosts = [host for host in listed["nodes"] if host not in inventory]
    if unknown_hosts:
        errors.append(
            f"slurm_partitions: partition {label} lists nodes that are not inventory hosts: "
            f"{_quoted(unknown_hosts)}. Fix the names in its 'nodes' list, or add the hosts to the inventory."
        )
    members.update(host for host in listed["nodes"] if host in inventory)
    unknown_groups = [group for group in listed["groups"] if group not in group_members]
    if unknown_groups:
        errors.append(
            f"slurm_partitions: partition {label} names groups that no inventory host belongs to: "
            f"{_quoted(unknown_groups)}. Fix the names in its 'groups' list, or add hosts to those groups."
        )
    for group in listed["groups"]:
        members.update(group_members.get(group, ()))
    if not members and not unknown_hosts and not unknown_groups:
        errors.append(
            f"slurm_partitions: partition {label} has no nodes. Give it a 'nodes' list of inventory "
            "hosts or a 'groups' list of inventory groups with hosts in them."
        )
    return [host for host in inventory if host in members]


# --- the cluster -------------------------------------------------------------------------


def build_cluster(
    hosts,
    partitions,
    *,
    memory_reserve_mib=DEFAULT_MEMORY_RESERVE_MIB,
    controller_hosts=(),
    dbd_hosts=(),
    controller_group=CONTROLLER_GROUP,
    dbd_group=DBD_GROUP,
):
    """Validate the inventory and partitions and compute the Slurm cluster model.

    ``hosts`` maps inventory hostnames, in inventory order, to
    ``{"groups": [...], "vars": {...}, "facts": {...}}``. ``partitions`` is the list of
    partition settings (``name``, ``nodes``, ``groups``, ``default``, ``max_time``,
    ``state``, ``options``). ``controller_hosts`` and ``dbd_hosts`` are the inventory hosts
    of the groups ``controller_group`` and ``dbd_group``; those names appear in messages.

    Returns ``{"nodes", "partitions", "controller", "dbd", "errors", "warnings"}``; the
    model is only fit to render when ``errors`` is empty.
    """
    errors = []
    warnings = []
    if not isinstance(hosts, Mapping):
        errors.append("The hosts must be a mapping of inventory hostname to groups, vars and facts.")
        hosts = {}
    if not _is_int(memory_reserve_mib) or memory_reserve_mib < 0:
        errors.append(
            f"memory_reserve_mib must be a whole number of MiB, 0 or more, got {memory_reserve_mib!r}. "
            f"Set it to the memory to keep from Slurm jobs (default {DEFAULT_MEMORY_RESERVE_MIB})."
        )
        memory_reserve_mib = DEFAULT_MEMORY_RESERVE_MIB
    inventory = list(hosts)
    group_members = {}
    for host in inventory:
        host_groups = hosts[host].get("groups") if isinstance(hosts[host], Mapping) else None
        for group in _as_list(host_groups) or ():
            group_members.setdefault(group, []).append(host)

    if partitions is None or isinstance(partitions, (str, bytes, Mapping)):
        errors.append("slurm_partitions must be a list of partitions, each a mapping with at least a 'name'.")
        partitions = []

    result_partitions = []
    partition_hosts = []
    names_seen = {}
    for index, partition in enumerate(partitions):
        if not isinstance(partition, Mapping):
            errors.append(
                f"slurm_partitions: entry {index + 1} is {partition!r}; each partition must be a mapping "
                "with at least a 'name'."
            )
            continue
        name = partition.get("name")
        if not isinstance(name, str) or not name:
            errors.append(f"slurm_partitions: entry {index + 1} has no 'name'. Give every partition a name.")
            label = f"number {index + 1}"
        else:
            label = f"'{name}'"
            if not _SAFE_NAME_RE.match(name):
                errors.append(
                    f"slurm_partitions: partition name '{name}' is not a valid Slurm name; {_SAFE_NAME_HINT}."
                )
            names_seen[name] = names_seen.get(name, 0) + 1
            if names_seen[name] == 2:
                errors.append(
                    f"slurm_partitions: partition name '{name}' is used more than once. Give each "
                    "partition a unique name."
                )
        default, max_time, state, options = _check_partition_settings(label, partition, errors)
        members = _partition_members(label, partition, inventory, group_members, errors)
        partition_hosts.append(members)
        result_partitions.append(
            {
                "name": name if isinstance(name, str) else None,
                "inventory_hosts": members,
                "nodes": [],
                "hostlist": "",
                "default": default,
                "max_time": max_time,
                "state": state,
                "options": options,
            }
        )

    defaults = [p["name"] for p in result_partitions if p["default"]]
    if len(defaults) > 1:
        errors.append(
            f"slurm_partitions: more than one partition is marked default ({_quoted(defaults)}). Set "
            "'default: true' on one partition only."
        )
    elif not defaults and result_partitions:
        result_partitions[0]["default"] = True
        warnings.append(
            f"slurm_partitions: no partition is marked default, so '{result_partitions[0]['name']}' "
            "becomes the default. Set 'default: true' on the partition jobs should go to."
        )

    node_hosts = _unique(host for members in partition_hosts for host in members)
    nodes = []
    node_names = {}
    for inventory_hostname in node_hosts:
        node = _build_node(inventory_hostname, hosts[inventory_hostname], memory_reserve_mib, errors)
        if node is None:
            continue
        node_names[inventory_hostname] = node["name"]
        nodes.append(node)

    owners = {}
    for node in nodes:
        owners.setdefault(node["name"], []).append(node["inventory_hostname"])
    for name, owner_hosts in owners.items():
        if len(owner_hosts) > 1:
            errors.append(
                f"Hosts {_quoted(owner_hosts)} would all be Slurm node '{name}'. Set slurm_node_name on "
                "all but one of them, or give the hosts distinct hostnames."
            )

    from_profile = [node["inventory_hostname"] for node in nodes if node["source"] == "profile"]
    if from_profile:
        warnings.append(
            f"RealMemory of {_quoted(from_profile)} comes from the instance profile, which states more "
            "memory than the operating system reports; slurmd drains a node whose memory is below "
            "RealMemory. Gather facts from these hosts, or set slurm_node_real_memory."
        )

    for partition in result_partitions:
        partition["nodes"] = [node_names[host] for host in partition["inventory_hosts"] if host in node_names]
        partition["hostlist"] = hostlist(partition["nodes"])

    controller = _service_host("slurmctld", controller_group, controller_hosts, hosts, errors, True)
    dbd = _service_host("slurmdbd", dbd_group, dbd_hosts, hosts, errors, False)
    return {
        "nodes": nodes,
        "partitions": result_partitions,
        "controller": controller,
        "dbd": dbd,
        "errors": _unique(errors),
        "warnings": warnings,
    }
