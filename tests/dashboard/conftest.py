"""Fixtures for the dashboard's tests: apps and workflows in both tenants of `world`, and a
logged-in Django test client per user."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connections
from django.test import Client
from django.utils import timezone

from hivemind.applications import services
from hivemind.applications.models import App
from hivemind.nodes.models import Node

GiB = 2**30
SPEC = {
    "image": "hivemind/busybox:latest",
    "command": "httpd -f -p 8080",
    "resources": {"cpu": "100m", "memory": "16Mi"},
}


def deploy(tenant, name: str, actor, replicas: int = 1, **spec) -> App:
    """An app as the deploy service makes it (revision, quota, workflow). In a non-transactional
    test the workflow is never sent: its dispatch waits for a commit that does not come."""
    return services.app_deploy(tenant=tenant, name=name, spec={**SPEC, **spec}, replicas=replicas, actor=actor)


@pytest.fixture
def apps(world) -> dict[str, App]:
    """`mine` in tenant A, `theirs` in tenant B."""
    staff = world.users["staff"]
    return {"mine": deploy(world.a, "web", staff), "theirs": deploy(world.b, "secret-app", staff)}


@pytest.fixture
def ready_node(db) -> Node:
    registered, _ = Node.objects.update_or_create(
        name=settings.NODE_NAME,
        defaults={
            "cpu_millis": 4000,
            "memory_bytes": 8 * GiB,
            "status": Node.Status.READY,
            "last_heartbeat": timezone.now(),
            "labels": {"zone": "eu-1"},
            "taints": [{"key": "gpu", "value": "true", "effect": "NoSchedule"}],
        },
    )
    return registered


@pytest.fixture
def login(world):
    """login("viewer") -> a Django test client with that user of `world` signed in."""

    def make(who: str, **kwargs) -> Client:
        client = Client(**kwargs)
        client.force_login(world.users[who])
        return client

    return make


# The browser tests ----------------------------------------------------------------------------

from tests.applications.conftest import node  # noqa: E402, F401 - this machine as a ready node, cleaned after

CHROMIUM = "/usr/bin/chromium"  # Debian's; `playwright install` cannot download a browser here
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def screenshots_dir() -> Path:
    """$HIVEMIND_ARTIFACTS_DIR/screenshots (CI keeps that folder), else under the var dir."""
    base = os.environ.get("HIVEMIND_ARTIFACTS_DIR")
    path = (Path(base) if base else settings.VAR_DIR / "artifacts") / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def browser_page(web_server, monkeypatch, request):
    """A Chromium page (Playwright) whose relative URLs go to the real gunicorn of `web_server`.

    Playwright's synchronous API drives its own asyncio loop from this thread, which Django's
    guard against ORM calls inside a running event loop mistakes for async code; the test's
    own ORM calls are plain synchronous ones between browser steps, so the guard is lifted for
    the test's duration only (after the web server, which must not inherit it, has started).
    """
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(base_url=web_server, viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(30_000)
        try:
            yield page
        finally:
            if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
                page.screenshot(path=str(screenshots_dir() / f"FAILED-{request.node.name}.png"), full_page=True)
            context.close()
            browser.close()
            # ORM calls made while Playwright's loop runs get their own connection (asgiref's
            # Local keys it by context): close it, or the test database cannot be flushed or dropped.
            connections.close_all()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item, so a fixture can tell the test failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def shoot(page, name: str) -> Path:
    """A full-page screenshot of what the browser shows now, as <screenshots>/<name>.png."""
    path = screenshots_dir() / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
