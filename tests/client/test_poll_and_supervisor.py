"""The retrieve_future loop (protocol.md 3.3) and the supervisor's restart window."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tinker_actors import errors
from tinker_actors.actors.actor import Actor, ActorState
from tinker_actors.actors.supervisor import (
    ChildSpec,
    RestartLimitExceeded,
    RestartWindow,
    Supervisor,
)
from tinker_actors.config import Restart, RestartPolicy, Settings
from tinker_actors.futures import QueueState, QueueStateLogger, poll_future
from tinker_actors.runtime import loop_runtime
from tinker_actors.transport import Response, Transport

from .scripted import ScriptedServer

P = "/api/v1/retrieve_future"


class Observer:
    def __init__(self) -> None:
        self.states: list[QueueState] = []

    def on_queue_state_change(self, state: QueueState, reason: str | None) -> None:
        self.states.append(state)


async def poll(m: ScriptedServer, rtype: str = "OptimStep", **kw: Any) -> Any:
    sleeps: list[float] = []

    async def sleep(d: float) -> None:
        sleeps.append(d)

    t = Transport(loop_runtime(), Settings(base_url=m.base, api_key="tml-x"))
    res = await poll_future(t, "req-1", rtype, lambda r: r.json(), sleep=sleep, **kw)
    return res, sleeps


async def test_try_again_and_408_repoll_at_once_and_notify() -> None:
    obs = Observer()
    async with ScriptedServer() as m:
        m.post(
            P,
            payload={"type": "try_again", "request_id": "req-1", "queue_state": "paused_capacity"},
        )
        m.post(
            P,
            status=408,
            payload={"type": "try_again", "request_id": "req-1", "queue_state": "active"},
        )
        m.post(P, payload={"metrics": {"a:sum": 1.0}})
        res, sleeps = await poll(m, observer=obs)
        iters = [r.headers["X-Tinker-Request-Iteration"] for r in m.requests]
        rtype = m.requests[0].headers["X-Tinker-Request-Type"]
    assert res == {"metrics": {"a:sum": 1.0}}
    assert sleeps == []
    assert iters == ["0", "1", "2"]
    assert rtype == "OptimStep"
    assert obs.states == [QueueState.PAUSED_CAPACITY, QueueState.ACTIVE, QueueState.ACTIVE]


async def test_5xx_repolls_immediately_and_429_backs_off() -> None:
    async with ScriptedServer() as m:
        m.post(P, status=502)
        m.post(P, status=429)
        m.post(P, status=429)
        m.post(P, payload={"ok": True})
        res, sleeps = await poll(m)
    assert res == {"ok": True}
    assert sleeps == [1, 2]


async def test_a_run_of_5xx_backs_off_capped_and_429_honours_retry_after() -> None:
    async with ScriptedServer() as m:
        for _ in range(8):
            m.post(P, status=503)
        m.post(P, status=429, headers={"Retry-After": "3"})
        m.post(P, payload={"ok": True})
        res, sleeps = await poll(m)
    assert res == {"ok": True}
    # the first 503 re-polls at once; then 0.25 s doubling, capped at 10 s; then Retry-After
    assert sleeps == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 3.0]


async def test_410_is_promise_expired() -> None:
    async with ScriptedServer() as m:
        m.post(P, status=410)
        with pytest.raises(errors.PromiseExpiredError):
            await poll(m)


async def test_error_body_is_request_failed() -> None:
    async with ScriptedServer() as m:
        m.post(P, payload={"error": "bad loss", "category": "user"})
        with pytest.raises(errors.RequestFailedError) as ei:
            await poll(m)
    assert ei.value.category == "user"
    assert ei.value.request_id == "req-1"


async def test_complete_metadata_then_full_fetch() -> None:
    reserved: list[int] = []

    async def reserve(n: int) -> None:
        reserved.append(n)

    async with ScriptedServer() as m:
        m.post(P, payload={"status": "complete_metadata", "response_payload_size": 1234})
        m.post(P, payload={"done": 1})
        res, _ = await poll(m, reserve_bytes=reserve)
        bodies = [r.body for r in m.requests]
    assert res == {"done": 1}
    assert reserved == [1234]
    assert b'"allow_metadata_only":true' in bodies[0]
    assert b'"allow_metadata_only":false' in bodies[1]


async def test_fatal_4xx_and_bad_request_budget() -> None:
    async with ScriptedServer() as m:
        for _ in range(4):
            m.post(P, status=400)
        with pytest.raises(ValueError, match="status 400"):
            await poll(m)
        assert len(m.requests) == 4
    async with ScriptedServer() as m:
        m.post(P, status=404)
        with pytest.raises(ValueError, match="status 404"):
            await poll(m)


async def test_json_success_rejected_for_proto_types() -> None:
    async with ScriptedServer() as m:
        m.post(P, payload={"loss_fn_outputs": []})
        with pytest.raises(ValueError, match="proto"):
            await poll(m, rtype="ForwardBackward")


def test_queue_state_logger_grace_and_debounce(caplog: Any) -> None:
    now = [0.0]
    q = QueueStateLogger("model-1", "Training", clock=lambda: now[0])
    with caplog.at_level("WARNING", logger="tinker_actors"):
        q.on_queue_state_change(QueueState.PAUSED_RATE_LIMIT, None)
        now[0] = 14 * 60
        q.on_queue_state_change(QueueState.PAUSED_RATE_LIMIT, None)
        now[0] = 15 * 60 + 1
        q.on_queue_state_change(QueueState.PAUSED_RATE_LIMIT, None)
        now[0] += 30
        q.on_queue_state_change(QueueState.PAUSED_RATE_LIMIT, None)
        now[0] += 31
        q.on_queue_state_change(QueueState.PAUSED_RATE_LIMIT, None)
    msgs = [r.getMessage() for r in caplog.records if r.name == "tinker_actors.futures"]
    assert (
        msgs
        == [
            "Training for model-1 is paused. Reason: concurrent training clients rate limit hit.",
        ]
        * 2
    )


# ------------------------------------------------------------------------ supervisor
def test_restart_window_slides_with_the_clock() -> None:
    now = [0.0]
    w = RestartWindow(intensity=2, period=10.0, clock=lambda: now[0])
    assert w.allow() and w.allow()
    assert not w.allow()
    now[0] = 100.0
    assert w.allow()


class Crashy(Actor):

    async def main(self) -> None:
        await asyncio.Event().wait()


async def test_supervisor_restarts_then_gives_up_with_clear_error() -> None:
    now = [0.0]
    sup = Supervisor(RestartPolicy(intensity=2, period=60.0), clock=lambda: now[0])
    started: list[Actor] = []
    given_up: list[BaseException] = []
    gave_up = asyncio.Event()
    restarted = asyncio.Event()

    def on_give_up(exc: BaseException) -> None:
        given_up.append(exc)
        gave_up.set()

    async def start(prev: Actor | None) -> Actor:
        a = Crashy()
        await a.start()
        started.append(a)
        restarted.set()
        return a

    await sup.start_child(ChildSpec("c", start, Restart.TRANSIENT, on_give_up=on_give_up))
    for expected in (2, 3):
        restarted.clear()
        started[-1].kill()
        await asyncio.wait_for(restarted.wait(), 5)
        assert len(started) == expected
        assert started[-2].state is ActorState.CRASHED
    # third crash inside the period: intensity 2 exceeded
    started[-1].kill()
    await asyncio.wait_for(gave_up.wait(), 5)
    assert len(given_up) == 1 and isinstance(given_up[0], RestartLimitExceeded)
    assert sup.failed is given_up[0]
    assert len(started) == 3
    await sup.stop()


async def test_crashes_outside_the_period_keep_restarting() -> None:
    now = [0.0]
    sup = Supervisor(RestartPolicy(intensity=1, period=10.0), clock=lambda: now[0])
    started: list[Actor] = []
    restarted = asyncio.Event()

    async def start(prev: Actor | None) -> Actor:
        a = Crashy()
        await a.start()
        started.append(a)
        restarted.set()
        return a

    await sup.start_child(ChildSpec("c", start, Restart.PERMANENT))
    for i in range(3):
        now[0] += 11.0
        restarted.clear()
        started[-1].kill()
        await asyncio.wait_for(restarted.wait(), 5)
        assert len(started) == i + 2
    assert sup.failed is None
    await sup.stop()


async def test_normal_exit_of_transient_child_is_not_restarted() -> None:
    sup = Supervisor()
    started: list[Actor] = []

    async def start(prev: Actor | None) -> Actor:
        a = Crashy()
        await a.start()
        started.append(a)
        return a

    await sup.start_child(ChildSpec("c", start, Restart.TRANSIENT))
    await started[0].stop()
    assert started[0].state is ActorState.STOPPED
    assert sup.child("c") is None and len(started) == 1


def test_response_helpers() -> None:
    r = Response(200, {}, b'{"a":1}', "application/json")
    assert r.json() == {"a": 1} and not r.is_proto
