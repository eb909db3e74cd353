"""Every API route of a tenant-owned model must be covered by the shared permission suite."""

from __future__ import annotations

import importlib
import pkgutil

from django.urls import URLPattern, URLResolver, get_resolver

import tests
from hivemind.core.models import TenantOwned
from tenants.models import AuditEvent, Tenant
from tests.api_suite import COVERED_BASENAMES

# Routes that belong to no tenant, each with the reason.
NOT_TENANT_OWNED = {
    "health": "platform health, public by design",
    "me": "the caller's own identity",
    # Needs no token: it trades a password for one (tests/tenants/test_login_api.py).
    "auth-login": "password login, throttled and audited, open to anonymous callers",
    # Nodes belong to the platform: every signed-in user reads them, only staff change them
    # (tests/nodes/test_api.py checks both).
    "node-list": "platform nodes, readable by every signed-in user",
    "node-detail": "platform nodes; DELETE is platform staff's",
    "node-label": "platform staff's node operation",
    "node-taint": "platform staff's node operation",
    "node-cordon": "platform staff's node operation",
    "node-uncordon": "platform staff's node operation",
    "node-drain": "platform staff's node operation",
    # A tenant's own series; scoping tested in tests/observability/test_metrics_engine.py.
    "metrics": "a tenant's series for its own Prometheus, only the caller's tenants",
}


def _piece(pattern) -> str:
    return str(pattern.pattern).removeprefix("^").removesuffix("$")


def _api_patterns(resolver: URLResolver, prefix: str = ""):
    for pattern in resolver.url_patterns:
        if isinstance(pattern, URLResolver):
            yield from _api_patterns(pattern, prefix + _piece(pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + _piece(pattern), pattern


def _import_all_tests() -> None:
    for module in pkgutil.walk_packages(tests.__path__, "tests."):
        if module.name.split(".")[-1].startswith("test_") and module.name != __name__:
            importlib.import_module(module.name)


def test_every_tenant_owned_route_is_in_the_permission_suite():
    _import_all_tests()
    missing, unknown, checked = [], [], 0
    for route, pattern in _api_patterns(get_resolver()):
        if not route.startswith("api/v1/"):
            continue
        name = pattern.name or ""
        view_class = getattr(pattern.callback, "cls", None)
        queryset = getattr(view_class, "queryset", None)
        model = getattr(queryset, "model", None)
        # A router names routes <basename>-<action>, and an action's name may have dashes itself
        # (volume-snapshot-schedule): the longest covered basename the name starts with.
        covered = [b for b in COVERED_BASENAMES if name.startswith(f"{b}-")]
        basename = max(covered, key=len) if covered else name.rsplit("-", 1)[0]
        if model is not None and (issubclass(model, TenantOwned) or model in (Tenant, AuditEvent)):
            checked += 1
            if basename not in COVERED_BASENAMES:
                missing.append(f"{route} ({model._meta.label})")
        elif model is not None and basename in COVERED_BASENAMES:
            continue
        elif name not in NOT_TENANT_OWNED:
            unknown.append(f"{route} (name {name!r})")
    assert checked >= 10, f"the walk found only {checked} tenant-owned routes"
    assert not missing, "tenant-owned routes without a TenantOwnedAPITests class: " + ", ".join(missing)
    assert not unknown, "API routes neither covered nor listed in NOT_TENANT_OWNED: " + ", ".join(unknown)


def test_the_walk_sees_the_routes():
    routes = {route for route, _ in _api_patterns(get_resolver())}
    assert {"api/v1/memberships/", "api/v1/tenants/(?P<slug>[a-z0-9-]+)/usage/", "api/v1/health/"} <= routes
