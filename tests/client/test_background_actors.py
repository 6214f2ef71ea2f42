"""Heartbeat, telemetry and dynamic-config actors against a scripted server.

Time is injected: a fake sleep advances a fake clock (or parks until the test releases it),
so no test waits on wall time; ``m.wait_for`` only guards against hangs.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from tinker_actors import types
from tinker_actors.actors.actor import ActorState
from tinker_actors.actors.session import DynamicConfigActor, HeartbeatActor, Session
from tinker_actors.actors.telemetry import MAX_BATCH, TelemetryActor
from tinker_actors.config import Settings
from tinker_actors.runtime import loop_runtime
from tinker_actors.transport import Transport

from .scripted import ScriptedServer

HB = "/api/v1/session_heartbeat"
TEL = "/api/v1/telemetry"
DYN = "/api/v1/client/dynamic_config"


def transport(m: ScriptedServer) -> Transport:
    return Transport(loop_runtime(), Settings(base_url=m.base, api_key="tml-x"))


class FakeTime:
    """``sleep`` advances ``now``; with ``park_after`` it parks forever after that many calls."""

    def __init__(self, park_after: int | None = None) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self.park_after = park_after
        self.parked = asyncio.Event()

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self.park_after is not None and len(self.sleeps) > self.park_after:
            self.parked.set()
            await asyncio.Event().wait()
        self.now += seconds
        await asyncio.sleep(0)


class Gate:
    """A sleep that waits until the test opens it (one tick per ``tick()``)."""

    def __init__(self) -> None:
        self.calls: list[float] = []
        self._waiters: list[asyncio.Future[None]] = []
        self.entered = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        self.entered.set()
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        await fut

    def tick(self) -> None:
        waiters, self._waiters = self._waiters, []
        for f in waiters:
            if not f.done():
                f.set_result(None)


# ---------------------------------------------------------------------------- heartbeat
async def test_heartbeat_every_10s_warns_after_120s_of_failures_and_stops_on_410(
    caplog: Any,
) -> None:
    ft = FakeTime()
    async with ScriptedServer() as m:
        for _ in range(2):
            m.post(HB, payload={"type": "session_heartbeat"})
        for _ in range(15):
            m.post(HB, status=500, payload={"detail": "down"})
        m.post(HB, status=410, payload={"detail": "session finished"})
        hb = HeartbeatActor(transport(m), "sess-1", clock=ft.clock, sleep=ft.sleep)
        with caplog.at_level(logging.WARNING, logger="tinker_actors"):
            await hb.start()
            await asyncio.wait_for(asyncio.shield(hb._task), 10)  # ends by itself on 410
        seen = m.seen(HB)
    assert hb.state is ActorState.STOPPED
    assert ft.sleeps == [10.0] * 18
    assert len(seen) == 18
    assert all(r.json() == {"session_id": "sess-1", "type": "session_heartbeat"} for r in seen)
    assert all("x-sdk-method" not in r.headers for r in seen)  # background traffic
    # failures from t=30 s; more than 120 s of them at t=160 and t=170
    assert hb.beats == 2 and hb.warnings == 2
    warned = [r for r in caplog.records if "heartbeats have been failing" in r.getMessage()]
    assert len(warned) == 2


# ---------------------------------------------------------------------------- telemetry
async def test_telemetry_batches_of_at_most_100_on_the_10s_tick() -> None:
    gate = Gate()
    async with ScriptedServer() as m:
        m.default("POST", TEL, payload={"status": "accepted"})
        actor = TelemetryActor(transport(m), "sess-1", sleep=gate)
        await actor.start()
        for i in range(250):
            actor.log_generic("step", {"i": i})
        await asyncio.wait_for(gate.entered.wait(), 5)  # the actor waits for its tick
        assert gate.calls == [10.0] and m.seen(TEL) == []  # nothing before the tick
        gate.tick()
        seen = await m.wait_for(TEL, 3)
        await actor.stop()
    batches = [r.json() for r in seen[:3]]
    sizes = [len(b["events"]) for b in batches]
    assert sizes == [MAX_BATCH, MAX_BATCH, 51]  # SESSION_START + 250 generic events
    first = batches[0]
    assert first["session_id"] == "sess-1" and first["sdk_version"] == "0.38.0"
    assert first["events"][0]["event"] == "SESSION_START"
    indices = [e["event_session_index"] for b in batches for e in b["events"]]
    assert indices == list(range(251))


async def test_telemetry_flushes_at_once_on_an_exception_and_sends_session_end() -> None:
    gate = Gate()
    async with ScriptedServer() as m:
        m.default("POST", TEL, payload={"status": "accepted"})
        actor = TelemetryActor(transport(m), "sess-1", sleep=gate)
        await actor.start()
        try:
            raise ValueError("boom")
        except ValueError as exc:
            actor.log_exception_sync(exc)
        seen = await m.wait_for(TEL, 1)  # the 10 s tick never came
        events = seen[0].json()["events"]
        assert [e["event"] for e in events] == ["SESSION_START", "UNHANDLED_EXCEPTION"]
        assert events[1]["error_type"] == "ValueError" and "boom" in events[1]["traceback"]
        await actor.stop()
        end = m.seen(TEL)[-1].json()["events"]
    assert [e["event"] for e in end] == ["SESSION_END"]
    assert end[0]["duration"].count(":") == 2  # str(timedelta), e.g. 0:00:00.012


@pytest.mark.parametrize(("env", "on"), [("0", False), ("false", False), ("1", True), ("on", True)])
def test_telemetry_env_switch(monkeypatch: pytest.MonkeyPatch, env: str, on: bool) -> None:
    monkeypatch.setenv("TINKER_TELEMETRY", env)
    assert Settings.from_env(base_url="http://x", api_key="tml-x").telemetry_enabled is on


@pytest.mark.parametrize("enabled", ["1", "0"])
async def test_session_sends_telemetry_only_when_enabled(
    local_server: Any, proxy: Any, monkeypatch: pytest.MonkeyPatch, enabled: str
) -> None:
    import tinker_actors as tinker

    monkeypatch.setenv("TINKER_TELEMETRY", enabled)
    sc = tinker.ServiceClient(base_url=proxy.base_url, api_key=local_server.api_key)
    with pytest.warns(FutureWarning, match="create_sampling_client_async"):
        await sc.create_sampling_client_async(base_model="tinker-actors/byte-1m")
    await sc.aclose()
    paths = [p for p, _, _ in proxy.log]
    assert ("/api/v1/telemetry" in paths) is (enabled == "1")
    # session start-up is background traffic: no x-sdk-method on it
    start = [m for p, m, _ in proxy.log if p in ("/api/v1/client/config", "/api/v1/create_session")]
    assert start == [None, None]


# ---------------------------------------------------------------------------- dynamic config
async def test_dynamic_config_refresh_every_max_interval_10s() -> None:
    ft = FakeTime(park_after=3)
    async with ScriptedServer() as m:
        m.post(DYN, payload={"refresh_interval_sec": 3, "sample_cancel_enabled": True})
        m.post(DYN, status=500, payload={"detail": "flaky"})  # keeps the config in force
        m.post(DYN, payload={"refresh_interval_sec": 60, "sample_cancel_max_batch_size": 8})
        session = Session(Settings(base_url=m.base, api_key="tml-x"), runtime=loop_runtime())
        await session.ensure_transport()
        actor = DynamicConfigActor(session, sleep=ft.sleep)
        await actor.start()
        await m.wait_for(DYN, 3)
        await asyncio.wait_for(ft.parked.wait(), 5)  # it applied the last reply, then slept
        await actor.stop()
        await session.runtime.release()
    # default 300 s, then max(3, 10) twice (the failure kept it), then the new 60 s
    assert ft.sleeps == [300.0, 10.0, 10.0, 60.0]
    assert session.dynamic_config == types.ClientDynamicConfigResponse(
        refresh_interval_sec=60, sample_cancel_max_batch_size=8
    )
    assert actor.refreshes == 2 and actor.failures == 1
