"""A fault-injecting HTTP proxy for tests: drops, errors, rate limits, delays and outages.

``FaultProxy(target, FaultMix(...), seed=...)`` forwards every request to ``target`` on its
own thread and loop (so sync and async clients both work) and, per request, may:

- ``drop_before``: close the connection without forwarding (the server never saw it);
- ``drop_after``: forward, then close the connection instead of answering (the server did
  the work; the client must retry and the server deduplicate);
- ``error_5xx``: answer 500/502/503 without forwarding;
- ``burst_429``: start a burst of ``burst_size`` 429s with ``Retry-After: retry_after``;
- ``delay``: hold the request up to ``delay_s`` before forwarding.

Scripted faults on top: ``burst_at(path, nth, count)`` (the nth request to ``path`` starts a
burst of 429s to that path) and ``blackout_at(path, nth, seconds)`` (from the nth request to
``path``, every request gets 503 for ``seconds``). Random choices come from one seeded RNG;
every fault is bounded (``max_faults``, ``delay_s``, a blackout's ``seconds``), so a run is a
test, not a benchmark. ``counts`` says what happened: requests per path, ``forwarded``, and
each fault kind.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

__all__ = ["FaultMix", "FaultProxy"]

FAULT_KINDS = ("drop_before", "drop_after", "error_5xx", "burst_429", "delay", "blackout_503")


@dataclass(frozen=True)
class FaultMix:
    """Per-request fault probabilities (each in [0, 1]) and their bounds."""

    drop_before: float = 0.0
    drop_after: float = 0.0
    error_5xx: float = 0.0
    burst_429: float = 0.0
    burst_size: tuple[int, int] = (3, 8)
    retry_after: float = 1.0
    delay: float = 0.0
    delay_s: float = 0.05
    # paths the random faults apply to (None: every path); scripted faults name their own
    paths: frozenset[str] | None = None
    max_faults: int | None = None  # no random fault after this many

    @classmethod
    def issue9(cls, **kw: Any) -> FaultMix:
        """The default mix of issue 9: 3 % drops each way, 3 % 5xx, 1 % 429 bursts, 5 % delays."""
        base: dict[str, Any] = {
            "drop_before": 0.03,
            "drop_after": 0.03,
            "error_5xx": 0.03,
            "burst_429": 0.01,
            "delay": 0.05,
        }
        return cls(**{**base, **kw})


@dataclass
class _Burst:
    remaining: int
    retry_after: float


@dataclass
class _Trigger:
    path: str
    nth: int
    action: str  # "burst" | "blackout"
    count: int = 0
    seconds: float = 0.0
    scope: str | None = None
    retry_after: float = 1.0
    fired: bool = False


@dataclass
class FaultProxy:
    target: str
    mix: FaultMix = field(default_factory=FaultMix)
    seed: int = 0
    counts: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.lock = threading.Lock()
        self.base_url = ""
        self.injected = 0
        self.bursts: dict[str, _Burst] = {}  # path ("*" for any) -> burst in progress
        self.blackout_until = 0.0
        self.blackout_scope: str | None = None
        self.triggers: list[_Trigger] = []
        self.path_requests: Counter[str] = Counter()
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    # ---------------------------------------------------------------- scripted faults
    def burst_at(self, path: str, nth: int, count: int, retry_after: float = 1.0) -> None:
        """The ``nth`` request to ``path`` (1-based) and the ``count - 1`` after it get 429."""
        with self.lock:
            self.triggers.append(_Trigger(path, nth, "burst", count=count, retry_after=retry_after))

    def blackout_at(self, path: str, nth: int, seconds: float, *, scope: str | None = None) -> None:
        """From the ``nth`` request to ``path``, every request (or only those to ``scope``)
        gets 503 for ``seconds``."""
        with self.lock:
            self.triggers.append(_Trigger(path, nth, "blackout", seconds=seconds, scope=scope))

    def set_mix(self, mix: FaultMix) -> None:
        with self.lock:
            self.mix = mix

    # ---------------------------------------------------------------- decisions
    def _decide(self, path: str) -> tuple[str | None, Any]:
        """What to do with one request: (fault kind or None, its parameter)."""
        with self.lock:
            self.counts["requests"] += 1
            self.path_requests[path] += 1
            n = self.path_requests[path]
            for t in self.triggers:
                if not t.fired and t.path == path and n >= t.nth:
                    t.fired = True
                    if t.action == "burst":
                        self.bursts[path] = _Burst(t.count, t.retry_after)
                    else:
                        self.blackout_until = time.monotonic() + t.seconds
                        self.blackout_scope = t.scope
            if time.monotonic() < self.blackout_until and self.blackout_scope in (None, path):
                return self._count("blackout_503"), 503
            burst = self.bursts.get(path) or self.bursts.get("*")
            if burst is not None and burst.remaining > 0:
                burst.remaining -= 1
                return self._count("burst_429"), burst.retry_after
            mix = self.mix
            if mix.paths is not None and path not in mix.paths:
                return None, None
            if mix.max_faults is not None and self.injected >= mix.max_faults:
                return None, None
            r = self.rng.random()
            for kind in ("drop_before", "drop_after", "error_5xx", "burst_429", "delay"):
                p = getattr(mix, kind)
                if r < p:
                    self.injected += 1
                    if kind == "burst_429":
                        lo, hi = mix.burst_size
                        size = self.rng.randint(lo, hi)
                        self.bursts["*"] = _Burst(size - 1, mix.retry_after)
                        return self._count(kind), mix.retry_after
                    if kind == "error_5xx":
                        return self._count(kind), self.rng.choice((500, 502, 503))
                    if kind == "delay":
                        return self._count(kind), self.rng.uniform(0, mix.delay_s)
                    return self._count(kind), None
                r -= p
            return None, None

    def _count(self, kind: str) -> str:
        self.counts[kind] += 1
        return kind

    # ---------------------------------------------------------------- serving
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        kind, arg = self._decide(request.path)
        if kind == "drop_before":
            return self._drop(request)
        if kind in ("error_5xx", "blackout_503"):
            return web.json_response({"detail": f"injected {kind}"}, status=arg)
        if kind == "burst_429":
            return web.json_response(
                {"detail": "injected 429"}, status=429, headers={"Retry-After": f"{arg:g}"}
            )
        if kind == "delay":
            await asyncio.sleep(arg)
        try:
            status, headers, payload = await self._forward(request, body)
        except aiohttp.ClientError:
            # the target is down (a restarting server): the client sees a dropped connection
            self.counts["target_down"] += 1
            return self._drop(request)
        self.counts["forwarded"] += 1
        if kind == "drop_after":
            return self._drop(request)
        return web.Response(body=payload, status=status, headers=headers)

    def _drop(self, request: web.Request) -> web.StreamResponse:
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=499)  # never written: the connection is gone

    async def _forward(
        self, request: web.Request, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        assert self._session is not None
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")
        }
        async with self._session.request(
            request.method,
            self.target + request.path_qs,
            data=body,
            headers=headers,
            allow_redirects=False,
        ) as r:
            payload = await r.read()
            keep = ("content-type", "content-encoding", "location", "retry-after", "allow")
            out = {k: v for k, v in r.headers.items() if k.lower() in keep}
            return r.status, out, payload

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> FaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)
        return self

    async def _start(self) -> None:
        # no pooling towards the target: a restarted target is reached on a new connection
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True), auto_decompress=False
        )
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        async def _stop() -> None:
            if self._session is not None:
                await self._session.close()
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(_stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        assert not self._thread.is_alive(), "the proxy's loop did not stop"
        self.loop.close()  # its self-pipe sockets; an unclosed loop is a ResourceWarning

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def faults(self) -> dict[str, int]:
        """Faults injected so far, by kind."""
        with self.lock:
            return {k: self.counts[k] for k in FAULT_KINDS if self.counts[k]}
