"""OpenTelemetry traces, optional: only when OTEL_EXPORTER_OTLP_ENDPOINT is set and the
`otel` extra is installed (`pip install 'tahoe-auth[otel]'`). Each RPC through the
interceptor chain becomes a server span whose parent is the incoming W3C
`traceparent`; the exporter is OTLP over HTTP with the standard OTEL_* variables.
Without the variable or the packages nothing is imported and the chain has no step."""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)


def configure(service_name: str = "tahoe-auth", env: Mapping[str, str] | None = None) -> Any | None:
    """A tracer, or None when tracing is not configured or not installed."""
    env = os.environ if env is None else env
    if not env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return None
    try:
        trace = importlib.import_module("opentelemetry.trace")
        sdk_trace = importlib.import_module("opentelemetry.sdk.trace")
        export = importlib.import_module("opentelemetry.sdk.trace.export")
        resources = importlib.import_module("opentelemetry.sdk.resources")
        otlp = importlib.import_module("opentelemetry.exporter.otlp.proto.http.trace_exporter")
    except ImportError:
        log.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set but the otel extra is not installed: no traces")
        return None
    provider = sdk_trace.TracerProvider(resource=resources.Resource.create({"service.name": service_name}))
    provider.add_span_processor(export.BatchSpanProcessor(otlp.OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    log.info("OpenTelemetry traces go to %s", env["OTEL_EXPORTER_OTLP_ENDPOINT"])
    return trace.get_tracer("tahoe_auth")


class Trace:
    """Interceptor step: one server span per call, child of the caller's traceparent."""

    def __init__(self, tracer: Any) -> None:
        self._tracer = tracer
        self._propagator = importlib.import_module(
            "opentelemetry.trace.propagation.tracecontext"
        ).TraceContextTextMapPropagator()
        self._server_kind = importlib.import_module("opentelemetry.trace").SpanKind.SERVER

    def __call__(self, call: Any, proceed: Callable[[], Any]) -> Any:
        carrier = {"traceparent": call.metadata.get("traceparent", "")}
        parent = self._propagator.extract(carrier=carrier)
        with self._tracer.start_as_current_span(call.method, context=parent, kind=self._server_kind) as span:
            span.set_attribute("rpc.system", "grpc")
            span.set_attribute("rpc.method", call.method)
            span.set_attribute("tahoe.request_id", call.request_id)
            return proceed()
