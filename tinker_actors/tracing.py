"""Opt-in OpenTelemetry: each logical HTTP request is a client span, ``traceparent`` goes out.

Off unless the user opts in (:func:`enable`, or ``TINKER_ACTORS_OTEL=1`` at import) and
``opentelemetry-api`` is installed (``pip install 'tinker-actors[otel]'``). When on, the
transport runs each request (all its retries) inside a span named ``<METHOD> <route>`` and
injects the current context with the globally configured propagator (W3C ``traceparent`` /
``tracestate`` by default). Headers the caller set win: an injected header never replaces
one already present (any case). The transport reads :data:`ENABLED` once per request, so
being off costs one bool check.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

__all__ = ["ENABLED", "disable", "enable", "request_span"]

ENABLED = False
_tracer: Any = None


def enable(tracer_provider: Any = None) -> None:
    """Turns spans and context propagation on (``tracer_provider``: default the global one)."""
    global ENABLED, _tracer
    try:
        from opentelemetry import trace
    except ImportError as exc:
        raise ImportError(
            "tracing needs opentelemetry-api: pip install 'tinker-actors[otel]'"
        ) from exc
    _tracer = trace.get_tracer("tinker_actors", tracer_provider=tracer_provider)
    ENABLED = True


def disable() -> None:
    global ENABLED
    ENABLED = False


def inject(headers: dict[str, str]) -> None:
    """Adds the propagator's headers for the current context, except those already set."""
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    present = {k.lower() for k in headers}
    for k, v in carrier.items():
        if k.lower() not in present:
            headers[k] = v


@contextlib.contextmanager
def request_span(
    method: str, path: str, route: str | None, base_url: str | None, headers: dict[str, str]
) -> Iterator[Any]:
    """A CLIENT span around one logical request; ``headers`` gets the trace context."""
    from opentelemetry.trace import SpanKind

    attrs = {"http.request.method": method, "url.path": path, "server.address": base_url or ""}
    if route:
        attrs["tinker.route"] = route
    with _tracer.start_as_current_span(
        f"{method} {route or path}", kind=SpanKind.CLIENT, attributes=attrs
    ) as span:
        inject(headers)
        yield span


def set_status(span: Any, status: int) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("http.response.status_code", status)
    if status >= 400:
        span.set_status(Status(StatusCode.ERROR))


if os.environ.get("TINKER_ACTORS_OTEL", "").strip().lower() in {"1", "true", "yes", "on"}:
    with contextlib.suppress(ImportError):
        enable()
