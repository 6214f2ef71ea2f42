"""RetryPolicy, the one retry policy: tenacity stop and wait strategies on an injected clock,
sleep and random source (no real time passes), and the loops that use it: the transport, the
``retrieve_future`` poll's back-offs, ``RetryHandler`` and the sampling retries."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from typing import Any

import pytest
from tenacity import retry_if_exception_type

from tinker_actors import errors, futures
from tinker_actors.compat import RetryableException, RetryHandler
from tinker_actors.config import RetryConfig, Settings
from tinker_actors.futures import POLL_5XX, POLL_BACKOFF, poll_future
from tinker_actors.runtime import loop_runtime
from tinker_actors.transport import (
    NO_RETRY,
    STANDARD,
    TRAINING,
    JwtAuth,
    RetryPolicy,
    Transport,
    _Billing,
    _Retry,
    resume,
)

from .scripted import ScriptedServer, VirtualTime


class Flaky:
    """Fails with the given exceptions in turn, then returns ``"ok"``."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


def err(status: int = 503) -> _Retry:
    return _Retry(errors.status_error_for(status, body={"detail": "x"}))


async def run(policy: RetryPolicy, fn: Flaky, vt: VirtualTime, rand: Any = lambda: 0.0) -> Any:
    """What every user of the policy does: a controller-less first attempt, then ``resume``."""
    start = vt.clock()
    try:
        return await fn()
    except _Retry as exc:
        first = exc
    controller = policy.controller(
        retry=retry_if_exception_type(_Retry),
        clock=vt.clock,
        start=start,
        sleep=vt.sleep,
        rand=rand,
    )
    return await resume(controller, fn, first)


# ------------------------------------------------------------------ waits
def test_backoff_doubles_from_base_and_is_capped() -> None:
    p = RetryPolicy(base_delay=0.5, max_delay=4.0, jitter=0.0)
    assert [p.delay(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert p.delay(100_000) == 4.0  # no overflow


def test_downward_jitter_stays_within_its_bounds() -> None:
    p = RetryPolicy(base_delay=1.0, max_delay=30.0, jitter=0.25)
    assert p.delay(3, rand=lambda: 0.0) == 4.0
    assert p.delay(3, rand=lambda: 0.999999) == pytest.approx(3.0, rel=1e-5)
    for r in (0.0, 0.1, 0.5, 0.9, 0.999):
        assert 3.0 <= p.delay(3, rand=lambda r=r: r) <= 4.0


def test_symmetric_jitter_is_both_ways_and_clamped_to_the_cap() -> None:
    p = RetryPolicy(base_delay=1.0, max_delay=10.0, jitter=0.25, symmetric_jitter=True)
    assert p.delay(2, rand=lambda: 0.0) == pytest.approx(1.5)
    assert p.delay(2, rand=lambda: 0.5) == 2.0
    assert p.delay(2, rand=lambda: 0.999999) == pytest.approx(2.5, rel=1e-5)
    assert p.delay(5, rand=lambda: 0.999999) == 10.0  # 8 + 25 % is cut to the cap


def test_retry_after_wins_over_the_backoff_and_is_not_jittered() -> None:
    p = RetryPolicy(base_delay=0.5, max_delay=2.0, jitter=0.25)
    assert p.delay(1, 7.0, rand=lambda: 0.9) == 7.0


def test_immediate_first_goes_at_once_then_backs_off() -> None:
    p = RetryPolicy(base_delay=0.25, max_delay=1.0, jitter=0.0, immediate_first=True)
    assert [p.delay(n) for n in range(1, 6)] == [0.0, 0.25, 0.5, 1.0, 1.0]


def test_the_official_retry_config_maps_onto_a_policy() -> None:
    cfg = RetryConfig(retry_delay_base=0.5, retry_delay_max=10.0, jitter_factor=0.25)
    p = RetryPolicy.from_retry_config(cfg)
    assert p.max_attempts is None and p.max_total == math.inf and p.billing_pause is None
    assert (p.base_delay, p.max_delay, p.jitter, p.symmetric_jitter) == (0.5, 10.0, 0.25, True)
    assert [p.delay(n, rand=lambda: 0.5) for n in range(1, 7)] == [0.5, 1, 2, 4, 8, 10]
    assert RetryPolicy.from_retry_config(RetryConfig(enable_retry_logic=False)).max_attempts == 1


# ------------------------------------------------------------------ the controller
async def test_retry_after_is_honoured_by_the_controller() -> None:
    vt = VirtualTime(100.0)
    e = err(429)
    e.delay = 7.0
    fn = Flaky(e, err(503))
    assert await run(RetryPolicy(base_delay=0.5, jitter=0.0), fn, vt) == "ok"
    assert vt.sleeps == [7.0, 1.0]  # the hint, then the back-off of the second retry


async def test_attempt_budget_counts_the_controller_less_first_attempt() -> None:
    vt = VirtualTime(100.0)
    fn = Flaky(*(err() for _ in range(5)))
    with pytest.raises(_Retry):
        await run(RetryPolicy(max_attempts=3, base_delay=1.0, jitter=0.0), fn, vt)
    assert fn.calls == 3 and vt.sleeps == [1.0, 2.0]


async def test_time_budget_stops_on_the_injected_clock_and_cuts_the_last_wait() -> None:
    vt = VirtualTime(100.0)
    fn = Flaky(*(err() for _ in range(100)))
    policy = RetryPolicy(max_attempts=None, max_total=10.0, base_delay=1.0, jitter=0.0)
    with pytest.raises(_Retry):
        await run(policy, fn, vt)
    assert vt.sleeps == [1.0, 2.0, 4.0, 3.0]  # 1+2+4 = 7: the last wait ends at 10 s
    assert fn.calls == 5


async def test_a_billing_pause_is_neither_stopped_nor_cut_by_the_budgets() -> None:
    vt = VirtualTime(100.0)
    billing = [_Billing(errors.status_error_for(402, body={}), 5.0) for _ in range(4)]
    fn = Flaky(*billing)
    policy = RetryPolicy(max_attempts=2, max_total=6.0, base_delay=1.0, jitter=0.0)
    assert await run(policy, fn, vt) == "ok"
    assert vt.sleeps == [5.0] * 4


async def test_cancellation_is_never_retried() -> None:
    vt = VirtualTime(100.0)
    fn = Flaky(err(), asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        await run(STANDARD, fn, vt)
    assert fn.calls == 2 and len(vt.sleeps) == 1


# ------------------------------------------------------------------ the transport
async def test_a_first_time_success_builds_no_controller(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[RetryPolicy] = []
    real = RetryPolicy.controller

    def spy(self: RetryPolicy, **kw: Any) -> Any:
        built.append(self)
        return real(self, **kw)

    monkeypatch.setattr(RetryPolicy, "controller", spy)
    vt = VirtualTime(100.0)
    async with ScriptedServer() as m:
        m.post("/api/v1/x", payload={"ok": 1})
        m.post("/api/v1/x", status=503)
        m.post("/api/v1/x", payload={"ok": 2})
        t = Transport(
            loop_runtime(),
            Settings(base_url=m.base, api_key="tml-x"),
            sleep=vt.sleep,
            clock=vt.clock,
        )
        assert (await t.request("POST", "/api/v1/x", json={})).json() == {"ok": 1}
        assert built == []
        assert (await t.request("POST", "/api/v1/x", json={}, retry=TRAINING)).json() == {"ok": 2}
        assert built == [TRAINING]
        counts = [r.headers["x-stainless-retry-count"] for r in m.requests]
    assert counts == ["0", "0", "1"]
    assert len(vt.sleeps) == 1 and 0 < vt.sleeps[0] <= TRAINING.base_delay


async def test_no_retry_gives_up_after_one_attempt_without_a_note() -> None:
    vt = VirtualTime(100.0)
    async with ScriptedServer() as m:
        m.post("/api/v1/x", status=503)
        t = Transport(
            loop_runtime(),
            Settings(base_url=m.base, api_key="tml-x"),
            sleep=vt.sleep,
            clock=vt.clock,
        )
        with pytest.raises(errors.InternalServerError) as ei:
            await t.request("POST", "/api/v1/x", json={}, retry=NO_RETRY)
    assert ei.value.retry_attempts == 1  # type: ignore[attr-defined]
    assert not getattr(ei.value, "__notes__", None) and vt.sleeps == []


# ------------------------------------------------------------------ the poll loop
P = "/api/v1/retrieve_future"


async def _poll(m: ScriptedServer) -> tuple[Any, list[float]]:
    sleeps: list[float] = []

    async def sleep(d: float) -> None:
        sleeps.append(d)

    t = Transport(loop_runtime(), Settings(base_url=m.base, api_key="tml-x"))
    res = await poll_future(t, "req-1", "OptimStep", lambda r: r.json(), sleep=sleep)
    return res, sleeps


def test_the_poll_back_offs_are_policies() -> None:
    assert [POLL_5XX.delay(n) for n in range(1, 9)] == [0, 0.25, 0.5, 1, 2, 4, 8, 10]
    assert [POLL_BACKOFF.delay(n) for n in range(1, 7)] == [1, 2, 4, 8, 16, 30]
    assert POLL_BACKOFF.delay(2, 3.0) == 3.0


async def test_the_poll_loop_waits_as_its_policies_say(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        futures, "POLL_5XX", dataclasses.replace(POLL_5XX, base_delay=3.0, max_delay=5.0)
    )
    monkeypatch.setattr(
        futures, "POLL_BACKOFF", dataclasses.replace(POLL_BACKOFF, base_delay=0.1, max_delay=0.3)
    )
    async with ScriptedServer() as m:
        for _ in range(4):
            m.post(P, status=503)
        for _ in range(3):
            m.post(P, status=429)
        m.post(P, status=429, headers={"Retry-After": "2"})
        m.post(P, payload={"ok": True})
        res, sleeps = await _poll(m)
    assert res == {"ok": True}
    assert sleeps == [3.0, 5.0, 5.0, 0.1, 0.2, 0.3, 2.0]


# ------------------------------------------------------------------ RetryHandler
async def test_retry_handler_runs_its_policy_on_the_injected_sleep() -> None:
    vt = VirtualTime(100.0)
    cfg = RetryConfig(retry_delay_base=0.5, retry_delay_max=2.0)
    handler: RetryHandler[str] = RetryHandler(cfg, sleep=vt.sleep, clock=vt.clock, rand=lambda: 0.0)
    assert handler.policy == RetryPolicy.from_retry_config(cfg)
    fn = Flaky(*(RetryableException("again") for _ in range(4)))
    assert await handler.execute(fn) == "ok"
    assert vt.sleeps == [handler.policy.delay(n, rand=lambda: 0.0) for n in range(1, 5)]
    assert vt.sleeps == [0.375, 0.75, 1.5, 1.5]  # -25 % jitter, capped at 2 s
    assert handler.retry_count == 4 and handler.processed_count == 1


async def test_retry_handler_gives_up_when_its_policy_says() -> None:
    vt = VirtualTime(100.0)
    handler: RetryHandler[str] = RetryHandler(sleep=vt.sleep, clock=vt.clock)
    handler.policy = dataclasses.replace(handler.policy, max_attempts=2)
    fn = Flaky(*(RetryableException(str(n)) for n in range(5)))
    with pytest.raises(RetryableException, match="1"):
        await handler.execute(fn)
    assert fn.calls == 2 and len(vt.sleeps) == 1


async def test_retry_handler_does_not_retry_a_cancellation() -> None:
    vt = VirtualTime(100.0)
    handler: RetryHandler[str] = RetryHandler(
        RetryConfig(retryable_exceptions=(BaseException,), enable_stuck_detection=False),
        sleep=vt.sleep,
        clock=vt.clock,
    )
    fn = Flaky(RetryableException("x"), asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        await handler.execute(fn)
    assert fn.calls == 2


# ------------------------------------------------------------------ cancellation
async def test_jwt_aclose_does_not_swallow_the_callers_cancellation() -> None:
    gate = asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await gate.wait()
            raise

    jwt = JwtAuth(None, None)  # type: ignore[arg-type]
    jwt._task = background = asyncio.ensure_future(slow_to_stop())
    await asyncio.sleep(0)
    closer = asyncio.ensure_future(jwt.aclose())
    await asyncio.sleep(0)
    closer.cancel()
    await asyncio.wait({closer}, timeout=5.0)
    # before the fix, the closer waited out the refresh task and then returned normally
    assert closer.cancelled()
    gate.set()
    await asyncio.wait({background})
    assert background.cancelled()
