"""The mlhpc.cluster.instance_profile filter."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.mlhpc.cluster.plugins.filter.instance_profile import FilterModule, instance_profile
from ansible_collections.mlhpc.cluster.plugins.module_utils.instance_profiles import PROFILES


def test_filter_is_registered_under_its_name():
    assert FilterModule().filters() == {"instance_profile": instance_profile}


def test_returns_the_profile():
    profile = instance_profile("p5.48xlarge")
    assert profile == PROFILES["p5.48xlarge"]
    assert profile["accelerator"]["count"] == 8
    assert profile["efa_interfaces"] == 32
    assert profile["nvswitch"] is True


def test_returns_a_copy_the_caller_may_change():
    profile = instance_profile("trn1.32xlarge")
    profile["accelerator"]["neuron_cores"] = 0
    assert instance_profile("trn1.32xlarge")["accelerator"]["neuron_cores"] == 32


def test_surrounding_whitespace_is_ignored():
    assert instance_profile(" g5.48xlarge\n")["instance_type"] == "g5.48xlarge"


def test_unknown_type_is_a_clear_filter_error():
    with pytest.raises(AnsibleFilterError) as info:
        instance_profile("p5.96xlarge")
    message = str(info.value)
    assert "unknown instance type 'p5.96xlarge'" in message
    assert "p5.48xlarge" in message
    assert "instance_profiles.py" in message


@pytest.mark.parametrize("value", [None, 8, ["p5.48xlarge"]])
def test_non_string_input_is_a_filter_error(value):
    with pytest.raises(AnsibleFilterError, match="expects an instance type string"):
        instance_profile(value)
