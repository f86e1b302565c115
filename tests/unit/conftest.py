"""Shared helpers for the collection's unit tests.

``run_module`` runs a module's ``main()`` in-process with the given arguments, the way
Ansible's own unit tests do, and returns ``(failed, result)`` instead of exiting.

``load_script`` imports a node script (an extensionless file under ``roles/*/files/``)
so that its functions can be tested, and ``parse_exposition`` strictly parses what the
exporters serve; test modules import both from this module by its package path,
``ansible_collections.mlhpc.cluster.tests.unit.conftest``.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from unittest import mock

import pytest
from ansible.module_utils import basic

from ansible_collections.mlhpc.cluster.tests.fixtures.imds_server import ImdsStandIn


class _ModuleExit(Exception):
    def __init__(self, failed, result):
        super().__init__(result.get("msg", ""))
        self.failed = failed
        self.result = result


@contextlib.contextmanager
def _module_args(args):
    try:
        from ansible.module_utils.testing import patch_module_args
    except ImportError:  # ansible-core < 2.19
        patch_module_args = None
    if patch_module_args is not None:
        with patch_module_args(args):
            yield
        return
    payload = json.dumps({"ANSIBLE_MODULE_ARGS": args}).encode()
    with mock.patch.object(basic, "_ANSIBLE_ARGS", payload):
        yield


def _run_module(module, args=None):
    """Run ``module.main()`` with ``args``; return ``(failed, result)``.

    ``result`` is what the module passed to exit_json or fail_json (with ``msg`` and
    ``failed`` for a failure), plus ``warnings`` when the module warned. Pass
    ``_ansible_check_mode: true`` in ``args`` for check mode.
    """
    warnings = []

    def exit_json(self, **kwargs):
        raise _ModuleExit(False, kwargs)

    def fail_json(self, msg, **kwargs):
        kwargs.update(failed=True, msg=msg)
        raise _ModuleExit(True, kwargs)

    def warn(self, warning, **kwargs):
        warnings.append(warning)

    with (
        _module_args(dict(args or {})),
        mock.patch.multiple(basic.AnsibleModule, exit_json=exit_json, fail_json=fail_json, warn=warn),
    ):
        try:
            module.main()
        except _ModuleExit as done:
            result = done.result
            if warnings:
                result["warnings"] = warnings
            return done.failed, result
    raise AssertionError(f"{module.__name__}.main() returned without calling exit_json or fail_json")


@pytest.fixture
def run_module():
    """The ``run_module(module, args) -> (failed, result)`` helper."""
    return _run_module


@pytest.fixture
def imds_server():
    """Start IMDSv2 stand-ins: ``imds_server(**ImdsStandIn options)``; all stop after the test."""
    servers = []

    def start(**options):
        server = ImdsStandIn(**options).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def load_script(path: str | Path) -> ModuleType:
    """Import a node script that has no .py suffix, by its path relative to the repository root."""
    path = REPO_ROOT / path
    name = path.name.replace("-", "_")
    loader = importlib.machinery.SourceFileLoader(name, str(path))
    spec = importlib.util.spec_from_loader(name, loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module


SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_exposition(text: str) -> tuple[dict, dict, dict]:
    """Parse Prometheus text exposition strictly.

    Returns (samples keyed by (name, label pairs), HELP per family, TYPE per family) and fails
    on a repeated HELP, TYPE or series, or on a sample outside its family's block.
    """
    samples, helps, types = {}, {}, {}
    current = None
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert name not in helps, f"HELP repeated for {name}"
            helps[name] = help_text
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert name not in types, f"TYPE repeated for {name}"
            assert name in helps, f"TYPE before HELP for {name}"
            types[name] = kind
            current = name
        else:
            match = SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            name, label_text, value = match.groups()
            assert name == current, f"sample {name} outside its family block"
            labels = tuple(
                (key, val.encode().decode("unicode_escape")) for key, val in LABEL.findall(label_text or "")
            )
            assert (name, labels) not in samples, f"series repeated: {name}{labels}"
            samples[(name, labels)] = float(value)
    return samples, helps, types
