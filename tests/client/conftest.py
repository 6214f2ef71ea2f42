"""Client test fixtures: a recording proxy in front of the real LocalServer.

``proxy`` forwards every request to the ``local_server`` fixture and records, per model, the
seq ids of the training requests in arrival order. With ``delay_acks`` it holds each
training acknowledgement for a random time, so requests race unless the client orders them.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

TRAINING_PATHS = {
    "/api/v1/forward_backward",
    "/api/v1/optim_step",
    "/api/v1/save_weights",
    "/api/v1/save_weights_for_sampler",
    "/api/v1/load_weights",
}


class Proxy:
    def __init__(
        self,
        target: str,
        *,
        delay_acks: float = 0.0,
        seed: int = 0,
        fail: dict[str, set[int]] | None = None,
    ):
        self.target = target
        self.delay_acks = delay_acks
        # path -> 1-based request numbers answered 400 (not retried) instead of forwarded
        self.fail = fail or {}
        self.calls: dict[str, int] = defaultdict(int)
        # every request: (path, x-sdk-method, x-tinker-request-type)
        self.log: list[tuple[str, str | None, str | None]] = []
        self.inflight: dict[str, int] = defaultdict(int)
        self.max_inflight: dict[str, int] = defaultdict(int)
        self.rng = random.Random(seed)
        # When set, requests are accepted and not answered until the proxy stops.
        self.blackhole = False
        self._release = asyncio.Event()
        self.seen: dict[str, list[tuple[str, int]]] = defaultdict(list)
        # model -> seq id -> the optim_step's learning rate (a marker tests put in each step)
        self.learning_rates: dict[str, dict[int, float]] = defaultdict(dict)
        self.lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self.base_url = ""
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def record(self, path: str, body: bytes) -> None:
        if path not in TRAINING_PATHS:
            return
        if path == "/api/v1/forward_backward":
            from tinker_actors import codec

            req = codec.decode_forward_backward_request(body)
            model_id, seq = req.model_id, req.seq_id
        else:
            d = json.loads(body)
            model_id, seq = d.get("model_id"), d.get("seq_id")
            if model_id is None:  # create-via-load
                return
            if path == "/api/v1/optim_step" and d.get("adam_params"):
                with self.lock:
                    self.learning_rates[model_id][int(seq)] = d["adam_params"]["learning_rate"]
        with self.lock:
            self.seen[model_id].append((path.rsplit("/", 1)[-1], int(seq)))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        path = request.path
        with self.lock:
            self.calls[path] += 1
            n = self.calls[path]
            self.log.append(
                (
                    path,
                    request.headers.get("x-sdk-method"),
                    request.headers.get("x-tinker-request-type"),
                )
            )
        if self.blackhole:
            await self._release.wait()  # set when the proxy stops
            return web.Response(status=503)
        if n in self.fail.get(path, ()):
            return web.json_response(
                {"detail": "injected failure"}, status=400, headers={"x-should-retry": "false"}
            )
        self.inflight[path] += 1
        self.max_inflight[path] = max(self.max_inflight[path], self.inflight[path])
        try:
            return await self._forward(request, path, body)
        finally:
            self.inflight[path] -= 1

    async def _forward(self, request: web.Request, path: str, body: bytes) -> web.StreamResponse:
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")
        }
        async with self.session.request(
            request.method,
            self.target + request.path_qs,
            data=body,
            headers=headers,
            allow_redirects=False,
        ) as r:
            payload = await r.read()
            out_headers = {
                k: v
                for k, v in r.headers.items()
                if k.lower() in ("content-type", "location", "retry-after")
            }
            status = r.status
        if path in TRAINING_PATHS and status == 200:
            self.record(path, body)
            if self.delay_acks:
                await asyncio.sleep(self.rng.uniform(0, self.delay_acks))
        return web.Response(body=payload, status=status, headers=out_headers)

    def start(self) -> Proxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)
        return self

    async def _start(self) -> None:
        self.session = aiohttp.ClientSession()
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self._release.set)

        async def _stop() -> None:
            await self.session.close()
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(_stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        assert not self._thread.is_alive(), "the proxy's loop did not stop"
        self.loop.close()  # its self-pipe sockets; an unclosed loop is a ResourceWarning

    def seq_ids(self, model_id: str) -> list[int]:
        with self.lock:
            return [s for _, s in self.seen[model_id]]

    def count(self, model_id: str, kind: str) -> int:
        with self.lock:
            return sum(1 for k, _ in self.seen[model_id] if k == kind)


@pytest.fixture
def proxy(local_server: Any, request: pytest.FixtureRequest) -> Iterator[Proxy]:
    opts = getattr(request, "param", None) or {}
    p = Proxy(local_server.base_url, **opts).start()
    try:
        yield p
    finally:
        p.stop()


def make_datum(text: bytes) -> Any:
    import numpy as np

    from tinker_actors import types

    toks = list(text)
    return types.Datum(
        model_input=types.ModelInput.from_ints(toks[:-1]),
        loss_fn_inputs={
            "target_tokens": np.array(toks[1:], dtype=np.int64),
            "weights": np.ones(len(toks) - 1, dtype=np.float32),
        },
    )


@pytest.fixture(autouse=True)
async def _close_loop_http() -> Any:
    """Unit tests build Transports on the test loop directly; close its HTTP session after."""
    yield
    from tinker_actors.runtime import loop_runtime

    await loop_runtime().aclose_http()
