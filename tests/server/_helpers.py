"""Plain-HTTP helpers for driving the local server without any client library."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import aiohttp

from tinker_actors import codec, types
from tinker_actors.server.engine.null import NullEngine

PROTO = "application/x-protobuf"


class Api:
    """A tiny aiohttp client: JSON in, (status, parsed body) out."""

    def __init__(self, server: Any, session: aiohttp.ClientSession) -> None:
        self.base = server.base_url
        self.key = server.api_key
        self.http = session

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"X-API-Key": self.key, **(extra or {})}

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        key: bool = True,
        allow_redirects: bool = True,
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        hdrs = self.headers(headers) if key else dict(headers or {})
        async with self.http.request(
            method,
            self.base + path,
            json=json,
            data=data,
            headers=hdrs,
            allow_redirects=allow_redirects,
        ) as resp:
            raw = await resp.read()
            body: Any = raw
            if resp.content_type == "application/json":
                body = codec.json_decode(raw) if raw else None
            return resp.status, body, resp

    async def post(self, path: str, json: Any = None, **kw: Any) -> tuple[int, Any]:
        status, body, _ = await self.call("POST", "/api/v1" + path, json=json, **kw)
        return status, body

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        status, body, _ = await self.call("GET", "/api/v1" + path, **kw)
        return status, body

    async def ok(self, path: str, json: Any = None, **kw: Any) -> Any:
        status, body = await self.post(path, json, **kw)
        assert status == 200, (path, status, body)
        return body

    async def result(
        self,
        request_id: str,
        *,
        accept: str = "application/json",
        allow_metadata_only: bool = False,
    ) -> tuple[int, Any]:
        """Polls until the future is not try_again; returns (status, body)."""
        for _ in range(200):
            status, body, _resp = await self.call(
                "POST",
                "/api/v1/retrieve_future",
                json={"request_id": request_id, "allow_metadata_only": allow_metadata_only},
                headers={"Accept": accept},
            )
            if status == 200 and isinstance(body, dict) and body.get("type") == "try_again":
                continue
            return status, body
        raise AssertionError("future never finished")

    async def session(self) -> str:
        return (
            await self.ok(
                "/create_session", {"tags": [], "user_metadata": {}, "sdk_version": "test"}
            )
        )["session_id"]

    async def model(
        self, session_id: str, seq: int = 0, base: str = "tinker-actors/byte-1m"
    ) -> str:
        fut = await self.ok(
            "/create_model",
            {
                "session_id": session_id,
                "model_seq_id": seq,
                "base_model": base,
                "lora_config": {"rank": 4},
            },
        )
        status, body = await self.result(fut["request_id"])
        assert status == 200 and body["model_id"] == fut["model_id"], body
        return fut["model_id"]

    async def fwdbwd(
        self, model_id: str, seq_id: int, n: int = 1, loss_fn: str = "cross_entropy", **kw: Any
    ) -> tuple[int, Any]:
        body = fwdbwd_body(model_id, seq_id, n, loss_fn, **kw)
        return await self.post("/forward_backward", data=body, headers={"Content-Type": PROTO})


def datum(n_tokens: int = 4) -> types.Datum:
    toks = list(range(1, n_tokens + 1))
    return types.Datum(
        model_input=types.ModelInput.from_ints(toks),
        loss_fn_inputs={"target_tokens": [t + 1 for t in toks], "weights": [1.0] * n_tokens},
    )


def fwdbwd_body(
    model_id: str,
    seq_id: int,
    n: int = 1,
    loss_fn: str = "cross_entropy",
    forward_only: bool = False,
    tokens: int = 4,
) -> bytes:
    return codec.encode_forward_backward_request(
        model_id, seq_id, [datum(tokens) for _ in range(n)], loss_fn, None, forward_only
    )


class GatedEngine(NullEngine):
    """A null engine whose forward_backward / sample block until released (slow-step stub)."""

    def __init__(self) -> None:
        super().__init__()
        self.fb_entered = threading.Event()
        self.fb_release = threading.Event()
        self.sample_entered = threading.Event()
        self.sample_release = threading.Event()
        self.sample_release.set()
        self.calls: list[tuple[str, int]] = []

    def forward_backward(self, model_id, data, loss_fn, loss_fn_config, forward_only):  # type: ignore[override]
        self.fb_entered.set()
        assert self.fb_release.wait(30), "test never released the step"
        self.calls.append((model_id, len(data)))
        return super().forward_backward(model_id, data, loss_fn, loss_fn_config, forward_only)

    def sample(self, sampler_id, jobs):  # type: ignore[override]
        self.sample_entered.set()
        assert self.sample_release.wait(30), "test never released sampling"
        return super().sample(sampler_id, jobs)


async def wait_event(event: threading.Event, wait_s: float = 10.0) -> None:
    assert await asyncio.to_thread(event.wait, wait_s), "event never set"
