"""Transport edge cases a real server won't produce: error mapping, retry hints, billing.

ScriptedServer does not work with the installed aiohttp (ClientResponse gained a required
``stream_writer``), so a scripted aiohttp server on port 0 plays the edge cases instead.
"""

from __future__ import annotations

import os
import re
import uuid

import pytest

from tinker_actors import errors
from tinker_actors.config import Settings
from tinker_actors.runtime import loop_runtime
from tinker_actors.transport import (
    STANDARD,
    RetryPolicy,
    Transport,
    idempotency_key,
    retry_after_seconds,
    should_retry,
)

from .scripted import ScriptedServer


def make_transport(sleeps: list[float], base: str) -> Transport:
    async def sleep(d: float) -> None:
        sleeps.append(d)

    return Transport(loop_runtime(), Settings(base_url=base, api_key="tml-x"), sleep=sleep)


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, errors.BadRequestError),
        (401, errors.AuthenticationError),
        (403, errors.PermissionDeniedError),
        (404, errors.NotFoundError),
        (422, errors.UnprocessableEntityError),
    ],
)
async def test_status_errors_are_mapped_once(status: int, cls: type) -> None:
    async with ScriptedServer() as m:
        t = make_transport([], m.base)
        m.post("/api/v1/x", status=status, payload={"detail": "nope"})
        with pytest.raises(cls) as ei:
            await t.request("POST", "/api/v1/x", json={})
    assert ei.value.status_code == status
    assert "nope" in str(ei.value)


async def test_retries_5xx_then_succeeds_with_backoff() -> None:
    sleeps: list[float] = []
    async with ScriptedServer() as m:
        t = make_transport(sleeps, m.base)
        m.post("/api/v1/x", status=503)
        m.post("/api/v1/x", status=500)
        m.post("/api/v1/x", status=200, payload={"ok": 1})
        r = await t.request("POST", "/api/v1/x", json={})
    assert r.json() == {"ok": 1}
    assert len(sleeps) == 2


async def test_retry_after_header_is_honoured() -> None:
    sleeps: list[float] = []
    async with ScriptedServer() as m:
        t = make_transport(sleeps, m.base)
        m.post("/api/v1/x", status=429, headers={"retry-after-ms": "1500"})
        m.post("/api/v1/x", status=200, payload={})
        await t.request("POST", "/api/v1/x", json={})
    assert sleeps == [1.5]


async def test_x_should_retry_false_stops_retries() -> None:
    async with ScriptedServer() as m:
        t = make_transport([], m.base)
        m.post("/api/v1/x", status=503, headers={"x-should-retry": "false"})
        with pytest.raises(errors.InternalServerError):
            await t.request("POST", "/api/v1/x", json={})


async def test_gives_up_after_max_attempts() -> None:
    sleeps: list[float] = []
    async with ScriptedServer() as m:
        t = make_transport(sleeps, m.base)
        for _ in range(3):
            m.post("/api/v1/x", status=500)
        with pytest.raises(errors.InternalServerError):
            await t.request("POST", "/api/v1/x", json={}, retry=RetryPolicy(max_attempts=3))
    assert len(sleeps) == 2


async def test_billing_402_is_a_bounded_pause() -> None:
    sleeps: list[float] = []
    async with ScriptedServer() as m:
        t = make_transport(sleeps, m.base)
        m.post("/api/v1/x", status=402)
        m.post("/api/v1/x", status=402)
        m.post("/api/v1/x", status=200, payload={})
        await t.request("POST", "/api/v1/x", json={})
    assert sleeps == [5.0, 5.0]
    async with ScriptedServer() as m:
        t = make_transport(sleeps, m.base)
        m.post("/api/v1/x", status=402)
        with pytest.raises(errors.BillingError):
            await t.request("POST", "/api/v1/x", json={}, retry=STANDARD.with_billing(0.0))


async def test_connection_error_is_mapped() -> None:
    t = make_transport([], "http://127.0.0.1:9")  # discard port: nothing listens
    with pytest.raises(errors.APIConnectionError):
        await t.request("GET", "/api/v1/none", retry=RetryPolicy(max_attempts=2))


async def test_headers_on_requests() -> None:
    async with ScriptedServer() as m:
        t = make_transport([], m.base)
        m.post("/api/v1/x", status=200, payload={})
        m.get("/api/v1/y", status=200, payload={})
        await t.request("POST", "/api/v1/x", json={}, sdk_method="TrainingClient.optim_step")
        await t.request("GET", "/api/v1/y")
        post_h, get_h = m.requests[0].headers, m.requests[1].headers
    assert post_h["X-API-Key"] == "tml-x"
    assert post_h["X-Idempotency-Key"].startswith("stainless-python-retry-")
    assert post_h["x-sdk-method"] == "TrainingClient.optim_step"
    assert post_h["User-Agent"] == "AsyncTinker/Python 0.38.0"
    assert "X-Idempotency-Key" not in get_h


def test_idempotency_keys_are_fresh_uuid4s_across_refills_and_forks() -> None:
    keys = [idempotency_key() for _ in range(1000)]  # several 256-key refills
    assert len(set(keys)) == len(keys)
    for k in keys[:300]:
        u = uuid.UUID(k.removeprefix("stainless-python-retry-"))
        assert u.version == 4 and u.variant == uuid.RFC_4122
        assert k == f"stainless-python-retry-{u}"
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child draws from fresh random bytes, not the parent's leftovers
        os.write(w, ",".join(idempotency_key() for _ in range(4)).encode())
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    child = os.read(r, 4096).decode().split(",")
    os.close(r)
    parent = [idempotency_key() for _ in range(4)]
    assert len(child) == 4 and not set(child) & set(parent)
    assert all(re.fullmatch(r"stainless-python-retry-[0-9a-f-]{36}", k) for k in child)


async def test_each_request_of_a_kind_gets_its_own_key_and_the_callers_header_values() -> None:
    """The per-kind header template: same names in the same order on every request, with the
    request's own idempotency key and the caller's values; a new API key reaches the next."""
    async with ScriptedServer() as m:
        t = make_transport([], m.base)
        for _ in range(3):
            m.post("/api/v1/x", status=200, payload={})
        await t.request("POST", "/api/v1/x", json={}, headers={"X-Tinker-Request-Iteration": "0"})
        await t.request("POST", "/api/v1/x", json={}, headers={"X-Tinker-Request-Iteration": "1"})
        t.set_api_key("tml-rotated")
        await t.request("POST", "/api/v1/x", json={}, headers={"X-Tinker-Request-Iteration": "2"})
        hs = [r.headers for r in m.requests]
    assert [h["X-Tinker-Request-Iteration"] for h in hs] == ["0", "1", "2"]
    assert len({h["X-Idempotency-Key"] for h in hs}) == 3
    assert [h["X-API-Key"] for h in hs] == ["tml-x", "tml-x", "tml-rotated"]
    assert list(hs[0].keys()) == list(hs[1].keys()) == list(hs[2].keys())


async def test_a_body_over_1_mib_is_sent_whole_and_without_a_warning() -> None:
    """A forward_backward chunk may be 5 MB: aiohttp's ResourceWarning for large bytes
    bodies must not reach the user (this suite turns warnings into errors)."""
    body = bytes(range(256)) * (3 * 2**20 // 256)
    async with ScriptedServer() as m:
        t = make_transport([], m.base)
        m.post("/api/v1/x", status=200, payload={})
        await t.request("POST", "/api/v1/x", content=body, content_type="application/x-protobuf")
        (req,) = m.requests
    assert req.body == body
    assert req.headers["Content-Type"] == "application/x-protobuf"
    assert req.headers["Content-Length"] == str(len(body))


async def test_an_errors_headers_have_lower_case_names() -> None:
    """As httpx's headers iterate in the official SDK's errors: ``err.headers`` is keyed by
    lower-case names, whatever case the server sent."""
    async with ScriptedServer() as m:
        t = make_transport([], m.base)
        m.post("/api/v1/x", status=404, payload={"detail": "no"}, headers={"X-Request-ID": "r-1"})
        with pytest.raises(errors.NotFoundError) as ei:
            await t.request("POST", "/api/v1/x", json={})
    assert ei.value.headers["x-request-id"] == "r-1"
    assert all(k == k.lower() for k in ei.value.headers)


def test_should_retry_table() -> None:
    assert should_retry(503, {}, STANDARD)
    assert should_retry(409, {}, STANDARD)
    assert not should_retry(400, {}, STANDARD)
    assert should_retry(400, {"x-should-retry": "true"}, STANDARD)
    assert not should_retry(500, {"x-should-retry": "false"}, STANDARD)
    assert retry_after_seconds({"retry-after": "2"}) == 2.0
    assert retry_after_seconds({"retry-after": "120"}) is None
