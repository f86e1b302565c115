"""The instance profile table: what each supported instance type carries.

One table for the whole collection. Modules, filters, role templates (Slurm gres.conf and
features, health-check thresholds, workload templates) and node scripts read their
hardware facts from here, so that a fact is stated once.

A profile is a plain dict:

    instance_type        "p5.48xlarge"
    family               "p5"
    arch                 "x86_64" | "arm64"
    vcpus, sockets, cores_per_socket, threads_per_core
    memory_mib           RAM as AWS states it (MiB)
    accelerator          {"kind": "nvidia" | "neuron" | "none", "model": str | None,
                          "count": int, "memory_gib": int | None, "cuda_arch": str | None,
                          "neuron_cores": int}
    efa_interfaces       EFA devices (0 means TCP between nodes)
    nvswitch             NVSwitch fabric: the fabric manager must run
    nvlinks_per_gpu      expected active NVLinks per GPU (0: none)
    nvlink_generation    int | None
    nccl_busbw_floor_gbps  all_reduce bus bandwidth floor across 2+ nodes, GB/s (None: no floor)
    efa_late_enumeration EFA devices can appear late at boot: retry enumeration
    imex                 NVLink domain across hosts (IMEX)
"""

from __future__ import annotations

import copy

GIB = 1024


def _profile(
    instance_type,
    *,
    vcpus,
    sockets,
    cores_per_socket,
    memory_gib,
    kind="none",
    model=None,
    count=0,
    accel_memory_gib=None,
    cuda_arch=None,
    neuron_cores=0,
    efa=0,
    nvswitch=False,
    nvlinks=0,
    nvlink_gen=None,
    floor=None,
    arch="x86_64",
    late_efa=False,
    imex=False,
):
    return {
        "instance_type": instance_type,
        "family": instance_type.split(".", 1)[0],
        "arch": arch,
        "vcpus": vcpus,
        "sockets": sockets,
        "cores_per_socket": cores_per_socket,
        "threads_per_core": vcpus // (sockets * cores_per_socket),
        "memory_mib": memory_gib * GIB,
        "accelerator": {
            "kind": kind,
            "model": model,
            "count": count,
            "memory_gib": accel_memory_gib,
            "cuda_arch": cuda_arch,
            "neuron_cores": neuron_cores,
        },
        "efa_interfaces": efa,
        "nvswitch": nvswitch,
        "nvlinks_per_gpu": nvlinks,
        "nvlink_generation": nvlink_gen,
        "nccl_busbw_floor_gbps": floor,
        "efa_late_enumeration": late_efa,
        "imex": imex,
    }


_A100 = {"kind": "nvidia", "model": "A100", "cuda_arch": "80"}
_H100 = {"kind": "nvidia", "model": "H100", "cuda_arch": "90"}
_H200 = {"kind": "nvidia", "model": "H200", "cuda_arch": "90"}
_B200 = {"kind": "nvidia", "model": "B200", "cuda_arch": "100"}
_A10G = {"kind": "nvidia", "model": "A10G", "cuda_arch": "86"}
_L4 = {"kind": "nvidia", "model": "L4", "cuda_arch": "89"}
_P4 = {"nvswitch": True, "nvlinks": 12, "nvlink_gen": 3, "floor": 300}
_P5 = {"nvswitch": True, "nvlinks": 18, "nvlink_gen": 4, "floor": 800}

# One row per instance type, aligned by hand for reading; keep the formatter out.
# fmt: off
_TABLE = [
    _profile("p4d.24xlarge", vcpus=96, sockets=2, cores_per_socket=24, memory_gib=1152,
             count=8, accel_memory_gib=40, efa=4, **_A100, **_P4),
    _profile("p4de.24xlarge", vcpus=96, sockets=2, cores_per_socket=24, memory_gib=1152,
             count=8, accel_memory_gib=80, efa=4, **_A100, **_P4),
    _profile("p5.48xlarge", vcpus=192, sockets=2, cores_per_socket=48, memory_gib=2048,
             count=8, accel_memory_gib=80, efa=32, **_H100, **_P5),
    _profile("p5e.48xlarge", vcpus=192, sockets=2, cores_per_socket=48, memory_gib=2048,
             count=8, accel_memory_gib=141, efa=32, **_H200, **_P5),
    _profile("p5en.48xlarge", vcpus=192, sockets=2, cores_per_socket=48, memory_gib=2048,
             count=8, accel_memory_gib=141, efa=16, late_efa=True, **_H200, **_P5),
    _profile("p6-b200.48xlarge", vcpus=192, sockets=2, cores_per_socket=48, memory_gib=2048,
             count=8, accel_memory_gib=180, efa=8, nvswitch=True, nvlinks=18, nvlink_gen=5,
             floor=900, **_B200),
    _profile("p6e-gb200.36xlarge", vcpus=144, sockets=2, cores_per_socket=72, memory_gib=960,
             count=4, accel_memory_gib=185, efa=4, nvswitch=True, nvlinks=18, nvlink_gen=5,
             arch="arm64", imex=True, **_B200),
    _profile("g5.12xlarge", vcpus=48, sockets=1, cores_per_socket=24, memory_gib=192,
             count=4, accel_memory_gib=24, **_A10G),
    _profile("g5.48xlarge", vcpus=192, sockets=2, cores_per_socket=48, memory_gib=768,
             count=8, accel_memory_gib=24, efa=1, **_A10G),
    _profile("g6.12xlarge", vcpus=48, sockets=1, cores_per_socket=24, memory_gib=192,
             count=4, accel_memory_gib=24, **_L4),
    _profile("g6.48xlarge", vcpus=192, sockets=2, cores_per_socket=48, memory_gib=768,
             count=8, accel_memory_gib=24, efa=1, **_L4),
    _profile("trn1.32xlarge", vcpus=128, sockets=2, cores_per_socket=32, memory_gib=512,
             kind="neuron", model="Trainium", count=16, accel_memory_gib=32, neuron_cores=32, efa=8),
    _profile("trn1n.32xlarge", vcpus=128, sockets=2, cores_per_socket=32, memory_gib=512,
             kind="neuron", model="Trainium", count=16, accel_memory_gib=32, neuron_cores=32, efa=16),
    _profile("trn2.48xlarge", vcpus=192, sockets=2, cores_per_socket=48, memory_gib=2048,
             kind="neuron", model="Trainium2", count=16, accel_memory_gib=96, neuron_cores=128, efa=16),
    _profile("inf2.48xlarge", vcpus=192, sockets=2, cores_per_socket=48, memory_gib=768,
             kind="neuron", model="Inferentia2", count=12, accel_memory_gib=32, neuron_cores=24),
    _profile("c5n.18xlarge", vcpus=72, sockets=2, cores_per_socket=18, memory_gib=192, efa=1),
    _profile("c6i.32xlarge", vcpus=128, sockets=2, cores_per_socket=32, memory_gib=256, efa=1),
    _profile("m5.2xlarge", vcpus=8, sockets=1, cores_per_socket=4, memory_gib=32),
]
# fmt: on

PROFILES = {p["instance_type"]: p for p in _TABLE}

# Instance types whose NVSwitch fabric needs nvidia-fabricmanager.
FABRIC_MANAGER_TYPES = frozenset(t for t, p in PROFILES.items() if p["nvswitch"])


class UnknownInstanceType(KeyError):
    def __init__(self, instance_type):
        self.instance_type = instance_type
        super().__init__(instance_type)

    def __str__(self):
        return (
            f"unknown instance type '{self.instance_type}'; known types: {', '.join(sorted(PROFILES))}. "
            "Set a known type, or add the type to plugins/module_utils/instance_profiles.py"
        )


def get_profile(instance_type):
    """Return a copy of the profile of ``instance_type``; raise UnknownInstanceType."""
    try:
        return copy.deepcopy(PROFILES[instance_type])
    except KeyError:
        raise UnknownInstanceType(instance_type) from None
