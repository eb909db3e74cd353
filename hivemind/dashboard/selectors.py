"""Reads the dashboard pages need, over querysets the views have already scoped to the user and
the current tenant (hivemind.dashboard.tenancy.scoped). Each is a fixed number of queries,
whatever the number of rows: bench/dashboard.py measures them with 1,000 apps."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta

from django.db.models import Count, F, OuterRef, Q, QuerySet, Subquery
from django.db.models.fields.json import KeyTextTransform
from django.utils import timezone

from hivemind.applications.models import App, Container
from hivemind.nodes.models import Node
from hivemind.workflows.models import ACTIVE_STATES, Step, StepPhase, StepState, Workflow, WorkflowState
from hivemind.workflows.selectors import workflows_with_progress

RECENT_FAILURES = timedelta(hours=24)


def nodes_summary() -> dict[str, int]:
    """Nodes belong to the platform: every signed-in user sees how many there are and how many are ready."""
    return Node.objects.aggregate(total=Count("id"), ready=Count("id", filter=Q(status=Node.Status.READY)))


def count_by(queryset: QuerySet, field: str) -> dict[str, int]:
    rows = queryset.order_by().values(field).annotate(n=Count("id")).values_list(field, "n")
    return dict(sorted(rows))


def containers_by_state(containers: QuerySet[Container]) -> dict[str, int]:
    """Every state but removed (history, not something on a node)."""
    return count_by(containers.exclude(state=Container.State.REMOVED), "state")


def active_workflows(workflows: QuerySet[Workflow], limit: int = 10) -> list[Workflow]:
    return list(workflows_with_progress(workflows.filter(state__in=ACTIVE_STATES))[:limit])


def failed_workflows(workflows: QuerySet[Workflow], *, since: timedelta = RECENT_FAILURES, limit: int = 10):
    """Workflows that failed lately, each with the name of its failed step (one query)."""
    failed_step = Step.objects.filter(workflow=OuterRef("pk"), phase=StepPhase.FORWARD, state=StepState.FAILED)
    return list(
        workflows.filter(state=WorkflowState.FAILED, finished_at__gte=timezone.now() - since)
        .annotate(failed_step=Subquery(failed_step.order_by("index").values("name")[:1]))
        .order_by("-finished_at")[:limit]
    )


def troubled_apps(apps: QuerySet[App], limit: int = 10) -> list[App]:
    return list(apps.filter(status__in=[App.Status.FAILED, App.Status.DEGRADED]).order_by("-updated_at")[:limit])


def app_list(apps: QuerySet[App], *, name: str = "", status: str = "") -> QuerySet[App]:
    """Apps with their image (read from the revision's spec in SQL, not the whole spec per row)
    and `running` replicas, in name order."""
    if name:
        apps = apps.filter(name__icontains=name)
    if status:
        apps = apps.filter(status=status)
    running = Container.objects.filter(app=OuterRef("pk"), state=Container.State.RUNNING).order_by()
    return (
        apps.annotate(
            image=KeyTextTransform("image", "revision__spec"),
            revision_number=F("revision__number"),
            running=Subquery(running.values("app").annotate(n=Count("id")).values("n")[:1]),
        )
        .defer("message")
        .order_by("name")
    )


def app_replicas(app: App) -> list[Container]:
    """The app's containers that are not removed, in replica order, with node and revision."""
    return list(
        app.containers.exclude(state=Container.State.REMOVED)
        .select_related("node", "revision")
        .order_by("replica", "-id")
    )


def replicas_per_node(containers: list[Container]) -> list[tuple[str, list[Container]]]:
    by_node: dict[str, list[Container]] = defaultdict(list)
    for container in containers:
        by_node[container.node.name if container.node else "(not placed)"].append(container)
    return sorted(by_node.items())


def app_workflows(workflows: QuerySet[Workflow], app: App, limit: int = 10) -> list[Workflow]:
    return list(workflows_with_progress(workflows.filter(subject=f"app:{app.pk}"))[:limit])


def workflow_list(workflows: QuerySet[Workflow], *, state: str = "", kind: str = "") -> QuerySet[Workflow]:
    if state:
        workflows = workflows.filter(state=state)
    if kind:
        workflows = workflows.filter(kind=kind)
    return workflows_with_progress(workflows).defer("params", "result", "locks")


def workflow_kinds(workflows: QuerySet[Workflow]) -> list[str]:
    return list(workflows.order_by("kind").values_list("kind", flat=True).distinct())


def workflow_durations(workflows: QuerySet[Workflow], limit: int = 200) -> list[tuple[str, list[float]]]:
    """Seconds from start to end of the latest `limit` finished workflows, grouped by kind."""
    rows = (
        workflows.filter(state__in=[WorkflowState.SUCCEEDED, WorkflowState.FAILED], started_at__isnull=False)
        .exclude(finished_at__isnull=True)
        .order_by("-finished_at")
        .values_list("kind", "started_at", "finished_at")[:limit]
    )
    by_kind: dict[str, list[float]] = defaultdict(list)
    for kind, started, finished in rows:
        by_kind[kind].append(max((finished - started).total_seconds(), 0.0))
    return sorted(by_kind.items())


# --- alerts -------------------------------------------------------------------------------------

RECENTLY_RESOLVED = timedelta(hours=24)
ALERTS_PER_STATE = 100


def without_platform_rules(queryset: QuerySet, user, field: str) -> QuerySet:
    """Platform rules read every tenant's series: they, their alerts and their history are
    platform staff's only, as in the API (alerting.api.views.PlatformRulesHiddenMixin)."""
    from hivemind.core.scoping import is_platform_staff

    return queryset if is_platform_staff(user) else queryset.exclude(**{field: True})


def _alert_states(now):
    from alerting.models import Alert

    return {
        "firing": Q(state=Alert.State.FIRING, silenced=False),
        "pending": Q(state=Alert.State.PENDING, silenced=False),
        "silenced": Q(silenced=True) & ~Q(state=Alert.State.RESOLVED),
        "resolved": Q(state=Alert.State.RESOLVED, resolved_at__gte=now - RECENTLY_RESOLVED),
    }


def alerts_by_state(alerts: QuerySet, *, state: str = "", severity: str = "", limit: int = ALERTS_PER_STATE):
    """[(state, alerts, how many)] for firing, pending, silenced (firing or pending, but a silence
    matches) and resolved in the last 24 hours; newest first, at most `limit` of each, with their
    rules. One count query and one per state, whatever the number of alerts."""
    now = timezone.now()
    if severity:
        alerts = alerts.filter(rule__severity=severity)
    states = _alert_states(now)
    wanted = [state] if state in states else list(states)
    counts = alerts.aggregate(**{name: Count("id", filter=states[name]) for name in wanted})
    groups = []
    for name in wanted:
        order = ("-resolved_at", "-id") if name == "resolved" else ("-active_at", "-id")
        rows = list(alerts.filter(states[name]).select_related("rule").order_by(*order)[:limit])
        groups.append((name, rows, counts[name]))
    return groups


def alert_counts(alerts: QuerySet) -> dict[str, int]:
    """How many alerts fire, are pending, are silenced now (one query): the tenant page's summary."""
    states = _alert_states(timezone.now())
    return alerts.aggregate(**{name: Count("id", filter=states[name]) for name in ("firing", "pending", "silenced")})


def rule_list(rules: QuerySet) -> QuerySet:
    """Rules in name order, each with how many of its alerts fire and are pending."""
    from alerting.models import Alert

    return rules.annotate(
        firing=Count("alerts", filter=Q(alerts__state=Alert.State.FIRING)),
        pending=Count("alerts", filter=Q(alerts__state=Alert.State.PENDING)),
    ).order_by("name")


def alert_history(events: QuerySet, *, kind: str = "", rule: str = "") -> QuerySet:
    """State changes and notifications, newest first, with their rule and alert."""
    if kind:
        events = events.filter(kind=kind)
    if rule:
        events = events.filter(rule__name=rule)
    return events.select_related("rule", "alert").order_by("-at", "-id")


def alerts_matching(silence, alerts: QuerySet, limit: int = 1000) -> list:
    """The alerts (not resolved) a silence's matchers match, among the first `limit` (one query)."""
    from alerting import expressions as ex
    from alerting.models import Alert

    matchers = [ex.Matcher(m["label"], m["op"], m["value"]) for m in silence.matchers]
    active = alerts.exclude(state=Alert.State.RESOLVED).select_related("rule").order_by("-active_at", "-id")[:limit]
    return [alert for alert in active if ex.matches_all(matchers, alert.labels)]
