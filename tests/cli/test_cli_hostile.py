"""Hostile flag values through the installed `hivemind` command: exit 2 naming the flag, with
the message the API gives for the same value (both come from core/units.py and core/limits.py),
never a traceback, and nothing sent (no server runs here at all)."""

from __future__ import annotations

import json

import pytest

from hivemind.core.units import QuantityError, parse_bytes, parse_cpu, parse_duration
from tenants.models import QuotaReservation
from tests.cli.conftest import one_error_line

NOWHERE = "http://127.0.0.1:9"  # nothing listens: a flag checked only by the server would exit 3, not 2
QUANTITIES = ["NaN", "nan", "-Infinity", "Infinity", "inf", "1e30", "9" * 30, "-1", "", " ", "\x1b[31m", "x" * 5000]
FLAGS = [
    ("--cpu", "resources.cpu", parse_cpu),
    ("--memory", "resources.memory", parse_bytes),
    ("--cpu-limit", "resources.cpu_limit", parse_cpu),
    ("--memory-limit", "resources.memory_limit", parse_bytes),
]


def _message(parse, value) -> str:
    with pytest.raises(QuantityError) as refused:
        parse(value)
    return str(refused.value)


def deploy(cli, *flags: str):
    return cli("--server", NOWHERE, "app", "deploy", "--name", "web", "--image", "nginx:1.27", *flags)


@pytest.mark.parametrize(("flag", "field", "parse"), FLAGS, ids=[f[0] for f in FLAGS])
def test_a_hostile_quantity_exits_2_with_the_apis_message(cli, flag, field, parse, world):
    client = world.client("operator")
    for value in QUANTITIES:
        result = deploy(cli, flag, value)
        assert result.code == 2, (flag, value, result)
        expected = _message(parse, value)
        assert one_error_line(result) == f"{flag}: {expected}", (flag, value)
        # The API answers the same value with the same words, naming the spec's field.
        section, key = field.split(".")
        spec = {"image": "nginx:1.27", section: {key: value}}
        if key.endswith("_limit"):
            spec[section] |= {"cpu": "1m", "memory": "6Mi"}
        answer = client.post("/api/v1/apps/", {"tenant": "tenant-a", "name": "web", "spec": spec}, format="json")
        assert answer.status_code == 400, (field, value, answer.content)
        assert answer.json()[field] == [expected], (field, value)


def test_hostile_env_values_and_other_flags_exit_2_naming_the_flag(cli, db):
    for value in ("A=\x01", "A=\x1b[2J", "A=ok\x7f", "B\x1b=1"):
        result = deploy(cli, "--env", value)
        assert result.code == 2, (value, result)
        message = one_error_line(result)
        assert message.startswith("--env "), message
        assert "holds the control character U+00" in message, message
        assert "\x1b" not in result.err  # nothing reaches the terminal's control sequences
    long = deploy(cli, "--env", "A=" + "x" * (32 * 1024 + 1))
    assert long.code == 2 and one_error_line(long) == "--env A: is 32769 characters long; at most 32768", long
    interval = deploy(cli, "--health-tcp", "80", "--health-interval", "NaN")
    assert interval.code == 2, interval
    expected = _message(lambda v: parse_duration(v, low=0.5, high=3600), "NaN")
    assert one_error_line(interval) == f"--health-interval: {expected}"
    for replicas in ("-1", "NaN", "9" * 30, ""):
        result = deploy(cli, "--replicas", replicas)
        assert result.code == 2, (replicas, result)
        assert "Invalid value for '--replicas'" in result.err and "Traceback" not in result.err, result
    update = cli("--server", NOWHERE, "app", "update", "web", "--cpu", "Infinity")
    assert update.code == 2, update
    assert one_error_line(update) == f"--cpu: {_message(parse_cpu, 'Infinity')}"


def test_quota_and_reservation_amounts_get_the_same_words(world):
    """The API's quota and reservation endpoints name the resource with the parser's message."""
    client = world.client("staff")
    for value in ("NaN", "1e30", "-1", ""):
        quota = client.put("/api/v1/tenants/tenant-a/quota/", {"cpu": value}, format="json")
        assert quota.status_code == 400 and quota.json() == {"cpu": [_message(parse_cpu, value)]}, quota.content
        held = client.post(
            "/api/v1/reservations/",
            json.dumps({"tenant": "tenant-a", "amounts": {"memory": value}}),
            content_type="application/json",
        )
        assert held.status_code == 400, held.content
        assert held.json() == {"amounts": [f"memory: {_message(parse_bytes, value)}"]}
    assert not QuotaReservation.objects.exists()
