"""The mlhpc.cluster.instance_facts module, end to end against the IMDSv2 stand-in."""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ansible_collections.mlhpc.cluster.plugins.module_utils.instance_profiles import PROFILES
from ansible_collections.mlhpc.cluster.plugins.modules import instance_facts

REPO = Path(__file__).resolve().parents[2]
FAST = {"imds_retry_delay": 0.01}


def facts(result):
    return result["ansible_facts"]["mlhpc_instance"]


def issued_tokens(server):
    return list(server._tokens)


@pytest.fixture
def closed_port():
    """A loopback port nothing listens on: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_imdsv2_flow(run_module, imds_server):
    server = imds_server(instance_type="p5.48xlarge")
    failed, result = run_module(instance_facts, {"imds_endpoint": server.url})
    assert not failed
    assert result["changed"] is False
    assert facts(result) == {
        "instance_type": "p5.48xlarge",
        "source": "imds",
        "profile": PROFILES["p5.48xlarge"],
    }
    assert (server.token_requests, server.metadata_requests, server.unauthorized) == (1, 1, 0)
    assert "imds_error" not in result


def test_the_token_is_never_returned(run_module, imds_server):
    server = imds_server(instance_type="p4d.24xlarge")
    _, result = run_module(instance_facts, {"imds_endpoint": server.url})
    tokens = issued_tokens(server)
    assert len(tokens) == 1
    assert tokens[0] not in json.dumps(result)


def test_override_wins_and_the_imds_is_not_asked(run_module, imds_server):
    server = imds_server(instance_type="p5.48xlarge")
    failed, result = run_module(
        instance_facts, {"instance_type": "trn1.32xlarge", "imds_endpoint": server.url}
    )
    assert not failed
    assert facts(result)["source"] == "override"
    assert facts(result)["instance_type"] == "trn1.32xlarge"
    assert facts(result)["profile"]["accelerator"]["neuron_cores"] == 32
    assert server.token_requests == 0


@pytest.mark.parametrize("empty", ["", "  "])
def test_an_empty_override_counts_as_not_set(run_module, imds_server, empty):
    server = imds_server(instance_type="g5.48xlarge")
    _, result = run_module(instance_facts, {"instance_type": empty, "imds_endpoint": server.url})
    assert facts(result)["source"] == "imds"
    assert facts(result)["instance_type"] == "g5.48xlarge"


def test_token_requests_refused_at_first_are_retried(run_module, imds_server):
    server = imds_server(instance_type="p5en.48xlarge", refuse_tokens=2)
    failed, result = run_module(instance_facts, {"imds_endpoint": server.url, "imds_retries": 3, **FAST})
    assert not failed
    assert facts(result)["instance_type"] == "p5en.48xlarge"
    assert (server.token_requests, server.refused_tokens) == (3, 2)


def test_a_slow_first_answer_is_retried(run_module, imds_server):
    server = imds_server(instance_type="p4de.24xlarge", delay=0.5, delay_first=1)
    failed, result = run_module(
        instance_facts, {"imds_endpoint": server.url, "imds_timeout": 0.1, "imds_retries": 1, **FAST}
    )
    assert not failed
    assert facts(result)["instance_type"] == "p4de.24xlarge"
    assert server.token_requests == 2


def test_an_unauthorized_answer_is_retried_then_reported(run_module, imds_server):
    # A clock that jumps an hour per reading: every token has expired before it is used.
    hours = itertools.count(step=3600)
    server = imds_server(clock=lambda: next(hours))
    failed, result = run_module(
        instance_facts, {"imds_endpoint": server.url, "imds_retries": 2, "required": True, **FAST}
    )
    assert failed
    assert "401" in result["msg"] and "after 3 attempts" in result["msg"]
    assert server.unauthorized == 3
    for token in issued_tokens(server):
        assert token not in result["msg"]


def test_retries_run_out_and_the_host_gets_no_profile(run_module, imds_server):
    server = imds_server(refuse_tokens=10)
    failed, result = run_module(instance_facts, {"imds_endpoint": server.url, "imds_retries": 2, **FAST})
    assert not failed
    assert facts(result) == {"instance_type": None, "source": "none", "profile": None}
    assert "503" in result["imds_error"] and "after 3 attempts" in result["imds_error"]
    assert server.token_requests == 3


def test_a_forbidden_answer_is_final(run_module, imds_server):
    server = imds_server(refuse_tokens=10, refuse_status=403)
    _, result = run_module(instance_facts, {"imds_endpoint": server.url, "imds_retries": 3, **FAST})
    assert facts(result)["source"] == "none"
    assert "403" in result["imds_error"] and "after 1 attempt:" in result["imds_error"]
    assert server.token_requests == 1


def test_an_answer_that_is_not_an_instance_type_is_refused(run_module, imds_server):
    server = imds_server(instance_type="<html>captive portal</html>")
    failed, result = run_module(instance_facts, {"imds_endpoint": server.url, "required": True, **FAST})
    assert failed
    assert "not an instance type" in result["msg"]
    assert server.token_requests == 1


def test_unreachable_imds_is_no_error_by_default(run_module, closed_port):
    failed, result = run_module(
        instance_facts, {"imds_endpoint": f"http://127.0.0.1:{closed_port}", "imds_retries": 1, **FAST}
    )
    assert not failed
    assert facts(result) == {"instance_type": None, "source": "none", "profile": None}
    assert "refused" in result["imds_error"].lower()


def test_unreachable_imds_fails_when_required(run_module, closed_port):
    failed, result = run_module(
        instance_facts,
        {"imds_endpoint": f"http://127.0.0.1:{closed_port}", "imds_retries": 1, "required": True, **FAST},
    )
    assert failed
    assert "ansible_facts" not in result
    assert "Set the instance_type parameter" in result["msg"]
    assert "hop limit" in result["msg"]
    assert "after 2 attempts" in result["msg"]


def test_a_timeout_is_reported(run_module, imds_server):
    server = imds_server(delay=0.5)
    _, result = run_module(
        instance_facts, {"imds_endpoint": server.url, "imds_timeout": 0.1, "imds_retries": 0, **FAST}
    )
    assert facts(result)["source"] == "none"
    assert "timed out" in result["imds_error"]


def test_unknown_type_from_the_imds_fails(run_module, imds_server):
    server = imds_server(instance_type="x9z.metal")
    failed, result = run_module(instance_facts, {"imds_endpoint": server.url})
    assert failed
    assert "unknown instance type 'x9z.metal'" in result["msg"]
    assert "p5.48xlarge" in result["msg"]
    assert (result["instance_type"], result["source"]) == ("x9z.metal", "imds")


def test_unknown_type_from_the_imds_is_allowed_on_request(run_module, imds_server):
    server = imds_server(instance_type="x9z.metal")
    failed, result = run_module(instance_facts, {"imds_endpoint": server.url, "allow_unknown": True})
    assert not failed
    assert facts(result) == {"instance_type": "x9z.metal", "source": "imds", "profile": None}
    assert any("x9z.metal" in warning for warning in result["warnings"])


def test_unknown_override_fails(run_module):
    failed, result = run_module(instance_facts, {"instance_type": "p5.12xlarge"})
    assert failed
    assert "unknown instance type 'p5.12xlarge'" in result["msg"]
    assert result["source"] == "override"


def test_unknown_override_is_allowed_on_request(run_module):
    failed, result = run_module(instance_facts, {"instance_type": "p5.12xlarge", "allow_unknown": True})
    assert not failed
    assert facts(result) == {"instance_type": "p5.12xlarge", "source": "override", "profile": None}


def test_check_mode_gives_the_same_facts(run_module, imds_server):
    server = imds_server(instance_type="trn2.48xlarge")
    args = {"imds_endpoint": server.url}
    _, normal = run_module(instance_facts, args)
    failed, checked = run_module(instance_facts, {**args, "_ansible_check_mode": True})
    assert not failed
    assert checked["changed"] is False
    assert facts(checked) == facts(normal)
    assert facts(checked)["profile"]["accelerator"]["model"] == "Trainium2"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"imds_timeout": 0}, "imds_timeout must be greater than 0"),
        ({"imds_retries": -1}, "imds_retries must be 0 or more"),
        ({"imds_retry_delay": -1}, "imds_retry_delay must be 0 or more"),
        ({"imds_endpoint": "169.254.169.254"}, "imds_endpoint must be an http:// or https:// URL"),
    ],
)
def test_bad_parameters_fail_clearly(run_module, args, message):
    failed, result = run_module(instance_facts, args)
    assert failed
    assert message in result["msg"]


def test_backoff_doubles_between_attempts(imds_server):
    server = imds_server(instance_type="g6.48xlarge", refuse_tokens=3)
    pauses = []
    value = instance_facts.read_instance_type(server.url, 2, 3, 0.5, sleep=pauses.append)
    assert value == "g6.48xlarge"
    assert pauses == [0.5, 1.0, 2.0]


def test_runs_under_ansible_with_the_filter(imds_server, tmp_path):
    """The module and the filter load and run through ansible-playbook, module_utils included."""
    server = imds_server(instance_type="p5.48xlarge")
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        textwrap.dedent(
            f"""\
            - hosts: localhost
              gather_facts: false
              tasks:
                - mlhpc.cluster.instance_facts:
                    imds_endpoint: {server.url}
                - ansible.builtin.assert:
                    that:
                      - mlhpc_instance.source == 'imds'
                      - mlhpc_instance.profile.accelerator.count == 8
                      - mlhpc_instance.profile == ('p5.48xlarge' | mlhpc.cluster.instance_profile)
            """
        )
    )
    env = {
        **os.environ,
        "ANSIBLE_COLLECTIONS_PATH": str(REPO / ".cache" / "collections"),
        "ANSIBLE_LOCALHOST_WARNING": "false",
        "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false",
        "ANSIBLE_NOCOLOR": "1",
    }
    ansible_playbook = Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv")) / "bin" / "ansible-playbook"
    run = subprocess.run(
        [
            str(ansible_playbook),
            *("-c", "local", "-i", "localhost,"),
            *("-e", f"ansible_python_interpreter={sys.executable}"),
            str(playbook),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "failed=0" in run.stdout
    assert server.token_requests == 1
