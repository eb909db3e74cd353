"""The Celery application shared by the controller, the node agents and beat.

Start a worker with `celery -A hivemind worker -Q control` (controller) or
`-Q node.<name>` (agent); configuration comes from hivemind.settings.celery.
"""

import os

from celery import Celery
from celery.signals import worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hivemind.settings")

app = Celery("hivemind")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def _validate_settings(**_kwargs) -> None:
    """Fail a worker's start-up with one line when a HIVEMIND_* value is bad."""
    from django.conf import settings

    from hivemind.settings.env import ConfigError, exit_on_config_error

    try:
        settings.INSTALLED_APPS  # noqa: B018 - forces the settings to load
    except ConfigError as exc:
        exit_on_config_error(exc)


@app.task(name="hivemind.ping", ignore_result=False)
def ping() -> str:
    """Answer from whichever worker consumes the queue it was sent to (used by health checks)."""
    from django.conf import settings

    return settings.NODE_NAME
