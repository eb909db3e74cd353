"""Logging and tracing. Tracing is off unless HIVEMIND_OTEL_ENABLED, and then costs nothing when off.

Every process logs to standard error, one line per record: text (`time level logger message`
then ` tenant=… workflow_id=… step=… trace_id=…` when known) or, with HIVEMIND_LOG_FORMAT=json,
one JSON object per line (hivemind/core/logs.py says which fields).
"""

from .base import CONFIG

OTEL_ENABLED = CONFIG.otel_enabled

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        # Tenant, workflow, step, trace and span ids of the work the line was written for.
        "context": {"()": "hivemind.core.logs.ContextFilter"},
    },
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s%(context_text)s"},
        "json": {"()": "hivemind.core.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": CONFIG.log_format, "filters": ["context"]},
    },
    "root": {"handlers": ["console"], "level": CONFIG.log_level},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "urllib3": {"level": "WARNING"},
        "docker": {"level": "WARNING"},
    },
}
