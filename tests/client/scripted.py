"""A scripted aiohttp server for transport/poll edge cases (aioresponses-like API)."""

from __future__ import annotations

import collections
import json
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


class aioresponses:
    """``async with aioresponses() as m: m.post(path, status=, payload=, body=, headers=)``."""

    def __init__(self) -> None:
        self.script: dict[tuple[str, str], collections.deque[dict[str, Any]]] = (
            collections.defaultdict(collections.deque)
        )
        self.requests: list[Seen] = []
        self.base = ""

    def add(self, method: str, path: str, **resp: Any) -> None:
        self.script[(method, path)].append(resp)

    def post(self, path: str, **resp: Any) -> None:
        self.add("POST", path, **resp)

    def get(self, path: str, **resp: Any) -> None:
        self.add("GET", path, **resp)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append(Seen(request.method, request.path, request.headers, body))
        q = self.script.get((request.method, request.path))
        if not q:
            return web.Response(status=599, text="unscripted")
        r = q.popleft()
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

    async def __aenter__(self) -> aioresponses:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._server = TestServer(app, port=0)
        await self._server.start_server()
        self.base = str(self._server.make_url("")).rstrip("/")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._server.close()
