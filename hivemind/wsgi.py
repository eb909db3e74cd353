"""WSGI entry point for gunicorn (`gunicorn hivemind.wsgi`)."""

import gc
import os

from django.core.wsgi import get_wsgi_application

from hivemind.config import ConfigError, exit_on_config_error

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hivemind.settings")

try:
    application = get_wsgi_application()
except ConfigError as exc:
    exit_on_config_error(exc)

# What the process has loaded by now (Django, the apps, their models) lives as long as the
# process: frozen, the cyclic collector skips it, so a full collection in the middle of a
# request walks only what requests made (bench/dashboard.py saw one take 131 ms without).
gc.freeze()
