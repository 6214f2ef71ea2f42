"""Typed request bodies, request stats, session expiry and seq-id retries across a restart."""

from __future__ import annotations

import time

import aiohttp
import pytest
import zstandard

from tinker_actors.server import LocalServer

from ._helpers import Api


@pytest.fixture
async def api(local_server):
    async with aiohttp.ClientSession() as http:
        yield Api(local_server, http)


async def test_wrong_typed_fields_are_4xx_naming_the_field(api: Api):
    sid = await api.session()
    model = await api.model(sid)
    cases = [
        (
            "/create_model",
            {"session_id": sid, "model_seq_id": "x", "base_model": "b"},
            "model_seq_id",
        ),
        ("/get_info", {"model_id": 5}, "model_id"),
        (
            "/optim_step",
            {"model_id": model, "seq_id": 1, "adam_params": {"learning_rate": "x"}},
            "learning_rate",
        ),
        (
            "/optim_step",
            {"model_id": model, "seq_id": 1, "optim_params": {"beta1": []}},
            "optim_params",
        ),
        ("/save_weights", {"model_id": model, "seq_id": 1, "ttl_seconds": "soon"}, "ttl_seconds"),
        (
            "/retrieve_future",
            {"request_id": "r", "allow_metadata_only": "yes"},
            "allow_metadata_only",
        ),
        ("/session_heartbeat", {}, "session_id"),
        ("/create_session", {"tags": "not-a-list"}, "tags"),
    ]
    for path, body, field in cases:
        status, reply = await api.post(path, body)
        assert status == 422, (path, status, reply)
        assert field in reply["detail"], (path, reply)
    # an optional-on-the-wire field the server needs is named too
    status, reply = await api.post("/optim_step", {"model_id": model})
    assert status == 422 and "seq_id" in reply["detail"], reply
    # malformed JSON is a 400, not a 422
    status, reply = await api.post("/get_info", data=b"{not json")
    assert status == 400 and "malformed JSON" in reply["detail"], reply
    # the optim_params alias reaches the engine as AdamW
    fut = await api.ok("/optim_step", {"model_id": model, "seq_id": 1, "optim_params": {}})
    status, res = await api.result(fut["request_id"])
    assert status == 200 and "metrics" in res, res


@pytest.mark.parametrize("local_server", [{"max_body_bytes": 1 << 20}], indirect=True)
async def test_zstd_frame_without_size_is_bounded(api: Api):
    bomb = zstandard.ZstdCompressor(write_content_size=False).compress(b"{" + b" " * (4 << 20))
    status, body = await api.post(
        "/get_info",
        data=bomb,
        headers={"Content-Encoding": "zstd", "Content-Type": "application/json"},
    )
    assert status == 413, body


async def test_request_stats_in_process_and_route_off_by_default(api: Api, local_server):
    before = local_server.stats()["requests"].get("create_session", 0)
    await api.session()
    await api.get("/healthz")
    stats = local_server.stats()
    assert stats["requests"]["create_session"] == before + 1
    assert stats["requests"]["healthz"] >= 1
    assert stats["total"] == sum(stats["requests"].values())
    assert (await api.get("/_local/stats"))[0] == 404


@pytest.mark.parametrize("local_server", [{"stats_route": True}], indirect=True)
async def test_stats_route_when_enabled_is_authenticated(api: Api):
    await api.session()
    assert (await api.get("/_local/stats", key=False))[0] == 401
    status, stats = await api.get("/_local/stats")
    assert status == 200 and stats["requests"]["create_session"] == 1, stats
    assert "local_stats" not in stats["requests"]  # reading the stats is not counted


async def test_silent_session_expires_and_releases_its_models(tmp_path):
    async with LocalServer(
        port=0, data_dir=tmp_path, engine="null", api_key="tml-k", session_timeout_s=60
    ) as srv:
        svc = srv.service
        assert svc is not None
        async with aiohttp.ClientSession() as http:
            api = Api(srv, http)
            sid = await api.session()
            model = await api.model(sid)
            fut = await api.ok(
                "/save_weights_for_sampler",
                {"model_id": model, "seq_id": 1, "sampling_session_seq_id": 1},
            )
            sampler = (await api.result(fut["request_id"]))[1]["sampling_session_id"]
            assert svc.sweep(now=time.time() + 30) == []
            assert svc.sweep(now=time.time() + 61) == [sid]
            await svc.wait_released()
            assert model not in svc.training.lanes and sampler not in svc.sampling.lanes
            status, body = await api.post("/session_heartbeat", {"session_id": sid})
            assert status == 410 and "expired" in body["detail"], body
            status, body = await api.fwdbwd(model, 2)
            assert status == 410 and "expired" in body["detail"], body
            status, body = await api.post(
                "/asample",
                {
                    "sampling_session_id": sampler,
                    "prompt": {"chunks": [{"type": "encoded_text", "tokens": [5]}]},
                    "sampling_params": {"max_tokens": 1},
                },
            )
            assert status == 410, body
            status, _ = await api.post(
                "/create_model", {"session_id": sid, "model_seq_id": 1, "base_model": "b"}
            )
            assert status == 410
            # records stay
            assert (await api.get(f"/training_runs/{model}"))[0] == 200
            found = await api.ok("/sessions/search", {"session_id": sid})
            assert found["sessions"][0]["status"]["type"] == "cancelled"


async def test_retry_of_a_seq_that_ran_before_a_restart_gets_its_future(tmp_path):
    opts = {"port": 0, "data_dir": tmp_path, "engine": "null", "api_key": "tml-k"}
    step = {"learning_rate": 0.01}
    async with LocalServer(**opts) as srv, aiohttp.ClientSession() as http:
        api = Api(srv, http)
        model = await api.model(await api.session())
        body = {"model_id": model, "seq_id": 1, "adam_params": step}
        first = await api.ok("/optim_step", body)
        _, result = await api.result(first["request_id"])
    async with LocalServer(**opts) as srv, aiohttp.ClientSession() as http:
        api = Api(srv, http)
        again = await api.ok("/optim_step", body)
        assert again["request_id"] == first["request_id"]
        assert (await api.result(again["request_id"]))[1] == result
        other = {**body, "adam_params": {"learning_rate": 0.5}}
        assert (await api.post("/optim_step", other))[0] == 409
