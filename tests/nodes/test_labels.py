"""Label and selector syntax, and HIVEMIND_NODE_* configuration."""

from __future__ import annotations

import pytest

from hivemind.config import load_config
from hivemind.nodes.filtersets import Requirement, parse_selector
from hivemind.nodes.labels import LabelError, parse_labels


def test_parse_labels():
    assert parse_labels(" zone=eu-1, hivemind.io/tenant=acme,empty=,") == {
        "zone": "eu-1",
        "hivemind.io/tenant": "acme",
        "empty": "",
    }
    assert parse_labels("") == {}
    with pytest.raises(LabelError, match="label 'zone' is given twice"):
        parse_labels("zone=a,zone=b")
    with pytest.raises(LabelError, match="must be 1-63 lower-case"):
        parse_labels("a" * 64 + "=x")


def test_parse_selector():
    assert parse_selector("zone=eu-1, tier!=db,gpu,!spot,os==linux") == [
        Requirement("zone", "=", "eu-1"),
        Requirement("tier", "!=", "db"),
        Requirement("gpu", "exists"),
        Requirement("spot", "!exists"),
        Requirement("os", "=", "linux"),
    ]
    for bad in ("Zone=x", "zone=a b", "!", "=x"):
        with pytest.raises(LabelError):
            parse_selector(bad)


def test_node_configuration(tmp_path):
    env = {"HIVEMIND_VAR_DIR": str(tmp_path)}
    config = load_config(env)
    assert (config.node_address, config.node_labels, config.node_heartbeat) == ("", (), 5)
    env.update(
        HIVEMIND_NODE_ADDRESS="[fd00::5]",
        HIVEMIND_NODE_LABELS="zone=eu-1,disk=ssd",
        HIVEMIND_NODE_HEARTBEAT="2",
    )
    config = load_config(env)
    assert config.node_address == "fd00::5"
    assert dict(config.node_labels) == {"zone": "eu-1", "disk": "ssd"}
    assert config.node_heartbeat == 2
    assert load_config({**env, "HIVEMIND_NODE_ADDRESS": "edge-01.example.com"}).node_address == "edge-01.example.com"
