"""The Celery application shared by the controller, the node agents and beat.

Start a worker with `celery -A hivemind worker -Q control` (controller) or
`-Q node.<name>` (agent); configuration comes from hivemind.settings.celery.
"""

import os

from celery import Celery
from celery.signals import task_postrun, worker_process_init

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
# Celery's Django fix-up closes the database connection after every task unless this is
# set: a new PostgreSQL connection per workflow step. Keep connections and let Django
# retire them by its own rules (CONN_MAX_AGE, broken connections) after each task instead.
app.conf["CELERY_DB_REUSE_MAX"] = 1_000_000
app.autodiscover_tasks()


@task_postrun.connect
def _retire_old_connections(**kwargs) -> None:
    from django.db import close_old_connections

    close_old_connections()


@worker_process_init.connect
def _no_health_check_per_task(**kwargs) -> None:
    """A worker runs hundreds of short tasks a second; a `SELECT 1` before each is a third of
    a step's database time. A connection that broke is closed after the task whose query
    failed (see above), and run_step sends its message again.

    Off in this process's copy of the settings: Django takes `health_check_enabled` from
    them at every connect, so setting it on the wrapper alone lasted until the connection
    was first opened, i.e. never (py-spy still saw the check in 21 % of a step's samples)."""
    from django.db import connections

    for connection in connections.all():
        connection.settings_dict["CONN_HEALTH_CHECKS"] = False
        connection.health_check_enabled = False


@app.task(name="hivemind.ping", ignore_result=False)
def ping() -> str:
    """Answer from whichever worker consumes the queue it was sent to (used by health checks)."""
    from django.conf import settings

    return settings.NODE_NAME
