"""A scripted aiohttp server for transport/poll edge cases.

Its API is shaped like aioresponses, but replies travel over real HTTP on port 0:
aioresponses 0.7.9 cannot build responses for aiohttp 3.14.

Each (method, path) answers from its handler if one is set (``m.handle_with(...)``: replies
computed from the request, for stateful scripts), else from its own queue of scripted
replies, then from its default reply if one is set (``m.default(...)``), else 599. Every request is recorded; tests wait
for the server to have seen N requests with ``await m.wait_for(path, n)``.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer


@dataclass
class Seen:
    method: str
    path: str
    headers: Any
    body: bytes
    query: Any = None

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


class ScriptedServer:
    """``async with ScriptedServer() as m: m.post(path, status=, payload=, body=, headers=)``."""

    def __init__(self) -> None:
        self.script: dict[tuple[str, str], collections.deque[dict[str, Any]]] = (
            collections.defaultdict(collections.deque)
        )
        self.defaults: dict[tuple[str, str], dict[str, Any]] = {}
        self.handlers: dict[tuple[str, str], Callable[[Seen], Any]] = {}
        self.requests: list[Seen] = []
        self.base = ""
        self._changed: asyncio.Condition | None = None

    def add(self, method: str, path: str, **resp: Any) -> None:
        self.script[(method, path)].append(resp)

    def default(self, method: str, path: str, **resp: Any) -> None:
        self.defaults[(method, path)] = resp

    def handle_with(self, method: str, path: str, fn: Callable[[Seen], Any]) -> None:
        """``fn(seen)`` returns (or awaits to) a reply dict with the keys ``add`` takes."""
        self.handlers[(method, path)] = fn

    def post(self, path: str, **resp: Any) -> None:
        self.add("POST", path, **resp)

    def get(self, path: str, **resp: Any) -> None:
        self.add("GET", path, **resp)

    def seen(self, path: str) -> list[Seen]:
        return [r for r in self.requests if r.path == path]

    async def wait_for(self, path: str, count: int, timeout: float = 10.0) -> list[Seen]:  # noqa: ASYNC109
        """Waits until ``path`` was requested ``count`` times (a hang guard, not a delay)."""
        assert self._changed is not None
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: len(self.seen(path)) >= count)
        return self.seen(path)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        seen = Seen(request.method, request.path, request.headers, body, request.query)
        self.requests.append(seen)
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()
        handler = self.handlers.get((request.method, request.path))
        q = self.script.get((request.method, request.path))
        if handler is not None:
            r = handler(seen)
            if inspect.isawaitable(r):
                r = await r
        elif q:
            r = q.popleft()
        elif (request.method, request.path) in self.defaults:
            r = self.defaults[(request.method, request.path)]
        else:
            return web.Response(status=599, text="unscripted")
        if "payload" in r:
            return web.Response(
                status=r.get("status", 200),
                text=json.dumps(r["payload"]),
                content_type="application/json",
                headers=r.get("headers"),
            )
        return web.Response(
            status=r.get("status", 200),
            body=r.get("body", b""),
            content_type=r.get("content_type", "application/json"),
            headers=r.get("headers"),
        )

    async def __aenter__(self) -> ScriptedServer:
        self._changed = asyncio.Condition()
        app = web.Application(client_max_size=64 * 2**20)  # fwd/bwd chunks reach 5 MB
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._server = TestServer(app, port=0)
        await self._server.start_server()
        self.base = str(self._server.make_url("")).rstrip("/")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._server.close()


class VirtualTime:
    """A clock that only the injected sleep advances (retries and back-offs cost no real time).

    ``sleep`` records each wait and yields to the loop once, as a real sleep would.
    """

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)
