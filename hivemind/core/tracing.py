"""OpenTelemetry set-up. Off by default: the API's no-op tracer then costs nothing.

Calling code always uses `tracer()`; it never asks whether tracing is on.
"""

from __future__ import annotations

from django.conf import settings
from opentelemetry import trace

_configured = False


def configure() -> None:
    global _configured
    if _configured or not settings.OTEL_ENABLED:
        return
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": "hivemind", "host.name": settings.NODE_NAME}))
    provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)
    DjangoInstrumentor().instrument()
    CeleryInstrumentor().instrument()
    _configured = True


def tracer() -> trace.Tracer:
    return trace.get_tracer("hivemind")
