"""The telemetry actor: batches client events to ``POST /telemetry``.

At most 100 events per POST, a flush every 10 s and at once after an exception, a queue of
at most 10 000 events (more are dropped), and a failed send drops its batch. Off when
``TINKER_TELEMETRY`` is not one of 1/true/yes/on.

:class:`Telemetry` is the official ``tinker.lib.telemetry.Telemetry`` surface (``log``,
``log_exception``, ``capture_exceptions``, ``acapture_exceptions``...) that user code reaches
through ``client.get_telemetry()``; the actor implements it. As in 0.38, an exception that is
the user's fault (a 4xx other than 408, or a failed request of category ``user``, anywhere in
its cause chain) is sent as a ``user_error`` generic event at WARNING, not as an unhandled one.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import concurrent.futures
import contextlib
import datetime as dt
import os
import platform
import threading
import time
import traceback
import uuid
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any

from .. import types
from ..config import SDK_VERSION
from ..telemetry import get_logger, redact
from ..transport import NO_RETRY
from .actor import Actor

if TYPE_CHECKING:
    from ..transport import Transport

__all__ = [
    "Telemetry",
    "TelemetryActor",
    "is_user_error",
    "process_uuid",
    "report_failures",
    "retry_handler_exception",
    "telemetry_enabled",
]

log = get_logger(__name__)

MAX_BATCH = 100
MAX_QUEUE = 10_000
FLUSH_INTERVAL = 10.0
FLUSH_TIMEOUT = 30.0  # the longest a fatal exception or interpreter exit waits for the send
_pid_uuid: tuple[int, str] | None = None


def process_uuid() -> str:
    """One id per process, regenerated after fork."""
    global _pid_uuid
    pid = os.getpid()
    if _pid_uuid is None or _pid_uuid[0] != pid:
        _pid_uuid = (pid, str(uuid.uuid4()))
    return _pid_uuid[1]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _user_error(exc: BaseException, seen: set[int] | None = None) -> BaseException | None:
    """The exception in ``exc``'s cause/context chain that is the user's fault, if any."""
    seen = set() if seen is None else seen
    if id(exc) in seen:
        return None
    seen.add(id(exc))
    if getattr(exc, "category", None) == types.RequestErrorCategory.User and hasattr(
        exc, "request_id"
    ):
        return exc
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and 400 <= status < 500 and status != 408:
        return exc
    for nxt in (exc.__cause__, exc.__context__):
        if nxt is not None and (found := _user_error(nxt, seen)) is not None:
            return found
    return None


def telemetry_enabled(option: bool | None = None, configured: bool | None = None) -> bool:
    """Tinkex's precedence: an explicit option, then the configured value (Settings), then
    ``TINKER_TELEMETRY`` (on unless 0/false/no/off; the official SDK's own test is the
    stricter 1/true/yes/on, which ``Settings.from_env`` applies)."""
    for value in (option, configured):
        if value is not None:
            if not isinstance(value, bool):
                raise TypeError(f"telemetry must be True, False or None, got {value!r}")
            return value
    return os.environ.get("TINKER_TELEMETRY", "1").strip().lower() not in {
        "0",
        "false",
        "no",
        "off",
    }


def report_failures(
    telemetry: Callable[[], Telemetry | None] | Telemetry | None,
    cf: concurrent.futures.Future[Any],
    *,
    fatal: bool = True,
) -> None:
    """Reports ``cf``'s exception, if it fails, as 0.38 reports a failed public call: a
    fatal exception (``user_error`` or ``UNHANDLED_EXCEPTION``, then SESSION_END; with
    ``fatal=False`` the exception event only). Never blocks the thread that completes
    ``cf``; a cancel is not reported."""

    def done(f: concurrent.futures.Future[Any]) -> None:
        if f.cancelled():
            return
        exc = f.exception()
        if exc is None:
            return
        tel = telemetry() if callable(telemetry) else telemetry
        if tel is None:
            return
        if fatal:
            tel.log_fatal_exception_sync(exc)
        else:
            tel.log_exception_sync(exc)

    if telemetry is not None:
        cf.add_done_callback(done)


def retry_handler_exception(
    telemetry: Telemetry, exc: BaseException, should_retry: bool, attempts: int, started: float
) -> None:
    """0.38's RetryHandler event for each failed sampling attempt (``attempts`` counts this
    one); WARNING when it will be retried or is the user's fault, else ERROR."""
    user = is_user_error(exc)
    now = time.time()
    tb = (
        "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        if exc.__traceback__ is not None
        else None
    )
    telemetry.log(
        "RetryHandler.execute.exception",
        {
            "func": "SamplingClient.sample",
            "exception": redact(str(exc)),
            "exception_type": type(exc).__name__,
            "exception_stack": redact(tb) if tb else None,
            "status_code": getattr(exc, "status_code", None),
            "should_retry": should_retry,
            "is_user_error": user,
            "attempt_count": attempts,
            "start_time": started,
            "current_time": now,
            "elapsed_time": now - started,
        },
        "WARNING" if should_retry or user else "ERROR",
    )


def is_user_error(exc: BaseException) -> bool:
    """True when ``exc`` (or its cause chain) is a 4xx other than 408 or a user-category failure."""
    return _user_error(exc) is not None


class Telemetry:
    """The official telemetry object: generic events, exceptions, capture helpers.

    Implemented by :class:`TelemetryActor`; every method is thread-safe. Only the fatal
    forms block: off the runtime loop they wait (bounded) until the queue is sent, as 0.38
    does; on it they trigger the flush and return.
    """

    def _push(self, event: Any) -> bool:
        raise NotImplementedError

    @staticmethod
    def is_user_error(exc: BaseException) -> bool:
        """0.38's test: a 4xx other than 408, or a user-category failure, in the cause chain."""
        return _user_error(exc) is not None

    def wait_until_drained(self, timeout: float = FLUSH_TIMEOUT) -> bool:
        raise NotImplementedError

    async def wait_until_drained_async(self, timeout: float = FLUSH_TIMEOUT) -> bool:  # noqa: ASYNC109
        raise NotImplementedError

    def _can_block(self) -> bool:
        return False

    def _common(self, severity: str) -> dict[str, Any]:
        raise NotImplementedError

    def trigger_flush(self) -> None:
        raise NotImplementedError

    def _session_end_event(self) -> Any:
        return None

    def log(
        self, event_name: str, event_data: dict[str, Any] | None = None, severity: str = "INFO"
    ) -> bool:
        """Queue a generic event; False when the queue is full."""
        return self._push(
            types.GenericEvent(
                event_name=event_name, event_data=event_data or {}, **self._common(severity)
            )
        )

    def _exception_event(self, exc: BaseException, severity: str) -> Any:
        user = _user_error(exc)
        if user is not None:
            data: dict[str, Any] = {"error_type": type(exc).__name__}
            if message := redact(str(exc)):
                data["message"] = message
            if isinstance(status := getattr(user, "status_code", None), int):
                data["status_code"] = status
            if body := getattr(user, "body", None):
                data["body"] = body if isinstance(body, dict | list) else redact(str(body))
            return types.GenericEvent(
                event_name="user_error", event_data=data, **self._common("WARNING")
            )
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return types.UnhandledExceptionEvent(
            error_type=type(exc).__name__,
            error_message=redact(str(exc)),
            traceback=redact(tb) if exc.__traceback__ is not None else None,
            **self._common(severity),
        )

    def log_exception_sync(self, exception: BaseException, severity: str = "ERROR") -> bool:
        """Queue an exception (or ``user_error``) event and flush soon."""
        logged = self._push(self._exception_event(exception, severity))
        self.trigger_flush()
        return logged

    async def log_exception(self, exception: BaseException, severity: str = "ERROR") -> bool:
        return self.log_exception_sync(exception, severity)

    def _log_fatal(self, exception: BaseException, severity: str) -> bool:
        logged = self._push(self._exception_event(exception, severity))
        end = self._session_end_event()
        if end is not None:
            logged = self._push(end) and logged
        self.trigger_flush()
        return logged

    def log_fatal_exception_sync(self, exception: BaseException, severity: str = "ERROR") -> bool:
        """Like :meth:`log_exception_sync`, and the session's SESSION_END goes with it (once);
        off the runtime loop it waits until the queue is sent (at most 30 s)."""
        logged = self._log_fatal(exception, severity)
        if self._can_block():
            self.wait_until_drained()
        if logged:
            log.info(f"Exception logged for session ID: {getattr(self, 'session_id', None)}")
        return logged

    async def log_fatal_exception(self, exception: BaseException, severity: str = "ERROR") -> bool:
        logged = self._log_fatal(exception, severity)
        await self.wait_until_drained_async()
        if logged:
            log.info(f"Exception logged for session ID: {getattr(self, 'session_id', None)}")
        return logged

    @contextlib.contextmanager
    def capture_exceptions(self, fatal: bool = False, severity: str = "ERROR") -> Iterator[None]:
        """Report an ``Exception`` raised in the block, then re-raise it."""
        try:
            yield
        except Exception as exc:
            if fatal:
                self.log_fatal_exception_sync(exc, severity)
            else:
                self.log_exception_sync(exc, severity)
            raise

    @contextlib.asynccontextmanager
    async def acapture_exceptions(
        self, fatal: bool = False, severity: str = "ERROR"
    ) -> AsyncIterator[None]:
        """The ``async with`` form of :meth:`capture_exceptions`."""
        try:
            yield
        except Exception as exc:
            if fatal:
                await self.log_fatal_exception(exc, severity)
            else:
                await self.log_exception(exc, severity)
            raise


class TelemetryActor(Actor, Telemetry):
    """Owns the event queue; ``log_*`` methods are thread-safe and never block."""


    def __init__(
        self,
        transport: Transport,
        session_id: str,
        *,
        interval: float = FLUSH_INTERVAL,
        sleep: Callable[[float], Any] = asyncio.sleep,
        emit_session_events: bool = True,
    ):
        super().__init__(name=f"telemetry-{session_id}")
        self.transport = transport
        self.session_id = session_id
        self.interval = interval
        self._sleep = sleep
        self._queue: collections.deque[Any] = collections.deque()
        self._index = 0
        self._flush_now: asyncio.Event | None = None
        self._started_at = _now()
        self._session_events = emit_session_events
        self._session_ended = False
        self.sent_batches = 0
        self.dropped = 0
        self.pushed = 0  # events accepted into the queue
        self.flushed = 0  # events whose send was attempted (sent or dropped with their batch)
        self._lock = threading.Lock()  # log() is called from any thread
        self._waiters: list[tuple[int, concurrent.futures.Future[bool]]] = []

    # ------------------------------------------------------------------ events
    def _next_index(self) -> int:
        with self._lock:
            self._index += 1
            return self._index - 1

    def _push(self, event: Any) -> bool:
        with self._lock:
            if len(self._queue) >= MAX_QUEUE:
                self.dropped += 1
                full = self.dropped == 1
            else:
                self._queue.append(event)
                self.pushed += 1
                return True
        if full:
            log.warning(f"Telemetry queue full ({MAX_QUEUE}), dropping events")
        return False

    def snapshot(self) -> dict[str, Any]:
        """Counters of this session's reporter (Tinkex's ``Reporter`` state, read-only)."""
        with self._lock:
            return {
                "session_id": self.session_id,
                "queued": len(self._queue),
                "pushed": self.pushed,
                "flushed": self.flushed,
                "sent_batches": self.sent_batches,
                "dropped": self.dropped,
                "session_ended": self._session_ended,
            }

    def _waiter(self) -> concurrent.futures.Future[bool]:
        """A future that turns True once every event queued so far was flushed."""
        cf: concurrent.futures.Future[bool] = concurrent.futures.Future()
        with self._lock:
            if self.flushed >= self.pushed:
                cf.set_result(True)
                return cf
            self._waiters.append((self.pushed, cf))
        self.trigger_flush()
        return cf

    def _mark_flushed(self, n: int) -> None:
        with self._lock:
            self.flushed += n
            ready = [cf for target, cf in self._waiters if self.flushed >= target]
            self._waiters = [(t, cf) for t, cf in self._waiters if self.flushed < t]
        for cf in ready:
            if not cf.done():
                cf.set_result(True)

    def _can_block(self) -> bool:
        if self._loop is None or self._caller_on_loop():
            return False
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return True
        return False  # 0.38 never blocks a running loop on a fatal flush

    def wait_until_drained(self, timeout: float = FLUSH_TIMEOUT) -> bool:
        """Blocks until every event queued before the call was sent (or dropped with its
        batch); False after ``timeout`` s. Not on the runtime loop (use the async form)."""
        if self._loop is not None and self._caller_on_loop():
            raise RuntimeError(
                "wait_until_drained() would block the runtime loop; "
                "await wait_until_drained_async() instead"
            )
        try:
            return self._waiter().result(timeout)
        except concurrent.futures.TimeoutError:
            return False

    async def wait_until_drained_async(self, timeout: float = FLUSH_TIMEOUT) -> bool:  # noqa: ASYNC109
        """The ``await`` form of :meth:`wait_until_drained`, from any loop."""
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.wrap_future(self._waiter())
        except TimeoutError:
            return False

    def _session_end_event(self) -> Any:
        if not self._session_events or self._session_ended:
            return None
        self._session_ended = True
        end = _now()
        return types.SessionEndEvent(duration=str(end - self._started_at), **self._common("INFO"))

    def _common(self, severity: str) -> dict[str, Any]:
        return {
            "event_id": str(uuid.uuid4()),
            "event_session_index": self._next_index(),
            "severity": severity,
            "timestamp": _now(),
        }

    def log_generic(
        self, name: str, data: dict[str, Any] | None = None, severity: str = "INFO"
    ) -> None:
        self.log(name, data, severity)

    def trigger_flush(self) -> None:
        ev = self._flush_now
        if ev is None or self._loop is None:
            return
        if self._caller_on_loop():
            ev.set()
        else:
            self._loop.call_soon_threadsafe(ev.set)

    # ------------------------------------------------------------------ lifecycle
    async def on_start(self) -> None:
        self._flush_now = asyncio.Event()
        if self._session_events:
            self._push(types.SessionStartEvent(**self._common("INFO")))
        # 0.38's poller reports failed futures (application_error) through the session's
        # telemetry; the transport is what the poll loop holds
        self.transport.telemetry = self
        _live.add(self)
        _register_exit_flush()

    async def main(self) -> None:
        """Flush every ``interval`` s (the injectable sleep) or at once when triggered."""
        flush_now = self._flush_now
        assert flush_now is not None
        while True:
            tick = asyncio.ensure_future(self._sleep(self.interval))
            woken = asyncio.ensure_future(flush_now.wait())
            try:
                await asyncio.wait({tick, woken}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                tick.cancel()
                woken.cancel()
            flush_now.clear()
            await self._drain()

    def flush(self, wait: bool = False, timeout: float = FLUSH_TIMEOUT) -> bool:
        """Sends the queue now (Tinkex's ``flush``); with ``wait``, blocks until it is sent
        (:meth:`wait_until_drained`). Thread-safe; True when nothing is left to send."""
        if wait:
            return self.wait_until_drained(timeout)
        self.trigger_flush()
        with self._lock:
            return self.flushed >= self.pushed

    async def _drain(self) -> None:
        while self._queue:
            batch = [self._queue.popleft() for _ in range(min(MAX_BATCH, len(self._queue)))]
            req = types.TelemetrySendRequest(
                events=batch,
                platform=platform.system(),
                sdk_version=SDK_VERSION,
                session_id=self.session_id,
                process_uuid=process_uuid(),
            )
            try:
                await self.transport.call("telemetry", req, timeout=5.0, retry=NO_RETRY)
                self.sent_batches += 1
            except Exception as exc:  # telemetry must never hurt the user's job
                log.debug("telemetry batch dropped", error=repr(exc), events=len(batch))
            finally:
                self._mark_flushed(len(batch))

    async def stop(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Emits SESSION_END (once), flushes what is queued (bounded), then stops."""
        if self.state.value == "running" and (end := self._session_end_event()) is not None:
            self._push(end)
        _live.discard(self)
        await super().stop(timeout)
        try:
            async with asyncio.timeout(timeout):
                await self._drain()
        except TimeoutError:
            log.debug("telemetry flush timed out at stop")
        if self.transport.telemetry is self:
            self.transport.telemetry = None

    def flush_at_exit(self, timeout: float = 5.0) -> None:
        """Interpreter exit with the session still open: SESSION_END, then a bounded send
        from the exiting thread (the runtime loop still runs; it stops after this)."""
        loop = self._loop
        if loop is None or loop.is_closed() or not loop.is_running() or self._caller_on_loop():
            return
        end = self._session_end_event()
        if end is not None:
            self._push(end)
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._drain(), loop).result(timeout)


# Live reporters, for the interpreter-exit flush. Registered once, at the first start: after
# the runtime's own exit hook, so (atexit runs in reverse) it runs while the loop still runs.
_live: weakref.WeakSet[TelemetryActor] = weakref.WeakSet()
_exit_registered = False


def _register_exit_flush() -> None:
    global _exit_registered
    if not _exit_registered:
        _exit_registered = True
        atexit.register(_flush_all_at_exit)


def _flush_all_at_exit() -> None:
    for actor in list(_live):
        actor.flush_at_exit()
