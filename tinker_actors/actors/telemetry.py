"""The telemetry actor: batches client events to ``POST /telemetry``.

At most 100 events per POST, a flush every 10 s and at once after an exception, a queue of
at most 10 000 events (more are dropped), and a failed send drops its batch. Off when
``TINKER_TELEMETRY`` is not one of 1/true/yes/on.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import os
import platform
import traceback
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import types
from ..config import SDK_VERSION
from ..telemetry import get_logger, redact
from ..transport import NO_RETRY
from .actor import Actor

if TYPE_CHECKING:
    from ..transport import Transport

__all__ = ["TelemetryActor", "process_uuid"]

log = get_logger(__name__)

MAX_BATCH = 100
MAX_QUEUE = 10_000
FLUSH_INTERVAL = 10.0
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


class TelemetryActor(Actor):
    """Owns the event queue; ``log_*`` methods are thread-safe and never block."""

    uses_mailbox = False

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
        self.sent_batches = 0
        self.dropped = 0

    # ------------------------------------------------------------------ events
    def _next_index(self) -> int:
        self._index += 1
        return self._index - 1

    def _push(self, event: Any) -> None:
        if len(self._queue) >= MAX_QUEUE:
            self.dropped += 1
            return
        self._queue.append(event)

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
        self._push(
            types.GenericEvent(event_name=name, event_data=data or {}, **self._common(severity))
        )

    def log_exception(self, exc: BaseException, severity: str = "ERROR") -> None:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self._push(
            types.UnhandledExceptionEvent(
                error_type=type(exc).__name__,
                error_message=redact(str(exc)),
                traceback=redact(tb),
                **self._common(severity),
            )
        )
        self.trigger_flush()

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
            await self.flush()

    async def flush(self) -> None:
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

    async def stop(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Emits SESSION_END, flushes what is queued (bounded), then stops."""
        if self._session_events and self.state.value == "running":
            end = _now()
            self._push(
                types.SessionEndEvent(duration=str(end - self._started_at), **self._common("INFO"))
            )
        await super().stop(timeout)
        try:
            async with asyncio.timeout(timeout):
                await self.flush()
        except TimeoutError:
            log.debug("telemetry flush timed out at stop")
