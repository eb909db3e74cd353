"""Every tenancy resource through the shared permission suite, plus their own behaviour."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.urls import reverse

from tenants import services
from tenants.models import AuditEvent, Membership, Role, ServiceAccount
from tests.api_suite import TenantOwnedAPITests

User = get_user_model()


class TestMembershipAPI(TenantOwnedAPITests):
    basename = "membership"
    manage_role = Role.ADMIN

    def make(self, world, tenant):
        user = User.objects.create_user(f"member-{User.objects.count()}")
        return services.membership_add(tenant=tenant, user=user, role=Role.VIEWER, actor=world.users["staff"])

    def create_payload(self, world, tenant):
        user = User.objects.create_user(f"new-{User.objects.count()}")
        return {"tenant": tenant.slug, "user": user.username, "role": "operator"}

    def update_payload(self, world):
        return {"role": "operator"}


class TestServiceAccountAPI(TenantOwnedAPITests):
    basename = "serviceaccount"
    manage_role = Role.ADMIN
    supports = {"create", "delete"}

    def make(self, world, tenant):
        return services.service_account_create(
            tenant=tenant,
            name=f"bot-{ServiceAccount.objects.count()}",
            role=Role.OPERATOR,
            actor=world.users["staff"],
        )

    def create_payload(self, world, tenant):
        return {"tenant": tenant.slug, "name": f"ci-{ServiceAccount.objects.count()}", "role": "viewer"}


class TestQuotaReservationAPI(TenantOwnedAPITests):
    basename = "quotareservation"
    supports = {"create", "delete"}

    def make(self, world, tenant):
        reservation, _ = services.quota_reserve(tenant=tenant, amounts={"cpu": 100}, actor=world.users["staff"])
        return reservation

    def create_payload(self, world, tenant):
        return {"tenant": tenant.slug, "amounts": {"cpu": "250m", "memory": "64Mi"}, "reason": "test"}


class TestAuditEventAPI(TenantOwnedAPITests):
    basename = "auditevent"
    view_role = Role.ADMIN
    manage_role = Role.OWNER
    supports: set = set()

    def make(self, world, tenant):
        return services.audit_record(actor=world.users["staff"], tenant=tenant, action="test.event")


def test_membership_bad_input_names_the_field(world):
    client = world.client("owner")
    url = reverse("api:membership-list")
    bad_role = client.post(url, {"tenant": "tenant-a", "user": "granted", "role": "god"}, format="json")
    assert bad_role.status_code == 400
    assert '"god" is not a valid choice.' in bad_role.json()["role"][0]
    unknown_user = client.post(url, {"tenant": "tenant-a", "user": "nobody", "role": "viewer"}, format="json")
    assert unknown_user.status_code == 400 and "user" in unknown_user.json()
    twice = client.post(url, {"tenant": "tenant-a", "user": "viewer-a", "role": "viewer"}, format="json")
    assert twice.status_code == 400
    assert twice.json()["user"] == ["viewer-a is already a member of tenant-a"]


def test_admin_cannot_make_an_owner_and_last_owner_stays(world):
    admin = world.client("admin")
    url = reverse("api:membership-list")
    response = admin.post(url, {"tenant": "tenant-a", "user": "granted", "role": "owner"}, format="json")
    assert response.status_code == 403
    assert response.json()["code"] == "owner_required"
    owner_membership = Membership.objects.get(user=world.users["owner"], tenant=world.a)
    response = world.client("owner").delete(reverse("api:membership-detail", args=[owner_membership.pk]))
    assert response.status_code == 409
    assert response.json()["code"] == "last_owner"


def test_role_change_changes_permissions(world):
    viewer = world.users["viewer"]
    membership = Membership.objects.get(user=viewer, tenant=world.a)
    client = world.client("viewer")
    url = reverse("api:quotareservation-list")
    payload = {"tenant": "tenant-a", "amounts": {"containers": 1}}
    assert client.post(url, payload, format="json").status_code == 403
    services.membership_change_role(membership=membership, role=Role.OPERATOR, actor=world.users["owner"])
    assert client.post(url, payload, format="json").status_code == 201
    services.membership_remove(membership=membership, actor=world.users["owner"])
    assert client.get(reverse("api:tenant-detail", args=["tenant-a"])).status_code == 404


def test_every_change_is_audited_and_readable_per_tenant(world):
    client = world.client("owner")
    client.post(reverse("api:quotareservation-list"), {"tenant": "tenant-a", "amounts": {"cpu": 1}}, format="json")
    actions = {row["action"] for row in client.get(reverse("api:auditevent-list"), {"limit": 500}).json()["results"]}
    assert {"tenant.create", "membership.add", "quota.reserve"} <= actions
    rows = client.get(reverse("api:auditevent-list"), {"limit": 500}).json()["results"]
    assert {row["tenant"] for row in rows} == {"tenant-a"}
    assert AuditEvent.objects.filter(tenant=world.b).exists()


def test_service_account_token_acts_in_its_tenant_only(world):
    owner = world.client("owner")
    created = owner.post(
        reverse("api:serviceaccount-list"),
        {"tenant": "tenant-a", "name": "deployer", "role": "operator"},
        format="json",
    )
    assert created.status_code == 201, created.content
    token = owner.post(
        reverse("api:apitoken-list"),
        {"name": "ci", "service_account": created.json()["id"], "expires_in_days": 30},
        format="json",
    )
    assert token.status_code == 201, token.content
    plain = token.json()["token"]
    assert plain.startswith("hm_")
    from rest_framework.test import APIClient

    bot = APIClient()
    bot.credentials(HTTP_AUTHORIZATION=f"Bearer {plain}")
    me = bot.get(reverse("api:me")).json()
    assert me == {
        "username": "sa.tenant-a.deployer",
        "is_staff": False,
        "memberships": [{"tenant": "tenant-a", "role": "operator"}],
    }
    assert bot.get(reverse("api:tenant-detail", args=["tenant-b"])).status_code == 404
    # The owner of B cannot mint tokens for A's service account.
    other = world.client("outsider").post(
        reverse("api:apitoken-list"), {"name": "x", "service_account": created.json()["id"]}, format="json"
    )
    missing = world.client("outsider").post(
        reverse("api:apitoken-list"), {"name": "x", "service_account": 999999}, format="json"
    )
    # Another tenant's account and one that does not exist get the same answer.
    assert other.status_code == missing.status_code == 400
    assert other.json()["service_account"] == [f"no service account {created.json()['id']} (or you may not manage it)"]
    assert missing.json()["service_account"] == ["no service account 999999 (or you may not manage it)"]
