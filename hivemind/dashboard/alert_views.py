"""The dashboard's alerting pages: alerts by state and their history, rules (with a live preview
of the expression's current value), silences. Read through the scoped querysets and the
selectors, write through alerting.services as the API does; platform rules, their alerts and
their history are platform staff's only, as in the API."""

from __future__ import annotations

from datetime import timedelta

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from alerting import services
from alerting.models import Alert, AlertEvent, AlertRule, Silence
from hivemind.dashboard import selectors
from hivemind.dashboard.alert_forms import (
    AlertFilterForm,
    HistoryFilterForm,
    RuleForm,
    SilenceForm,
    duration_text,
    matchers_text,
    rule_expression,
)
from hivemind.dashboard.tenancy import current_tenant, get_scoped, may, may_add, require, require_add, scoped
from hivemind.dashboard.views import _paginate, _query_without_page, page
from notifiers.models import Notifier

SECTION = "alerts"


def _alerts(request: HttpRequest):
    return selectors.without_platform_rules(Alert.objects.all(), request.user, "rule__platform")


def _rules(request: HttpRequest):
    return selectors.without_platform_rules(AlertRule.objects.all(), request.user, "platform")


def _events(request: HttpRequest):
    return selectors.without_platform_rules(AlertEvent.objects.all(), request.user, "rule__platform")


def _context(request: HttpRequest, tab: str, **context) -> dict:
    return {"section": SECTION, "tab": tab, **context}


# --- alerts -------------------------------------------------------------------------------------


@login_required
def alerts(request: HttpRequest) -> HttpResponse:
    """The current tenant's alerts: firing, pending, silenced, resolved lately; filters by state and severity."""
    form = AlertFilterForm(request.GET or None)
    filters = form.cleaned_data if form.is_valid() else {}
    groups = selectors.alerts_by_state(
        scoped(request, _alerts(request)), state=filters.get("state", ""), severity=filters.get("severity", "")
    )
    context = _context(
        request, "alerts", form=form, groups=groups, limit=selectors.ALERTS_PER_STATE,
        may_silence=may_add(request.user, Silence, current_tenant(request)),
    )  # fmt: skip
    return page(request, "dashboard/alerts.html", context)


@login_required
def alert_history(request: HttpRequest) -> HttpResponse:
    """Every state change and notification of the tenant's alerts, newest first, in pages."""
    form = HistoryFilterForm(request.GET or None)
    filters = form.cleaned_data if form.is_valid() else {}
    events = selectors.alert_history(
        scoped(request, _events(request)), kind=filters.get("kind", ""), rule=filters.get("rule", "")
    )
    context = _context(
        request, "history", form=form, page_obj=_paginate(request, events), query=_query_without_page(request)
    )
    return page(request, "dashboard/alert_history.html", context)


@login_required
def alert_detail(request: HttpRequest, pk: int) -> HttpResponse:
    alert = get_scoped(request, _alerts(request).select_related("rule"), pk=pk)
    events = alert.events.order_by("-at", "-id")
    context = _context(
        request, "alerts", alert=alert, expression=rule_expression(alert.rule),
        page_obj=_paginate(request, events), query=_query_without_page(request),
        may_silence=alert.state != Alert.State.RESOLVED and may_add(request.user, Silence, current_tenant(request)),
    )  # fmt: skip
    return page(request, "dashboard/alert_detail.html", context)


# --- rules --------------------------------------------------------------------------------------


@login_required
def rules(request: HttpRequest) -> HttpResponse:
    page_obj = _paginate(request, selectors.rule_list(scoped(request, _rules(request))))
    for rule in page_obj:
        rule.expression = rule_expression(rule)
        rule.for_text = duration_text(rule.for_seconds)
    context = _context(
        request, "rules", page_obj=page_obj, query=_query_without_page(request),
        may_create=may_add(request.user, AlertRule, current_tenant(request)),
    )  # fmt: skip
    return page(request, "dashboard/alert_rules.html", context)


def _rule(request: HttpRequest, pk: int) -> AlertRule:
    return get_scoped(request, _rules(request).select_related("tenant", "created_by"), pk=pk)


@login_required
def rule_detail(request: HttpRequest, pk: int) -> HttpResponse:
    rule = _rule(request, pk)
    current = selectors.alerts_by_state(scoped(request, _alerts(request)).filter(rule=rule), limit=20)
    context = _context(
        request, "rules", rule=rule, expression=rule_expression(rule), groups=current,
        matchers=matchers_text(rule.matchers), window=duration_text(rule.window_seconds),
        for_text=duration_text(rule.for_seconds), repeat=duration_text(rule.repeat_interval_seconds),
        notifiers=list(rule.notifiers.order_by("name").values_list("name", flat=True)),
        may_change=may(request.user, rule, "change"), may_delete=may(request.user, rule, "delete"),
    )  # fmt: skip
    return page(request, "dashboard/alert_rule_detail.html", context)


@login_required
def rule_create(request: HttpRequest) -> HttpResponse:
    return _rule_form(request, None)


@login_required
def rule_edit(request: HttpRequest, pk: int) -> HttpResponse:
    rule = _rule(request, pk)
    require(request, rule, "change")
    return _rule_form(request, rule)


def _rule_form(request: HttpRequest, rule: AlertRule | None) -> HttpResponse:
    """Create or edit a rule. The Preview button (or, with JavaScript, any edit: `?partial=preview`)
    re-renders the form with the expression's current value per series; nothing is saved then."""
    tenant = require_add(request, AlertRule) if rule is None else rule.tenant
    names = list(scoped(request, Notifier.objects.all()).order_by("name").values_list("name", flat=True))
    initial = RuleForm.initial_of(rule) if rule else {}
    form = RuleForm(request.POST if request.method == "POST" else None, initial=initial, notifier_names=names)
    previewing = request.method == "POST" and ("preview" in request.POST or request.GET.get("partial") == "preview")
    if previewing:
        form.fields["name"].required = False  # a preview needs no name yet
    preview, status = None, 200
    if request.method == "POST":
        if form.is_valid():
            values = form.values()
            if rule is not None and rule.platform:
                values["platform"] = True  # kept (staff's), and previewed over every tenant's series
            try:
                if previewing:
                    if not values["name"]:
                        del values["name"]
                    preview = services.rule_preview(tenant=tenant, values=values, user=request.user)
                else:
                    saved = _save_rule(request, tenant, rule, values, form.cleaned_data["notifiers"])
            except ValidationError as exc:
                form.add_service_errors(exc)
                status = 400
            else:
                if not previewing:
                    messages.success(request, f"Rule {saved.name} saved: evaluated from the next pass.")
                    return redirect("dashboard:alert-rule-detail", pk=saved.pk)
        else:
            status = 400
    if request.GET.get("partial") == "preview":
        return render(request, "dashboard/_rule_preview.html", {"form": form, "preview": preview}, status=status)
    context = _context(request, "rules", form=form, rule=rule, preview=preview, tenant=tenant)
    return page(request, "dashboard/alert_rule_form.html", context, status=status)


def _save_rule(request: HttpRequest, tenant, rule: AlertRule | None, values: dict, notifier_names: list[str]):
    notifiers = list(Notifier.objects.filter(tenant=tenant, name__in=notifier_names).order_by("name"))
    with transaction.atomic():
        if rule is None:
            return services.rule_create(tenant=tenant, actor=request.user, notifiers=notifiers, **values)
        return services.rule_update(rule=rule, actor=request.user, notifiers=notifiers, **values)


@login_required
@require_POST
def rule_delete(request: HttpRequest, pk: int) -> HttpResponse:
    rule = _rule(request, pk)
    require(request, rule, "delete")
    services.rule_delete(rule=rule, actor=request.user)
    messages.success(request, f"Rule {rule.name} deleted, with its alerts and their history.")
    return redirect("dashboard:alert-rules")


# --- silences -----------------------------------------------------------------------------------


def _silence_state(silence: Silence, now) -> str:
    if silence.ends_at <= now:
        return "expired"
    return "active" if silence.starts_at <= now else "pending"


@login_required
def silences(request: HttpRequest) -> HttpResponse:
    """The tenant's silences (active first) and the form that makes one; `?alert=ID` fills the
    matchers in with that alert's labels."""
    tenant = current_tenant(request)
    initial = {"duration": "2h"}
    if request.method == "GET" and request.GET.get("alert", "").isdigit():
        initial = SilenceForm.initial_for(get_scoped(request, _alerts(request).select_related("rule"),
                                                     pk=int(request.GET["alert"])))  # fmt: skip
    form = SilenceForm(request.POST if request.method == "POST" else None, initial=initial)
    status = 200
    if request.method == "POST":
        tenant = require_add(request, Silence)
        if form.is_valid():
            data = form.cleaned_data
            now = timezone.now()
            ends_at = data["ends_at"] or now + timedelta(seconds=data["duration"])
            try:
                silence = services.silence_create(
                    tenant=tenant, matchers=data["matchers"], ends_at=ends_at, comment=data["comment"].strip(),
                    actor=request.user,
                )  # fmt: skip
            except ValidationError as exc:
                for key, errors in exc.message_dict.items():
                    field = "matchers" if key.startswith("matchers") else "ends_at" if key == "ends_at" else None
                    for error in errors:
                        form.add_error(field, error if key == field or field is None else f"{key}: {error}")
                status = 400
            else:
                messages.success(request, f"Silence {silence.pk} made: its alerts show silenced from the next pass.")
                return redirect("dashboard:silence-detail", pk=silence.pk)
        else:
            status = 400
    now = timezone.now()
    listed = scoped(request, Silence.objects.select_related("created_by")).order_by("-ends_at", "-id")
    page_obj = _paginate(request, listed)
    for silence in page_obj:
        silence.state = _silence_state(silence, now)
        silence.matchers_text = matchers_text(silence.matchers)
    context = _context(
        request, "silences", form=form, page_obj=page_obj, query=_query_without_page(request),
        may_create=may_add(request.user, Silence, tenant),
    )  # fmt: skip
    return page(request, "dashboard/silences.html", context, status=status)


@login_required
def silence_detail(request: HttpRequest, pk: int) -> HttpResponse:
    silence = get_scoped(request, Silence.objects.select_related("created_by"), pk=pk)
    state = _silence_state(silence, timezone.now())
    context = _context(
        request, "silences", silence=silence, state=state, matchers=matchers_text(silence.matchers),
        alerts=selectors.alerts_matching(silence, scoped(request, _alerts(request))),
        may_expire=state != "expired" and may(request.user, silence, "change"),
    )  # fmt: skip
    return page(request, "dashboard/silence_detail.html", context)


@login_required
@require_POST
def silence_expire(request: HttpRequest, pk: int) -> HttpResponse:
    silence = get_scoped(request, Silence.objects.all(), pk=pk)
    require(request, silence, "change")
    services.silence_expire(silence=silence, actor=request.user)
    messages.success(request, f"Silence {silence.pk} expired: its alerts notify again from the next pass.")
    return redirect("dashboard:silence-detail", pk=silence.pk)
