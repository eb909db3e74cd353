"""WSGI entry point for gunicorn (`gunicorn hivemind.wsgi`)."""

import os

from django.core.wsgi import get_wsgi_application

from hivemind.config import ConfigError, exit_on_config_error

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hivemind.settings")

try:
    application = get_wsgi_application()
except ConfigError as exc:
    exit_on_config_error(exc)
