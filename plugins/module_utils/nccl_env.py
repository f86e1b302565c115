"""EFA / NCCL environment for training jobs, decided from hardware and software versions.

``compute_env(profile, versions, ...)`` returns the environment variables a job on an
instance should export, and notes explaining any assumption made. It is a pure function:
the filter ``mlhpc.cluster.nccl_env``, role templates and job-script templates all call it,
so a rule is written once.

The rules follow the aws-ofi-nccl EFA cheatsheet (``doc/efa-env-var.md`` in aws/aws-ofi-nccl)
and are keyed on software versions, not on habits copied between job scripts:

* ``FI_EFA_USE_HUGE_PAGE=0`` on every EFA instance: huge pages make ``os.fork()`` fail with
  "Cannot allocate memory" once data-loader workers multiply; the cost is minor.
* libfabric >= 1.18 with aws-ofi-nccl >= 1.7 needs nothing else.
* aws-ofi-nccl 1.6.x (or libfabric < 1.18) on GPUDirect RDMA instances (p4/p5/p6):
  ``FI_EFA_USE_DEVICE_RDMA=1``.
* aws-ofi-nccl <= 1.5 on EFA GPU instances: ``FI_PROVIDER=efa`` and ``NCCL_PROTO=simple``.
* efa-installer < 1.29.1 with NCCL >= 2.19: ``FI_EFA_SET_CUDA_SYNC_MEMOPS=0``.
* ``FI_EFA_FORK_SAFE=1`` only on kernels older than 5.15; never ``RDMAV_*``.
* No NVLink between GPUs (g5/g6): ``NCCL_SHM_USE_CUDA_MEMCPY=1``.
* ``NCCL_MIN_CHANNELS`` and ``NCCL_BUFFSIZE`` are left at NCCL's defaults.

A version is a string such as ``"1.22.0"``, ``"v1.8.0-aws"``, ``"1.22.0amzn4.0"`` or
``"2.18.6-1+cuda12.2"``; only its leading numeric part counts. An unknown version on an EFA
instance falls back to the modern settings, with a note saying so.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

VERSION_KEYS = ("libfabric", "aws_ofi_nccl", "efa_installer", "nccl", "cuda")

DEFAULT_SOCKET_IFNAME = "^docker,lo,veth"
DEFAULT_OFI_NCCL_PREFIX = "/opt/amazon/ofi-nccl"

# Instance families whose EFA devices do GPUDirect RDMA (p4 and p5 in the EFA cheatsheet;
# the p6 B200/GB200 hosts have it too).
GPUDIRECT_RDMA_FAMILIES = ("p4", "p5", "p6")

# Families the aws-ofi-nccl tuner is built for. The tuner first shipped in aws-ofi-nccl
# v1.8.0-aws (release notes: "A tuner component for the plugin that picks the optimal NCCL
# algorithm and protocol at a given scale and message size"; libnccl-ofi-tuner.so is built
# with --enable-platform-aws). Its model targets P5-class hosts. It is not set on p4d:
# there the plugin itself sets NCCL_PROTO=simple (no in-order 128-byte stores), and the
# v1 tuner interface used by NCCL 2.19-2.20 refuses to load when NCCL_PROTO is set, which
# fails communicator creation (aws/aws-ofi-nccl issue #982).
TUNER_FAMILIES = ("p5", "p6")
TUNER_MIN_OFI_NCCL = (1, 8)
# NCCL gained the tuner plugin interface in 2.19; older NCCL ignores NCCL_TUNER_PLUGIN.
TUNER_MIN_NCCL = (2, 19)

# Recommended floor for p5-class hosts (EFA cheatsheet, "Sample Presets": p5.48xlarge).
# Below it the job may still run; a note says so.
P5_MINIMUMS = {"cuda": (12, 0), "nccl": (2, 18, 5), "aws_ofi_nccl": (1, 7, 3)}

FORK_SAFE_KERNEL = (5, 15)

_VERSION_RE = re.compile(r"\s*[vV]?(\d+(?:\.\d+)*)")


def parse_version(value):
    """Return the leading numeric part of a version as a tuple of ints.

    ``None`` and ``""`` give ``None`` (unknown); an int is taken as a major version.
    Raise ``ValueError`` for a string that does not start with a number, and ``TypeError``
    for anything else, floats included: YAML reads an unquoted ``1.20`` as the float 1.2,
    so a float cannot be trusted to be the version meant.
    """
    if value is None:
        return None
    if isinstance(value, float):
        raise TypeError(
            f"{value!r} is a number, not a version string; quote versions in YAML (1.20 unquoted is 1.2)"
        )
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,)
    if not isinstance(value, str):
        raise TypeError(f"{value!r} is not a version string")
    if not value.strip():
        return None
    match = _VERSION_RE.match(value)
    if match is None:
        raise ValueError(f"'{value}' does not start with a version number")
    return tuple(int(part) for part in match.group(1).split("."))


def version_at_least(version, minimum):
    """Compare two version tuples, reading missing trailing components as 0."""
    width = max(len(version), len(minimum))
    return version + (0,) * (width - len(version)) >= minimum + (0,) * (width - len(minimum))


def _dotted(version):
    return ".".join(str(part) for part in version)


class _Notes(list):
    def add(self, text):
        if text not in self:
            self.append(text)


def _parse_versions(versions, notes):
    if versions is None:
        versions = {}
    if not isinstance(versions, Mapping):
        raise ValueError(
            f"versions must be a dict with keys among {', '.join(VERSION_KEYS)}; got {versions!r}"
        )
    unknown_keys = sorted(str(key) for key in versions if key not in VERSION_KEYS)
    if unknown_keys:
        raise ValueError(
            f"unknown key(s) in versions: {', '.join(unknown_keys)}; known keys: {', '.join(VERSION_KEYS)}"
        )
    parsed = {}
    for key in VERSION_KEYS:
        try:
            parsed[key] = parse_version(versions.get(key))
        except TypeError as err:
            raise ValueError(f"versions.{key}: {err}") from None
        except ValueError as err:
            notes.add(f"versions.{key}: {err}; treated as unknown")
            parsed[key] = None
    return parsed


def _parse_kernel(kernel, notes):
    try:
        return parse_version(kernel)
    except TypeError as err:
        raise ValueError(f"kernel: {err}") from None
    except ValueError as err:
        notes.add(f"kernel: {err}; treated as unknown")
        return None


def _check_profile(profile):
    if not isinstance(profile, Mapping):
        raise ValueError(f"profile must be an instance profile dict or None; got {profile!r}")
    for key in ("instance_type", "family", "accelerator", "efa_interfaces", "nvswitch", "nvlinks_per_gpu"):
        if key not in profile:
            raise ValueError(f"profile lacks '{key}'; pass a profile from instance_profiles.get_profile()")
    kind = profile["accelerator"].get("kind")
    if kind not in ("nvidia", "neuron", "none"):
        raise ValueError(f"profile {profile['instance_type']}: unknown accelerator kind {kind!r}")


def _in_families(profile, families):
    family = profile["family"]
    return any(re.match(rf"{prefix}(?![0-9])", family) for prefix in families)


def _nccl_common(env, *, socket_ifname, debug):
    env["NCCL_SOCKET_IFNAME"] = socket_ifname
    if debug:
        env["NCCL_DEBUG"] = "INFO"
    env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] = "1"


def _nvidia_env(profile, v, notes, *, old_kernel, tuner_plugin, socket_ifname, debug):
    ofi, libfabric, installer, nccl = v["aws_ofi_nccl"], v["libfabric"], v["efa_installer"], v["nccl"]
    efa = profile["efa_interfaces"] > 0
    legacy = device_rdma = sync_memops = tuner = False

    if efa:
        tuner_host = _in_families(profile, TUNER_FAMILIES)
        if ofi is None:
            notes.add(
                "aws_ofi_nccl version unknown: assumed >= 1.7 (the modern EFA settings)"
                + (", without the tuner plugin" if tuner_host else "")
            )
        ofi_modern = ofi is None or version_at_least(ofi, (1, 7))
        # aws-ofi-nccl <= 1.5 needs the EFA provider named and the one protocol it
        # delivers correctly.
        legacy = ofi is not None and not version_at_least(ofi, (1, 6))

        # libfabric >= 1.18 turns device RDMA on by itself where the device has it, as
        # aws-ofi-nccl >= 1.7 expects; before either, it must be asked for.
        if _in_families(profile, GPUDIRECT_RDMA_FAMILIES):
            if libfabric is None and ofi_modern:
                notes.add(
                    "libfabric version unknown: assumed >= 1.18 (the modern EFA settings), "
                    "so FI_EFA_USE_DEVICE_RDMA is not set"
                )
            libfabric_modern = libfabric is None or version_at_least(libfabric, (1, 18))
            device_rdma = not (ofi_modern and libfabric_modern)

        # Libfabric from installers before 1.29.1 cannot set sync memops on the cuMem
        # allocations NCCL 2.19 introduced: memory registration fails with EINVAL
        # ("Unable to register memory", awslabs/awsome-distributed-ai issue #203).
        installer_old = installer is not None and not version_at_least(installer, (1, 29, 1))
        nccl_cumem = nccl is not None and version_at_least(nccl, (2, 19))
        sync_memops = installer_old and nccl_cumem
        if installer is None and (nccl is None or nccl_cumem):
            notes.add(
                "efa_installer version unknown: assumed >= 1.29.1 (the modern EFA settings), "
                "so FI_EFA_SET_CUDA_SYNC_MEMOPS is not set"
            )
        elif installer_old and nccl is None:
            notes.add(
                f"nccl version unknown with efa_installer {_dotted(installer)}: "
                "FI_EFA_SET_CUDA_SYNC_MEMOPS=0 is needed only with NCCL >= 2.19 and is not set"
            )

        # The tuner refuses NCCL_PROTO; it exists only from aws-ofi-nccl 1.8, well after the
        # <= 1.5 releases that get NCCL_PROTO here, so the two never meet.
        tuner = (
            tuner_host
            and ofi is not None
            and version_at_least(ofi, TUNER_MIN_OFI_NCCL)
            and (nccl is None or version_at_least(nccl, TUNER_MIN_NCCL))
        )

    env = {}
    if legacy:
        env["FI_PROVIDER"] = "efa"
    if device_rdma:
        env["FI_EFA_USE_DEVICE_RDMA"] = "1"
    if efa:
        env["FI_EFA_USE_HUGE_PAGE"] = "0"
    if sync_memops:
        env["FI_EFA_SET_CUDA_SYNC_MEMOPS"] = "0"
    if efa and old_kernel:
        env["FI_EFA_FORK_SAFE"] = "1"
    if legacy:
        env["NCCL_PROTO"] = "simple"
    # Without NVLink or NVSwitch, GPUs on one host exchange data through host shared
    # memory; having NCCL copy it with cudaMemcpy is faster on these PCIe-only hosts.
    if not profile["nvswitch"] and profile["nvlinks_per_gpu"] == 0:
        env["NCCL_SHM_USE_CUDA_MEMCPY"] = "1"
    if tuner:
        env["NCCL_TUNER_PLUGIN"] = tuner_plugin
    _nccl_common(env, socket_ifname=socket_ifname, debug=debug)

    if _in_families(profile, ("p5",)):
        for key, minimum in P5_MINIMUMS.items():
            found = v[key]
            if found is not None and not version_at_least(found, minimum):
                notes.add(
                    f"{profile['instance_type']}: {key} >= {_dotted(minimum)} is recommended; "
                    f"found {_dotted(found)}"
                )
    return env


# Neuron collectives reach EFA through their own bundled OFI plugin. The Neuron SDK's
# "How to prepare trn1.32xlarge for multi-node execution"
# (frameworks/torch/torch-neuronx/setup-trn1-multi-node-execution.rst) lists FI_PROVIDER=efa,
# FI_EFA_USE_DEVICE_RDMA=1 and FI_EFA_FORK_SAFE=1 "only required when running on AL2"; the
# runtime troubleshooting guide (neuron-runtime/nrt-troubleshoot.rst, FI_EFA_FORK_SAFE) says
# kernels older than 5.15 need it and that multi-node collectives are disabled without it.
def _neuron_env(profile, notes, *, kernel_version):
    env = {}
    if profile["efa_interfaces"] > 0:
        env["FI_PROVIDER"] = "efa"
        env["FI_EFA_USE_DEVICE_RDMA"] = "1"
        if kernel_version is None:
            notes.add(
                "kernel version unknown: FI_EFA_FORK_SAFE=1 set, as Neuron collectives need it "
                "on kernels older than 5.15 (it has no effect on newer ones)"
            )
            env["FI_EFA_FORK_SAFE"] = "1"
        elif not version_at_least(kernel_version, FORK_SAFE_KERNEL):
            env["FI_EFA_FORK_SAFE"] = "1"
    return env


def _cpu_env(profile, *, old_kernel):
    env = {}
    if profile["efa_interfaces"] > 0:
        env["FI_EFA_USE_HUGE_PAGE"] = "0"
        if old_kernel:
            env["FI_EFA_FORK_SAFE"] = "1"
    return env


def compute_env(
    profile,
    versions=None,
    *,
    ofi_nccl_prefix=None,
    ofi_nccl_libdir=None,
    kernel=None,
    debug=False,
    socket_ifname=None,
):
    """Return ``{"env": {NAME: value}, "notes": [str]}`` for jobs on ``profile``.

    ``profile``: a dict from ``instance_profiles.get_profile()``, or ``None`` for unknown
    hardware (the modern EFA/NCCL settings, with a note).
    ``versions``: dict with optional keys ``libfabric``, ``aws_ofi_nccl``, ``efa_installer``,
    ``nccl``, ``cuda``; values are version strings.
    ``ofi_nccl_prefix``: where aws-ofi-nccl is installed (default ``/opt/amazon/ofi-nccl``).
    ``ofi_nccl_libdir``: its library directory, when not ``<prefix>/lib`` (Debian-family
    packages use ``<prefix>/lib/<arch>-linux-gnu``).
    ``kernel``: the running kernel release (``ansible_kernel``); decides ``FI_EFA_FORK_SAFE``.
    ``debug``: add ``NCCL_DEBUG=INFO``.
    ``socket_ifname``: ``NCCL_SOCKET_IFNAME`` (default ``^docker,lo,veth``).

    Values in ``env`` are strings, in a stable order: FI_* first, then NCCL_*, then
    TORCH_NCCL_*. Raise ``ValueError`` for a malformed profile or versions dict.
    """
    notes = _Notes()
    parsed = _parse_versions(versions, notes)
    kernel_version = _parse_kernel(kernel, notes)
    old_kernel = kernel_version is not None and not version_at_least(kernel_version, FORK_SAFE_KERNEL)
    socket_ifname = socket_ifname or DEFAULT_SOCKET_IFNAME
    prefix = (ofi_nccl_prefix or DEFAULT_OFI_NCCL_PREFIX).rstrip("/")
    libdir = (ofi_nccl_libdir or f"{prefix}/lib").rstrip("/")
    tuner_plugin = f"{libdir}/libnccl-ofi-tuner.so"

    if profile is None:
        notes.add(
            "instance profile unknown: assumed the modern EFA/NCCL settings "
            "(libfabric >= 1.18, aws-ofi-nccl >= 1.7); no hardware-specific settings applied"
        )
        env = {"FI_EFA_USE_HUGE_PAGE": "0"}
        if old_kernel:
            env["FI_EFA_FORK_SAFE"] = "1"
        _nccl_common(env, socket_ifname=socket_ifname, debug=debug)
        return {"env": env, "notes": list(notes)}

    _check_profile(profile)
    kind = profile["accelerator"]["kind"]
    if kind == "nvidia":
        env = _nvidia_env(
            profile,
            parsed,
            notes,
            old_kernel=old_kernel,
            tuner_plugin=tuner_plugin,
            socket_ifname=socket_ifname,
            debug=debug,
        )
    elif kind == "neuron":
        env = _neuron_env(profile, notes, kernel_version=kernel_version)
    else:
        env = _cpu_env(profile, old_kernel=old_kernel)
    return {"env": env, "notes": list(notes)}
