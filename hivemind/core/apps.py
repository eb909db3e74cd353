import logging

from django.apps import AppConfig
from django.conf import settings


class CoreConfig(AppConfig):
    name = "hivemind.core"
    label = "core"
    verbose_name = "Hivemind core"

    def ready(self) -> None:
        import hivemind.celery  # noqa: F401 - makes the Celery app current in every Django process
        from hivemind.core import schema, tracing  # noqa: F401 - schema registers OpenAPI extensions

        tracing.configure_process()
        if settings.CONFIG.log_format == "json":
            from hivemind.core.logs import celery_notices_as_json

            logging.captureWarnings(True)  # warnings as log lines, not bare text between the JSON ones
            celery_notices_as_json()
