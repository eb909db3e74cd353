"""Hostile values in the dashboard's deploy form: every one is shown next to its field (the form
re-rendered with a 400, as for any bad input), with the words the API uses for the same value,
never a 500, and nothing is made."""

from __future__ import annotations

import re

import pytest

from hivemind.applications.models import App, AppRevision
from hivemind.core.units import QuantityError, parse_bytes, parse_cpu
from hivemind.workflows.models import Workflow
from tests.dashboard.test_pages import GOOD_FORM, text

QUANTITIES = ["NaN", "nan", "Infinity", "-Infinity", "inf", "1e30", "9" * 19, "-1", " ", "\x1b[31m"]
PARSERS = {"cpu": parse_cpu, "memory": parse_bytes, "cpu_limit": parse_cpu, "memory_limit": parse_bytes}


def _api_message(parse, value: str) -> str:
    with pytest.raises(QuantityError) as refused:
        parse(value.strip())
    return str(refused.value)


def _field_error(response, field: str) -> str:
    page = text(response).replace("&#x27;", "'").replace("&quot;", '"')
    error = re.search(rf'<div class="field-error" id="id_{field}_error" role="alert"><p>(.*?)</p>', page, re.S)
    assert error, f"no error next to {field}: {page[page.find('field-error') - 200 :][:600]}"
    return error.group(1)


def _made() -> tuple[int, int, int]:
    return App.objects.count(), Workflow.objects.count(), AppRevision.objects.count()


def test_hostile_quantities_show_the_apis_message_next_to_their_field(world, login):
    client = login("operator")
    before = _made()
    for field, parse in PARSERS.items():
        for value in QUANTITIES:
            if not value.strip() and field.endswith("_limit"):
                continue  # an optional box left blank: no limit
            response = client.post("/apps/new/", {**GOOD_FORM, field: value})
            assert response.status_code == 400, (field, value, response.status_code)
            shown = _field_error(response, field)
            if value.strip():
                assert _api_message(parse, value) in shown, (field, value, shown)
            elif field in ("cpu", "memory"):  # a required box left blank
                assert "required" in shown, (field, shown)
    assert _made() == before


HOSTILE_FIELDS = [
    ("env", "A=\x01", "holds the control character U+0001"),
    ("env", "A=\x1b[2J", "holds the control character U+001B"),
    ("env", "A=" + "x" * 40_000, "at most 32768"),
    ("env", "A=ok\x00", "Null characters are not allowed"),
    ("name", "web\x00", "Null characters are not allowed"),
    ("name", "NaN", "expected a DNS label"),
    ("image", "nginx\x01", "is not an image reference"),
    ("replicas", "-1", "expected"),
    ("replicas", "NaN", "expected a whole number from 0 to 1000"),
    ("replicas", "9" * 30, "at most 10 characters"),
    ("command", "run \x1b[2J", "holds the control character U+001B"),
    ("ports", "NaN", "ports[0].container_port"),
    ("ports", "99999999999999999999", "ports[0].container_port"),
]


@pytest.mark.parametrize(
    ("field", "value", "message"), HOSTILE_FIELDS, ids=[f"{f}:{m[:24]}" for f, _, m in HOSTILE_FIELDS]
)
def test_hostile_text_is_refused_next_to_its_field(world, login, field, value, message):
    client = login("operator")
    before = _made()
    response = client.post("/apps/new/", {**GOOD_FORM, field: value})
    assert response.status_code == 400, response.status_code
    assert message in _field_error(response, field)
    assert _made() == before


def test_health_interval_nan_is_refused_next_to_it(world, login):
    client = login("operator")
    form = {**GOOD_FORM, "health_type": "tcp", "health_port": "80", "health_interval": "NaN"}
    response = client.post("/apps/new/", form)
    assert response.status_code == 400
    assert "expected a duration such as 30, 30s, 5m, 2h or 1d, got 'NaN'" in _field_error(response, "health_interval")
