"""Logging and tracing. Tracing is off unless HIVEMIND_OTEL_ENABLED, and then costs nothing when off."""

from .base import CONFIG

OTEL_ENABLED = CONFIG.otel_enabled

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        # Lines written while a workflow step runs end with workflow_id=<id> step=<name>.
        "step": {"()": "hivemind.workflows.logcontext.StepLogFilter"},
    },
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s%(workflow_context)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["step"]},
    },
    "root": {"handlers": ["console"], "level": CONFIG.log_level},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "urllib3": {"level": "WARNING"},
        "docker": {"level": "WARNING"},
    },
}
