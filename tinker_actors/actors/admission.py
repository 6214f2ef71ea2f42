"""Admission control for sampling dispatches: count and byte budgets and the 429 backoff window.

Everything here is loop-local (no locks, no threads) and takes an injectable monotonic clock,
so the budgets and the backoff decisions are tested without sleeping. The fast paths never
suspend: an uncontended admission costs two integer updates, no task switch and no allocation
beyond the returned ticket.

Semantics follow the official SDK's holder (protocol.md section 7):

* at most ``DISPATCH_CONCURRENCY`` (400) asample POSTs in flight per session;
* a byte budget (``sample_dispatch_bytes_semaphore_size``, 10 MB by default) that admits while
  the balance is >= 0, so one oversized request can overshoot but never deadlock;
* during a 429 backoff and for ``THROTTLE_WINDOW_S`` (10 s) after it ends, concurrency is also
  capped at ``THROTTLED_CONCURRENCY`` (10) and the byte estimate is multiplied by 20.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = [
    "DEFAULT_DISPATCH_BYTES",
    "DISPATCH_CONCURRENCY",
    "SMALL_REQUEST_BYTES",
    "THROTTLED_BYTES_FACTOR",
    "THROTTLED_CONCURRENCY",
    "THROTTLE_WINDOW_S",
    "BytesBudget",
    "DispatchBackoff",
    "SamplingAdmission",
    "Ticket",
    "backoff_seconds",
    "estimate_chunk_bytes",
    "estimate_model_input_bytes",
]

Clock = Callable[[], float]

DISPATCH_CONCURRENCY = 400
THROTTLED_CONCURRENCY = 10
THROTTLE_WINDOW_S = 10.0
THROTTLED_BYTES_FACTOR = 20
SMALL_REQUEST_BYTES = 128 * 1024
DEFAULT_DISPATCH_BYTES = 10 * 1024 * 1024
BYTES_PER_TOKEN = 10


def estimate_chunk_bytes(chunk: Any) -> int:
    """Wire-size estimate of one prompt chunk: 10 B per token, raw bytes for images/dmel.

    Duck-typed on the chunk's fields so it works for every chunk kind without importing them.
    """
    tokens = getattr(chunk, "tokens", None)
    if tokens is not None:
        return len(tokens) * BYTES_PER_TOKEN
    location = getattr(chunk, "location", None)
    if location is not None:
        return len(location)
    data = getattr(chunk, "data", None)
    if data is not None:
        return len(data)
    dmel = getattr(chunk, "dmel", None)
    if dmel is not None:
        return len(dmel)
    length = getattr(chunk, "length", 0)
    return int(length() if callable(length) else length) * BYTES_PER_TOKEN


def estimate_model_input_bytes(model_input: Any) -> int:
    """Sum of the chunk estimates of a ModelInput (what the byte budget is charged)."""
    return sum(estimate_chunk_bytes(chunk) for chunk in model_input.chunks)


def backoff_seconds(estimated_bytes: int) -> float:
    """How long a 429 pauses dispatch: 1 s for small prompts, 5 s above 128 KiB."""
    return 1.0 if estimated_bytes <= SMALL_REQUEST_BYTES else 5.0


class BytesBudget:
    """FIFO byte budget that admits while the balance is >= 0 (it may go negative).

    Admitting while non-negative, rather than while the request fits, means a request larger
    than the whole budget still runs (alone) instead of deadlocking. Waiters are served in
    arrival order; a release wakes as many as the balance allows, with no helper tasks.
    """

    __slots__ = ("_available", "_capacity", "_waiters")

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError(f"byte budget must be positive, got {capacity}")
        self._capacity = capacity
        self._available = capacity
        self._waiters: deque[tuple[asyncio.Future[None], int]] = deque()

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def available(self) -> int:
        return self._available

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def try_acquire(self, nbytes: int) -> bool:
        """Take ``nbytes`` now if nobody is queued and the balance is >= 0."""
        if self._waiters or self._available < 0:
            return False
        self._available -= nbytes
        return True

    async def acquire(self, nbytes: int) -> None:
        if self.try_acquire(nbytes):
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (fut, nbytes)
        self._waiters.append(entry)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                # Granted and cancelled in the same tick: hand the bytes back.
                self.release(nbytes)
            else:
                self._remove(entry)
                self._wake()
            raise

    def release(self, nbytes: int) -> None:
        self._available += nbytes
        self._wake()

    def _remove(self, entry: tuple[asyncio.Future[None], int]) -> None:
        try:
            self._waiters.remove(entry)
        except ValueError:
            pass

    def _wake(self) -> None:
        waiters = self._waiters
        while waiters and self._available >= 0:
            fut, nbytes = waiters.popleft()
            if fut.done():
                continue
            self._available -= nbytes
            fut.set_result(None)


class Slots:
    """A FIFO counting semaphore with a synchronous fast path (``try_acquire``).

    ``asyncio.Semaphore.acquire`` is a coroutine even when a slot is free; on the sampling
    hot path (two or three of them per call) a plain method call does the common case.
    """

    __slots__ = ("_free", "_waiters")

    def __init__(self, n: int) -> None:
        if n <= 0:
            raise ValueError(f"slot count must be positive, got {n}")
        self._free = n
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def free(self) -> int:
        return self._free

    def locked(self) -> bool:
        return self._free <= 0 or bool(self._waiters)

    def try_acquire(self) -> bool:
        """Take a slot now if one is free and nobody is queued."""
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        return False

    async def acquire(self) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.release()  # granted and cancelled in the same tick: hand it back
            else:
                try:
                    self._waiters.remove(fut)
                except ValueError:
                    pass
            raise

    def release(self) -> None:
        self._free += 1
        waiters = self._waiters
        while waiters and self._free > 0:
            fut = waiters.popleft()
            if fut.done():
                continue
            self._free -= 1
            fut.set_result(None)


class DispatchBackoff:
    """The session-wide pause after an asample 429, and the throttled window that follows it."""

    __slots__ = ("_clock", "until")

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self.until: float | None = None

    def request(self, seconds: float) -> None:
        """Pause dispatch for ``seconds`` from now (never shortens a longer pause in force)."""
        until = self._clock() + seconds
        if self.until is None or until > self.until:
            self.until = until

    def remaining(self) -> float:
        """Seconds left in the current pause (0 when none)."""
        if self.until is None:
            return 0.0
        return max(0.0, self.until - self._clock())

    def throttled(self) -> bool:
        """True during a pause and for THROTTLE_WINDOW_S after it ends."""
        return self.until is not None and self._clock() - self.until < THROTTLE_WINDOW_S


# A ticket records what an admission took, so the release gives back exactly that.
Ticket = tuple[int, bool]


class SamplingAdmission:
    """Count, throttled-count and byte budgets entered around every asample POST."""

    __slots__ = ("backoff", "bytes", "concurrency", "throttled_concurrency")

    def __init__(
        self,
        dispatch_bytes: int = DEFAULT_DISPATCH_BYTES,
        *,
        concurrency: int = DISPATCH_CONCURRENCY,
        throttled_concurrency: int = THROTTLED_CONCURRENCY,
        clock: Clock = time.monotonic,
    ) -> None:
        self.concurrency = Slots(concurrency)
        self.throttled_concurrency = Slots(throttled_concurrency)
        self.bytes = BytesBudget(dispatch_bytes)
        self.backoff = DispatchBackoff(clock)

    def try_acquire(self, estimated_bytes: int) -> Ticket | None:
        """The common case without awaiting: a free slot, no throttling, bytes available
        (nobody queued anywhere); None when ``acquire`` has to wait."""
        if self.backoff.until is not None and self.backoff.throttled():
            return None
        bb = self.bytes
        if bb._waiters or bb._available < 0 or not self.concurrency.try_acquire():
            return None
        bb._available -= estimated_bytes
        return (estimated_bytes, False)

    async def acquire(self, estimated_bytes: int) -> Ticket:
        """Wait for a dispatch slot; returns the ticket to pass to ``release``."""
        await self.concurrency.acquire()
        throttled = False
        try:
            if self.backoff.throttled():
                await self.throttled_concurrency.acquire()
                throttled = True
                estimated_bytes *= THROTTLED_BYTES_FACTOR
            await self.bytes.acquire(estimated_bytes)
        except BaseException:
            if throttled:
                self.throttled_concurrency.release()
            self.concurrency.release()
            raise
        return (estimated_bytes, throttled)

    def release(self, ticket: Ticket) -> None:
        nbytes, throttled = ticket
        self.bytes.release(nbytes)
        if throttled:
            self.throttled_concurrency.release()
        self.concurrency.release()
