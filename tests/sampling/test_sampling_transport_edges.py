"""Transport edge cases a real server can't produce on demand.

A scripted aiohttp.web server on port 0 answers each route from a queue of canned replies
(aioresponses 0.7.9 cannot build responses for aiohttp 3.14, so it is not used here).
Sleeps are injected: the fake sleep advances a fake clock, so backoffs cost no wall time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import pytest
from aiohttp import web

from tinker_actors import codec, errors, types
from tinker_actors.actors.sampling import admission_for
from tinker_actors.actors.session import Session
from tinker_actors.clients.sampling import SamplingClient
from tinker_actors.config import RetryConfig, Settings
from tinker_actors.runtime import loop_runtime

ASAMPLE = "/api/v1/asample"
RETRIEVE = "/api/v1/retrieve_future"
CANCEL = "/api/v1/cancel_future"
PROMPT = types.ModelInput.from_ints([1, 2, 3])
PARAMS = types.SamplingParams(max_tokens=2)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def proto_result(tokens: list[int] = [7, 8]) -> bytes:  # noqa: B006
    return codec.encode_sample_response(
        types.SampleResponse(
            sequences=[
                types.SampledSequence(
                    stop_reason="length", tokens=tokens, logprobs=[-0.5] * len(tokens)
                )
            ]
        )
    )


def submitted(rid: str) -> dict[str, Any]:
    return {"request_id": rid, "sample_sequence_ids": [f"{rid}:0"]}


class Scripted:
    """A fake Tinker: every POST path answers from its own queue of scripted replies."""

    def __init__(self) -> None:
        self.replies: dict[str, list[dict[str, Any]]] = {}
        self.seen: dict[str, list[dict[str, Any]]] = {}
        self.headers: dict[str, list[dict[str, str]]] = {}
        self.runner: web.AppRunner | None = None
        self.base_url = ""
        self.release = asyncio.Event()  # hanging handlers end when the test ends

    def post(
        self,
        path: str,
        *,
        status: int = 200,
        payload: Any = None,
        body: bytes | None = None,
        content_type: str = "application/json",
        callback: Any = None,
    ) -> None:
        self.replies.setdefault(path, []).append(
            dict(
                status=status,
                payload=payload,
                body=body,
                content_type=content_type,
                callback=callback,
            )
        )

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return self.seen.get(path, [])

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        raw = await request.read()
        self.seen.setdefault(path, []).append(json.loads(raw) if raw else {})
        self.headers.setdefault(path, []).append(dict(request.headers))
        queue = self.replies.get(path)
        if not queue:
            return web.json_response({"detail": f"unscripted {path}"}, status=599)
        r = queue.pop(0)
        if r["callback"] is not None:
            out = r["callback"](path)
            if asyncio.iscoroutine(out):
                await out
        if r["body"] is not None:
            return web.Response(status=r["status"], body=r["body"], content_type=r["content_type"])
        return web.json_response(r["payload"], status=r["status"])

    async def __aenter__(self) -> Scripted:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        self.release.set()
        await self.runner.cleanup()


class Env:
    def __init__(
        self,
        retry_config: RetryConfig | None = None,
        client_config: types.ClientConfigResponse | None = None,
        **dynamic: Any,
    ) -> None:
        self.server = Scripted()
        self.retry_config = retry_config
        self.client_config = client_config
        self.dynamic = dynamic

    def _build(self) -> None:
        retry_config, dynamic = self.retry_config, self.dynamic
        settings = Settings(base_url=self.server.base_url, api_key="tml-test-key")
        self.session = Session(settings, runtime=loop_runtime(), rest_only=True)
        self.session.session_id = "sess-0"
        self.session.dynamic_config = types.ClientDynamicConfigResponse(**dynamic)
        if self.client_config is not None:
            self.session.client_config = self.client_config
        self.clock = FakeClock()
        self.sleeps: list[float] = []
        admission_for(self.session).backoff._clock = self.clock
        self.client = SamplingClient(
            self.session,
            sampling_session_id="sess-0:sample:0",
            base_model="m",
            retry_config=retry_config,
        )
        actor = self.client._actor
        actor.sleep = self.sleep
        actor.clock = self.clock
        actor.rand = lambda: 0.5

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.clock.now += seconds
        await asyncio.sleep(0)

    async def __aenter__(self) -> Env:
        await self.server.__aenter__()
        self._build()
        await self.session.ensure_transport()
        await self.client._start_supervised()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.session.supervisor.stop_child(self.client._actor.name)
        await self.session.runtime.release()
        await self.server.__aexit__()


async def test_429_then_success_reuses_the_seq_id_and_throttles():
    async with Env() as env:
        if True:
            m = env.server
            m.post(ASAMPLE, status=429, payload={"detail": "sampling backpressure"})
            m.post(ASAMPLE, payload=submitted("req-1"))
            m.post(RETRIEVE, body=proto_result(), content_type="application/x-protobuf")
            result = await env.client.sample(PROMPT, 1, PARAMS)
            sent = m.bodies(ASAMPLE)
        assert [b["seq_id"] for b in sent] == [0, 0]
        assert sent[0] == sent[1]
        assert result.sequences[0].tokens == [7, 8]
        assert result.sequences[0].sequence_id == "req-1:0"
        assert sum(env.sleeps) == pytest.approx(1.0)  # small prompt: a 1 s pause
        # The 10 s reduced-concurrency window is on right after the pause.
        assert admission_for(env.session).backoff.throttled()
        env.clock.now += 11.0
        assert not admission_for(env.session).backoff.throttled()


async def test_410_resubmits_with_a_new_seq_id():
    async with Env() as env:
        if True:
            m = env.server
            m.post(ASAMPLE, payload=submitted("req-1"))
            m.post(RETRIEVE, status=410, payload={"detail": "promise expired"})
            m.post(ASAMPLE, payload=submitted("req-2"))
            m.post(RETRIEVE, body=proto_result([5]), content_type="application/x-protobuf")
            result = await env.client.sample(PROMPT, 1, PARAMS)
            sent = m.bodies(ASAMPLE)
            polled = m.bodies(RETRIEVE)
        assert [b["seq_id"] for b in sent] == [0, 1]
        assert [p["request_id"] for p in polled] == ["req-1", "req-2"]
        assert result.sequences[0].tokens == [5]
        assert result.sequences[0].sequence_id == "req-2:0"
        assert env.sleeps == [0.5]  # retry handler: min(0.5 * 2**0, 10), no jitter at rand=0.5


async def test_request_failed_is_not_retried():
    async with Env() as env:
        if True:
            m = env.server
            m.post(ASAMPLE, payload=submitted("req-1"))
            m.post(RETRIEVE, payload={"error": "prompt too long", "category": "user"})
            with pytest.raises(errors.RequestFailedError, match="prompt too long"):
                await env.client.sample(PROMPT, 1, PARAMS)
            assert len(m.bodies(ASAMPLE)) == 1
        assert env.sleeps == []


async def test_5xx_on_submit_is_retried_by_the_transport_with_the_same_seq_id():
    async with Env() as env:
        env.session.transport.sleep = env.sleep  # type: ignore[union-attr]
        if True:
            m = env.server
            m.post(ASAMPLE, status=503, payload={"detail": "unavailable"})
            m.post(ASAMPLE, payload=submitted("req-1"))
            m.post(RETRIEVE, body=proto_result(), content_type="application/x-protobuf")
            await env.client.sample(PROMPT, 1, PARAMS)
            assert [b["seq_id"] for b in m.bodies(ASAMPLE)] == [0, 0]


async def test_abandoned_future_sends_cancel_future_when_enabled():
    async with Env(sample_cancel_enabled=True) as env:
        polling = asyncio.Event()

        async def hang(path: str) -> None:
            polling.set()
            await env.server.release.wait()

        cancelled = asyncio.Event()

        def on_cancel(path: str) -> None:
            cancelled.set()

        if True:
            m = env.server
            m.post(ASAMPLE, payload=submitted("req-9"))
            m.post(RETRIEVE, callback=hang)
            m.post(CANCEL, payload=None, callback=on_cancel)
            fut = env.client.sample(PROMPT, 1, PARAMS)
            await polling.wait()
            with pytest.raises(TimeoutError):
                await fut.result_async(timeout=0.05)
            await asyncio.wait_for(cancelled.wait(), 5)
            assert m.bodies(CANCEL) == [{"request_id": "req-9"}]
        assert fut.cancelled()


async def test_no_cancel_future_when_disabled():
    async with Env() as env:
        polling = asyncio.Event()

        async def hang(path: str) -> None:
            polling.set()
            await env.server.release.wait()

        if True:
            m = env.server
            m.post(ASAMPLE, payload=submitted("req-9"))
            m.post(RETRIEVE, callback=hang)
            fut = env.client.sample(PROMPT, 1, PARAMS)
            await polling.wait()
            fut.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fut._task  # the abandoned request has unwound
            book = env.client._actor.book
            assert not book.cancels and not book.cancel_wake.is_set()  # nothing was queued
            assert m.bodies(CANCEL) == []
            assert env.client._actor.in_flight == 0


async def test_progress_timeout_fails_stuck_requests_with_a_clear_error():
    async with Env(retry_config=RetryConfig(progress_timeout=30.0)) as env:
        env.client._actor.watch_sleep = env.sleep
        polling = asyncio.Event()

        async def hang(path: str) -> None:
            polling.set()
            await env.server.release.wait()

        if True:
            m = env.server
            m.post(ASAMPLE, payload=submitted("req-1"))
            m.post(RETRIEVE, callback=hang)
            with pytest.raises(errors.APIConnectionError, match=r"No progress made in 30\.0s"):
                await env.client.sample(PROMPT, 1, PARAMS)


async def test_queue_state_warning_is_debounced(caplog):
    from tinker_actors.futures import QueueState

    async with Env() as env:
        client = env.client
        client._clock = env.clock
        with caplog.at_level("WARNING", logger="tinker_actors"):
            client.on_queue_state_change(QueueState.PAUSED_RATE_LIMIT, None)
            client.on_queue_state_change(QueueState.PAUSED_CAPACITY, "busy")
            env.clock.now += 61
            client.on_queue_state_change(QueueState.ACTIVE, None)
            client.on_queue_state_change(QueueState.PAUSED_CAPACITY, "busy")
        events = [
            r.getMessage() for r in caplog.records if r.name == "tinker_actors.clients.sampling"
        ]
        assert events == [
            "Sampling is paused for sampler sess-0:sample:0. Reason: concurrent sampler weights limit hit",
            "Sampling is paused for sampler sess-0:sample:0. Reason: busy",
        ]


async def test_calls_beyond_the_in_flight_cap_wait_in_order_and_start_as_slots_free():
    """0.38's RetryHandler cap (``sample_max_concurrent_requests``): at most that many calls
    are in flight; the rest wait (as futures only, no task) and start, in call order, as
    earlier ones finish. Cancelling a waiting call frees nothing and sends nothing."""
    cap = 3
    async with Env(
        client_config=types.ClientConfigResponse(sample_max_concurrent_requests=cap)
    ) as env:
        m = env.server
        gates = [asyncio.Event() for _ in range(7)]
        polled: list[asyncio.Event] = [asyncio.Event() for _ in range(7)]

        def hold(i: int) -> Any:
            async def cb(path: str) -> None:
                polled[i].set()
                await gates[i].wait()

            return cb

        for i in range(7):
            m.post(ASAMPLE, payload=submitted(f"req-{i}"))
            m.post(
                RETRIEVE,
                body=proto_result([i]),
                content_type="application/x-protobuf",
                callback=hold(i),
            )
        futs = [env.client.sample(PROMPT, 1, PARAMS) for _ in range(8)]
        for i in range(cap):
            await polled[i].wait()
        book = env.client._actor.book
        assert len(book.requests) == cap and len(book.queued) == 8 - cap
        assert all(f._task is None for f in futs[cap:])  # waiting calls hold no task
        assert len(m.bodies(ASAMPLE)) == cap
        futs[7].cancel()  # a waiting call abandoned: it is never sent
        assert env.client._actor.in_flight == 8
        for i in range(7):  # each finished call lets the next waiting one start
            gates[i].set()
            assert (await futs[i]).sequences[0].tokens == [i]
            if i + cap < 7:
                await polled[i + cap].wait()
        assert [b["seq_id"] for b in m.bodies(ASAMPLE)] == list(range(7))
        assert env.client._actor.in_flight == 0 and not book.queued


async def test_a_call_cancelled_as_its_task_is_made_gives_its_in_flight_slot_back():
    """A cancel from another thread can land between the mailbox check and the task's
    creation: the task is then cancelled before its first step and never runs its body.
    Its in-flight slot must still come back, or the next call waits forever."""
    cap = 1
    async with Env(
        client_config=types.ClientConfigResponse(sample_max_concurrent_requests=cap)
    ) as env:
        actor = env.client._actor
        launch = actor._launch
        made: list[asyncio.Task[None]] = []
        launched = asyncio.Event()

        def cancelled_meanwhile(fut: Any) -> None:
            fut.cancel()  # the other thread's cancel: no task yet, so nothing to cancel
            launch(fut)
            made.append(fut._task)
            launched.set()

        actor._launch = cancelled_meanwhile  # type: ignore[method-assign]
        first = env.client.sample(PROMPT, 1, PARAMS)
        await launched.wait()  # the actor read its mailbox and made the task
        await asyncio.wait(made)
        actor._launch = launch  # type: ignore[method-assign]
        assert first.cancelled()
        assert actor.book.inflight is not None and actor.book.inflight.free == cap
        assert env.server.bodies(ASAMPLE) == []  # nothing was sent for it
        env.server.post(ASAMPLE, payload=submitted("req-1"))
        env.server.post(RETRIEVE, body=proto_result([5]), content_type="application/x-protobuf")
        assert (await env.client.sample(PROMPT, 1, PARAMS)).sequences[0].tokens == [5]
