"""The Celery application shared by the controller, the node agents and beat.

Start a worker with `celery -A hivemind worker -Q control` (controller) or
`-Q node.<name>` (agent); configuration comes from hivemind.settings.celery.
"""

import os

from celery import Celery

from hivemind.config import ConfigError, exit_on_config_error, load_config

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hivemind.settings")

# Celery reads its settings while parsing its command line, before any worker
# signal fires: validate here so a bad HIVEMIND_* value is one line, not a traceback.
try:
    load_config()
except ConfigError as exc:
    exit_on_config_error(exc)

app = Celery("hivemind")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.task(name="hivemind.ping", ignore_result=False)
def ping() -> str:
    """Answer from whichever worker consumes the queue it was sent to (used by health checks)."""
    from django.conf import settings

    return settings.NODE_NAME
