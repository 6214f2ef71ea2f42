"""``POST /api/v1/stream_sample``: one sample request answered as server-sent events.

The job goes through the sampler's lane like ``/asample`` (same validation, batching and
seeds, so a seed gives the same tokens either way), with an ``on_token`` hook: the decode loop
hands each token over as it is chosen and the handler writes it at once. Tokens are
``event: token`` with ``{"token", "token_id", "index", "logprob"}``; each sequence ends with
``event: done`` carrying ``finish_reason`` (``stop`` / ``length``) and ``total_tokens``; a
failed request ends with ``event: error``. When the client goes away the hook answers False
and the decode of that request stops. An engine without the hook (``null``) streams its
finished result.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import threading
from collections.abc import Callable
from typing import Any

from aiohttp import web

from tinker_actors.server import wire
from tinker_actors.server.errors import HttpError
from tinker_actors.telemetry import get_logger

log = get_logger("tinker_actors.server.streaming")

__all__ = ["stream_sample"]


class _Text:
    """Incremental detokenisation per sequence: text is emitted once it is whole UTF-8."""

    def __init__(self, decode: Callable[[list[int]], str] | None) -> None:
        self._decode = decode
        self._ids: dict[int, list[int]] = {}
        self._sent: dict[int, int] = {}

    def push(self, index: int, token_id: int) -> str | None:
        if self._decode is None:
            return None
        ids = self._ids.setdefault(index, [])
        ids.append(token_id)
        try:
            text = self._decode(ids)
        except Exception:
            return None
        if text.endswith("\ufffd"):
            return ""  # an incomplete character: it comes with a later token
        sent = self._sent.get(index, 0)
        self._sent[index] = len(text)
        return text[sent:]


def _decoder(service: Any, sampler_id: str) -> Callable[[list[int]], str] | None:
    """The sampler's tokenizer decode (None when the engine has no local tokenizer)."""
    try:
        from tinker_actors.server.engine.tokenizer import load_fast_tokenizer

        base = service.sampling.get(sampler_id)["base_model"]
        tok = load_fast_tokenizer(service.ctx.engine.tokenizer_dir(base))
    except Exception:
        return None
    if tok is None:
        return None
    return lambda ids: tok.decode(ids, skip_special_tokens=True)


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def stream_sample(request: web.Request) -> web.StreamResponse:
    from tinker_actors.server.app import digest, svc, typed_body

    req, raw = await typed_body(request)
    service = svc(request)
    sampling = service.sampling
    sampler_id = req.sampling_session_id
    if sampler_id is None:
        if req.base_model is None and req.model_path is None:
            raise HttpError(422, "sample needs sampling_session_id, base_model or model_path")
        sampler_id = await sampling.implicit_sampler(req.base_model, req.model_path)
    job, finish = wire.sample_job(req, deterministic=service.config.deterministic_sampling)

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[int, int, int, float] | None] = asyncio.Queue()
    gone = threading.Event()  # the client went away: the decode stops at its next token

    # Tokens cross from the decode thread in batches: one loop wake-up per batch, not per
    # token, so the decode thread rarely waits on the loop for the GIL.
    pending: collections.deque[tuple[int, int, int, float]] = collections.deque()
    lock = threading.Lock()
    wake_pending = [False]

    def drain() -> None:  # on the loop
        with lock:
            items = list(pending)
            pending.clear()
            wake_pending[0] = False
        for item in items:
            queue.put_nowait(item)

    def on_token(index: int, step: int, token_id: int, logprob: float) -> bool:
        if gone.is_set():
            return False
        with lock:
            pending.append((index, step, token_id, logprob))
            wake = not wake_pending[0]
            wake_pending[0] = True
        if wake:
            loop.call_soon_threadsafe(drain)
        return True

    result: dict[str, Any] = {}

    def finished(value: Any) -> Any:
        result["value"] = value
        return finish(value)

    job = dataclasses.replace(job, on_token=on_token)
    # No seq id: a stream is never retried, so there is nothing to deduplicate.
    ids = sampling.asample(sampler_id, None, digest(raw), job, finished)
    rec = service.registry.get(ids["request_id"])
    assert rec is not None

    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Tinker-Request-Id": rec.request_id,
        }
    )
    text = _Text(_decoder(service, sampler_id))
    sent: dict[int, int] = {}
    done_wait = asyncio.ensure_future(rec.event.wait())
    try:
        await resp.prepare(request)

        async def write(name: str, data: dict[str, Any]) -> None:
            transport = request.transport
            if transport is None or transport.is_closing():
                raise ConnectionResetError("the client closed the stream")
            await resp.write(_event(name, data))

        def token_event(index: int, token_id: int, logprob: float) -> bytes:
            sent[index] = sent.get(index, 0) + 1
            return _event(
                "token",
                {
                    "token": text.push(index, token_id),
                    "token_id": token_id,
                    "index": index,
                    "logprob": logprob,
                },
            )

        async def flush(first: tuple[int, int, int, float] | None) -> None:
            """Writes ``first`` and every token already queued behind it, in one write."""
            buf = [] if first is None else [token_event(first[0], first[2], first[3])]
            while not queue.empty():
                index, _, token_id, logprob = queue.get_nowait()  # type: ignore[misc]
                buf.append(token_event(index, token_id, logprob))
            if buf:
                transport = request.transport
                if transport is None or transport.is_closing():
                    raise ConnectionResetError("the client closed the stream")
                await resp.write(b"".join(buf))

        while True:
            getter = asyncio.ensure_future(queue.get())
            await asyncio.wait({getter, done_wait}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                await flush(getter.result())
                continue
            getter.cancel()
            break
        await flush(None)  # tokens handed over just before the end

        async def token(index: int, token_id: int, logprob: float) -> None:
            await resp.write(token_event(index, token_id, logprob))

        if rec.state == "failed" or "value" not in result:
            await write("error", {"error": rec.error or "request failed", "category": rec.category})
        else:
            for index, seq in enumerate(result["value"].sequences):
                tokens, logprobs = seq.tokens.tolist(), seq.logprobs.tolist()
                for k in range(sent.get(index, 0), len(tokens)):  # an engine without the hook
                    await token(index, int(tokens[k]), float(logprobs[k]))
                await write(
                    "done",
                    {
                        "index": index,
                        "finish_reason": seq.stop_reason,
                        "total_tokens": len(tokens),
                    },
                )
        await resp.write_eof()
    except (ConnectionResetError, asyncio.CancelledError) as exc:
        gone.set()
        rec.cancelled = True  # not started yet: the lane skips it
        log.info("stream_sample_client_gone", request_id=rec.request_id)
        if isinstance(exc, asyncio.CancelledError):
            raise
    finally:
        gone.set()
        done_wait.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(done_wait, return_exceptions=True)
    return resp
