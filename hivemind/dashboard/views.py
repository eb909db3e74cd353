"""The dashboard's pages. Thin: read through the scoped querysets (tenancy.py) and the
selectors, write through the same services as the API, and turn the services' errors into
messages next to the form control they name. Every write answers with a redirect to the
workflow it started, whose page follows it live."""

from __future__ import annotations

import logging
from datetime import timedelta

import redis
from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST
from kombu.exceptions import OperationalError

from alerting.models import Alert
from hivemind.applications import services as app_services
from hivemind.applications.logs import BrokerUnavailable, app_logs
from hivemind.applications.models import App, Container
from hivemind.core.errors import Conflict
from hivemind.core.health import platform_health
from hivemind.core.scoping import is_platform_staff
from hivemind.dashboard import charts, selectors
from hivemind.dashboard.formatting import bytes_text, cpu_text, seconds_text
from hivemind.dashboard.forms import (
    AppFilterForm,
    DeleteForm,
    DeployForm,
    PasswordForm,
    RollbackForm,
    ScaleForm,
    TokenForm,
    UserCreateForm,
    WorkflowFilterForm,
    service_errors_to_fields,
    spec_errors_to_fields,
)
from hivemind.dashboard.tenancy import (
    current_tenant,
    get_scoped,
    may,
    may_add,
    require,
    require_add,
    require_staff,
    scoped,
    tenant_choices,
    tenant_switch,
)
from hivemind.nodes import services as node_services
from hivemind.nodes.models import Node
from hivemind.nodes.selectors import nodes_with_allocation
from hivemind.workflows import engine
from hivemind.workflows.models import TERMINAL_STATES, Workflow, WorkflowState
from hivemind.workflows.selectors import workflow_steps
from networking.models import Network, NetworkPolicy
from networking.services import apps_using
from observability import selectors as usage_selectors
from observability.selectors import app_usage, node_usage
from tenants import services as tenant_services
from tenants.models import Membership, ServiceAccount
from tenants.selectors import own_tokens, people, role_of, tenant_usage

log = logging.getLogger(__name__)

PAGE_SIZE = 50
CHART_MINUTES = 60
LOG_TAIL = 100
POLL_MS = 1000  # how often a running workflow's page asks for its timeline


def page(request: HttpRequest, template: str, context: dict | None = None, *, status: int = 200) -> HttpResponse:
    """Render a page in the layout: the tenant switcher and the user's role need the tenant context."""
    context = dict(context or {})
    if request.user.is_authenticated:
        tenant = current_tenant(request)
        context.setdefault("current_tenant", tenant)
        context.setdefault("tenant_choices", list(tenant_choices(request.user).only("slug", "name")))
        if is_platform_staff(request.user):
            context.setdefault("role", "staff")
        elif tenant is not None:
            context.setdefault("role", role_of(user=request.user, tenant=tenant))
    return render(request, template, context, status=status)


def _paginate(request: HttpRequest, queryset, size: int = PAGE_SIZE):
    return Paginator(queryset, size).get_page(request.GET.get("page"))


def _query_without_page(request: HttpRequest) -> str:
    query = request.GET.copy()
    query.pop("page", None)
    return query.urlencode()


def _window():
    end = timezone.now()
    return end - timedelta(minutes=CHART_MINUTES), end


# --- overview and tenant switcher --------------------------------------------------------------


@login_required
def overview(request: HttpRequest) -> HttpResponse:
    tenant = current_tenant(request)
    apps = scoped(request, App.objects.all())
    workflows = scoped(request, Workflow.objects.all())
    context = {
        "section": "overview",
        "nodes": selectors.nodes_summary(),
        "apps_by_status": selectors.count_by(apps, "status"),
        "containers_by_state": selectors.containers_by_state(scoped(request, Container.objects.all())),
        "running_workflows": selectors.active_workflows(workflows),
        "failed_workflows": selectors.failed_workflows(workflows),
        "troubled_apps": selectors.troubled_apps(apps),
        "usage": tenant_usage(tenant=tenant) if tenant else None,
        "health": platform_health(),
    }
    context["app_count"] = sum(context["apps_by_status"].values())
    context["container_count"] = sum(context["containers_by_state"].values())
    return page(request, "dashboard/overview.html", context)


@login_required
@require_POST
def switch_tenant(request: HttpRequest) -> HttpResponse:
    """Act in another tenant from now on. Back to the section the user was in: the object they
    were looking at belongs to the old tenant and would be a 404 in the new one."""
    tenant = tenant_switch(request, request.POST.get("tenant", ""))
    messages.info(request, f"Now in tenant {tenant.name} ({tenant.slug}).")
    target = request.POST.get("next") or "/"
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=False):
        target = "/"
    section = "/" + target.lstrip("/").split("/", 1)[0]
    return redirect(section + ("/" if section != "/" else ""))


# --- nodes ------------------------------------------------------------------------------------


def _node_charts(nodes: list[Node], *, per_node: bool) -> dict:
    start, end = _window()
    usage = node_usage([n.pk for n in nodes], minutes=CHART_MINUTES)

    def cpu_series(node):
        return charts.Series(node.name, [(p.at, p.cpu_millis) for p in usage.get(node.pk, [])])

    def memory_series(node):
        return charts.Series(node.name, [(p.at, p.memory_bytes) for p in usage.get(node.pk, [])])

    if per_node:
        (node,) = nodes
        return {
            "cpu_chart": charts.time_chart(
                title=f"CPU used on {node.name}, last hour", series=[cpu_series(node)], start=start, end=end,
                value_text=cpu_text, ceiling=node.cpu_millis or None,
            ),
            "memory_chart": charts.time_chart(
                title=f"Memory used on {node.name}, last hour", series=[memory_series(node)], start=start, end=end,
                value_text=bytes_text, ceiling=node.memory_bytes or None,
            ),
        }  # fmt: skip
    return {
        "cpu_chart": charts.time_chart(
            title="CPU used per node, last hour", series=[cpu_series(n) for n in nodes], start=start, end=end,
            value_text=cpu_text,
        ),
        "memory_chart": charts.time_chart(
            title="Memory used per node, last hour", series=[memory_series(n) for n in nodes], start=start, end=end,
            value_text=bytes_text,
        ),
    }  # fmt: skip


@login_required
def nodes(request: HttpRequest) -> HttpResponse:
    """The nodes of one page with their allocation; their usage charts come in a second request
    (`?partial=charts`), so the table never waits for an hour of samples."""
    page_obj = _paginate(request, nodes_with_allocation(Node.objects.all()).order_by("name"))
    if request.GET.get("partial") == "charts":
        return render(request, "dashboard/_node_charts.html", _node_charts(list(page_obj), per_node=False))
    query = _query_without_page(request)
    context = {"section": "nodes", "page_obj": page_obj, "query": query, "is_staff": is_platform_staff(request.user)}
    return page(request, "dashboard/nodes.html", context)


@login_required
def node_detail(request: HttpRequest, name: str) -> HttpResponse:
    node = nodes_with_allocation(Node.objects.filter(name=name)).first()
    if node is None:
        raise Http404(f"no node {name!r}")
    # Only the current tenant's containers: the node is shared, its tenants' workloads are not.
    containers = (
        scoped(request, Container.objects.filter(node=node))
        .exclude(state=Container.State.REMOVED)
        .select_related("app", "revision")
        .order_by("app__name", "replica")
    )
    context = {
        "section": "nodes",
        "node": node,
        "machine": usage_selectors.node_stat(node.pk),
        "page_obj": _paginate(request, containers),
        "query": _query_without_page(request),
        "is_staff": is_platform_staff(request.user),
    }
    context.update(_node_charts([node], per_node=True))
    return page(request, "dashboard/node_detail.html", context)


NODE_ACTIONS = {
    "cordon": node_services.node_cordon,
    "uncordon": node_services.node_uncordon,
    "drain": node_services.node_drain,
}


@login_required
@require_POST
def node_action(request: HttpRequest, name: str, action: str) -> HttpResponse:
    node = Node.objects.filter(name=name).first()
    if node is None or action not in NODE_ACTIONS:
        raise Http404(f"no node {name!r}")
    require_staff(request)
    NODE_ACTIONS[action](node=node, actor=request.user)
    messages.success(request, f"Node {node.name}: {action} done.")
    return redirect("dashboard:node-detail", name=node.name)


# --- apps -------------------------------------------------------------------------------------


@login_required
def apps(request: HttpRequest) -> HttpResponse:
    form = AppFilterForm(request.GET or None, statuses=App.Status.choices)
    filters = form.cleaned_data if form.is_valid() else {}
    listed = selectors.app_list(
        scoped(request, App.objects.all()), name=filters.get("name", ""), status=filters.get("status", "")
    )
    context = {
        "section": "apps",
        "form": form,
        "page_obj": _paginate(request, listed),
        "query": _query_without_page(request),
        "may_deploy": may_add(request.user, App, current_tenant(request)),
    }
    return page(request, "dashboard/apps.html", context)


@login_required
def app_deploy(request: HttpRequest) -> HttpResponse:
    tenant = require_add(request, App)
    form = DeployForm(request.POST or None)
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                with transaction.atomic():
                    app = app_services.app_deploy(
                        tenant=tenant, name=form.cleaned_data["name"].strip(), spec=form.spec(),
                        replicas=form.replicas_value(), actor=request.user,
                    )  # fmt: skip
                    if not may(request.user, app, "view"):  # as the API: never write what one cannot see
                        raise PermissionDenied("the result would be outside what you may see")
            except ValidationError as exc:
                spec_errors_to_fields(form, exc.message_dict if hasattr(exc, "error_dict") else {"spec": exc.messages})
            except Conflict as exc:
                form.add_error("name" if exc.get_codes() == "app_exists" else None, str(exc.detail))
                status = 409
            else:
                messages.success(request, f"Deploying {app.name}: follow its workflow below.")
                return redirect("dashboard:workflow-detail", pk=app.workflow.pk)
        status = status if status != 200 else 400
    return page(request, "dashboard/app_deploy.html", {"section": "apps", "form": form}, status=status)


def _app(request: HttpRequest, pk: int) -> App:
    return get_scoped(request, App.objects.select_related("revision", "tenant"), pk=pk)


@login_required
def app_detail(request: HttpRequest, pk: int) -> HttpResponse:
    app = _app(request, pk)
    replicas = selectors.app_replicas(app)
    stats = usage_selectors.container_stats(c.pk for c in replicas)
    for replica in replicas:
        replica.stat = stats.get(replica.pk) if replica.state == Container.State.RUNNING else None
    window = request.GET.get("window", "1h")
    if window == "1h":
        start, end = _window()
        points, span = app_usage([app.pk], minutes=CHART_MINUTES).get(app.pk, []), "last hour"
    elif window in usage_selectors.HISTORY_WINDOWS:
        hours, resolution, bucket = usage_selectors.HISTORY_WINDOWS[window]
        end = timezone.now()
        start = end - timedelta(hours=hours)
        points = usage_selectors.app_usage_history(app.pk, hours=hours, resolution=resolution, bucket=bucket)
        span = f"last {window.replace('h', ' hours').replace('d', ' days')}"
    else:
        choices = ", ".join(["1h", *usage_selectors.HISTORY_WINDOWS])
        return _error(request, 400, "Bad window", f"window: expected one of {choices}, got {window[:20]!r}")
    spec = app.revision.spec if app.revision else {}
    context = {
        "section": "apps",
        "app": app,
        "spec": spec,
        "replicas": replicas,
        "per_node": selectors.replicas_per_node(replicas),
        "running": sum(1 for c in replicas if c.state == Container.State.RUNNING),
        "healthy": sum(1 for c in replicas if c.health == Container.Health.HEALTHY),
        "revisions": list(app.revisions.select_related("created_by").order_by("-number")),
        "workflows": selectors.app_workflows(scoped(request, Workflow.objects.all()), app),
        "may_change": may(request.user, app, "change") and app.status != App.Status.DELETING,
        "may_delete": may(request.user, app, "delete") and app.status != App.Status.DELETING,
        "window": window,
        "windows": ["1h", *usage_selectors.HISTORY_WINDOWS],
        "cpu_chart": charts.time_chart(
            title=f"CPU used by {app.name}, {span}", series=[charts.Series(app.name, [(p.at, p.cpu_millis)
            for p in points])], start=start, end=end, value_text=cpu_text,
        ),
        "memory_chart": charts.time_chart(
            title=f"Memory used by {app.name}, {span}", series=[charts.Series(app.name, [(p.at, p.memory_bytes)
            for p in points])], start=start, end=end, value_text=bytes_text,
        ),
    }  # fmt: skip
    return page(request, "dashboard/app_detail.html", context)


@login_required
def app_logs_view(request: HttpRequest, pk: int) -> HttpResponse:
    """The last lines of every replica, read by each node's agent. Slow by nature (an agent may
    take up to 10 s), so the app page loads it separately (`?partial=1`) instead of waiting."""
    app = _app(request, pk)
    context = {"section": "apps", "app": app}
    try:
        context["logs"] = app_logs(app=app, tail=LOG_TAIL)
    except (BrokerUnavailable, OperationalError, redis.RedisError) as exc:
        log.warning("logs of app %s: the broker does not answer: %s", app.pk, exc)
        context["logs_error"] = "The broker does not answer, so no node could be asked for logs. Try again shortly."
    if request.GET.get("partial"):
        return render(request, "dashboard/_logs.html", context)
    return page(request, "dashboard/app_logs.html", context)


APP_ACTIONS = {"scale": "change", "restart": "change", "rollback": "change", "delete": "delete"}


def _rollback_choices(app: App) -> list[tuple[int, str]]:
    current = app.revision.number if app.revision else None
    return [
        (number, f"revision {number}" + (f" — {change}" if change else ""))
        for number, change in app.revisions.order_by("-number").values_list("number", "change")
        if number != current
    ]


@login_required
def app_action(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    """Scale, restart, roll back or delete, behind a confirmation page (GET shows it, POST does it)."""
    if action not in APP_ACTIONS:
        raise Http404(f"no app action {action!r}")
    app = _app(request, pk)
    require(request, app, APP_ACTIONS[action])
    data = request.POST if request.method == "POST" else None
    if action == "scale":
        form = ScaleForm(data, initial={"replicas": request.GET.get("replicas", app.replicas)})
    elif action == "rollback":
        form = RollbackForm(data, revisions=_rollback_choices(app))
    elif action == "delete":
        form = DeleteForm(data, app_name=app.name)
    else:
        form = forms.Form(data)  # a restart asks nothing but the confirmation
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                workflow = _run_app_action(request, app, action, form.cleaned_data)
            except ValidationError as exc:
                for field, errors in exc.message_dict.items():
                    for error in errors:
                        form.add_error(field if field in form.fields else None, error)
                status = 400
            except Conflict as exc:
                form.add_error(None, str(exc.detail))
                status = 409
            else:
                messages.success(request, f"{action.capitalize()} of {app.name} started.")
                return redirect("dashboard:workflow-detail", pk=workflow.pk)
        else:
            status = 400
    context = {"section": "apps", "app": app, "action": action, "form": form}
    return page(request, "dashboard/app_confirm.html", context, status=status)


def _run_app_action(request: HttpRequest, app: App, action: str, data: dict) -> Workflow:
    if action == "scale":
        text = str(data["replicas"]).strip()
        replicas = int(text) if text.lstrip("-").isdigit() else text  # the service names what is wrong
        return app_services.app_scale(app=app, replicas=replicas, actor=request.user)
    if action == "restart":
        return app_services.app_restart(app=app, actor=request.user)
    if action == "rollback":
        return app_services.app_rollback(app=app, revision=data["revision"], actor=request.user)
    return app_services.app_delete(app=app, actor=request.user)


# --- networks ---------------------------------------------------------------------------------


@login_required
def networks(request: HttpRequest) -> HttpResponse:
    """The current tenant's networks, each with how many containers have an address on it."""
    listed = scoped(request, Network.objects.all()).annotate(members=Count("addresses")).order_by("name")
    policies = scoped(request, NetworkPolicy.objects.all()).order_by("name")[:100]
    context = {
        "section": "networks",
        "page_obj": _paginate(request, listed),
        "query": _query_without_page(request),
        "policies": [(policy, policy_summary(policy.spec)) for policy in policies],
    }
    return page(request, "dashboard/networks.html", context)


def policy_summary(spec: dict) -> dict:
    """A policy in words for the networks page: which apps, and what each direction lets through."""

    def peers(rule: dict, key: str) -> str:
        named = []
        for peer in rule[key]:
            if "cidr" in peer:
                named.append(peer["cidr"])
            elif "network" in peer:
                named.append(f"network {peer['network']}")
            elif "labels" in peer:
                labels = ",".join(f"{k}={v}" for k, v in peer["labels"].items())
                named.append(f"{peer['tenant']}/apps {labels}" if "tenant" in peer else f"apps {labels}")
            else:
                named.append(f"{peer['tenant']}/{peer['app']}" if "tenant" in peer else f"app {peer['app']}")
        ports = ", ".join(f"{p['protocol']}/{p['port']}" for p in rule["ports"]) or "every port"
        return f"{', '.join(named) or 'anyone'} on {ports}"

    selector = [*(spec.get("apps") or []), *(f"{k}={v}" for k, v in (spec.get("labels") or {}).items())]
    summary = {"apps": ", ".join(selector) or "every app"}
    for direction, key in (("ingress", "from"), ("egress", "to")):
        rules = spec.get(direction)
        summary[direction] = None if rules is None else ([peers(rule, key) for rule in rules] or ["nothing"])
    return summary


# --- volumes ----------------------------------------------------------------------------------


def _usage_percent(volume) -> float:
    return min(100.0, volume.used_bytes * 100 / volume.size_bytes) if volume.size_bytes else 0.0


@login_required
def volumes(request: HttpRequest) -> HttpResponse:
    """The current tenant's volumes: size and use (a bar), where they live, snapshots, apps."""
    from storage.models import Volume
    from storage.services import volume_users

    listed = scoped(request, Volume.objects.select_related("pool__node")).annotate(
        snapshot_count=Count("snapshots")
    ).order_by("name")  # fmt: skip
    page_obj = _paginate(request, listed)
    for volume in page_obj:
        volume.percent = _usage_percent(volume)
        volume.apps = volume_users(volume)
    context = {"section": "volumes", "page_obj": page_obj, "query": _query_without_page(request)}
    return page(request, "dashboard/volumes.html", context)


@login_required
def volume_detail(request: HttpRequest, pk: int) -> HttpResponse:
    from storage.models import Volume
    from storage.services import volume_users

    volume = get_scoped(request, Volume.objects.select_related("tenant", "pool__node", "source__volume"), pk=pk)
    volume.percent = _usage_percent(volume)
    using = volume_users(volume)
    context = {
        "section": "volumes",
        "volume": volume,
        "snapshots": volume.snapshots.order_by("-created_at"),
        "clones": scoped(request, Volume.objects.filter(source__volume=volume)).order_by("name"),
        "apps": scoped(request, App.objects.filter(name__in=using)).only("pk", "name", "status").order_by("name"),
    }
    return page(request, "dashboard/volume_detail.html", context)


@login_required
def network_detail(request: HttpRequest, pk: int) -> HttpResponse:
    network = get_scoped(request, Network.objects.select_related("tenant", "created_by"), pk=pk)
    members = network.addresses.select_related("container__app", "node").order_by("container__name")
    using = apps_using(network)
    context = {
        "section": "networks",
        "network": network,
        "node_ranges": network.node_ranges.select_related("node").order_by("node__name"),
        "members": members,
        "apps": scoped(request, App.objects.filter(name__in=using)).only("pk", "name", "status").order_by("name"),
    }
    return page(request, "dashboard/network_detail.html", context)


# --- workflows --------------------------------------------------------------------------------


@login_required
def workflows(request: HttpRequest) -> HttpResponse:
    visible = scoped(request, Workflow.objects.all())
    form = WorkflowFilterForm(
        request.GET or None, states=WorkflowState.choices, kinds=selectors.workflow_kinds(visible)
    )
    filters = form.cleaned_data if form.is_valid() else {}
    listed = selectors.workflow_list(visible, state=filters.get("state", ""), kind=filters.get("kind", ""))
    context = {
        "section": "workflows",
        "form": form,
        "page_obj": _paginate(request, listed),
        "query": _query_without_page(request),
        "durations_chart": charts.strip_chart(
            title="Duration of recent workflows by kind",
            rows=selectors.workflow_durations(visible),
            value_text=seconds_text,
            empty="no finished workflows yet",
        ),
    }
    return page(request, "dashboard/workflows.html", context)


def _workflow_context(request: HttpRequest, pk: int) -> dict:
    workflow = get_scoped(request, selectors.workflow_list(Workflow.objects.all()), pk=pk)
    steps = workflow_steps(workflow)
    origin = workflow.started_at
    end = max(
        [workflow.finished_at or timezone.now(), *[s.finished_at or timezone.now() for s in steps if s.started_at]]
    )
    total = max((end - origin).total_seconds(), 0.001) if origin else None
    rows = []
    for step in steps:
        row = {"step": step, "left": 0.0, "width": 0.0, "seconds": None}
        if step.started_at and total:
            finished = step.finished_at or timezone.now()
            row["left"] = 100 * max((step.started_at - origin).total_seconds(), 0) / total
            row["width"] = min(max(100 * (finished - step.started_at).total_seconds() / total, 0.5), 100 - row["left"])
            row["seconds"] = (finished - step.started_at).total_seconds()
        rows.append(row)
    subject_app = None
    if workflow.subject.startswith("app:") and workflow.subject[4:].isdigit():
        subject_app = scoped(request, App.objects.filter(pk=int(workflow.subject[4:]))).only("pk", "name").first()
    return {
        "section": "workflows",
        "workflow": workflow,
        "rows": rows,
        "terminal": workflow.state in TERMINAL_STATES,
        "subject_app": subject_app,
        "poll_ms": POLL_MS,
    }


@login_required
def workflow_detail(request: HttpRequest, pk: int) -> HttpResponse:
    context = _workflow_context(request, pk)
    workflow = context["workflow"]
    context["may_change"] = may(request.user, workflow, "change")
    return page(request, "dashboard/workflow_detail.html", context)


@login_required
def workflow_timeline(request: HttpRequest, pk: int) -> HttpResponse:
    """The timeline alone, for the workflow page to poll while the workflow runs."""
    response = render(request, "dashboard/_timeline.html", _workflow_context(request, pk))
    response["Cache-Control"] = "no-store"
    return response


WORKFLOW_ACTIONS = {"cancel": engine.workflow_cancel, "retry": engine.workflow_retry}


@login_required
@require_POST
def workflow_action(request: HttpRequest, pk: int, action: str) -> HttpResponse:
    if action not in WORKFLOW_ACTIONS:
        raise Http404(f"no workflow action {action!r}")
    workflow = get_scoped(request, Workflow.objects.all(), pk=pk)
    require(request, workflow, "change")
    try:
        WORKFLOW_ACTIONS[action](workflow=workflow, actor=request.user)
    except Conflict as exc:
        messages.error(request, str(exc.detail))
    else:
        messages.success(request, f"Workflow {workflow.pk}: {action} requested.")
    return redirect("dashboard:workflow-detail", pk=workflow.pk)


# --- tenants ----------------------------------------------------------------------------------


@login_required
def tenants(request: HttpRequest) -> HttpResponse:
    roles = dict(Membership.objects.filter(user=request.user).values_list("tenant_id", "role"))
    rows = [(tenant, roles.get(tenant.pk)) for tenant in tenant_choices(request.user)]
    return page(request, "dashboard/tenants.html", {"section": "tenants", "rows": rows})


@login_required
def tenant_detail(request: HttpRequest, slug: str) -> HttpResponse:
    tenant = tenant_choices(request.user).filter(slug=slug).first()
    if tenant is None:
        raise Http404(f"no tenant {slug!r} (or you may not see it)")
    context = {
        "section": "tenants",
        "tenant": tenant,
        "members": Membership.objects.restrict(request.user, "view")
        .filter(tenant=tenant)
        .select_related("user")
        .order_by("user__username"),
        "service_accounts": ServiceAccount.objects.restrict(request.user, "view")
        .filter(tenant=tenant)
        .select_related("user")
        .order_by("name"),
        "usage": tenant_usage(tenant=tenant),
        "alerts": selectors.alert_counts(
            selectors.without_platform_rules(
                Alert.objects.filter(tenant=tenant), request.user, "rule__platform"
            ).restrict(request.user, "view")
        ),
    }
    return page(request, "dashboard/tenant_detail.html", context)


# --- your tokens -------------------------------------------------------------------------------


def _no_store(response: HttpResponse) -> HttpResponse:
    """A page that shows a secret once must not be kept by the browser or a proxy."""
    response["Cache-Control"] = "no-store"
    return response


@login_required
def tokens(request: HttpRequest) -> HttpResponse:
    """Your API tokens. A new one is shown in the answer to its form, once: it is never stored,
    put in the session or a message, and reloading the list never shows it again."""
    form = TokenForm(request.POST or None, initial={"expires_in_days": 30})
    created, status = None, 200
    if request.method == "POST":
        if form.is_valid():
            days = form.cleaned_data["expires_in_days"]
            token, plain = tenant_services.api_token_create(
                user=request.user,
                name=form.cleaned_data["name"].strip(),
                expires_at=timezone.now() + timedelta(days=days) if days else None,
                actor=request.user,
            )
            created = {"token": token, "plain": plain}
            form = TokenForm(initial={"expires_in_days": 30})
        else:
            status = 400
    context = {"section": "tokens", "form": form, "created": created, "tokens": own_tokens(user=request.user)}
    return _no_store(page(request, "dashboard/tokens.html", context, status=status))


@login_required
@require_POST
def token_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    token = own_tokens(user=request.user).filter(pk=pk).first()
    if token is None:  # another user's token does not exist for you
        raise Http404(f"no token {pk}")
    tenant_services.api_token_revoke(token=token, actor=request.user)
    messages.success(request, f"Token {token.name} ({token.prefix}…) revoked: it no longer works.")
    return redirect("dashboard:tokens")


# --- users (platform staff) ----------------------------------------------------------------------


def _staff_user(request: HttpRequest, username: str):
    """One person's account for staff; for anyone else no user exists (404, as in the API)."""
    user = people().filter(username=username).first() if is_platform_staff(request.user) else None
    if user is None:
        raise Http404(f"no user {username!r}")
    return user


@login_required
def users(request: HttpRequest) -> HttpResponse:
    """Staff list people, find them, and create them (a generated password is shown once)."""
    if not is_platform_staff(request.user):
        raise PermissionDenied("only platform staff may see and create users")
    form = UserCreateForm(request.POST or None)
    created, status = None, 200
    if request.method == "POST":
        if form.is_valid():
            data = form.cleaned_data
            try:
                user, generated = tenant_services.user_create(
                    username=data["username"].strip(), email=data["email"].strip(), password=data["password"] or None,
                    is_staff=data["is_staff"], actor=request.user,
                )  # fmt: skip
            except ValidationError as exc:
                service_errors_to_fields(form, exc)
                status = 400
            else:
                created = {"user": user, "generated": generated}
                form = UserCreateForm()
        else:
            status = 400
    search = request.GET.get("q", "").strip()
    listed = people(search=search).prefetch_related("memberships__tenant")
    context = {
        "section": "users",
        "form": form,
        "created": created,
        "page_obj": _paginate(request, listed),
        "query": _query_without_page(request),
        "search": search,
    }
    return _no_store(page(request, "dashboard/users.html", context, status=status))


@login_required
def user_detail(request: HttpRequest, username: str) -> HttpResponse:
    """One user: tenants, tokens, and the staff's actions (new password, deactivate, activate)."""
    user = _staff_user(request, username)
    form = PasswordForm(request.POST or None)
    generated, status = None, 200
    if request.method == "POST":
        if form.is_valid():
            try:
                generated = tenant_services.user_set_password(
                    user=user, password=form.cleaned_data["password"] or None, actor=request.user
                )
            except ValidationError as exc:
                service_errors_to_fields(form, exc)
                status = 400
            else:
                messages.success(request, f"Password of {user.username} changed.")
                form = PasswordForm()
        else:
            status = 400
    context = {
        "section": "users",
        "person": user,
        "form": form,
        "generated": generated,
        "memberships": user.memberships.select_related("tenant").order_by("tenant__slug"),
        "tokens": own_tokens(user=user),
        "is_self": user.pk == request.user.pk,
    }
    return _no_store(page(request, "dashboard/user_detail.html", context, status=status))


USER_ACTIONS = {"deactivate": tenant_services.user_deactivate, "activate": tenant_services.user_activate}


@login_required
@require_POST
def user_action(request: HttpRequest, username: str, action: str) -> HttpResponse:
    user = _staff_user(request, username)
    if action not in USER_ACTIONS:
        raise Http404(f"no user action {action!r}")
    try:
        USER_ACTIONS[action](user=user, actor=request.user)
    except Conflict as exc:
        messages.error(request, str(exc.detail))
    else:
        done = "deactivated: their logins and tokens are refused" if action == "deactivate" else "activated"
        messages.success(request, f"{user.username} {done}.")
    return redirect("dashboard:user-detail", username=user.username)


# --- error pages (no traceback ever reaches a user) ---------------------------------------------


def _error(request: HttpRequest, code: int, title: str, message: str) -> HttpResponse:
    context = {"code": code, "title": title, "message": message}
    try:
        return page(request, "dashboard/error.html", context, status=code)
    except Exception:  # the layout needs the database; the error page must not need it
        log.exception("error page %s rendered without the layout's tenant context", code)
        return render(request, "dashboard/error.html", context, status=code)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return _error(request, 400, "Bad request", "The request could not be understood. Check what was sent and retry.")


def forbidden(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    reason = str(exception) if exception and str(exception) else "You may not do this here."
    return _error(request, 403, "Not allowed", f"{reason[:300]}. Ask an admin of the tenant for a role that may.")


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return _error(
        request,
        404,
        "Not found",
        "There is nothing here, or you may not see it. If it belongs to another tenant, switch tenant first.",
    )


def server_error(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "dashboard/error.html",
        {
            "code": 500,
            "title": "Something went wrong",
            "message": "The error was logged. Try again, or ask your platform admin.",
        },
        status=500,
    )
