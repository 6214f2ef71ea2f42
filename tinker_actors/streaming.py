"""Streamed sampling (Tinkex's ``sample_stream``; the official SDK has none).

``SamplingClient.sample_stream(prompt, sampling_params, num_samples)`` is an async iterator
of ``SampleStreamChunk`` read from ``POST /api/v1/stream_sample`` as server-sent events, as
the server sends them (aiohttp's streaming reader, line by line; nothing waits for the whole
body). The HTTP request runs on the runtime's loop; chunks cross to the caller's loop. Leaving
the iteration early (``break``, an exception, ``aclose()``) cancels the request, which closes
the connection, and the server stops decoding.

Like Tinkex: no retries and no sampling throttle; a non-2xx status raises the usual
``APIStatusError`` before the first chunk.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp

from . import codec, errors, types

__all__ = ["SampleStreamChunk", "parse_sse", "sample_stream"]

_END = object()


@dataclass(frozen=True, slots=True)
class SampleStreamChunk:
    """One event of a streamed sample: a token, the end of a sequence, or an error."""

    index: int = 0  # which of the num_samples sequences
    token: str | None = None  # the text this token completes (None: no tokenizer)
    token_id: int | None = None
    logprob: float | None = None
    finish_reason: str | None = None  # "stop" / "length" on the sequence's last event
    total_tokens: int | None = None
    event_type: Literal["token", "done", "error"] = "token"
    error: str | None = None

    @property
    def done(self) -> bool:
        return self.event_type == "done" or self.finish_reason is not None


@dataclass(slots=True)
class _Event:
    event: str = "message"
    data: str = ""
    id: str | None = None
    retry: int | None = None


class _SSEParser:
    """The server-sent events line grammar (WHATWG), fed one line at a time."""

    def __init__(self) -> None:
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self._retry: int | None = None

    def feed(self, line: str) -> _Event | None:
        line = line.rstrip("\r\n")
        if not line:  # a blank line dispatches the event
            if not self._data:
                self._event = ""
                return None
            ev = _Event(self._event or "message", "\n".join(self._data), self._id, self._retry)
            self._data, self._event = [], ""
            return ev
        if line.startswith(":"):
            return None  # a comment (keep-alive)
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and value.isdigit():
            self._retry = int(value)
        return None


def parse_sse(lines: list[str]) -> list[_Event]:
    """Events of complete SSE text lines (for tests and tools)."""
    p = _SSEParser()
    out = [ev for line in lines if (ev := p.feed(line)) is not None]
    if (ev := p.feed("")) is not None:
        out.append(ev)
    return out


def _chunk(ev: _Event) -> SampleStreamChunk:
    try:
        d = json.loads(ev.data)
    except ValueError as exc:
        raise errors.DecodeError(
            f"stream_sample sent an event that is not JSON: {ev.data[:200]!r}"
        ) from exc
    if not isinstance(d, dict):
        raise errors.DecodeError(f"stream_sample sent a non-object event: {ev.data[:200]!r}")
    kind: Literal["token", "done", "error"]
    if "error" in d or ev.event == "error":
        kind = "error"
    elif d.get("finish_reason") is not None or ev.event == "done":
        kind = "done"
    else:
        kind = "token"
    return SampleStreamChunk(
        index=int(d.get("index", 0)),
        token=d.get("token"),
        token_id=d.get("token_id"),
        logprob=d.get("logprob"),
        finish_reason=d.get("finish_reason"),
        total_tokens=d.get("total_tokens"),
        event_type=kind,
        error=d.get("error"),
    )


def sample_stream(
    session: Any,
    sampling_session_id: str,
    prompt: types.ModelInput,
    sampling_params: types.SamplingParams,
    num_samples: int = 1,
) -> AsyncIterator[SampleStreamChunk]:
    """Checks the arguments now, then returns the async iterator of chunks."""
    if not isinstance(prompt, types.ModelInput):
        raise errors.InvalidInputError(
            f"prompt must be a tinker.types.ModelInput, got {type(prompt).__name__}"
        )
    if not isinstance(sampling_params, types.SamplingParams):
        raise errors.InvalidInputError(
            f"sampling_params must be a tinker.types.SamplingParams, "
            f"got {type(sampling_params).__name__}"
        )
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise errors.InvalidInputError(f"num_samples must be an int >= 1, got {num_samples!r}")
    body = codec.json_encode(
        types.SampleRequest(
            sampling_session_id=sampling_session_id,
            prompt=prompt,
            sampling_params=sampling_params,
            num_samples=num_samples,
        )
    )
    return _iterate(session, body)


async def _iterate(session: Any, body: bytes) -> AsyncIterator[SampleStreamChunk]:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()

    def put(item: Any) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, item)

    runtime = session.runtime
    task: list[asyncio.Task[None] | None] = [None]
    stopped = [False]

    def start() -> None:  # on the runtime loop
        if not stopped[0]:
            task[0] = runtime.spawn(_produce(session, body, put))

    def stop() -> None:  # on the runtime loop
        stopped[0] = True
        if task[0] is not None:
            task[0].cancel()

    runtime.call_soon(start)
    try:
        while True:
            item = await queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        # Leaving early cancels the request, which drops its connection: the server stops
        # decoding.
        runtime.call_soon(stop)


async def _produce(session: Any, body: bytes, put: Any) -> None:
    """On the runtime loop: one request, its events handed over as they arrive."""
    try:
        transport = await session.ensure_transport()
        url = transport.url("/api/v1/stream_sample")
        headers = await transport.headers_for("SamplingClient.sample_stream")
        headers.update({"Content-Type": "application/json", "Accept": "text/event-stream"})
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=transport.connect_timeout, sock_read=transport.timeout
        )
        http = transport.runtime.http()
        try:
            async with http.post(url, data=body, headers=headers, timeout=timeout) as resp:
                if resp.status >= 300:
                    raw = await resp.read()
                    from .transport import status_error

                    raise status_error(
                        resp.status, raw, {k.lower(): v for k, v in resp.headers.items()}
                    )
                parser = _SSEParser()
                try:
                    async for raw_line in resp.content:  # aiohttp's streaming line reader
                        ev = parser.feed(raw_line.decode("utf-8"))
                        if ev is not None and ev.data:
                            put(_chunk(ev))
                except BaseException:
                    resp.close()  # drop the connection (never back to the pool): the server
                    raise  # sees the client go and stops decoding
                if (ev := parser.feed("")) is not None and ev.data:
                    put(_chunk(ev))
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise errors.APITimeoutError(errors.RequestInfo("POST", url)) from exc
        except aiohttp.ClientError as exc:
            raise errors.APIConnectionError(
                errors.RequestInfo("POST", url), message=str(exc) or type(exc).__name__
            ) from exc
        put(_END)
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        put(exc)
