"""The official names that had no home here: RetryHandler, Telemetry, Timeout, ... .

Behaviour is checked against the official SDK where it can run side by side (``Timeout``
against httpx's, which 0.38 re-exports), and against the local server for the deprecated
RestClient admin reads.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import warnings
from typing import Any

import httpx
import pytest
from tinker_actors.lib.retry_handler import RetryableException, RetryHandler
from tinker_actors.lib.telemetry import Telemetry, capture_exceptions, is_user_error
from tinker_actors.lib.telemetry_provider import TelemetryProvider

import tinker_actors as tinker
from tinker_actors import errors, types
from tinker_actors.actors.telemetry import TelemetryActor
from tinker_actors.config import RetryConfig


# -- Timeout -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((5.0,), {}),
        ((None,), {}),
        ((5.0,), {"connect": 1.0}),
        ((None,), {"read": 2.0}),
        (((1.0, 2.0),), {}),
        (((1.0, 2.0, 3.0, 4.0),), {}),
        ((), {"connect": 1.0, "read": 2.0, "write": 3.0, "pool": 4.0}),
    ],
)
def test_timeout_has_the_httpx_shape(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    ours, theirs = tinker.Timeout(*args, **kwargs), httpx.Timeout(*args, **kwargs)
    assert ours.as_dict() == theirs.as_dict()
    assert (ours.connect, ours.read, ours.write, ours.pool) == (
        theirs.connect,
        theirs.read,
        theirs.write,
        theirs.pool,
    )
    assert repr(ours) == repr(theirs)
    assert tinker.Timeout(ours) == ours


def test_timeout_without_a_default_needs_all_four_phases() -> None:
    with pytest.raises(ValueError, match="all four"):
        tinker.Timeout(connect=1.0)
    with pytest.raises(ValueError):
        httpx.Timeout(connect=1.0)


# -- ExperimentalWarning / experimental ------------------------------------------------------
def test_experimental_decorator_warns_with_the_future_warning_subclass() -> None:
    from tinker_actors.lib.experimental import ExperimentalWarning, experimental

    assert ExperimentalWarning is tinker.ExperimentalWarning
    assert issubclass(ExperimentalWarning, FutureWarning)

    @experimental("f is experimental", category=ExperimentalWarning)
    def f(x: int) -> int:
        return x + 1

    with pytest.warns(ExperimentalWarning, match="f is experimental"):
        assert f(1) == 2


# -- RetryHandler ---------------------------------------------------------------------------
class Recorder:
    """Collects what a telemetry sink receives (``Telemetry.log``'s signature)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any], str]] = []

    def log(self, name: str, data: dict[str, Any] | None = None, severity: str = "INFO") -> bool:
        self.events.append((name, data or {}, severity))
        return True


FAST = RetryConfig(retry_delay_base=0.001, retry_delay_max=0.002)


async def test_retry_handler_retries_retryable_failures_then_returns() -> None:
    sink = Recorder()
    handler: RetryHandler[str] = RetryHandler(FAST, name="t", telemetry=sink)
    attempts = 0

    async def flaky(x: str) -> str:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise RetryableException("try again")
        if attempts == 2:
            raise errors.status_error_for(503, body={"detail": "busy"})
        return x * 2

    assert await handler.execute(flaky, "ab") == "abab"
    assert attempts == 3 and handler.retry_count == 2 and handler.processed_count == 1
    assert [e[0] for e in sink.events] == ["RetryHandler.execute.exception"] * 2
    assert sink.events[1][1]["status_code"] == 503 and sink.events[1][2] == "WARNING"
    assert isinstance(handler, TelemetryProvider) and handler.get_telemetry() is sink


async def test_retry_handler_raises_non_retryable_failures_at_once() -> None:
    sink = Recorder()
    handler: RetryHandler[None] = RetryHandler(FAST, telemetry=sink)
    calls = 0

    async def bad() -> None:
        nonlocal calls
        calls += 1
        raise errors.status_error_for(400, body={"detail": "bad"})

    with pytest.raises(errors.BadRequestError):
        await handler.execute(bad)
    assert calls == 1
    ((_name, data, severity),) = sink.events
    assert data["is_user_error"] is True and data["should_retry"] is False
    assert severity == "WARNING"  # a user error is not an SDK error

    async def boom() -> None:
        raise ValueError("x")

    with pytest.raises(ValueError):
        await handler.execute(boom)
    assert sink.events[-1][2] == "ERROR"


async def test_retry_handler_with_retries_off_makes_one_attempt() -> None:
    handler: RetryHandler[None] = RetryHandler(RetryConfig(enable_retry_logic=False))
    calls = 0

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        raise RetryableException()

    with pytest.raises(RetryableException):
        await handler.execute(flaky)
    assert calls == 1


async def test_retry_handler_bounds_concurrency() -> None:
    handler: RetryHandler[int] = RetryHandler(RetryConfig(max_connections=2))
    active = peak = 0
    release = asyncio.Event()
    two_in = asyncio.Event()

    async def work(i: int) -> int:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        if active == 2:
            two_in.set()
        await release.wait()
        active -= 1
        return i

    tasks = [asyncio.ensure_future(handler.execute(work, i)) for i in range(5)]
    await two_in.wait()
    for _ in range(10):  # give the other three every chance to (wrongly) start
        await asyncio.sleep(0)
    assert active == 2
    release.set()
    assert await asyncio.gather(*tasks) == [0, 1, 2, 3, 4]
    assert peak == 2


async def test_retry_handler_fails_stuck_calls() -> None:
    handler: RetryHandler[None] = RetryHandler(RetryConfig(progress_timeout=0.05))
    never = asyncio.Event()

    async def stuck() -> None:
        await never.wait()

    with pytest.raises(errors.APIConnectionError, match="No progress made"):
        await handler.execute(stuck)


# -- Telemetry ------------------------------------------------------------------------------
def telemetry() -> TelemetryActor:
    """A telemetry actor that is not started: events stay in its queue for inspection."""
    return TelemetryActor(transport=None, session_id="sess-1")  # type: ignore[arg-type]


def queued(actor: TelemetryActor) -> list[Any]:
    return list(actor._queue)


def test_telemetry_log_and_the_official_surface() -> None:
    t = telemetry()
    assert isinstance(t, Telemetry)
    assert t.log("step", {"i": 1}, "WARNING") is True
    (event,) = queued(t)
    assert isinstance(event, types.GenericEvent)
    assert (event.event_name, event.event_data, event.severity) == ("step", {"i": 1}, "WARNING")
    for name in ("log_exception", "log_fatal_exception", "acapture_exceptions"):
        assert callable(getattr(t, name))


def test_capture_exceptions_sends_user_errors_as_user_error_events() -> None:
    t = telemetry()
    with pytest.raises(errors.BadRequestError):
        with t.capture_exceptions():
            raise errors.status_error_for(400, body={"detail": "bad input"})
    with pytest.raises(ValueError):
        with t.capture_exceptions():
            raise ValueError("boom")
    user, unhandled = queued(t)
    assert isinstance(user, types.GenericEvent) and user.event_name == "user_error"
    assert user.severity == "WARNING" and user.event_data["status_code"] == 400
    assert user.event_data["error_type"] == "BadRequestError"
    assert isinstance(unhandled, types.UnhandledExceptionEvent)
    assert unhandled.error_type == "ValueError" and "boom" in (unhandled.traceback or "")


async def test_acapture_exceptions_fatal_ends_the_session_once() -> None:
    t = telemetry()
    failed = errors.RequestFailedError("bad datum", request_id="r1", category="user")
    with pytest.raises(errors.RequestFailedError):
        async with t.acapture_exceptions(fatal=True):
            raise failed
    with pytest.raises(RuntimeError):
        async with t.acapture_exceptions(fatal=True, severity="CRITICAL"):
            raise RuntimeError("again")
    kinds = [type(e).__name__ for e in queued(t)]
    assert kinds == ["GenericEvent", "SessionEndEvent", "UnhandledExceptionEvent"]
    assert queued(t)[2].severity == "CRITICAL"


def test_is_user_error_follows_the_cause_chain() -> None:
    assert is_user_error(errors.status_error_for(404, body=None))
    assert not is_user_error(errors.status_error_for(408, body=None))
    assert not is_user_error(errors.status_error_for(500, body=None))
    assert not is_user_error(errors.RequestFailedError("x", request_id="r", category="server"))
    try:
        try:
            raise errors.status_error_for(422, body=None)
        except errors.APIStatusError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert is_user_error(outer)


def test_capture_exceptions_decorator_uses_the_provider_telemetry() -> None:
    t = telemetry()

    class Provider:
        def get_telemetry(self) -> Any:
            return t

        @capture_exceptions
        def fails(self) -> None:
            raise KeyError("k")

        @capture_exceptions(fatal=True)
        async def afails(self) -> None:
            raise KeyError("a")

    with pytest.raises(KeyError):
        Provider().fails()
    with pytest.raises(KeyError):
        asyncio.run(Provider().afails())
    assert [type(e).__name__ for e in queued(t)] == [
        "UnhandledExceptionEvent",
        "UnhandledExceptionEvent",
        "SessionEndEvent",
    ]


# -- deprecated RestClient admin reads, on the local server -------------------------------------
@pytest.mark.e2e
def test_deprecated_rest_client_admin_reads(local_server: Any) -> None:
    rest = tinker.RestClient(base_url=local_server.base_url, api_key=local_server.api_key)
    admin = tinker.AdminClient(base_url=local_server.base_url, api_key=local_server.api_key)
    assert isinstance(rest, TelemetryProvider)
    calls = [
        ("get_audit_log", ("all", dt.date(2025, 1, 1))),
        ("get_billing_usage", (dt.datetime(2025, 1, 1), "2025-02-01T00:00:00")),
        ("get_current_checkpoint_storage_usage", ()),
    ]
    for method, args in calls:
        with pytest.warns(FutureWarning, match=f"RestClient.{method}\\(\\) is deprecated"):
            got = getattr(rest, method)(*args).result()
        assert got == getattr(admin, method)(*args).result()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            getattr(admin, method)(*args).result()  # the AdminClient form does not warn

    async def via_async() -> Any:
        with pytest.warns(FutureWarning, match="get_audit_log_async"):
            return await rest.get_audit_log_async()

    assert isinstance(asyncio.run(via_async()), types.AuditLogResponse)
