"""Opt-in OpenTelemetry: requests become client spans and carry traceparent (issue 11)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from client.scripted import ScriptedServer

from tinker_actors import errors, tracing
from tinker_actors.config import Settings
from tinker_actors.runtime import loop_runtime
from tinker_actors.transport import NO_RETRY, Transport

pytest.importorskip("opentelemetry.sdk")

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.enable(provider)
    try:
        yield exporter
    finally:
        tracing.disable()


def transport(base: str) -> Transport:
    async def sleep(_: float) -> None:
        return None

    return Transport(loop_runtime(), Settings(base_url=base, api_key="tml-x"), sleep=sleep)


async def test_a_request_is_a_span_and_sends_its_traceparent(spans: Any) -> None:
    async with ScriptedServer() as m:
        t = transport(m.base)
        m.post("/api/v1/a", status=503)
        m.post("/api/v1/a", status=200, payload={})
        m.post("/api/v1/b", status=404, payload={"detail": "no"})
        await t.request("POST", "/api/v1/a", json={}, route="a")
        with pytest.raises(errors.NotFoundError):
            await t.request("POST", "/api/v1/b", json={}, route="b", retry=NO_RETRY)
        seen = m.seen("/api/v1/a")
    ok, failed = spans.get_finished_spans()
    assert ok.name == "POST a" and ok.attributes["http.response.status_code"] == 200
    assert ok.attributes["url.path"] == "/api/v1/a"
    assert failed.name == "POST b" and not failed.status.is_ok
    # both attempts of the retried request carry the span's context
    c = ok.context
    want = f"00-{c.trace_id:032x}-{c.span_id:016x}-{int(c.trace_flags):02x}"
    assert [s.headers["traceparent"] for s in seen] == [want, want]


async def test_caller_headers_win_and_off_sends_none(spans: Any) -> None:
    mine = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with ScriptedServer() as m:
        t = transport(m.base)
        m.default("POST", "/api/v1/a", status=200, payload={})
        await t.request("POST", "/api/v1/a", json={}, headers={"TraceParent": mine})
        tracing.disable()
        await t.request("POST", "/api/v1/a", json={})
        first, second = m.seen("/api/v1/a")
    assert first.headers["traceparent"] == mine
    assert "traceparent" not in second.headers
