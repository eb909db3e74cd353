"""schemathesis against the real web process, with hostile values in the numbers the API takes as
strings: quota limits (`type: string` in the schema, one per resource in tenants.quotas), a
reservation's `amounts` and a spec's `resources` (free-form JSON in the schema, so schemathesis
alone would never put a number-like string there). Each operation's generated case gets one of
those fields replaced by NaN/Infinity in their spellings, exponents, huge, negative and empty
values; as a tenant operator (who may write apps and reservations) and as staff (quotas):
no 5xx, never a 2xx, and the answer conforms to the schema (content type, and the body of any
documented status)."""

from __future__ import annotations

import json

import pytest
import schemathesis
from django.contrib.auth import get_user_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from hivemind.applications import services as app_services
from hivemind.applications.models import App, AppRevision
from tenants import services
from tenants.models import QuotaReservation, Role, TenantQuota
from tenants.quotas import RESOURCES

pytestmark = pytest.mark.django_db(transaction=True)
EXAMPLES_PER_OPERATION = 30
SPELLINGS = ["NaN", "nan", "-NaN", "sNaN", "Infinity", "-Infinity", "+Infinity", "inf", "-inf", "∞", "1e30", "1E3"]
hostile_numbers = st.one_of(
    st.sampled_from([*SPELLINGS, "9" * 30, "-1", "-0.5", "", " ", "0x10", "1_000", "1,5", "10**20"]),
    st.integers(min_value=2**53 + 1).map(str),
    st.integers(max_value=-1),
    st.integers(min_value=2**63),
    st.decimals(allow_nan=False, allow_infinity=False, places=6).map(lambda d: f"{d:E}"),  # exponent notation
)
SPEC = {"image": "hivemind/busybox:latest", "resources": {"cpu": "100m", "memory": "16Mi"}}
RESOURCE_FIELDS = ["cpu", "memory", "cpu_limit", "memory_limit"]


def _populate():
    User = get_user_model()
    staff = User.objects.create_user("numbers-staff", is_staff=True)
    tenant = services.tenant_create(name="Alpha", slug="tenant-alpha", created_by=staff)
    operator = User.objects.create_user("numbers-operator")
    services.membership_add(tenant=tenant, user=operator, role=Role.OPERATOR, actor=staff)
    app = app_services.app_deploy(tenant=tenant, name="web", spec=SPEC, replicas=1, actor=staff)
    tokens = {
        who: services.api_token_create(user=user, name="fuzz")[1]
        for who, user in (("operator", operator), ("staff", staff))
    }
    return tenant, app, tokens


def _targets(schema_json: dict, app_id: int) -> dict[str, tuple[dict, dict, list[tuple[str, ...]]]]:
    """operationId -> (path parameters, base body, the string-typed numeric fields to poison)."""
    quota = schema_json["components"]["schemas"]["Quota"]["properties"]
    quota_fields = [(name,) for name, field in quota.items() if name in RESOURCES and field.get("type") == "string"]
    assert len(quota_fields) == len(RESOURCES), "the schema no longer types every quota resource as a string"
    spec_fields = [("spec", "resources", name) for name in RESOURCE_FIELDS]
    return {
        "tenants_quota_update": ({"slug": "tenant-alpha"}, {"cpu": "4"}, quota_fields),
        "reservations_create": (
            {},
            {"tenant": "tenant-alpha", "amounts": {"cpu": "100m", "memory": "16Mi", "containers": "1"}},
            [("amounts", "cpu"), ("amounts", "memory"), ("amounts", "containers")],
        ),
        "apps_create": ({}, {"tenant": "tenant-alpha", "name": "api", "spec": SPEC}, spec_fields),
        "apps_partial_update": ({"id": app_id}, {"spec": SPEC}, spec_fields),
    }


def _poisoned(base: dict, path: tuple[str, ...], value) -> dict:
    body = json.loads(json.dumps(base))
    target = body
    for part in path[:-1]:
        target = target.setdefault(part, {})
    target[path[-1]] = value
    return body


def test_hostile_string_numbers_through_the_real_web_process(web_server):
    tenant, app, tokens = _populate()
    schema = schemathesis.openapi.from_url(f"{web_server}/api/schema/?format=json")
    targets = _targets(schema.raw_schema, app.pk)
    failures: list[str] = []
    before = _stored(tenant)
    checks = [not_a_server_error, content_type_conformance, response_schema_conformance]
    sent = 0

    def make_check(operation, who: str, path_parameters: dict, base: dict, fields: list):
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(), field=st.sampled_from(fields), value=hostile_numbers)
        def check(case, field, value):
            nonlocal sent
            case.path_parameters = path_parameters
            case.query = {}
            case.body = _poisoned(base, field, value)
            case.media_type = "application/json"  # the schema offers form encodings too; nested JSON needs JSON
            response = case.call(base_url=web_server, headers={"Authorization": f"Bearer {tokens[who]}"})
            sent += 1
            label = f"{operation.label} as {who}: {'.'.join(field)}={value!r}"
            if response.status_code < 300:
                failures.append(f"{label} accepted: {response.status_code} {response.text[:200]}")
            named = ".".join(field[1:]) if field[0] == "spec" else field[0]  # the spec's fields are named as in it
            if response.status_code == 400 and named not in response.json():
                failures.append(f"{label}: the 400 does not name {named}: {response.text[:200]}")
            try:
                case.validate_response(response, checks=checks)
            except Exception as exc:  # schemathesis' FailureGroup: what does not conform
                failures.append(f"{label}: {exc}"[:600])

        return check

    for result in schema.get_all_operations():
        operation = result.ok()
        target = targets.get(operation.definition.raw.get("operationId"))
        if target is None:
            continue
        for who in ("operator", "staff"):
            make_check(operation, who, *target)()
    assert sent >= 4 * 2 * 10, sent
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:20])
    assert _stored(tenant) == before, "a refused request changed what is stored"


def _stored(tenant) -> tuple:
    return (
        list(TenantQuota.objects.filter(tenant=tenant).values()),
        list(QuotaReservation.objects.order_by("pk").values("pk", "state")),
        list(App.objects.order_by("pk").values("pk", "replicas", "revision_id")),
        AppRevision.objects.count(),
    )
