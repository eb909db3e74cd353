"""Start-up checks of the tenants app: the master key (tenants/keys.py).

Django runs system checks before management commands (`manage.py up`, `migrate`, `check`);
Celery workers run them too but ignore their results, so every worker also calls
`master_key_check` when it starts (`worker_init`) and exits with the one-line error.
"""

from __future__ import annotations

from django.core import checks

from hivemind.config import ConfigError


def master_key(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    from tenants.keys import master_key_check

    try:
        master_key_check()
    except ConfigError as exc:
        return [checks.Critical(str(exc), id="tenants.E001")]
    return []


def on_worker_init(**kwargs) -> None:
    """`worker_init`: a worker without the master key its tenant keys need does not start."""
    from django.db import connections

    from hivemind.config import exit_on_config_error
    from tenants.keys import master_key_check

    try:
        master_key_check()
    except ConfigError as exc:
        exit_on_config_error(exc)  # SystemExit: Celery's signal dispatch passes it on
    finally:
        connections.close_all()  # the worker's processes open their own
