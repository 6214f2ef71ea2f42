"""Admission budgets and backoff decisions: an injected clock, no sleeps."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import TypeVar

import pytest

from tinker_actors.actors.admission import (
    THROTTLED_BYTES_FACTOR,
    BytesBudget,
    DispatchBackoff,
    SamplingAdmission,
    backoff_seconds,
    estimate_model_input_bytes,
)

T = TypeVar("T")


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def _settle() -> None:
    """A few loop turns: long enough for a waiter that could proceed to do so."""
    for _ in range(5):
        await asyncio.sleep(0)


async def _admitted(fut: asyncio.Future[T]) -> T:
    """Waits for an admission that must now go through (fails instead of hanging)."""
    return await asyncio.wait_for(fut, timeout=5)


def test_estimate_counts_ten_bytes_per_token_and_raw_bytes():
    prompt = SimpleNamespace(
        chunks=[
            SimpleNamespace(tokens=[1, 2, 3]),
            SimpleNamespace(location="gs://bucket/img.png"),
            SimpleNamespace(data=b"\x00" * 7, format="png"),
            SimpleNamespace(dmel=b"\x01" * 5),
        ]
    )
    assert estimate_model_input_bytes(prompt) == 30 + len("gs://bucket/img.png") + 7 + 5


def test_backoff_seconds_by_size():
    assert backoff_seconds(10) == 1.0
    assert backoff_seconds(128 * 1024) == 1.0
    assert backoff_seconds(128 * 1024 + 1) == 5.0


def test_backoff_window_and_throttle_window():
    clock = FakeClock()
    backoff = DispatchBackoff(clock)
    assert not backoff.throttled() and backoff.remaining() == 0.0
    backoff.request(5.0)
    assert backoff.remaining() == 5.0 and backoff.throttled()
    backoff.request(1.0)  # never shortens a longer pause
    assert backoff.remaining() == 5.0
    clock.now += 5.0
    assert backoff.remaining() == 0.0 and backoff.throttled()
    clock.now += 9.9
    assert backoff.throttled()
    clock.now += 0.2
    assert not backoff.throttled()


async def test_bytes_budget_admits_while_nonnegative_and_overshoots():
    budget = BytesBudget(100)
    assert budget.try_acquire(150)  # an oversized request runs alone instead of deadlocking
    assert budget.available == -50
    waiter = asyncio.ensure_future(budget.acquire(10))
    await _settle()
    assert not waiter.done() and budget.waiting == 1
    budget.release(150)
    await _admitted(waiter)
    assert budget.available == 90


async def test_bytes_budget_is_fifo_and_skips_cancelled_waiters():
    budget = BytesBudget(10)
    assert budget.try_acquire(11)
    order: list[str] = []

    async def take(name: str, n: int) -> None:
        await budget.acquire(n)
        order.append(name)

    a = asyncio.ensure_future(take("a", 5))
    b = asyncio.ensure_future(take("b", 5))
    c = asyncio.ensure_future(take("c", 5))
    await _settle()
    b.cancel()
    await _settle()
    assert budget.waiting == 2
    budget.release(11)
    await _admitted(asyncio.gather(a, c))
    assert order == ["a", "c"]
    assert budget.available == 0
    budget.release(10)
    assert budget.available == 10
    assert b.cancelled()
    await asyncio.gather(a, c)


async def test_bytes_budget_a_later_small_request_waits_behind_the_queue():
    budget = BytesBudget(10)
    assert budget.try_acquire(11)
    first = asyncio.ensure_future(budget.acquire(100))
    await _settle()
    budget.release(11)
    await _admitted(first)
    assert budget.available == -90
    # Negative balance: nobody gets in until the big one releases.
    assert not budget.try_acquire(1)
    budget.release(100)
    assert budget.try_acquire(1)


async def test_count_budget_caps_concurrent_dispatches():
    admission = SamplingAdmission(10**9, concurrency=3, clock=FakeClock())
    tickets = [await admission.acquire(1) for _ in range(3)]
    blocked = asyncio.ensure_future(admission.acquire(1))
    await _settle()
    assert not blocked.done()
    admission.release(tickets.pop())
    tickets.append(await _admitted(blocked))
    for t in tickets:
        admission.release(t)
    assert admission.bytes.available == 10**9


async def test_throttled_admission_after_backoff_multiplies_bytes_and_caps_count():
    clock = FakeClock()
    admission = SamplingAdmission(1000, concurrency=400, throttled_concurrency=2, clock=clock)
    admission.backoff.request(1.0)
    t1 = await admission.acquire(10)
    assert t1 == (10 * THROTTLED_BYTES_FACTOR, True)
    t2 = await admission.acquire(10)
    blocked = asyncio.ensure_future(admission.acquire(10))
    await _settle()
    assert not blocked.done()  # throttled concurrency of 2 is full
    admission.release(t1)
    t3 = await _admitted(blocked)
    for t in (t2, t3):
        admission.release(t)
    assert admission.bytes.available == 1000
    # After the 10 s window the normal limits apply again.
    clock.now += 1.0 + 10.0
    assert await admission.acquire(10) == (10, False)


async def test_cancelled_admission_returns_everything():
    admission = SamplingAdmission(100, concurrency=5, clock=FakeClock())
    big = await admission.acquire(200)
    waiter = asyncio.ensure_future(admission.acquire(10))
    await _settle()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    admission.release(big)
    assert admission.bytes.available == 100
    # All five count slots are free again.
    tickets = [await admission.acquire(1) for _ in range(5)]
    for t in tickets:
        admission.release(t)
