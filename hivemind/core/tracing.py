"""OpenTelemetry set-up. Off by default: the API's no-op tracer then costs nothing.

Calling code always uses `tracer()`; it never asks whether tracing is on.

With HIVEMIND_OTEL_ENABLED every platform process (web, controller, agents, beat, and
`manage.py` commands) sends its spans over OTLP/HTTP to HIVEMIND_OTEL_ENDPOINT, and
instruments what it does for others: Django requests, Celery tasks (sent and run: the
trace context travels in the task headers), database queries (PostgreSQL through psycopg,
SQLite) and HTTP clients (requests: the Docker SDK, the CLI's client, health probes).

A workflow's trace is stored on its row (`Workflow.trace_id`, `Workflow.traceparent`, see
`workflow_context`), so every step joins it, whichever process sends the step's message and
whenever: the API request that created it, the step before it, or beat's reconciler.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys

from django.conf import settings
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

log = logging.getLogger(__name__)

_configured = False


def process_role(argv: list[str] | None = None) -> str:
    """Which platform process this is (web, controller, agent, worker, beat, or manage), from its
    command line: the same names as hivemind.core.processes, for spans and log lines."""
    argv = sys.argv if argv is None else argv
    program = os.path.basename(argv[0]) if argv else ""
    if "gunicorn" in program:
        return "web"
    if "celery" in program or (len(argv) > 2 and argv[1:3] == ["-m", "celery"]):
        if "beat" in argv:
            return "beat"
        if "worker" in argv:
            queues = ""
            for flag, value in itertools.pairwise(argv):
                if flag in ("-Q", "--queues"):
                    queues = value
            names = {q.strip() for q in queues.split(",") if q.strip()}
            if names and all(q.startswith("node.") for q in names):
                return "agent"
            if names == {getattr(settings, "CONTROL_QUEUE", "control")}:
                return "controller"
            return "worker"
        return "celery"
    return "manage"


WORKER_ROLES = ("agent", "controller", "worker")


def configure_process() -> None:
    """Turn tracing on for this process (AppConfig.ready), after its fork where it forks.

    A prefork Celery worker's main process only consumes messages; its pool children run the
    tasks. Were the SDK installed before the children fork, its export thread could hold a
    lock at that moment (a module being imported, a connection pool), and a child would wait on
    it for ever: its spans never sent, or its tasks never started. So a worker installs the SDK
    in each child (`worker_process_init`), and before its pool starts only when the pool runs
    tasks in the main process itself (solo, threads)."""
    if process_role() not in WORKER_ROLES:
        configure()
        return
    from celery.signals import worker_init, worker_process_init

    worker_process_init.connect(lambda **kwargs: configure(), weak=False)
    worker_init.connect(_configure_unless_prefork, weak=False)


def _configure_unless_prefork(sender=None, **kwargs) -> None:
    from celery.concurrency import get_implementation
    from celery.concurrency.prefork import TaskPool

    pool = get_implementation(sender.pool_cls)  # still the alias ("prefork") at worker_init
    if not issubclass(pool, TaskPool):
        configure()


def configure(*, exporter=None) -> bool:
    """Install the SDK and the instrumentations once per process when tracing is on.

    `exporter` replaces the OTLP exporter (tests and benchmarks). True when tracing is on."""
    global _configured
    if _configured:
        return True
    if not settings.OTEL_ENABLED:
        return False
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    config = settings.CONFIG
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=config.otel_endpoint, headers=dict(config.otel_headers), timeout=10)
    role = process_role()
    resource = Resource.create(
        {
            "service.name": config.otel_service_name,
            "service.instance.id": f"{settings.NODE_NAME}/{role}/{os.getpid()}",
            "host.name": settings.NODE_NAME,
            "hivemind.node": settings.NODE_NAME,
            "hivemind.process": role,
        }
    )
    # A trace is kept or dropped as a whole: the ratio decides at its root (an API request, a
    # beat task), every later span follows the sampled flag it inherits.
    provider = TracerProvider(resource=resource, sampler=ParentBased(TraceIdRatioBased(config.otel_sample_ratio)))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    DjangoInstrumentor().instrument()
    CeleryInstrumentor().instrument()
    # The exporter's own requests are not traced: the SDK suppresses instrumentation while it exports.
    RequestsInstrumentor().instrument()
    _instrument_databases()
    _flush_before_pool_children_exit()
    _configured = True
    return True


def _instrument_databases() -> None:
    """One span per query, for both backends Django uses here (through DB-API's connect)."""
    import sqlite3

    import psycopg
    from opentelemetry.instrumentation.dbapi import wrap_connect

    # Where each query went (never its parameters: they may hold secrets).
    where = {"database": "info.dbname", "port": "info.port", "host": "info.host", "user": "info.user"}
    wrap_connect(__name__, psycopg, "connect", "postgresql", connection_attributes=where, capture_parameters=False)
    wrap_connect(__name__, sqlite3.dbapi2, "connect", "sqlite", capture_parameters=False)


def _flush_before_pool_children_exit() -> None:
    """Celery's pool children leave with os._exit (no atexit): send what they still hold first."""
    from celery.signals import worker_process_shutdown

    worker_process_shutdown.connect(lambda **kwargs: force_flush(), weak=False)


def force_flush(timeout_millis: int = 5000) -> None:
    provider = trace.get_tracer_provider()
    flush = getattr(provider, "force_flush", None)
    if flush is not None:
        flush(timeout_millis)


_tracer: trace.Tracer | None = None


def tracer() -> trace.Tracer:
    """The platform's tracer: the API's proxy, which follows the provider `configure` installs
    (or stays the no-op one), so it is made once per process."""
    global _tracer
    if _tracer is None:
        _tracer = trace.get_tracer("hivemind")
    return _tracer


# --- A workflow's trace, stored on its row ---------------------------------------------------


def traceparent_of(span_context: SpanContext) -> str:
    """The W3C `traceparent` header value of a span (what the workflow row keeps): version 00,
    with only the sampled flag of the trace flags, as every W3C level-1 reader expects."""
    return f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{int(span_context.trace_flags) & 1:02x}"


def parse_traceparent(value: str) -> SpanContext | None:
    """The span context in a stored `traceparent`, or None when there is none (or it is damaged)."""
    parts = (value or "").split("-")
    if len(parts) != 4 or parts[0] != "00" or len(parts[1]) != 32 or len(parts[2]) != 16 or len(parts[3]) != 2:
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    return SpanContext(trace_id=trace_id, span_id=span_id, is_remote=True, trace_flags=TraceFlags(flags & 1))


def workflow_context(traceparent: str) -> otel_context.Context | None:
    """The context a workflow's spans are children of (its creation span), or None."""
    parent = parse_traceparent(traceparent)
    if parent is None:
        return None
    return trace.set_span_in_context(NonRecordingSpan(parent))
