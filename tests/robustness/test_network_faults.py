"""Network faults the client must survive or report clearly (a scripted real server on port 0).

Every failure is a typed ``tinker_actors.errors`` exception; nothing hangs (timeouts here are
short configured values, not sleeps standing in for synchronisation).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from client.scripted import ScriptedServer

from tinker_actors import errors
from tinker_actors.config import Settings
from tinker_actors.futures import poll_future
from tinker_actors.runtime import loop_runtime
from tinker_actors.transport import NO_RETRY, STANDARD, Transport

RETRIEVE = "/api/v1/retrieve_future"
KEY = "tml-robustness-secret-key-1234"


def transport(base: str, sleeps: list[float] | None = None, **kw: Any) -> Transport:
    async def sleep(d: float) -> None:
        if sleeps is not None:
            sleeps.append(d)

    return Transport(loop_runtime(), Settings(base_url=base, api_key=KEY), sleep=sleep, **kw)


async def poll(t: Transport, rtype: str) -> Any:
    async def no_sleep(_: float) -> None:
        return None

    return await poll_future(t, "req-1", rtype, sleep=no_sleep)


# ------------------------------------------------------------------ bodies that do not decode
async def test_html_200_where_json_is_expected_is_a_decode_error() -> None:
    async with ScriptedServer() as m:
        m.get(
            "/api/v1/get_server_capabilities",
            body=b"<html><body>Gateway says hi</body></html>",
            content_type="text/html",
        )
        t = transport(m.base)
        with pytest.raises(errors.DecodeError):
            await t.call("get_server_capabilities", retry=NO_RETRY)


@pytest.mark.parametrize("rtype", ["Sample", "ForwardBackward"])
@pytest.mark.parametrize("body", [b"\x0a\xff\xff\xff", b"garbage that is not protobuf \x00\x01"])
async def test_garbage_protobuf_result_is_a_decode_error(rtype: str, body: bytes) -> None:
    async with ScriptedServer() as m:
        m.post(RETRIEVE, body=body, content_type="application/x-protobuf")
        with pytest.raises(errors.DecodeError):
            await poll(transport(m.base), rtype)


async def test_truncated_protobuf_sample_result_is_a_decode_error() -> None:
    from tinker_actors import codec, types

    full = codec.encode_sample_response(
        types.SampleResponse(
            sequences=[types.SampledSequence(stop_reason="length", tokens=[1, 2, 3])]
        )
    )
    async with ScriptedServer() as m:
        m.post(RETRIEVE, body=full[:-3], content_type="application/x-protobuf")
        with pytest.raises(errors.DecodeError):
            await poll(transport(m.base), "Sample")


async def test_json_result_missing_required_fields_is_a_decode_error() -> None:
    async with ScriptedServer() as m:
        # SaveWeights results need a path
        m.post(RETRIEVE, payload={"type": "save_weights"})
        with pytest.raises(errors.DecodeError):
            await poll(transport(m.base), "SaveWeights")


# ------------------------------------------------------------------ broken connections
async def _raw_server(handler: Any) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


async def test_connection_reset_mid_body_is_a_connection_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b'Content-Length: 1000\r\n\r\n{"supported_models": ['
        )
        await writer.drain()
        writer.transport.abort()  # RST, mid-body

    server, base = await _raw_server(handler)
    async with server:
        t = transport(base)
        with pytest.raises(errors.APIConnectionError) as ei:
            await t.call("get_server_capabilities", retry=NO_RETRY)
        assert not isinstance(ei.value, errors.APITimeoutError)


async def _small(t: Transport) -> Any:
    return await t.call("get_server_capabilities", retry=NO_RETRY)


async def _large(t: Transport) -> Any:
    return await t.request(
        "POST",
        "forward_backward",
        content=bytes(32 * 2**20),  # more than the socket buffers hold
        content_type="application/x-protobuf",
        retry=NO_RETRY,
    )


# aiohttp's advice for bodies over 1 MiB (stream them) is beside the point here
@pytest.mark.filterwarnings("ignore:Sending a large body:ResourceWarning")
@pytest.mark.parametrize("send", [_small, _large], ids=["small-body", "large-body"])
async def test_server_that_never_answers_times_out(send: Any) -> None:
    """A peer that accepts and then neither reads nor answers: a small request waits for the
    answer within the read bound; a large body's write (aiohttp bounds no write) stalls, and
    the total bound (read + connect) the transport gives large bodies ends it."""
    release = asyncio.Event()
    seen = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal seen
        seen += 1
        await release.wait()  # accept, read nothing, never answer
        writer.close()

    server, base = await _raw_server(handler)
    async with server:
        t = transport(base, timeout=0.3, connect_timeout=0.3)
        try:
            async with asyncio.timeout(10):  # a hang guard only
                with pytest.raises(errors.APITimeoutError):
                    await send(t)
        finally:
            release.set()
    assert seen == 1


async def test_a_slow_but_steady_answer_is_not_cut_by_a_total_bound() -> None:
    """As httpx's Timeout(read, connect=...) in the official SDK: the read bound is per read,
    so an answer that keeps arriving (each part well within it) completes, however long."""
    parts = 6

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        body = b'{"supported_models": []}'.ljust(parts * 8)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
        )
        for i in range(parts):  # the pacing is the scenario: 6 x 0.15 s > read + connect
            await asyncio.sleep(0.15)
            writer.write(body[i * 8 : (i + 1) * 8])
            await writer.drain()
        writer.close()

    server, base = await _raw_server(handler)
    async with server:
        t = transport(base, timeout=0.5, connect_timeout=0.2)
        async with asyncio.timeout(10):  # a hang guard only
            out = await t.call("get_server_capabilities", retry=NO_RETRY)
    assert out.supported_models == []


# ------------------------------------------------------------------ statuses
async def test_503_with_retry_after_beyond_60s_falls_back_to_backoff() -> None:
    sleeps: list[float] = []
    async with ScriptedServer() as m:
        m.post("/api/v1/x", status=503, headers={"Retry-After": "120"})
        m.post("/api/v1/x", status=200, payload={"ok": 1})
        r = await transport(m.base, sleeps).request("POST", "/api/v1/x", json={})
    assert r.json() == {"ok": 1}
    assert len(sleeps) == 1 and 0 < sleeps[0] <= STANDARD.max_delay


async def test_401_with_detail_is_authentication_error_not_retried() -> None:
    async with ScriptedServer() as m:
        m.post("/api/v1/x", status=401, payload={"detail": "key revoked"})
        with pytest.raises(errors.AuthenticationError, match="key revoked") as ei:
            await transport(m.base).request("POST", "/api/v1/x", json={})
        assert len(m.requests) == 1
    assert ei.value.status_code == 401


async def test_api_key_echoed_in_error_body_stays_out_of_messages_and_logs(caplog: Any) -> None:
    caplog.set_level(logging.DEBUG, logger="tinker_actors")
    async with ScriptedServer() as m:
        m.post("/api/v1/x", status=400, payload={"detail": f"bad key {KEY} for project"})
        m.post("/api/v1/y", status=402, payload={"detail": f"billing for {KEY}"})
        m.post("/api/v1/y", status=402, payload={"detail": f"billing for {KEY}"})
        t = transport(m.base)
        with pytest.raises(errors.BadRequestError) as ei:
            await t.request("POST", "/api/v1/x", json={})
        from tinker_actors.transport import RetryPolicy

        with pytest.raises(errors.BillingError) as bi:
            await t.request(
                "POST",
                "/api/v1/y",
                json={},
                retry=RetryPolicy(billing_pause=1e-9, billing_interval=0.0),
            )
    for exc in (ei.value, bi.value):
        assert KEY not in str(exc) and KEY not in repr(exc)
        assert "for project" in str(ei.value)  # the rest of the detail is kept
    assert KEY not in caplog.text
    assert KEY not in repr(t)


# ------------------------------------------------------------------ a future that never ends
async def test_try_again_forever_stays_pending_and_cancel_ends_it() -> None:
    async with ScriptedServer() as m:
        m.default(
            "POST",
            RETRIEVE,
            payload={"type": "try_again", "request_id": "req-1", "queue_state": "active"},
        )
        t = transport(m.base)

        async def yield_sleep(_: float) -> None:
            await asyncio.sleep(0)

        task = asyncio.ensure_future(poll_future(t, "req-1", "OptimStep", sleep=yield_sleep))
        await m.wait_for(RETRIEVE, 5)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        n = len(m.seen(RETRIEVE))
        await asyncio.sleep(0)
        assert len(m.seen(RETRIEVE)) == n  # nothing keeps polling after the cancel
