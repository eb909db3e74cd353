"""Helpers for tests of logins: the login throttle's counts live in the suite's Redis."""

from __future__ import annotations

import pytest
from django.conf import settings


def forget_login_counts() -> None:
    """Delete the login throttle's counts (only those: the database also carries Celery's messages)."""
    from django.core.cache import caches

    prefix = settings.CACHES["throttle"]["KEY_PREFIX"]
    client = caches["throttle"]._cache.get_client(write=True)
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)


@pytest.fixture
def fresh_login_counts():
    forget_login_counts()
    yield
    forget_login_counts()
