"""Writes for applications: deploy, scale, update, restart, roll back, delete.

Each one, in one transaction: validate, change the desired state (a new immutable
revision when the spec changes), hold the quota the new desired state needs (the tenant's
usage row is locked, so concurrent requests never overshoot), and start the workflow that
makes it so. Workflows of one app never run at once (they all lock `app:<id>`).
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from hivemind.applications.models import App, AppRevision
from hivemind.applications.spec import clean_spec
from hivemind.core.errors import Conflict
from hivemind.core.names import DNS_LABEL_RULE, is_dns_label
from hivemind.nodes.models import Node
from hivemind.workflows import engine
from hivemind.workflows.models import Workflow
from networking.ipam import service_address
from networking.services import networks_for_spec
from storage.mounts import check_templates, check_tenant_volumes
from tenants.models import QuotaReservation
from tenants.services import audit_record, quota_release, quota_reserve, tenant_require_active

MAX_REPLICAS = 1000


def _check_name(field: str, value: str) -> str:
    if not is_dns_label(value):
        raise ValidationError({field: f"expected {DNS_LABEL_RULE}, got {value!r}"})
    return value


def _check_replicas(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_REPLICAS:
        raise ValidationError({"replicas": f"expected a whole number from 0 to {MAX_REPLICAS}, got {value!r}"})
    return value


def amounts_for(spec: dict, replicas: int) -> dict[str, int]:
    return {
        "cpu": spec["resources"]["cpu"] * replicas,
        "memory": spec["resources"]["memory"] * replicas,
        "containers": replicas,
    }


def _hold_quota(app: App, spec: dict, replicas: int, actor, *, save: bool = True) -> None:
    """Replace what the app holds with what `replicas` of `spec` need (all or nothing); `save`:
    also store the app's new reservation (False: the caller saves the app)."""
    amounts = {"apps": 1, **amounts_for(spec, replicas)}
    if app.reservation_id:
        held = QuotaReservation.objects.get(pk=app.reservation_id)
        if held.state == QuotaReservation.State.HELD:
            quota_release(reservation=held, actor=actor)
    reservation, _warnings = quota_reserve(tenant=app.tenant, amounts=amounts, actor=actor, reason=f"app {app.name}")
    app.reservation = reservation
    if save:
        App.objects.filter(pk=app.pk).update(reservation=reservation)


def release_quota(app: App, actor=None) -> None:
    if app.reservation_id:
        held = QuotaReservation.objects.get(pk=app.reservation_id)
        if held.state == QuotaReservation.State.HELD:
            quota_release(reservation=held, actor=actor)


def _rollout(app: App, revision: AppRevision, replicas: int, action: str, actor, *, restart: bool = False) -> Workflow:
    return engine.workflow_create(
        kind="app.rollout",
        tenant=app.tenant,
        params={"app": app.pk, "revision": revision.pk, "replicas": replicas, "action": action, "restart": restart},
        actor=actor,
    )


def _known_nodes() -> set[str]:
    return set(Node.objects.values_list("name", flat=True))


@transaction.atomic
def app_deploy(*, tenant, name: str, spec: dict, replicas: int = 1, service_name: str = "", actor) -> App:
    """Create an app and start its first rollout; the app carries the workflow as `.workflow`."""
    _check_name("name", name)
    if service_name:
        _check_name("service_name", service_name)
    _check_replicas(replicas)
    clean = clean_spec(spec, known_nodes=_known_nodes())
    tenant_require_active(tenant)
    networks_for_spec(tenant, clean, actor)
    check_tenant_volumes(tenant, clean)
    check_templates(tenant, name, clean, replicas)
    try:
        with transaction.atomic():
            app = App.objects.create(
                tenant=tenant, name=name, service_name=service_name or name, replicas=replicas, created_by=actor
            )
    except IntegrityError:
        raise Conflict(f"an app named {name} exists in tenant {tenant.slug}", code="app_exists") from None
    revision = AppRevision.objects.create(app=app, number=1, spec=clean, change="created", created_by=actor)
    app.revision = revision
    if clean["ports"]:
        service_address(app)
    app.workflow = _rollout(app, revision, replicas, "deploy", actor)
    audit_record(actor=actor, tenant=tenant, action="app.deploy", obj=app, changes={"replicas": replicas})
    # The quota last: the tenant's usage row (every deploy of the tenant queues on its lock)
    # is held from here to the commit only. A refusal rolls back all of the above with it.
    _hold_quota(app, clean, replicas, actor, save=False)
    app.save(update_fields=["revision", "reservation"])
    return app


def _locked(app: App) -> App:
    app = App.objects.select_for_update(of=("self",)).select_related("tenant", "revision").get(pk=app.pk)
    if app.status == App.Status.DELETING:
        raise Conflict(f"app {app.name} is being deleted", code="app_deleting")
    tenant_require_active(app.tenant)
    return app


@transaction.atomic
def app_scale(*, app: App, replicas: int, actor) -> Workflow:
    _check_replicas(replicas)
    app = _locked(app)
    check_templates(app.tenant, app.name, app.revision.spec, replicas)
    app.replicas = replicas
    app.save(update_fields=["replicas", "updated_at"])
    audit_record(actor=actor, tenant=app.tenant, action="app.scale", obj=app, changes={"replicas": replicas})
    workflow = _rollout(app, app.revision, replicas, "scale", actor)
    _hold_quota(app, app.revision.spec, replicas, actor)  # last: the tenant's usage row stays locked to the commit
    return workflow


@transaction.atomic
def app_update(*, app: App, spec: dict, actor, change: str = "") -> Workflow:
    """A new revision with `spec`, rolled out replica by replica (max surge / max unavailable)."""
    app = _locked(app)
    clean = clean_spec(spec, known_nodes=_known_nodes())
    networks_for_spec(app.tenant, clean, actor)
    check_tenant_volumes(app.tenant, clean)
    check_templates(app.tenant, app.name, clean, app.replicas)
    number = (app.revisions.order_by("-number").values_list("number", flat=True).first() or 0) + 1
    revision = AppRevision.objects.create(
        app=app, number=number, spec=clean, change=change or "updated", created_by=actor
    )
    if clean["ports"]:
        service_address(app)
    audit_record(actor=actor, tenant=app.tenant, action="app.update", obj=app, changes={"revision": number})
    workflow = _rollout(app, revision, app.replicas, "update", actor)
    _hold_quota(app, clean, app.replicas, actor)  # last: the tenant's usage row stays locked to the commit
    return workflow


@transaction.atomic
def app_restart(*, app: App, actor) -> Workflow:
    """Replace every replica with a fresh container of the same revision, one batch at a time."""
    app = _locked(app)
    audit_record(actor=actor, tenant=app.tenant, action="app.restart", obj=app)
    return _rollout(app, app.revision, app.replicas, "restart", actor, restart=True)


@transaction.atomic
def app_rollback(*, app: App, actor, revision: int | None = None) -> Workflow:
    """Roll out an earlier revision (default: the one before the latest)."""
    app = _locked(app)
    latest = app.revisions.order_by("-number").first()
    if revision is not None:
        target = app.revisions.filter(number=revision).first()
    else:
        target = app.revisions.filter(number__lt=latest.number).order_by("-number").first()
    if target is None:
        raise Conflict(
            f"app {app.name} has no revision {revision}" if revision else f"app {app.name} has no earlier revision",
            code="no_such_revision",
        )
    networks_for_spec(app.tenant, target.spec, actor)  # a network the old revision joined may be gone
    _hold_quota(app, target.spec, app.replicas, actor)
    audit_record(actor=actor, tenant=app.tenant, action="app.rollback", obj=app, changes={"revision": target.number})
    return _rollout(app, target, app.replicas, "rollback", actor)


@transaction.atomic
def app_delete(*, app: App, actor) -> Workflow:
    app = App.objects.select_for_update(of=("self",)).select_related("tenant").get(pk=app.pk)
    if app.status == App.Status.DELETING:
        raise Conflict(f"app {app.name} is already being deleted", code="app_deleting")
    app.status = App.Status.DELETING
    app.save(update_fields=["status", "updated_at"])
    audit_record(actor=actor, tenant=app.tenant, action="app.delete", obj=app)
    return engine.workflow_create(kind="app.delete", tenant=app.tenant, params={"app": app.pk}, actor=actor)
