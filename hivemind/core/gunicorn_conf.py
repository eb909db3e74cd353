"""gunicorn's settings for the web process (`gunicorn -c python:hivemind.core.gunicorn_conf`):
with HIVEMIND_LOG_FORMAT=json its own lines — start-up, workers, the access log — are JSON
lines like every other (hivemind/core/logs.py). Everything else is on its command line."""

from hivemind.config import ConfigError, exit_on_config_error, load_config
from hivemind.core.logs import gunicorn_logging

try:
    _config = load_config()
except ConfigError as exc:
    exit_on_config_error(exc)

logconfig_dict = gunicorn_logging(_config.log_format, _config.log_level) or {}


def child_exit(server, worker):
    """A web worker that exits leaves its metric files to the others' /metrics totals (its
    counters still count); prometheus-client drops its live gauges."""
    import os

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
