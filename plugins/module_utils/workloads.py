"""The workload plan: which job scripts to render, for which partition, with which settings.

``describe_cluster(description)`` turns a cluster described by variables (``workloads_cluster``)
into partitions with their instance profile; ``cluster_from_model(model, ...)`` does the same
for the Slurm cluster model of an inventory (``mlhpc.cluster.slurm_cluster``).
``build_plan(catalogue, cluster, ...)`` checks a request (workloads, per-workload settings,
runtimes) against the catalogue (``workloads/catalogue.yml``) and the cluster, and returns
everything the templates need: one entry per workload and one per file to render.

Like the Slurm model, it never stops at the first problem: each error is a sentence that
names the variable at fault and says what would be valid, and all of them are returned.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ansible_collections.mlhpc.cluster.plugins.module_utils.instance_profiles import (
    UnknownInstanceType,
    get_profile,
)

RUNTIMES = ("container", "host")
ACCELERATOR_KINDS = ("nvidia", "neuron", "none")
# Launchers, and whether each starts one task per process (True) or one per node (False).
LAUNCHERS = {
    "torchrun": False,
    "accelerate": False,
    "per_node": False,
    "neuron": False,
    "nccom": False,
    "per_node_check": False,
    "srun": True,
    "mpirun": True,
}
KUBERNETES_KINDS = ("pytorchjob", "mpijob")
WORKLOAD_KEYS = (
    "title",
    "description",
    "accelerators",
    "runtimes",
    "nodes",
    "min_nodes",
    "image",
    "venv",
    "preset",
    "presets",
    "defaults",
    "command",
    "kubernetes",
    "templates",
    "files",
    "exclusive",
    "wait_all_nodes",
)
SETTING_KEYS = (
    "partition",
    "nodes",
    "gpus_per_node",
    "procs_per_node",
    "preset",
    "runtimes",
    "vars",
    "venv",
    "time",
)
CLUSTER_KEYS = ("partition", "instance_type", "nodes", "partitions", "mounts", "kernel", "gres")
PARTITION_KEYS = (
    "name",
    "instance_type",
    "nodes",
    "default",
    "gres",
    "kernel",
    "versions",
    "versions_source",
)
# Names a manifest may give the components the EFA/NCCL rules read.
MANIFEST_ALIASES = {
    "libfabric": ("libfabric", "efa_libfabric"),
    "aws_ofi_nccl": ("aws_ofi_nccl", "aws-ofi-nccl", "ofi_nccl"),
    "efa_installer": ("efa_installer", "efa-installer", "efa"),
    "nccl": ("nccl",),
    "cuda": ("cuda",),
}
PLACEHOLDERS = ("shared_dir", "workloads_dir", "images_dir", "workload_dir")

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9.-]*$")
_VAR_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")
_PLACEHOLDER_RE = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")
_SLURM_NAME_RE = re.compile(r"^[A-Za-z0-9._-]+$")
_TIME_RE = re.compile(r"^(?:\d+(?::\d+){0,2}|\d+-\d+(?::\d+){0,2})$")
# Variables the job skeleton itself sets; the catalogue may not reuse them.
RESERVED_VARS = (
    "PRESET",
    "PROCS_PER_NODE",
    "GPUS_PER_NODE",
    "IMAGE",
    "CONTAINER_MOUNTS",
    "CONTAINER_WORKDIR",
    "VENV",
    "LOGS_DIR",
)


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _quoted(names):
    return ", ".join(f"'{name}'" for name in names)


def _str_list(value):
    """Return ``value`` as a list of strings, or None when it is not one."""
    if isinstance(value, (str, bytes, Mapping)) or value is None:
        return None
    try:
        items = list(value)
    except TypeError:
        return None
    return items if all(isinstance(item, str) for item in items) else None


def _scalar(value):
    """A variable value as the shell will see it; None when it is not a scalar."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float, str)):
        return str(value)
    return None


def expand(value, places):
    """Replace ``{shared_dir}``-style placeholders in a string."""
    if not isinstance(value, str):
        return value
    return _PLACEHOLDER_RE.sub(lambda m: places.get(m.group(1), m.group(0)), value)


def enroot_uri(source):
    """``nvcr.io/nvidia/pytorch:25.01-py3`` -> ``docker://nvcr.io#nvidia/pytorch:25.01-py3``.

    enroot separates a registry host from the image path with ``#``; a reference without a
    registry host (``mosaicml/llm-foundry:tag``) is a Docker Hub image and has none.
    """
    first, sep, rest = source.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return f"docker://{first}#{rest}"
    return f"docker://{source}"


def versions_from_manifest(manifest):
    """The component versions the EFA/NCCL rules read, from a node manifest's components."""
    components = manifest.get("components") if isinstance(manifest, Mapping) else None
    if not isinstance(components, Mapping):
        return {}
    found = {}
    for key, aliases in MANIFEST_ALIASES.items():
        for alias in aliases:
            value = components.get(alias)
            if isinstance(value, str) and value.strip():
                found[key] = value.strip()
                break
    return found


# --- the cluster -------------------------------------------------------------------------


def _partition_hardware(label, instance_type, errors):
    """Return (profile, accelerator dict) for a partition's instance type."""
    if instance_type in (None, ""):
        return None, {"kind": "none", "count": 0, "model": None, "neuron_cores": 0}
    if not isinstance(instance_type, str):
        errors.append(f"{label}.instance_type must be an instance type string such as 'p5.48xlarge'.")
        return None, {"kind": "none", "count": 0, "model": None, "neuron_cores": 0}
    try:
        profile = get_profile(instance_type.strip())
    except UnknownInstanceType as err:
        errors.append(f"{label}.instance_type: {err}.")
        return None, {"kind": "none", "count": 0, "model": None, "neuron_cores": 0}
    return profile, profile["accelerator"]


def _partition(label, raw, errors, *, default_kernel=None):
    unknown = sorted(str(key) for key in raw if key not in PARTITION_KEYS)
    if unknown:
        errors.append(
            f"{label} has unknown keys {_quoted(unknown)}; the keys are {', '.join(PARTITION_KEYS)}."
        )
    name = raw.get("name")
    if not isinstance(name, str) or not _SLURM_NAME_RE.match(name):
        errors.append(f"{label}.name is {name!r}; give the partition its Slurm name.")
        name = None
    nodes = raw.get("nodes")
    if not _is_int(nodes) or nodes < 1:
        errors.append(f"{label}.nodes is {nodes!r}; set the number of nodes in the partition (1 or more).")
        nodes = 1
    profile, accelerator = _partition_hardware(label, raw.get("instance_type"), errors)
    versions = raw.get("versions") or {}
    if not isinstance(versions, Mapping):
        errors.append(f"{label}.versions must be a mapping of component to version.")
        versions = {}
    gres = raw.get("gres", accelerator["kind"] == "nvidia")
    if not isinstance(gres, bool):
        errors.append(f"{label}.gres is {gres!r}; set true or false.")
        gres = accelerator["kind"] == "nvidia"
    return {
        "name": name,
        "instance_type": profile["instance_type"] if profile else None,
        "profile": profile,
        "kind": accelerator["kind"],
        "accelerator_model": accelerator.get("model"),
        "accelerators": accelerator["count"],
        "neuron_cores": accelerator.get("neuron_cores") or 0,
        "efa": profile["efa_interfaces"] if profile else 0,
        "nodes": nodes,
        "default": raw.get("default") is True,
        "gres": gres,
        "kernel": raw.get("kernel") or default_kernel,
        "versions": dict(versions),
        "versions_source": raw.get("versions_source"),
    }


def describe_cluster(description):
    """Check a cluster description; return ``{"partitions", "mounts", "errors"}``.

    ``description`` (``workloads_cluster``) is either one partition (``partition``,
    ``instance_type``, ``nodes``) or a list ``partitions`` of ``{name, instance_type, nodes,
    default, gres, kernel, versions, versions_source}``; ``mounts`` lists the shared
    filesystems to mount into containers and ``kernel`` the nodes' kernel release.
    """
    errors = []
    label = "workloads_cluster"
    if not isinstance(description, Mapping):
        return {
            "partitions": [],
            "mounts": [],
            "errors": [f"{label} must be a mapping, got {description!r}."],
        }
    unknown = sorted(str(key) for key in description if key not in CLUSTER_KEYS)
    if unknown:
        errors.append(f"{label} has unknown keys {_quoted(unknown)}; the keys are {', '.join(CLUSTER_KEYS)}.")
    kernel = description.get("kernel")
    raw_partitions = description.get("partitions")
    single = {key: description[key] for key in ("partition", "instance_type", "nodes") if key in description}
    if raw_partitions is not None and single:
        errors.append(
            f"{label} sets both 'partitions' and {_quoted(sorted(single))}; describe one partition with "
            "partition, instance_type and nodes, or several under partitions."
        )
    if raw_partitions is None:
        raw_partitions = [
            {
                "name": description.get("partition", "batch"),
                "instance_type": description.get("instance_type"),
                "nodes": description.get("nodes"),
                "default": True,
                **({"gres": description["gres"]} if "gres" in description else {}),
            }
        ]
        labels = [label]
    elif isinstance(raw_partitions, (str, bytes, Mapping)) or not isinstance(raw_partitions, list):
        errors.append(f"{label}.partitions must be a list of partitions.")
        raw_partitions, labels = [], []
    else:
        labels = [f"{label}.partitions[{index}]" for index in range(len(raw_partitions))]
    partitions = []
    for part_label, raw in zip(labels, raw_partitions, strict=True):
        if not isinstance(raw, Mapping):
            errors.append(f"{part_label} must be a mapping with name, instance_type and nodes.")
            continue
        partitions.append(_partition(part_label, raw, errors, default_kernel=kernel))
    mounts = description.get("mounts", [])
    if _str_list(mounts) is None:
        errors.append(f"{label}.mounts must be a list of directories, got {mounts!r}.")
        mounts = []
    names = [p["name"] for p in partitions if p["name"]]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        errors.append(f"workloads_cluster: partition names {_quoted(duplicates)} are used more than once.")
    defaults = [p["name"] for p in partitions if p["default"]]
    if len(defaults) > 1:
        errors.append(f"workloads_cluster: more than one partition is the default ({_quoted(defaults)}).")
    elif not defaults and partitions:
        partitions[0]["default"] = True
    return {"partitions": partitions, "mounts": list(mounts), "errors": errors}


def cluster_from_model(model, node_info=None, mounts=()):
    """Describe the cluster of a Slurm cluster model (``mlhpc.cluster.slurm_cluster``).

    Returns ``{"cluster": <description>, "warnings": [...]}`` where the description has the
    shape of ``workloads_cluster`` with a ``partitions`` list. ``node_info`` maps an inventory
    hostname to what was read on that node: ``kernel`` (its running kernel), ``manifest`` (its
    node manifest, parsed) and ``manifest_path``. The first node of each partition speaks for
    the partition.
    """
    warnings = []
    if not isinstance(model, Mapping) or not isinstance(model.get("partitions"), list):
        raise ValueError("expects the Slurm cluster model from mlhpc.cluster.slurm_cluster")
    node_info = node_info if isinstance(node_info, Mapping) else {}
    nodes = {node["name"]: node for node in model.get("nodes") or ()}
    partitions = []
    for model_partition in model["partitions"]:
        members = [nodes[name] for name in model_partition.get("nodes") or () if name in nodes]
        if not members:
            continue
        types = list(dict.fromkeys(node.get("instance_type") for node in members))
        if len(types) > 1:
            warnings.append(
                f"Partition '{model_partition['name']}' mixes instance types {_quoted(map(str, types))}; its "
                f"workloads are rendered for the first node's, {types[0]}."
            )
        first = members[0]
        info = node_info.get(first["inventory_hostname"]) or {}
        partition = {
            "name": model_partition["name"],
            "instance_type": types[0],
            "nodes": len(members),
            "default": bool(model_partition.get("default")),
            "gres": any(node.get("gres") for node in members),
        }
        if isinstance(info.get("kernel"), str) and info["kernel"]:
            partition["kernel"] = info["kernel"]
        if isinstance(info.get("manifest"), Mapping):
            partition["versions"] = versions_from_manifest(info["manifest"])
            partition["versions_source"] = f"the manifest {info.get('manifest_path', '')} of {first['name']}"
        partitions.append(partition)
    return {"cluster": {"partitions": partitions, "mounts": list(mounts or ())}, "warnings": warnings}


# --- the catalogue -----------------------------------------------------------------------


def _check_vars(label, raw, errors):
    """Return ``raw`` (a mapping of script variables) as an ordered dict of strings."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        errors.append(f"{label} must be a mapping of script variable to value.")
        return {}
    out = {}
    for key, value in raw.items():
        if not isinstance(key, str) or not _VAR_RE.match(key):
            errors.append(f"{label}: '{key}' is not a script variable name (upper case, digits and '_').")
            continue
        if key in RESERVED_VARS:
            errors.append(f"{label}: '{key}' is set by the job skeleton; use another name.")
            continue
        text = _scalar(value)
        if text is None:
            errors.append(f"{label}.{key} is {value!r}; use a string, number or true/false.")
            continue
        out[key] = text
    return out


def _check_workload(name, raw, errors):
    """Validate one catalogue entry; return it normalised, or None."""
    label = f"The catalogue's workload '{name}'"
    if not isinstance(raw, Mapping):
        errors.append(f"{label} must be a mapping.")
        return None
    if not _NAME_RE.match(name):
        errors.append(f"{label}: use lower-case letters, digits, '.' and '-' in workload names.")
    unknown = sorted(str(key) for key in raw if key not in WORKLOAD_KEYS)
    if unknown:
        errors.append(f"{label} has unknown keys {_quoted(unknown)}.")
    kinds = _str_list(raw.get("accelerators"))
    if not kinds or any(kind not in ACCELERATOR_KINDS for kind in kinds):
        errors.append(f"{label}: accelerators must list some of {', '.join(ACCELERATOR_KINDS)}.")
        kinds = []
    runtimes = raw.get("runtimes")
    if (
        not isinstance(runtimes, Mapping)
        or not runtimes
        or any(r not in RUNTIMES or launcher not in LAUNCHERS for r, launcher in runtimes.items())
    ):
        errors.append(
            f"{label}: runtimes must map some of {', '.join(RUNTIMES)} to a launcher "
            f"({', '.join(LAUNCHERS)})."
        )
        runtimes = {}
    image = raw.get("image")
    if "container" in runtimes and (
        not isinstance(image, Mapping)
        or not isinstance(image.get("name"), str)
        or not _NAME_RE.match(image["name"])
        or not (isinstance(image.get("source"), str) or isinstance(image.get("build"), Mapping))
    ):
        errors.append(f"{label} runs in a container, so image needs a name and a source or build.")
        image = None
    presets = raw.get("presets") or {}
    checked_presets = {}
    if not isinstance(presets, Mapping):
        errors.append(f"{label}: presets must be a mapping of preset name to {{vars, scale}}.")
        presets = {}
    for preset_name, preset in presets.items():
        preset_label = f"{label}, preset '{preset_name}'"
        if not isinstance(preset, Mapping):
            errors.append(f"{preset_label} must be a mapping with vars.")
            continue
        scale = []
        for rule in preset.get("scale") or ():
            if not isinstance(rule, Mapping) or not _is_int(rule.get("min_nodes")):
                errors.append(f"{preset_label}: each scale rule needs min_nodes and vars.")
                continue
            scale.append(
                {
                    "min_nodes": rule["min_nodes"],
                    "vars": _check_vars(f"{preset_label}, scale", rule.get("vars"), errors),
                }
            )
        checked_presets[str(preset_name)] = {
            "description": preset.get("description", ""),
            "vars": _check_vars(f"{preset_label}.vars", preset.get("vars"), errors),
            "scale": sorted(scale, key=lambda rule: rule["min_nodes"], reverse=True),
        }
    preset = raw.get("preset")
    if checked_presets and preset not in checked_presets:
        errors.append(f"{label}: preset must name one of its presets ({', '.join(checked_presets)}).")
    command = raw.get("command", [])
    if _str_list(command) is None:
        errors.append(f"{label}: command must be a list of words.")
        command = []
    kubernetes = raw.get("kubernetes")
    if kubernetes is not None and kubernetes not in KUBERNETES_KINDS:
        errors.append(f"{label}: kubernetes must be one of {', '.join(KUBERNETES_KINDS)}.")
        kubernetes = None
    return {
        "name": name,
        "title": raw.get("title", name),
        "description": " ".join(str(raw.get("description", "")).split()),
        "accelerators": kinds,
        "runtimes": dict(runtimes),
        "nodes": raw.get("nodes", 1),
        "min_nodes": raw.get("min_nodes", 1),
        "image": image,
        "venv": raw.get("venv"),
        "preset": preset if checked_presets else None,
        "presets": checked_presets,
        "defaults": _check_vars(f"{label}.defaults", raw.get("defaults"), errors),
        "command": list(command),
        "kubernetes": kubernetes,
        "templates": list(raw.get("templates") or ()),
        "files": list(raw.get("files") or ()),
        "exclusive": raw.get("exclusive", True),
        "wait_all_nodes": raw.get("wait_all_nodes", True),
    }


def load_catalogue(catalogue):
    """Validate a catalogue (``{"workloads": {...}}``); return ``(workloads, errors)``."""
    errors = []
    raw = catalogue.get("workloads") if isinstance(catalogue, Mapping) else None
    if not isinstance(raw, Mapping) or not raw:
        return {}, ["The catalogue has no workloads: it must be a mapping with a 'workloads' mapping."]
    workloads = {}
    for name, entry in raw.items():
        checked = _check_workload(str(name), entry, errors)
        if checked is not None:
            workloads[str(name)] = checked
    return workloads, errors


# --- the plan ----------------------------------------------------------------------------


def _settings_for(name, settings, errors):
    label = f"workloads_settings['{name}']"
    raw = settings.get(name) or {}
    if not isinstance(raw, Mapping):
        errors.append(f"{label} must be a mapping of settings ({', '.join(SETTING_KEYS)}).")
        return label, {}
    unknown = sorted(str(key) for key in raw if key not in SETTING_KEYS)
    if unknown:
        errors.append(
            f"{label} has unknown keys {_quoted(unknown)}; the settings are {', '.join(SETTING_KEYS)}."
        )
    return label, raw


def _pick_partition(workload, label, settings, cluster, explicit, errors):
    partitions = {p["name"]: p for p in cluster["partitions"] if p["name"]}
    wanted = settings.get("partition")
    if wanted is not None:
        if wanted not in partitions:
            errors.append(
                f"{label}.partition is '{wanted}', which is not a partition of the cluster; "
                f"the partitions are {', '.join(partitions) or '(none)'}."
            )
            return None
        partition = partitions[wanted]
        if partition["kind"] not in workload["accelerators"]:
            errors.append(
                f"{label}.partition is '{wanted}', whose nodes "
                f"({partition['instance_type'] or 'no known instance type'}) have "
                f"{_kind_words(partition['kind'])}; {workload['name']} needs "
                f"{' or '.join(_kind_words(kind) for kind in workload['accelerators'])}."
            )
            return None
        return partition
    suitable = [p for p in cluster["partitions"] if p["kind"] in workload["accelerators"]]
    suitable.sort(key=lambda p: not p["default"])
    if suitable:
        return suitable[0]
    if explicit:
        errors.append(
            f"workloads_selected names '{workload['name']}', which needs "
            f"{' or '.join(_kind_words(kind) for kind in workload['accelerators'])}, but no partition of the "
            f"cluster has them ({_partition_summary(cluster)})."
        )
    return None


def _kind_words(kind):
    return {"nvidia": "NVIDIA GPUs", "neuron": "Neuron devices", "none": "no accelerators"}[kind]


def _partition_summary(cluster):
    return ", ".join(
        f"{p['name']}: {p['instance_type'] or 'instance type unknown'}" for p in cluster["partitions"]
    )


def _positive_int(label, key, value, errors):
    if value is None:
        return None
    if not _is_int(value) or value < 1:
        errors.append(f"{label}.{key} is {value!r}; set a whole number, 1 or more.")
        return None
    return value


def _versions(partition, fallback):
    """The versions the EFA/NCCL rules get for a partition, and where they came from."""
    versions = {**fallback, **partition["versions"]}
    sources = []
    if partition["versions"]:
        sources.append(partition["versions_source"] or "workloads_cluster")
    if set(fallback) - set(partition["versions"]):
        sources.append("workloads_versions")
    return versions, " and ".join(sources) or None


def _plan_workload(workload, settings, label, partition, *, runtimes, kubernetes, places, versions, errors):
    name = workload["name"]
    notes = []
    # Nodes: the catalogue's default, at most what the partition has; a setting may not exceed it.
    nodes = _positive_int(label, "nodes", settings.get("nodes"), errors)
    if nodes is not None and nodes > partition["nodes"]:
        errors.append(
            f"{label}.nodes is {nodes} but partition '{partition['name']}' has {partition['nodes']} nodes; "
            f"set at most {partition['nodes']}."
        )
    if nodes is None:
        nodes = min(workload["nodes"], partition["nodes"])
        if workload["nodes"] > partition["nodes"]:
            notes.append(
                f"The catalogue runs {name} on {workload['nodes']} nodes; partition "
                f"'{partition['name']}' has {partition['nodes']}, so the script asks for {nodes}."
            )
    if nodes < workload["min_nodes"]:
        errors.append(
            f"{name} needs at least {workload['min_nodes']} nodes, but "
            + (
                f"{label}.nodes is {nodes}."
                if settings.get("nodes") is not None
                else f"partition '{partition['name']}' has {partition['nodes']}."
            )
        )

    # GPUs and processes per node.
    gpus_available = partition["accelerators"] if partition["kind"] == "nvidia" else 0
    gpus = _positive_int(label, "gpus_per_node", settings.get("gpus_per_node"), errors)
    if gpus is not None and gpus > gpus_available:
        errors.append(
            f"{label}.gpus_per_node is {gpus} but the nodes of partition '{partition['name']}' "
            f"({partition['instance_type'] or 'no known instance type'}) have {gpus_available} GPUs; "
            f"set at most {gpus_available}."
        )
        gpus = gpus_available
    if gpus is None:
        gpus = gpus_available
    procs = _positive_int(label, "procs_per_node", settings.get("procs_per_node"), errors)
    if procs is None:
        if partition["kind"] == "nvidia":
            procs = gpus
        elif partition["kind"] == "neuron":
            procs = partition["neuron_cores"]
        else:
            procs = 1
    elif partition["kind"] == "nvidia" and procs != gpus:
        errors.append(
            f"{label}.procs_per_node is {procs}; on GPU nodes there is one process per GPU, so set "
            "gpus_per_node instead."
        )

    # Runtimes: those the workload has, among those asked for.
    wanted = settings.get("runtimes", runtimes)
    wanted_list = _str_list(wanted)
    if wanted_list is None or any(r not in RUNTIMES for r in wanted_list):
        errors.append(f"{label}.runtimes is {wanted!r}; list some of {', '.join(RUNTIMES)}.")
        wanted_list = list(RUNTIMES)
    chosen = [r for r in workload["runtimes"] if r in wanted_list]
    if not chosen:
        if "runtimes" in settings:
            errors.append(
                f"{label}.runtimes asks for {', '.join(wanted_list)}, but {name} runs only in "
                f"{', '.join(workload['runtimes'])}."
            )
        else:
            notes.append(
                f"it runs only in {', '.join(workload['runtimes'])}, which workloads_runtimes leaves out"
            )

    # Preset and script variables.
    preset = settings.get("preset", workload["preset"])
    if "preset" in settings:
        if not workload["presets"]:
            errors.append(f"{label}.preset is set, but {name} has no presets.")
            preset = None
        elif preset not in workload["presets"]:
            errors.append(
                f"{label}.preset is '{preset}', which is not a preset of {name}; "
                f"the presets are {', '.join(workload['presets'])}."
            )
            preset = workload["preset"]
    overrides = _check_vars(f"{label}.vars", settings.get("vars"), errors)
    known_vars = set(workload["defaults"])
    for item in workload["presets"].values():
        known_vars.update(item["vars"])
    unknown_vars = sorted(key for key in overrides if key not in known_vars)
    if unknown_vars:
        errors.append(
            f"{label}.vars sets {_quoted(unknown_vars)}, which {name} does not use; "
            f"its variables are {', '.join(sorted(known_vars))}."
        )
    workload_dir = f"{places['workloads_dir']}/{name}"
    local_places = {**places, "workload_dir": workload_dir}
    defaults = {key: expand(value, local_places) for key, value in workload["defaults"].items()}
    presets = {
        preset_name: {
            "description": item["description"],
            "vars": {key: expand(value, local_places) for key, value in item["vars"].items()},
            "scale": [
                {
                    "min_nodes": rule["min_nodes"],
                    "vars": {key: expand(value, local_places) for key, value in rule["vars"].items()},
                }
                for rule in item["scale"]
            ],
        }
        for preset_name, item in workload["presets"].items()
    }
    # A setting's vars replace the default of the variable, wherever the catalogue sets it.
    for key, value in overrides.items():
        if key in defaults:
            defaults[key] = value
        for item in presets.values():
            if key in item["vars"]:
                item["vars"][key] = value
            for rule in item["scale"]:
                rule["vars"].pop(key, None)
        if key not in defaults and not any(key in item["vars"] for item in presets.values()):
            defaults[key] = value

    venv = settings.get("venv", workload["venv"])
    if venv is not None and not isinstance(venv, str):
        errors.append(f"{label}.venv is {venv!r}; set the path of a virtual environment.")
        venv = None
    venv = expand(venv, local_places) if venv else None

    time_limit = settings.get("time")
    if time_limit is not None and not (isinstance(time_limit, str) and _TIME_RE.match(time_limit)):
        if _is_int(time_limit) and time_limit > 0:
            time_limit = str(time_limit)
        else:
            errors.append(
                f"{label}.time is {time_limit!r}, which is not a Slurm time limit; use minutes, "
                "'HH:MM:SS' or 'D-HH:MM:SS'."
            )
            time_limit = None

    image = None
    if workload["image"]:
        raw_image = workload["image"]
        image = {
            "name": raw_image["name"],
            "path": f"{places['images_dir']}/{raw_image['name']}.sqsh",
            "source": raw_image.get("source"),
            "uri": enroot_uri(raw_image["source"]) if raw_image.get("source") else None,
            "build": raw_image.get("build"),
            "tag": f"mlhpc/{raw_image['name']}:latest" if raw_image.get("build") else raw_image.get("source"),
        }

    launchers = {runtime: workload["runtimes"][runtime] for runtime in chosen}
    tasks_per_node = {
        runtime: (procs if LAUNCHERS[launcher] else 1) for runtime, launcher in launchers.items()
    }
    profile = partition["profile"]
    env_versions, versions_source = _versions(partition, versions)
    return {
        "name": name,
        "title": workload["title"],
        "description": workload["description"],
        "dir": workload_dir,
        "partition": partition["name"],
        "instance_type": partition["instance_type"],
        "profile": profile,
        "kind": partition["kind"],
        "accelerator_model": partition["accelerator_model"],
        "efa": partition["efa"],
        "neuron_devices": partition["accelerators"] if partition["kind"] == "neuron" else 0,
        "neuron_cores": partition["neuron_cores"],
        "gres": partition["gres"],
        "nodes": nodes,
        "min_nodes": workload["min_nodes"],
        "gpus_per_node": gpus,
        "procs_per_node": procs,
        "runtimes": chosen,
        "launchers": launchers,
        "tasks_per_node": tasks_per_node,
        "image": image,
        "venv": venv,
        "preset": preset,
        "presets": presets,
        "defaults": defaults,
        "command": [expand(word, local_places) for word in workload["command"]],
        "time": time_limit,
        "exclusive": workload["exclusive"],
        "wait_all_nodes": workload["wait_all_nodes"],
        "kubernetes": workload["kubernetes"] if kubernetes else None,
        "versions": env_versions,
        "versions_source": versions_source,
        "kernel": partition["kernel"],
        "notes": notes,
        "templates": workload["templates"],
        "files": workload["files"],
    }


def _files(workload):
    """The files to render or copy for a planned workload, relative to the catalogue's root."""
    name = workload["name"]
    files = [
        {
            "workload": name,
            "kind": "template",
            "src": f"{name}.sbatch.j2",
            "dest": f"{name}/{name}.{runtime}.sbatch",
            "mode": "0755",
            "runtime": runtime,
        }
        for runtime in workload["runtimes"]
    ]
    if workload["image"] and "container" in workload["runtimes"]:
        files.append(
            {
                "workload": name,
                "kind": "template",
                "src": "import-image.sh.j2",
                "dest": f"{name}/import-image.sh",
                "mode": "0755",
                "runtime": "container",
            }
        )
        if workload["image"]["build"]:
            files.append(
                {
                    "workload": name,
                    "kind": "template",
                    "src": "Dockerfile.j2",
                    "dest": f"{name}/Dockerfile",
                    "mode": "0644",
                    "runtime": "container",
                }
            )
    if workload["kubernetes"] and workload["image"]:
        files.append(
            {
                "workload": name,
                "kind": "template",
                "src": f"{workload['kubernetes']}.yaml.j2",
                "dest": f"{name}/kubernetes/{workload['kubernetes']}.yaml",
                "mode": "0644",
                "runtime": "container",
            }
        )
    for extra in workload["templates"]:
        files.append(
            {
                "workload": name,
                "kind": "template",
                "src": extra["src"],
                "dest": f"{name}/{extra['dest']}",
                "mode": extra.get("mode", "0644"),
                "runtime": None,
            }
        )
    for path in workload["files"]:
        files.append(
            {
                "workload": name,
                "kind": "file",
                "src": f"{name}/{path}",
                "dest": f"{name}/{path}",
                "mode": "0644",
                "runtime": None,
            }
        )
    return files


def build_plan(
    catalogue,
    cluster,
    *,
    selected=(),
    settings=None,
    runtimes=RUNTIMES,
    kubernetes=True,
    shared_dir="/fsx",
    workloads_dir=None,
    images_dir=None,
    versions=None,
):
    """Plan the workloads to render.

    Returns ``{"workloads", "files", "skipped", "partitions", "mounts", "dirs", "errors",
    "notes"}``; the plan is only fit to render when ``errors`` is empty.

    ``cluster`` describes the cluster (see ``describe_cluster``). ``selected``
    lists the workloads to render (empty: every workload some partition can run);
    ``settings`` maps a workload to its settings (``partition``, ``nodes``, ``gpus_per_node``,
    ``procs_per_node``, ``preset``, ``runtimes``, ``vars``, ``venv``, ``time``).
    ``versions`` gives component versions where a partition's own (from a node manifest)
    do not say.
    """
    cluster = describe_cluster(cluster)
    workloads, errors = load_catalogue(catalogue)
    if versions is None:
        versions = {}
    if not isinstance(versions, Mapping):
        errors.append(f"workloads_versions must be a mapping of component to version, got {versions!r}.")
        versions = {}
    errors = cluster["errors"] + errors
    notes = []
    if not cluster.get("partitions"):
        errors.append("The cluster has no partition to render workloads for.")
    settings = settings if settings is not None else {}
    if not isinstance(settings, Mapping):
        errors.append("workloads_settings must be a mapping of workload name to its settings.")
        settings = {}
    selected_list = _str_list(selected if selected is not None else [])
    if selected_list is None:
        errors.append(f"workloads_selected must be a list of workload names, got {selected!r}.")
        selected_list = []
    runtime_list = _str_list(runtimes)
    if runtime_list is None or not runtime_list or any(r not in RUNTIMES for r in runtime_list):
        errors.append(f"workloads_runtimes is {runtimes!r}; list some of {', '.join(RUNTIMES)}.")
        runtime_list = list(RUNTIMES)
    unknown = [name for name in selected_list if name not in workloads]
    if unknown:
        errors.append(
            f"workloads_selected names {_quoted(unknown)}, not in the catalogue; "
            f"the workloads are {', '.join(workloads)}."
        )
    unknown_settings = sorted(str(name) for name in settings if name not in workloads)
    if unknown_settings:
        errors.append(
            f"workloads_settings has settings for {_quoted(unknown_settings)}, not in the catalogue; "
            f"the workloads are {', '.join(workloads)}."
        )
    places = {
        "shared_dir": shared_dir.rstrip("/") or "/",
        "workloads_dir": (workloads_dir or f"{shared_dir.rstrip('/')}/workloads").rstrip("/"),
        "images_dir": (images_dir or f"{shared_dir.rstrip('/')}/images").rstrip("/"),
    }
    names = [name for name in workloads if not selected_list or name in selected_list]
    planned, skipped = {}, []
    for name in names:
        workload = workloads[name]
        label, workload_settings = _settings_for(name, settings, errors)
        partition = _pick_partition(workload, label, workload_settings, cluster, bool(selected_list), errors)
        if partition is None:
            if not selected_list and "partition" not in workload_settings:
                needs = " or ".join(_kind_words(kind) for kind in workload["accelerators"])
                skipped.append({"name": name, "reason": f"no partition has {needs}"})
            continue
        plan = _plan_workload(
            workload,
            workload_settings,
            label,
            partition,
            runtimes=runtime_list,
            kubernetes=kubernetes,
            places=places,
            versions=dict(versions),
            errors=errors,
        )
        if not plan["runtimes"]:
            skipped.append({"name": name, "reason": plan["notes"].pop()})
            continue
        planned[name] = plan
    notes.extend(note for plan in planned.values() for note in plan["notes"])
    notes.extend(f"{item['name']} is not rendered: {item['reason']}." for item in skipped)
    files = [item for plan in planned.values() for item in _files(plan)]
    return {
        "workloads": planned,
        "files": files,
        "skipped": skipped,
        "partitions": [{k: v for k, v in p.items() if k != "profile"} for p in cluster["partitions"]],
        "mounts": list(dict.fromkeys([places["shared_dir"], *cluster["mounts"]])),
        "dirs": places,
        "errors": list(dict.fromkeys(errors)),
        "notes": notes,
    }
