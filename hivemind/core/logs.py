"""What every log line says about where it comes from, in text or JSON (HIVEMIND_LOG_FORMAT).

The workflow engine (around a step) and a middleware (around a request) put what they
know in a context variable with `log_context(...)`: tenant, workflow id, step. The filter
`ContextFilter` copies it onto every record, with the current trace and span ids (from
OpenTelemetry when a span is active, else the workflow's own trace id, which is set even
with tracing off) and the platform process's name. `JsonFormatter` writes one JSON object
per line; the text format ends its lines with the same facts as `key=value`.

No model imports: logging is configured before Django's apps load.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

from django.core.signals import request_finished
from opentelemetry import trace
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

# Facts about the work this thread does (all of them in JSON lines) ...
CONTEXT_KEYS = ("tenant", "tenant_id", "workflow_id", "workflow_kind", "step", "request_id", "trace_id", "span_id")
# ... and those the text format ends its lines with, in this order.
TEXT_KEYS = ("tenant", "workflow_id", "step", "request_id", "trace_id")

_context: contextvars.ContextVar[dict | None] = contextvars.ContextVar("hivemind_log_context", default=None)
_role: str | None = None


def process_name() -> str:
    global _role
    if _role is None:
        from hivemind.core.tracing import process_role

        try:
            _role = process_role()
        except Exception:  # settings not configured yet (a script that logs before Django)
            return "python"
    return _role


@contextlib.contextmanager
def log_context(**facts) -> Iterator[None]:
    """Add `facts` (see CONTEXT_KEYS) to every log line written in the block; None values are left out."""
    token = _context.set({**(_context.get() or {}), **{k: v for k, v in facts.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def bind(**facts) -> None:
    """Add facts to the current context for the rest of it (e.g. the tenant, once a request knows it)."""
    current = _context.get()
    if current is not None:  # only inside a log_context block: never leaks into the next request
        current.update({k: v for k, v in facts.items() if v is not None})


def current() -> dict:
    return dict(_context.get() or {})


def note_tenant(tenant) -> None:
    """The request or task works in `tenant`: say so on its log lines and its span."""
    from opentelemetry import trace as _trace

    bind(tenant=tenant.slug, tenant_id=tenant.pk)
    span = _trace.get_current_span()
    if span.is_recording():
        span.set_attributes({"hivemind.tenant": tenant.slug, "hivemind.tenant_id": tenant.pk})


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class LogContextMiddleware:
    """Every log line written for a request names it (`request_id`: the caller's X-Request-ID
    when it is a sane token, else a new one, sent back in the answer's header); the tenant is
    added once the request's tenant is known (hivemind.core.api.request_tenant).

    The context stays until Django's request_finished: Django's own line about a 4xx/5xx and
    gunicorn's access line are written after the middleware returns, and name the request too.
    Each request starts from an empty context, so nothing carries over to the next one."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        given = request.headers.get("X-Request-ID", "")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex[:16]
        facts = {"request_id": request_id}
        span = trace.get_current_span().get_span_context()
        if span.is_valid:  # the request's trace, also for the lines written after its span ended
            facts["trace_id"] = f"{span.trace_id:032x}"
        _context.set(facts)
        response = self.get_response(request)
        response["X-Request-ID"] = request_id
        return response


def _request_finished(**kwargs) -> None:
    _context.set(None)


request_finished.connect(_request_finished, dispatch_uid="hivemind.core.logs.request_finished")


def celery_notices_as_json() -> None:
    """Celery's worker prints a few notices straight from its signal handlers (e.g. "worker: Warm
    shutdown (MainProcess)"), where logging must not be used: write those as JSON lines too."""
    import json
    import sys
    import time

    from celery.apps import worker

    def say(message, f=sys.__stderr__):
        record = {
            "time": datetime.fromtimestamp(time.time(), UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "level": "WARNING",
            "logger": "celery.apps.worker",
            "message": str(message),
            "process": process_name(),
            "pid": os.getpid(),
        }
        print(json.dumps(record, ensure_ascii=False), file=f)

    worker.safe_say = say


def gunicorn_logging(log_format: str, level: str) -> dict | None:
    """gunicorn's own loggers (its start-up lines and the access log) in JSON too, or None in
    the text format (gunicorn's own lines stay as they are)."""
    if log_format != "json":
        return None
    handler = {"class": "logging.StreamHandler", "formatter": "json", "filters": ["context"]}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": "hivemind.core.logs.ContextFilter"}},
        "formatters": {"json": {"()": "hivemind.core.logs.JsonFormatter"}},
        "handlers": {
            "console": {**handler, "stream": "ext://sys.stdout"},
            "error_console": {**handler, "stream": "ext://sys.stderr"},
        },
        "root": {"level": level, "handlers": ["error_console"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": ["error_console"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": False},
        },
    }


class ContextFilter(logging.Filter):
    """Puts the context's facts, trace_id, span_id, the process's name and pid on every record;
    `context_text` is the same as ` key=value` pairs for the text format."""

    def filter(self, record: logging.LogRecord) -> bool:
        facts = dict(_context.get() or {})
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            facts["trace_id"] = f"{span.trace_id:032x}"
            facts["span_id"] = f"{span.span_id:016x}"
        # else (tracing off) a workflow's step still has its workflow's own trace id, if any
        for key, value in facts.items():
            setattr(record, key, value)
        record.process_name = process_name()
        record.context_text = "".join(f" {key}={facts[key]}" for key in TEXT_KEYS if key in facts)
        # The older name for the same suffix, kept for formats written against it.
        record.workflow_context = record.context_text
        return True


class JsonFormatter(_JsonFormatter):
    """One JSON object per line: time (UTC, ISO 8601 with milliseconds), level, logger, message,
    process, pid, the context's facts when known, any `extra=` fields, and exc_info/stack_info."""

    def __init__(self, *args, **kwargs):
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            reserved_attrs=[*RESERVED_ATTRS, "context_text", "workflow_context", "process_name", "color_message"],
            json_ensure_ascii=False,
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC)
        return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"

    def add_fields(self, log_data: dict, record: logging.LogRecord, message_dict: dict) -> None:
        super().add_fields(log_data, record, message_dict)
        log_data["process"] = getattr(record, "process_name", None) or process_name()
        log_data["pid"] = record.process if record.process is not None else os.getpid()
