"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against the real
gunicorn (`web_server`), real Celery workers with this node's agent (`platform_processes`) and
the suite's Docker daemon. Every page visited is saved as a screenshot (tests/dashboard/conftest.py
says where; `make test` prints it).
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from hivemind.applications.models import App, Container
from hivemind.workflows.models import Workflow
from observability.models import UsageSample
from tenants import services as tenant_services
from tenants.models import Role
from tests.conftest import wait_for
from tests.dashboard.conftest import shoot

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PASSWORD = "correct horse battery staple"
TERMINAL = (
    "() => ['succeeded', 'failed', 'cancelled'].includes(document.querySelector('#timeline').dataset.workflowState)"
)
# Every change of the timeline, as the page's own script makes it: (state, steps succeeded).
WATCH_TIMELINE = """() => {
  const snapshot = () => {
    const t = document.querySelector('#timeline');
    return t ? t.dataset.workflowState + ':' + t.querySelectorAll('li[data-state="succeeded"]').length : 'gone';
  };
  window.__timeline = [snapshot()];
  window.__loadedOnce = true;
  new MutationObserver(() => {
    const now = snapshot();
    if (window.__timeline[window.__timeline.length - 1] !== now) window.__timeline.push(now);
  }).observe(document.querySelector('main'), {subtree: true, childList: true, attributes: true});
}"""


def log_in(page, username: str) -> None:
    page.goto("/apps/")
    assert page.url.endswith("/login/?next=/apps/")
    shoot(page, "login")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button:text('Log in')")
    page.wait_for_url("**/apps/")


def with_password(user):
    user.set_password(PASSWORD)
    user.save()
    return user


def watch_workflow(page, name: str) -> dict:
    """On a workflow's page: record the timeline as the page updates it, wait for the end, and
    prove it came without a reload and that polling stopped. Returns what was seen."""
    assert re.search(r"/workflows/\d+/$", page.url), page.url
    polls: list[str] = []
    page.on("request", lambda request: polls.append(request.url) if "/timeline/" in request.url else None)
    page.evaluate(WATCH_TIMELINE)
    page.wait_for_function(TERMINAL, timeout=120_000)
    state = page.get_attribute("#timeline", "data-workflow-state")
    error = page.inner_text("#workflow-error") if page.query_selector("#workflow-error") else ""
    assert state == "succeeded", f"{name} workflow {state}: {error}"
    seen = page.evaluate("window.__timeline")
    assert page.evaluate("window.__loadedOnce") is True  # the same document: no reload happened
    assert len(seen) >= 2 and seen[0] != seen[-1], seen  # the timeline changed in place
    assert seen[-1].startswith("succeeded:")
    assert polls, "the page never asked for its timeline"
    asked = len(polls)
    page.wait_for_timeout(2500)  # more than two polling intervals
    assert len(polls) == asked, "the page kept polling after the workflow ended"
    assert page.query_selector("#timeline[data-poll]") is None
    shoot(page, f"workflow-{name}")
    return {"seen": seen, "polls": asked}


def test_deploy_watch_scale_and_chart_in_a_browser(world, node, platform_processes, browser_page):
    page = browser_page
    # The agent samples its containers every second, so the charts have real data soon.
    platform_processes("worker", extra_env={"HIVEMIND_SAMPLE_INTERVAL": "1"})
    with_password(world.users["owner"])

    log_in(page, "owner-a")
    shoot(page, "apps-empty")
    page.click("a:text('Deploy an app')")
    page.wait_for_url("**/apps/new/")
    page.fill("#id_name", "hello")
    page.fill("#id_image", "hivemind/busybox:latest")
    page.fill("#id_command", "sh -c 'echo hello from the dashboard; exec httpd -f -p 8080'")
    page.fill("#id_cpu", "100m")
    page.fill("#id_memory", "16Mi")
    page.fill("#id_memory_limit", "64Mi")
    page.select_option("#id_health_type", "tcp")
    page.fill("#id_health_port", "8080")
    page.fill("#id_health_interval", "2")
    shoot(page, "deploy-form")
    page.click("button:text('Deploy')")
    page.wait_for_url(re.compile(r".*/workflows/\d+/$"))
    deployed = watch_workflow(page, "deploy")
    app = App.objects.get(name="hello", tenant=world.a)
    assert app.status == App.Status.RUNNING

    page.click("#subject-link")
    page.wait_for_url(f"**/apps/{app.pk}/")
    assert page.inner_text("#replica-summary").startswith("1 running, 1 healthy, 1 desired")
    page.wait_for_selector("#logs .log-lines", timeout=30_000)  # loaded after the page, by the agent
    assert "hello from the dashboard" in page.inner_text("#logs")

    page.fill("#scale-replicas", "2")
    page.click("button:text('Scale…')")
    page.wait_for_url(f"**/apps/{app.pk}/scale/?replicas=2")
    assert page.input_value("#id_replicas") == "2"
    shoot(page, "app-scale-confirm")
    page.click("button:text('Scale')")
    page.wait_for_url(re.compile(r".*/workflows/\d+/$"))
    watch_workflow(page, "scale")
    assert Container.objects.filter(app=app, state=Container.State.RUNNING).count() == 2

    # Charts: the agent's own samples if it has taken some by now, else rows like its own.
    def sampled():
        return UsageSample.objects.filter(app=app).values("container_name").distinct().count() >= 1

    try:
        wait_for(sampled, 20, "the agent's first usage samples of the app")
    except AssertionError:
        now = timezone.now()
        UsageSample.objects.bulk_create(
            UsageSample(at=now - timedelta(seconds=s), node=node, tenant=world.a, app=app,
                        container_name="hello-0", cpu_millis=5 + s % 7, memory_bytes=(2 + s % 3) * 2**20)
            for s in range(0, 600, 15)
        )  # fmt: skip
    page.goto(f"/apps/{app.pk}/")
    assert page.inner_text("#replica-summary").startswith("2 running")
    charts = page.query_selector_all("figure.chart:not([data-empty]) svg")
    assert len(charts) == 2, page.inner_html("main")[:2000]  # CPU and memory of the app
    drawn = page.query_selector_all("figure.chart svg .series")
    assert drawn, "the charts drew no line or point"
    assert page.locator("text=no samples yet").count() == 0
    page.wait_for_selector("#logs .log-lines")
    shoot(page, "app-detail")

    for name, url in [
        ("overview", "/"),
        ("nodes", "/nodes/"),
        (f"node-{node.name}", f"/nodes/{node.name}/"),
        ("apps", "/apps/"),
        ("app-logs", f"/apps/{app.pk}/logs/"),
        ("app-restart-confirm", f"/apps/{app.pk}/restart/"),
        ("app-rollback-confirm", f"/apps/{app.pk}/rollback/"),
        ("app-delete-confirm", f"/apps/{app.pk}/delete/"),
        ("workflows", "/workflows/"),
        ("tenants", "/tenants/"),
        ("tenant-detail", "/tenants/tenant-a/"),
    ]:
        response = page.goto(url)
        assert response.status == 200, (url, response.status)
        page.wait_for_load_state("networkidle")  # the parts loaded after the page (charts, logs)
        shoot(page, name)
    page.goto("/")
    assert page.inner_text("#app-count") == "1"
    page.goto("/nodes/")
    page.wait_for_selector("#node-charts figure.chart")  # loaded after the table
    assert page.query_selector_all("#node-charts figure.chart:not([data-empty]) svg"), "no node chart drew samples"
    page.goto("/workflows/")
    assert page.query_selector("figure.chart:not([data-empty]) svg circle"), "no workflow duration drawn"
    assert Workflow.objects.filter(tenant=world.a).count() == 2
    assert deployed["polls"] >= 1


def test_tenant_switch_bad_input_and_error_pages_in_a_browser(world, browser_page):
    page = browser_page
    user = with_password(world.users["operator"])  # operator in tenant A
    tenant_services.membership_add(tenant=world.b, user=user, role=Role.VIEWER, actor=world.users["staff"])
    alpha = App.objects.create(tenant=world.a, name="alpha", replicas=0, status=App.Status.RUNNING)
    App.objects.create(tenant=world.b, name="beta", replicas=0, status=App.Status.RUNNING)

    log_in(page, "operator-a")
    names = page.locator("#app-table tbody a").all_inner_texts()
    assert names == ["alpha"]
    page.select_option("#tenant-switch", "tenant-b")  # applies on change (a few lines of JS)
    page.wait_for_url("**/apps/")
    page.wait_for_selector("text=Now in tenant Tenant B")
    assert page.locator("#app-table tbody a").all_inner_texts() == ["beta"]
    assert page.locator("a:text('Deploy an app')").count() == 0  # a viewer in B
    shoot(page, "apps-tenant-b")
    response = page.goto(f"/apps/{alpha.pk}/")  # A's app does not exist in tenant B
    assert response.status == 404
    assert "404 · Not found" in page.inner_text("main")
    shoot(page, "error-404")
    response = page.goto("/apps/new/")
    assert response.status == 403
    assert "403 · Not allowed" in page.inner_text("main")
    shoot(page, "error-403")

    page.goto("/tenants/")
    page.click("button:text('Switch to tenant-a')")
    page.wait_for_url("**/tenants/")
    assert page.input_value("#tenant-switch") == "tenant-a"
    page.goto("/apps/new/")
    page.fill("#id_name", "broken")
    page.fill("#id_image", "hivemind/busybox:latest")
    page.fill("#id_memory", "a lot")
    page.click("button:text('Deploy')")
    page.wait_for_selector("#id_memory_error")
    assert "expected a size such as 512Mi" in page.inner_text("#id_memory_error")
    assert page.get_attribute("#id_memory", "aria-invalid") == "true"
    assert "id_memory_error" in page.get_attribute("#id_memory", "aria-describedby")
    assert page.input_value("#id_memory") == "a lot"  # kept, to be corrected
    assert page.input_value("#id_name") == "broken"
    shoot(page, "deploy-form-errors")
    assert not App.objects.filter(name="broken").exists()

    page.fill("#id_memory", "16Mi")
    page.fill("#id_ports", "8080 99999")
    page.click("button:text('Deploy')")
    page.wait_for_selector("#id_ports_error")
    assert "ports[1].container_port: expected 1 to 65535, got 99999" in page.inner_text("#id_ports_error")
    assert page.query_selector("#id_memory_error") is None
    assert not App.objects.filter(name="broken").exists()

    page.set_viewport_size({"width": 390, "height": 844})  # a phone: the layout must still hold
    page.goto("/")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    shoot(page, "overview-phone")


def test_tokens_and_users_pages_in_a_browser(world, web_server, browser_page):
    import requests

    from tests.tenants.conftest import forget_login_counts

    forget_login_counts()
    page = browser_page
    page.on("dialog", lambda dialog: dialog.accept())  # the confirmations of revoke and deactivate
    with_password(world.users["staff"])
    log_in(page, "staff")

    # Your tokens: one made, shown once, working, then revoked.
    page.click("nav >> text=Tokens")
    page.wait_for_url("**/tokens/")
    page.fill("#id_name", "laptop")
    page.fill("#id_expires_in_days", "7")
    page.click("button:text('Make token')")
    plain = page.inner_text("#new-token")
    assert plain.startswith("hm_")
    shoot(page, "tokens-created")
    me = requests.get(f"{web_server}/api/v1/me/", headers={"Authorization": f"Bearer {plain}"}, timeout=10)
    assert me.status_code == 200 and me.json()["username"] == "staff"
    page.goto("/tokens/")
    assert plain not in page.content()  # once
    assert page.inner_text("#token-table tbody tr:first-child td:nth-child(3)") == "active"
    page.click("button[aria-label='Revoke laptop']")
    page.wait_for_selector("text=revoked: it no longer works")
    assert page.inner_text("#token-table tbody tr:first-child td:nth-child(3)") == "revoked"
    shoot(page, "tokens")
    gone = requests.get(f"{web_server}/api/v1/me/", headers={"Authorization": f"Bearer {plain}"}, timeout=10)
    assert gone.status_code == 401

    # Users: a bad name is refused next to its field; a good one gets a generated password.
    page.click("nav >> text=Users")
    page.wait_for_url("**/users/")
    page.fill("#id_username", "heidi k")
    page.click("button:text('Create user')")
    page.wait_for_selector("#id_username_error")
    assert "Enter a valid username" in page.inner_text("#id_username_error")
    assert page.input_value("#id_username") == "heidi k"
    shoot(page, "users-form-errors")
    page.fill("#id_username", "heidi")
    page.fill("#id_email", "heidi@example.com")
    page.click("button:text('Create user')")
    password = page.inner_text("#new-password")
    shoot(page, "users-created")
    login = {"username": "heidi", "password": password}
    assert requests.post(f"{web_server}/api/v1/auth/login/", json=login, timeout=10).status_code == 201

    page.click("#user-table a:text('heidi')")
    page.wait_for_url("**/users/heidi/")
    page.click("button:text('Set password')")  # empty: a new one is generated
    new_password = page.inner_text("#new-password")
    assert new_password != password
    page.click("button:text('Deactivate')")
    page.wait_for_selector("text=heidi deactivated")
    assert page.inner_text("#user-state") == "inactive"
    shoot(page, "user-detail")
    refused = requests.post(f"{web_server}/api/v1/auth/login/", json={**login, "password": new_password}, timeout=10)
    assert refused.status_code == 401
    forget_login_counts()


def test_alerts_rules_live_preview_and_silences_in_a_browser(world, browser_page):
    """An operator writes a rule watching the real health collector's series, the preview follows
    the form as they type (the page's script), the rule fires at the next evaluation pass, and a
    silence made from the alert's own labels shows it silenced until it is expired."""
    from alerting import services as alerting_services

    page = browser_page
    page.on("dialog", lambda dialog: dialog.accept())  # the confirmation of Expire now
    with_password(world.users["operator"])
    App.objects.create(tenant=world.a, name="alpha", replicas=3, status=App.Status.RUNNING)
    App.objects.create(tenant=world.a, name="beta", replicas=1, status=App.Status.RUNNING)
    App.objects.create(tenant=world.b, name="gamma", replicas=5, status=App.Status.RUNNING)

    log_in(page, "operator-a")
    page.click("nav >> text=Alerts")
    page.wait_for_url("**/alerts/")
    page.click(".tabs >> text=Rules")
    page.wait_for_url("**/alerts/rules/")
    page.click("text=New rule…")
    page.wait_for_url("**/alerts/rules/new/")
    assert page.is_visible("#id_metric") and not page.is_visible("#id_event")  # the kind's boxes only
    page.select_option("#id_kind", "event")
    assert page.is_visible("#id_event") and not page.is_visible("#id_metric")
    page.select_option("#id_kind", "metric")
    page.fill("#id_metric", "hivemind_app_replicas_desired")
    page.fill("#id_threshold", "2")  # no button pressed: the preview follows the typing
    page.wait_for_function("() => document.querySelectorAll('#preview-table tr.matches').length === 1")
    rows = page.locator("#preview-table tbody tr").all_inner_texts()
    assert len(rows) == 2 and not any("gamma" in row for row in rows)  # tenant A's series only
    assert next(row for row in rows if "alpha" in row).split("\t")[1:] == ["3", "yes"]
    page.fill("#id_threshold", "0")
    page.wait_for_function("() => document.querySelectorAll('#preview-table tr.matches').length === 2")
    page.fill("#id_metric", "hivemind_no_such_metric")
    page.wait_for_selector("#preview-message >> text=no collector serves a metric named")
    shoot(page, "alert-rule-preview")
    page.fill("#id_metric", "hivemind_app_replicas_desired")
    page.fill("#id_threshold", "2")
    page.fill("#id_name", "many-replicas")
    page.fill("#id_annotations", "summary={{ labels.app }} wants {{ value }} replicas")
    page.click("button:text('Create rule')")
    page.wait_for_selector("text=Rule many-replicas saved")
    shoot(page, "alert-rule-detail")

    alerting_services.rules_evaluate()  # as beat does every HIVEMIND_ALERT_INTERVAL
    page.goto("/alerts/")
    assert "alpha wants 3 replicas" in page.inner_text("#state-firing")
    shoot(page, "alerts-firing")
    page.click("#state-firing >> text=Silence…")
    page.wait_for_url("**/alerts/silences/?alert=*")
    assert 'alertname="many-replicas"' in page.input_value("#id_matchers")
    page.fill("#id_comment", "scaling down soon")
    page.click("button:text('Silence')")
    page.wait_for_selector("text=its alerts show silenced from the next pass")
    assert page.inner_text("#silence-state") == "active"
    alerting_services.rules_evaluate()
    page.goto("/alerts/")
    assert "many-replicas" in page.inner_text("#state-silenced")
    assert "many-replicas" not in page.inner_text("#state-firing")
    shoot(page, "alerts-silenced")
    page.click(".tabs >> text=Silences")
    page.click("#silence-table a")
    page.click("button:text('Expire now')")
    page.wait_for_selector("text=its alerts notify again from the next pass")
    assert page.inner_text("#silence-state") == "expired"
    shoot(page, "silence-expired")
    page.goto("/alerts/history/")
    assert page.locator("#history-table tbody tr").count() >= 4  # pending, firing, notified, silenced
    shoot(page, "alert-history")
