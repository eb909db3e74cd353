"""schemathesis fuzzes every operation of the OpenAPI schema as a viewer of tenant A while
tenant B is populated: no answer is a 5xx, and none carries anything of tenant B."""

from __future__ import annotations

import pytest
import schemathesis
from django.contrib.auth import get_user_model
from hypothesis import HealthCheck, given, settings

from hivemind.workflows import engine
from notifiers.services import notifier_create
from tenants import services
from tenants.models import ApiToken, Role, ServiceAccount

pytestmark = pytest.mark.django_db(transaction=True)
EXAMPLES_PER_OPERATION = 25
# Text that only tenant B's objects contain.
B_MARKERS = ("tenant-bravo", "bravo-secret", "bravo-bot", "bravo-member")


def _populate():
    User = get_user_model()
    staff = User.objects.create_user("fuzz-staff", is_staff=True)
    a = services.tenant_create(name="Alpha", slug="tenant-alpha", created_by=staff)
    b = services.tenant_create(
        name="Bravo",
        slug="tenant-bravo",
        created_by=staff,
        description="bravo-secret",
        labels={"owner": "bravo-secret"},
    )
    viewer = User.objects.create_user("viewer-alpha")
    services.membership_add(tenant=a, user=viewer, role=Role.VIEWER, actor=staff)
    member_b = User.objects.create_user("bravo-member")
    services.membership_add(tenant=b, user=member_b, role=Role.OWNER, actor=staff)
    services.service_account_create(
        tenant=b, name="bravo-bot", role=Role.OPERATOR, actor=staff, description="bravo-secret"
    )
    services.quota_reserve(tenant=b, amounts={"cpu": 100}, reason="bravo-secret", actor=member_b)
    services.api_token_create(user=member_b, name="bravo-secret")
    services.api_token_create(user=ServiceAccount.objects.get(name="bravo-bot").user, name="bravo-secret")
    # Workflows in both tenants (no worker runs here: they stay running or waiting).
    engine.workflow_create(kind="noop", tenant=b, params={"locks": [{"key": "bravo-secret"}]}, actor=staff)
    engine.workflow_create(kind="noop", tenant=a, params={"steps": 2}, actor=staff)
    # A notifier of B: its settings name B, its secret never leaves the server at all.
    notifier_create(tenant=b, name="bravo-hook", kind="webhook", config={"url": "https://bravo-secret.example.com/"},
                    secrets={"secret": "bravo-secret-hmac-key"}, actor=staff)  # fmt: skip
    _, token = services.api_token_create(user=viewer, name="fuzz")
    return token


# Every operation of the schema, each with its examples: 290 s on the slower build machine
# beside a parallel run, so more than the suite's 300 s guard against a hang.
@pytest.mark.timeout(900)
def test_fuzz_every_operation_as_viewer_of_another_tenant(web_server):
    token = _populate()
    schema = schemathesis.openapi.from_url(f"{web_server}/api/schema/?format=json")
    headers = {"Authorization": f"Bearer {token}"}
    failures: list[str] = []
    operations = 0

    def make_check(operation):
        @settings(
            max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        @given(case=operation.as_strategy())
        def check(case):
            response = case.call(base_url=web_server, headers=headers)
            documented_503 = operation.path == "/api/v1/health/" and response.status_code == 503
            if response.status_code >= 500 and not documented_503:
                failures.append(
                    f"{operation.label}: {response.status_code} for {case.path_parameters} {case.query} {case.body!r}"
                )
            leaked = [marker for marker in B_MARKERS if marker in response.text]
            if leaked:
                failures.append(f"{operation.label}: tenant B's {leaked} in a {response.status_code} answer")

        return check

    for result in schema.get_all_operations():
        operations += 1
        make_check(result.ok())()
    assert operations >= 20, f"the schema has only {operations} operations"
    assert not failures, "\n".join(failures[:20])
    # The viewer's token stayed a viewer's: nothing of B changed.
    assert ApiToken.objects.filter(name="bravo-secret", revoked_at__isnull=True).count() == 2
