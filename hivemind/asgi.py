"""ASGI entry point, for servers that speak ASGI."""

import os

from django.core.asgi import get_asgi_application

from hivemind.config import ConfigError, exit_on_config_error

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hivemind.settings")

try:
    application = get_asgi_application()
except ConfigError as exc:
    exit_on_config_error(exc)
