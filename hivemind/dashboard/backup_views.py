"""The dashboard's Backups pages: the tenant's backup locations (with their last check and a
Check button), its policies, its backups with their state, sizes and verification, one
backup's page (per volume: files, bytes read, new bytes stored) and `Back up now`.

Reads through the same scoping as every page (another tenant's backup is a 404); writes go
through the services the API calls, with the API's permission rules."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from backups import services
from backups.models import Backup, BackupLocation, BackupPolicy, Restore
from backups.stores import StoreError
from hivemind.dashboard.tenancy import get_scoped, may, require, scoped
from hivemind.dashboard.views import _paginate, _query_without_page, page


def _ratio(backup: Backup) -> str:
    if not backup.bytes_new:
        return "—" if not backup.bytes_read else "all known"
    return f"{backup.bytes_read / backup.bytes_new:.1f}x"


@login_required
def backups(request: HttpRequest) -> HttpResponse:
    """The tenant's locations, policies and backups (newest first)."""
    listed = scoped(request, Backup.objects.select_related("location", "policy", "workflow")).order_by(
        "-created_at", "-pk"
    )
    page_obj = _paginate(request, listed)
    for backup in page_obj:
        backup.ratio = _ratio(backup)
    locations = list(scoped(request, BackupLocation.objects.all()).order_by("name"))
    for location in locations:
        location.may_change = may(request.user, location, "change")
    context = {
        "section": "backups",
        "page_obj": page_obj,
        "query": _query_without_page(request),
        "locations": locations,
        "policies": scoped(request, BackupPolicy.objects.select_related("location")).order_by("name"),
    }
    return page(request, "dashboard/backups.html", context)


@login_required
def backup_detail(request: HttpRequest, pk: int) -> HttpResponse:
    backup = get_scoped(request, Backup.objects.select_related("tenant", "location", "policy", "workflow"), pk=pk)
    backup.ratio = _ratio(backup)
    damaged = (backup.verify_report or {}).get("damaged") or {}
    context = {
        "section": "backups",
        "backup": backup,
        "volumes": backup.volumes or [],
        "damaged": sorted(damaged.items()) if isinstance(damaged, dict) else [],
        "restores": scoped(request, Restore.objects.filter(backup=backup)).order_by("-created_at")[:20],
    }
    return page(request, "dashboard/backup_detail.html", context)


@login_required
@require_POST
def location_check(request: HttpRequest, pk: int) -> HttpResponse:
    location = get_scoped(request, BackupLocation.objects.select_related("tenant"), pk=pk)
    require(request, location, "change")
    try:
        detail = services.location_check(location=location, actor=request.user)
    except StoreError as exc:
        messages.error(request, f"Backup location {location.name} failed its check: {exc}")
    else:
        messages.success(request, f"Backup location {location.name}: {detail}.")
    return redirect("dashboard:backups")


@login_required
@require_POST
def back_up_now(request: HttpRequest, pk: int) -> HttpResponse:
    """A backup of the whole tenant into this location, now."""
    from backups.runs import backup_start

    location = get_scoped(request, BackupLocation.objects.select_related("tenant"), pk=pk)
    require(request, location, "change")
    backup = backup_start(tenant=location.tenant, location=location, scope="tenant", names=[], policy=None,
                          actor=request.user)  # fmt: skip
    messages.success(request, f"Backup {backup.pk} into {location.name} started.")
    return redirect("dashboard:backup-detail", pk=backup.pk)
