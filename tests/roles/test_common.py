"""Bad input to the common role fails before any change, naming what to fix."""


def test_defaults_pass_preflight(run_role):
    run = run_role("common", hosts={"node1": []}, tasks_from="preflight")
    assert run.rc == 0, run.failures
    assert any("Assert integer kernel parameters" in t["task"]["name"] for t in run.tasks)


def test_non_integer_sysctl(run_role):
    run = run_role(
        "common", hosts={"node1": []}, group_vars={"common_sysctl_extra": {"net.core.rmem_max": "lots"}}
    )
    assert run.rc != 0
    assert "common_sysctl['net.core.rmem_max']" in run.messages
    assert "'lots'" in run.messages and "integer" in run.messages
    assert run.changed_before_failure() == []


def test_word_valued_sysctl_is_accepted(run_role):
    run = run_role(
        "common",
        hosts={"node1": []},
        group_vars={"common_sysctl_extra": {"net.ipv4.tcp_congestion_control": "cubic", "vm.swappiness": 1}},
        tasks_from="preflight",
    )
    assert run.rc == 0, run.failures


def test_unsupported_platform(run_role):
    facts = {
        "node1": {"distribution": "CentOS", "distribution_major_version": "7", "distribution_version": "7.9"}
    }
    run = run_role("common", hosts={"node1": []}, facts=facts)
    assert run.rc != 0
    assert "CentOS 7.9 is not supported" in run.messages
    assert "Debian 12/13" in run.messages and "Ubuntu 22/24" in run.messages
    assert run.changed_before_failure() == []


def test_unsupported_release_of_supported_distribution(run_role):
    facts = {
        "node1": {
            "distribution": "Debian",
            "distribution_major_version": "11",
            "distribution_version": "11.9",
        }
    }
    run = run_role("common", hosts={"node1": []}, facts=facts)
    assert "Debian 11.9 is not supported" in run.messages
    assert run.changed_before_failure() == []


def test_bad_limit_value(run_role):
    run = run_role("common", hosts={"node1": []}, group_vars={"common_limits_nofile": "many"})
    assert "common_limits_nofile is 'many'" in run.messages
    assert run.changed_before_failure() == []


def test_wrong_type_fails_argument_spec(run_role):
    run = run_role("common", hosts={"node1": []}, group_vars={"common_hosts_manage": "perhaps"})
    assert run.rc != 0
    assert "common_hosts_manage" in run.messages
    assert run.changed_before_failure() == []
