"""The shared API permission suite, in the shape of NetBox's APIViewTestCases.

Every tenant-owned resource's API test inherits `TenantOwnedAPITests` and says how to
make one object, what to post and what to patch. The suite then checks, for that
resource: anonymous -> 401; another tenant's object -> 404 for get, update, delete and
every custom action; each role may do exactly what docs/roles.md says; a guardian grant
on one object shows that object only; staff see everything. Platform resources only staff
may touch (users) inherit `StaffOnlyAPITests` instead. `tests/test_api_routes.py` fails
when an API route has neither such a test class nor a reason to be left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse
from guardian.shortcuts import assign_perm
from rest_framework.test import APIClient

from tenants import services
from tenants.models import Role, Tenant

ROLE_ORDER = [Role.VIEWER, Role.OPERATOR, Role.ADMIN, Role.OWNER]
COVERED_BASENAMES: set[str] = set()


@dataclass
class World:
    a: Tenant
    b: Tenant
    users: dict  # role name (or "outsider", "staff", "granted") -> User

    def client(self, who: str | None) -> APIClient:
        client = APIClient()
        if who is not None:
            _, plain = services.api_token_create(user=self.users[who], name="test")
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {plain}")
        return client


def make_world() -> World:
    User = get_user_model()
    staff = User.objects.create_user("staff", is_staff=True)
    a = services.tenant_create(name="Tenant A", slug="tenant-a", created_by=staff)
    b = services.tenant_create(name="Tenant B", slug="tenant-b", created_by=staff)
    users = {"staff": staff}
    for role in ROLE_ORDER:
        users[role.value] = User.objects.create_user(f"{role.value}-a")
        services.membership_add(tenant=a, user=users[role.value], role=role, actor=staff)
    users["outsider"] = User.objects.create_user("owner-b")
    services.membership_add(tenant=b, user=users["outsider"], role=Role.OWNER, actor=staff)
    users["granted"] = User.objects.create_user("granted")
    return World(a=a, b=b, users=users)


def _ok(status: int) -> bool:
    return 200 <= status < 300


class TenantOwnedAPITests:
    """Subclass per resource; set the class attributes and implement the three hooks."""

    basename: ClassVar[str]
    # The lowest role that may add, change and delete this resource.
    manage_role: ClassVar[Role] = Role.OPERATOR
    # The lowest role that sees it (audit: admin).
    view_role: ClassVar[Role] = Role.VIEWER
    supports: ClassVar[set[str]] = {"create", "update", "delete"}
    # (url name suffix, HTTP method) of detail actions, e.g. ("restart", "post").
    custom_actions: ClassVar[list[tuple[str, str]]] = []

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "basename" in cls.__dict__:
            COVERED_BASENAMES.add(cls.basename)

    # Hooks ---------------------------------------------------------------------------------
    def make(self, world: World, tenant: Tenant):
        raise NotImplementedError

    def create_payload(self, world: World, tenant: Tenant) -> dict:
        raise NotImplementedError

    def update_payload(self, world: World) -> dict:
        return {}

    # Helpers -------------------------------------------------------------------------------
    def list_url(self) -> str:
        return reverse(f"api:{self.basename}-list")

    def detail_url(self, obj) -> str:
        return reverse(f"api:{self.basename}-detail", args=[obj.pk])

    def _requests(self, world: World, obj):
        detail = self.detail_url(obj)
        yield "get", detail, None
        if "update" in self.supports:
            yield "patch", detail, self.update_payload(world)
        if "delete" in self.supports:
            yield "delete", detail, None
        for name, method in self.custom_actions:
            yield method, reverse(f"api:{self.basename}-{name}", args=[obj.pk]), {}

    # The suite -----------------------------------------------------------------------------
    def test_anonymous_gets_401(self, world):
        obj = self.make(world, world.a)
        client = world.client(None)
        assert client.get(self.list_url()).status_code == 401
        if "create" in self.supports:
            assert client.post(self.list_url(), self.create_payload(world, world.a), format="json").status_code == 401
        for method, url, data in self._requests(world, obj):
            assert getattr(client, method)(url, data, format="json").status_code == 401, (method, url)

    def test_list_shows_only_the_callers_tenant(self, world):
        mine, theirs = self.make(world, world.a), self.make(world, world.b)
        response = world.client(self.view_role.value).get(self.list_url(), {"limit": 1000})
        assert response.status_code == 200
        ids = {row["id"] for row in response.json()["results"]}
        assert mine.pk in ids
        assert theirs.pk not in ids

    def test_other_tenants_object_is_404_for_every_request(self, world):
        theirs = self.make(world, world.b)
        client = world.client(Role.OWNER.value)  # the strongest role in tenant A
        for method, url, data in self._requests(world, theirs):
            response = getattr(client, method)(url, data, format="json")
            assert response.status_code == 404, (method, url, response.status_code, response.content)
        assert self.model_exists(theirs)

    def test_tenant_header_of_another_tenant_is_404(self, world):
        response = world.client(Role.OWNER.value).get(self.list_url(), HTTP_X_HIVEMIND_TENANT=world.b.slug)
        assert response.status_code == 404

    @pytest.mark.parametrize("role", ROLE_ORDER, ids=[r.value for r in ROLE_ORDER])
    def test_roles_may_do_what_the_documentation_says(self, world, role):
        client = world.client(role.value)
        may_write = ROLE_ORDER.index(role) >= ROLE_ORDER.index(self.manage_role)
        may_view = ROLE_ORDER.index(role) >= ROLE_ORDER.index(self.view_role)
        obj = self.make(world, world.a)
        detail = client.get(self.detail_url(obj))
        assert detail.status_code == (200 if may_view else 404), detail.content
        if "create" in self.supports:
            response = client.post(self.list_url(), self.create_payload(world, world.a), format="json")
            assert _ok(response.status_code) == may_write, (role, response.status_code, response.content)
            if not may_write:
                assert response.status_code == 403
        if "update" in self.supports and may_view:
            response = client.patch(self.detail_url(obj), self.update_payload(world), format="json")
            assert _ok(response.status_code) == may_write, (role, response.status_code, response.content)
            if not may_write:
                assert response.status_code == 403
        if "delete" in self.supports and may_view:
            response = client.delete(self.detail_url(obj))
            assert _ok(response.status_code) == may_write, (role, response.status_code, response.content)
            if not may_write:
                assert response.status_code == 403

    def test_create_in_another_tenant_is_refused(self, world):
        if "create" not in self.supports:
            response = world.client(Role.OWNER.value).post(self.list_url(), {}, format="json")
            assert response.status_code == 405
            return
        response = world.client(Role.OWNER.value).post(
            self.list_url(), self.create_payload(world, world.b), format="json"
        )
        assert response.status_code == 400
        assert "tenant" in response.json()

    def test_grant_on_one_object_shows_that_object_only(self, world):
        granted_obj, other = self.make(world, world.a), self.make(world, world.a)
        meta = granted_obj._meta
        assign_perm(f"{meta.app_label}.view_{meta.model_name}", world.users["granted"], granted_obj)
        client = world.client("granted")
        ids = {row["id"] for row in client.get(self.list_url(), {"limit": 1000}).json()["results"]}
        assert ids == {granted_obj.pk}
        assert client.get(self.detail_url(granted_obj)).status_code == 200
        assert client.get(self.detail_url(other)).status_code == 404

    def test_staff_see_every_tenant(self, world):
        mine, theirs = self.make(world, world.a), self.make(world, world.b)
        ids = {row["id"] for row in world.client("staff").get(self.list_url(), {"limit": 1000}).json()["results"]}
        assert {mine.pk, theirs.pk} <= ids

    def model_exists(self, obj) -> bool:
        return type(obj).objects.filter(pk=obj.pk).exists()


NON_STAFF = [*(r.value for r in ROLE_ORDER), "outsider", "granted"]


class StaffOnlyAPITests:
    """The suite for platform resources only staff may touch (users). Anonymous -> 401; every
    other caller, whatever their roles, gets 403 on the list and on create and, for every object
    URL, the very 404 a name that does not exist gets (nothing confirms an object exists);
    staff may do it all. Subclass per resource, as TenantOwnedAPITests."""

    basename: ClassVar[str]
    lookup: ClassVar[str] = "pk"
    supports: ClassVar[set[str]] = {"create", "update"}
    custom_actions: ClassVar[list[tuple[str, str]]] = []
    missing_key: ClassVar[str] = "no-such-object"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "basename" in cls.__dict__:
            COVERED_BASENAMES.add(cls.basename)

    def make(self, world: World):
        raise NotImplementedError

    def create_payload(self, world: World) -> dict:
        raise NotImplementedError

    def update_payload(self, world: World) -> dict:
        return {}

    def list_url(self) -> str:
        return reverse(f"api:{self.basename}-list")

    def detail_url(self, obj, name: str = "detail") -> str:
        key = obj if isinstance(obj, str) else getattr(obj, self.lookup)
        return reverse(f"api:{self.basename}-{name}", args=[key])

    def _requests(self, world: World, obj):
        yield "get", self.detail_url(obj), None
        if "update" in self.supports:
            yield "patch", self.detail_url(obj), self.update_payload(world)
        for name, method in self.custom_actions:
            yield method, self.detail_url(obj, name), {}

    def snapshot(self, obj) -> dict:
        """The object as stored, to prove a refused request changed nothing."""
        fresh = type(obj).objects.get(pk=obj.pk)
        return {f.attname: getattr(fresh, f.attname) for f in fresh._meta.concrete_fields}

    def test_anonymous_gets_401(self, world):
        obj = self.make(world)
        client = world.client(None)
        assert client.get(self.list_url()).status_code == 401
        if "create" in self.supports:
            assert client.post(self.list_url(), self.create_payload(world), format="json").status_code == 401
        for method, url, data in self._requests(world, obj):
            assert getattr(client, method)(url, data, format="json").status_code == 401, (method, url)

    @pytest.mark.parametrize("who", NON_STAFF)
    def test_everyone_but_staff_gets_403_on_the_list_and_404_on_each_object(self, world, who):
        obj = self.make(world)
        before = self.snapshot(obj)
        client = world.client(who)
        listed = client.get(self.list_url())
        assert listed.status_code == 403, listed.content
        if "create" in self.supports:
            created = client.post(self.list_url(), self.create_payload(world), format="json")
            assert created.status_code == 403, created.content
        for method, url, data in self._requests(world, obj):
            response = getattr(client, method)(url, data, format="json")
            missing_url = url.replace(f"/{getattr(obj, self.lookup)}/", f"/{self.missing_key}/")
            missing = getattr(client, method)(missing_url, data, format="json")
            assert response.status_code == 404, (method, url, response.status_code, response.content)
            assert response.content == missing.content, (method, url)
        assert self.snapshot(obj) == before

    def test_staff_may_do_it_all(self, world):
        client = world.client("staff")
        obj = self.make(world)
        assert client.get(self.list_url()).status_code == 200
        assert client.get(self.detail_url(obj)).status_code == 200
        missing = client.get(self.detail_url(self.missing_key))
        assert missing.status_code == 404
        if "create" in self.supports:
            created = client.post(self.list_url(), self.create_payload(world), format="json")
            assert created.status_code == 201, created.content
        if "update" in self.supports:
            changed = client.patch(self.detail_url(obj), self.update_payload(world), format="json")
            assert changed.status_code == 200, changed.content
        for name, method in self.custom_actions:
            response = getattr(client, method)(self.detail_url(obj, name), {}, format="json")
            assert _ok(response.status_code), (name, response.status_code, response.content)
