"""The local server's HTTP protocol driven with plain aiohttp: auth, bodies, futures, REST."""

from __future__ import annotations

import io
import tarfile
from typing import Any

import aiohttp
import numpy as np
import pytest

from tinker_actors import codec, manifest
from tinker_actors.server import LocalServer

from ._helpers import PROTO, Api, fwdbwd_body


@pytest.fixture
async def api(local_server):
    async with aiohttp.ClientSession() as http:
        yield Api(local_server, http)


async def test_auth_required_except_healthz(api: Api):
    status, body = await api.post("/create_session", {"tags": []}, key=False)
    assert status == 401 and "detail" in body
    status, body = await api.post(
        "/create_session", {"tags": []}, headers={"X-API-Key": "tml-wrong"}, key=False
    )
    assert status == 401 and body["detail"] == "invalid API key"
    assert (await api.get("/healthz", key=False)) == (200, {"status": "ok"})
    status, _ = await api.get("/heartbeat")
    assert status == 404
    # JWT mode: /auth/token issues a token that then works as the X-API-Key
    jwt = (await api.ok("/auth/token", {}))["jwt"]
    assert jwt.startswith("eyJ")
    status, _ = await api.post(
        "/create_session", {"tags": []}, headers={"X-API-Key": jwt}, key=False
    )
    assert status == 200
    forged = jwt[:-4] + ("AAAA" if not jwt.endswith("AAAA") else "BBBB")
    status, _ = await api.post(
        "/create_session", {"tags": []}, headers={"X-API-Key": forged}, key=False
    )
    assert status == 401


def _sample_path(route: manifest.Route) -> str:
    params = {p: ("weights/x" if p == "checkpoint_id" else "x") for p in route.path_params}
    return route.format_path(**params)


@pytest.mark.parametrize("payload", [b"\x00\xffnot json", b"[1, 2]", b"{}", b'{"model_id": 5}'])
async def test_garbage_bodies_never_500(api: Api, payload: bytes):
    for route in manifest.ROUTE_LIST:
        if route.method not in ("POST", "PUT"):
            continue
        ctype = PROTO if route.request_encoding == "protobuf" else "application/json"
        status, body, _ = await api.call(
            route.method, _sample_path(route), data=payload, headers={"Content-Type": ctype}
        )
        assert status < 500, (route.name, status, body)
        if status >= 400:
            assert isinstance(body, dict) and body.get("detail"), (route.name, body)


async def test_unknown_ids_are_4xx(api: Api):
    for route in manifest.ROUTE_LIST:
        if route.method in ("GET", "DELETE") and route.path_params:
            status, body, _ = await api.call(route.method, _sample_path(route))
            assert 400 <= status < 500, (route.name, status, body)


@pytest.mark.parametrize("local_server", [{"max_body_bytes": 4096}], indirect=True)
async def test_body_size_limit(api: Api):
    status, body = await api.post(
        "/telemetry", data=b"{" + b" " * 10_000 + b"}", headers={"Content-Type": "application/json"}
    )
    assert status == 413
    sid = await api.session()
    model = await api.model(sid)
    big = codec.zstd_compress(fwdbwd_body(model, 1, n=50, tokens=64))
    assert len(big) < 4096
    status, body = await api.post(
        "/forward_backward", data=big, headers={"Content-Type": PROTO, "Content-Encoding": "zstd"}
    )
    assert status == 413, body


async def test_client_config_session_lifecycle_and_telemetry(api: Api):
    assert (await api.ok("/client/config", {"sdk_version": "0.38.0"}))["pjwt_auth_enabled"] is False
    assert await api.ok("/client/dynamic_config", {"sdk_version": "0.38.0"}) == {}
    sid = await api.session()
    hb = {"session_id": sid, "type": "session_heartbeat"}
    assert await api.ok("/session_heartbeat", hb) == {"type": "session_heartbeat"}
    assert await api.ok(
        "/telemetry", {"events": [{"event": "GENERIC_EVENT"}], "session_id": sid}
    ) == {"status": "accepted"}
    await api.ok(f"/sessions/{sid}/finish", {"reason": {"type": "success"}, "detail": None})
    assert (await api.post("/session_heartbeat", hb))[0] == 410
    await api.ok(f"/sessions/{sid}/finish", {"reason": {"type": "errored"}, "detail": "x"})
    summary = await api.ok("/sessions/search", {"session_id": sid, "user_metadata": {}, "limit": 5})
    assert summary["sessions"][0]["status"]["reason"]["type"] == "success"  # first reason wins


async def test_futures_long_poll_failure_and_410(api: Api):
    assert (await api.post("/retrieve_future", {"request_id": "nope"}))[0] == 410
    sid = await api.session()
    model = await api.model(sid)
    status, fut = await api.fwdbwd(model, 1, loss_fn="no_such_loss")
    assert status == 200
    status, body = await api.result(fut["request_id"])
    assert status == 200 and body["category"] == "user" and "no_such_loss" in body["error"]
    # a failed future does not poison the model: the next seq runs
    status, fut = await api.fwdbwd(model, 2)
    status, body = await api.result(fut["request_id"], accept=PROTO)
    assert status == 200 and isinstance(body, bytes)
    out = codec.decode_forward_backward_output(body)
    assert out.metrics["loss:sum"] == 0.0 and out.loss_fn_outputs[0]["logprobs"].shape == [4]
    # seq 4 waits for seq 3: the long poll ends in try_again with a queue_state
    status, fut4 = await api.fwdbwd(model, 4)
    status, body = await api.post("/retrieve_future", {"request_id": fut4["request_id"]})
    assert status == 200 and body["type"] == "try_again" and body["queue_state"] == "active"
    assert "seq_id 3" in body["queue_state_reason"]


@pytest.mark.parametrize("local_server", [{"metadata_only_threshold_bytes": 1}], indirect=True)
async def test_complete_metadata_then_payload(api: Api):
    sid = await api.session()
    model = await api.model(sid)
    _, fut = await api.fwdbwd(model, 1)
    _, body = await api.result(fut["request_id"], accept=PROTO, allow_metadata_only=True)
    assert body["status"] == "complete_metadata" and body["response_payload_size"] > 0
    _status, payload = await api.result(fut["request_id"], accept=PROTO)
    assert len(payload) == body["response_payload_size"]


async def test_seq_ordering_duplicates_and_conflicts(api: Api, local_server):
    engine = local_server.engine
    calls: list[int] = []
    original = engine.forward_backward

    def recording(model_id, data, *a):
        calls.append(len(data))
        return original(model_id, data, *a)

    engine.forward_backward = recording
    sid = await api.session()
    model = await api.model(sid)
    # chunks of one call arrive out of order (the SDK sends the first chunk last)
    _, f3 = await api.fwdbwd(model, 3, n=3)
    _, f2 = await api.fwdbwd(model, 2, n=2)
    status, body = await api.post("/retrieve_future", {"request_id": f2["request_id"]})
    assert body["type"] == "try_again" and calls == []
    # a retry of a seq id already received returns the same future
    _, again = await api.fwdbwd(model, 2, n=2)
    assert again["request_id"] == f2["request_id"]
    # the same seq id with a different body is a conflict
    status, body = await api.fwdbwd(model, 2, n=5)
    assert status == 409 and "seq_id 2" in body["detail"]
    _, f1 = await api.fwdbwd(model, 1, n=1)
    for fut in (f1, f2, f3):
        assert (await api.result(fut["request_id"], accept=PROTO))[0] == 200
    assert calls == [1, 2, 3]
    # a seq id that already ran and is retried with a new body is refused too
    assert (await api.fwdbwd(model, 1, n=4))[0] == 409
    # create_model retried (same body) returns the same future
    body = {"session_id": sid, "model_seq_id": 7, "base_model": "m", "lora_config": {"rank": 2}}
    a = await api.ok("/create_model", body)
    b = await api.ok("/create_model", body)
    assert a == b and a["model_id"] == f"{sid}:train:7"


async def test_zstd_protobuf_body(api: Api):
    sid = await api.session()
    model = await api.model(sid)
    body = codec.zstd_compress(fwdbwd_body(model, 1, n=2))
    status, fut = await api.post(
        "/forward_backward", data=body, headers={"Content-Type": PROTO, "Content-Encoding": "zstd"}
    )
    assert status == 200
    _, out = await api.result(fut["request_id"], accept=PROTO)
    assert len(codec.decode_forward_backward_output(out).loss_fn_outputs) == 2


def _json_datum(n: int = 4) -> dict[str, Any]:
    return {
        "model_input": {"chunks": [{"type": "encoded_text", "tokens": list(range(1, n + 1))}]},
        "loss_fn_inputs": {
            "target_tokens": {"data": list(range(2, n + 2)), "dtype": "int64"},
            "weights": {"data": [1.0] * n, "dtype": "float32"},
        },
    }


async def test_older_json_routes(api: Api):
    sid = await api.session()
    model = await api.model(sid)
    # JSON forward_backward body (<= 0.22.2) and a JSON result for a JSON-only client
    fut = await api.ok(
        "/forward_backward",
        {
            "forward_backward_input": {
                "data": [_json_datum(), _json_datum(3)],
                "loss_fn": "cross_entropy",
            },
            "model_id": model,
            "seq_id": 1,
        },
    )
    status, out = await api.result(fut["request_id"], accept="application/json")
    assert status == 200 and out["metrics"]["loss:sum"] == 0.0
    assert [o["logprobs"]["data"] for o in out["loss_fn_outputs"]] == [[0.0] * 4, [0.0] * 3]
    # POST /forward (<= 0.24.1)
    fut = await api.ok(
        "/forward",
        {
            "forward_input": {"data": [_json_datum()], "loss_fn": "cross_entropy"},
            "model_id": model,
            "seq_id": 2,
        },
    )
    status, out = await api.result(fut["request_id"])
    assert out["loss_fn_outputs"][0]["logprobs"]["dtype"] == "float32"
    # JSON SampleResponse
    s = await api.ok(
        "/create_sampling_session",
        {"session_id": sid, "sampling_session_seq_id": 0, "base_model": "tinker-actors/byte-1m"},
    )
    fut = await api.ok(
        "/asample",
        {
            "sampling_session_id": s["sampling_session_id"],
            "seq_id": 0,
            "num_samples": 2,
            "prompt": {"chunks": [{"type": "encoded_text", "tokens": [1, 2, 3]}]},
            "sampling_params": {"max_tokens": 3},
            "prompt_logprobs": True,
            "topk_prompt_logprobs": 2,
        },
    )
    assert len(fut["sample_sequence_ids"]) == 2
    status, out = await api.result(fut["request_id"])
    assert out["type"] == "sample" and len(out["sequences"]) == 2
    assert out["sequences"][0]["tokens"] == [32, 32, 32]
    assert out["prompt_logprobs"][0] is None and out["topk_prompt_logprobs"][0] is None
    # checkpoint archive: 302 to a signed tar.gz download that needs no key
    save = await api.ok(
        "/save_weights_for_sampler",
        {"model_id": model, "seq_id": 3, "path": "arch", "kind": "snapshot"},
    )
    status, res = await api.result(save["request_id"])
    assert res["path"].endswith("/sampler_weights/arch")
    status, _, resp = await api.call(
        "GET",
        f"/api/v1/training_runs/{model}/checkpoints/sampler_weights/arch/archive",
        allow_redirects=False,
        headers={"Accept": "application/json"},
    )
    assert status == 302 and resp.headers["Expires"]
    status, blob, _ = await api.call(
        "GET", resp.headers["Location"].replace(api.base, ""), key=False
    )
    assert status == 200
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        assert {"adapter_config.json", "adapter_model.safetensors"} <= set(tar.getnames())
    # POST /unload_model (<= 0.25): a future, then the model is gone
    fut = await api.ok("/unload_model", {"model_id": model, "type": "unload_model"})
    status, res = await api.result(fut["request_id"])
    assert res == {"model_id": model, "type": "unload_model"}
    assert (await api.fwdbwd(model, 4))[0] == 404


@pytest.mark.parametrize("local_server", [{"sample_queue_depth": 1}], indirect=True)
async def test_429_backpressure_does_not_consume_seq(api: Api, local_server):
    import threading

    engine = local_server.engine
    gate, entered = threading.Event(), threading.Event()
    original = engine.sample

    def slow(sampler_id, jobs):
        entered.set()
        gate.wait(10)
        return original(sampler_id, jobs)

    engine.sample = slow
    sid = await api.session()
    s = await api.ok(
        "/create_sampling_session",
        {"session_id": sid, "sampling_session_seq_id": 0, "base_model": "b"},
    )

    def req(seq: int) -> dict[str, Any]:
        return {
            "sampling_session_id": s["sampling_session_id"],
            "seq_id": seq,
            "prompt": {"chunks": [{"type": "encoded_text", "tokens": [1, 2]}]},
            "sampling_params": {"max_tokens": 2},
            "num_samples": 1,
        }

    first = await api.ok("/asample", req(0), headers={"X-Tinker-Sampling-Backpressure": "1"})
    import asyncio

    assert await asyncio.to_thread(entered.wait, 10)
    status, body = await api.post("/asample", req(1))
    assert status == 429 and "detail" in body
    gate.set()
    assert (await api.result(first["request_id"], accept=PROTO))[0] == 200
    again = await api.ok("/asample", req(1))  # the same seq id is accepted now
    assert again["request_id"] != first["request_id"]
    status, payload = await api.result(again["request_id"], accept=PROTO)
    resp = codec.decode_sample_response(payload)
    assert np.asarray(resp.sequences[0].tokens).tolist() == [32, 32]


async def test_rest_checkpoints_publish_ttl_and_external_urls(api: Api):
    sid = await api.session()
    model = await api.model(sid)
    for seq, name in ((1, "a"), (2, "b")):
        fut = await api.ok(
            "/save_weights", {"model_id": model, "seq_id": seq, "path": name, "overwrite": False}
        )
        assert (await api.result(fut["request_id"]))[1][
            "path"
        ] == f"tinker://{model}/weights/{name}"
    # same name without overwrite: a user failure, the seq id still consumed
    fut = await api.ok("/save_weights", {"model_id": model, "seq_id": 3, "path": "a"})
    assert (await api.result(fut["request_id"]))[1]["category"] == "user"
    ck = f"/training_runs/{model}/checkpoints/weights/a"
    assert (await api.post(ck + "/publish"))[0] == 200
    assert (await api.post(ck + "/publish"))[0] == 409
    assert (await api.call("DELETE", "/api/v1" + ck + "/publish"))[0] == 200
    assert (await api.call("DELETE", "/api/v1" + ck + "/publish"))[0] == 409
    assert (await api.post(f"/training_runs/{model}/checkpoints/weights/zz/publish"))[0] == 404
    assert (await api.post(f"/training_runs/{model}/checkpoints/bogus/a/publish"))[0] == 400
    # below the documented TTL range: the request type refuses it (422, naming the field)
    assert (await api.call("PUT", "/api/v1" + ck + "/ttl", json={"ttl_seconds": 5}))[0] == 422
    assert (await api.call("PUT", "/api/v1" + ck + "/ttl", json={"ttl_seconds": 7200}))[0] == 200
    listed = (await api.get(f"/training_runs/{model}/checkpoints"))[1]["checkpoints"]
    assert [c["checkpoint_id"] for c in listed] == ["weights/a", "weights/b"]
    assert listed[0]["expires_at"] is not None and listed[1]["expires_at"] is None
    page = (await api.get("/checkpoints?limit=1&offset=1"))[1]
    assert page["cursor"] == {"offset": 1, "limit": 1, "total_count": 2}
    assert len(page["checkpoints"]) == 1
    assert (await api.call("DELETE", "/api/v1" + ck))[0] == 200
    assert (await api.call("DELETE", "/api/v1" + ck))[0] == 404
    info = await api.ok("/weights_info", {"tinker_path": f"tinker://{model}/weights/b"})
    assert info["is_lora"] is True and info["lora_rank"] == 4
    # external weights: signed, expiring URLs served by this server without the API key
    fut = await api.ok("/save_weights_external", {"model_id": model, "seq_id": 4, "path": "ext"})
    status, res = await api.result(fut["request_id"])
    assert res["path"] == f"tinker://{model}/external_weights/ext" and res["size_bytes"] > 0
    status, urls = await api.get(
        f"/training_runs/{model}/checkpoints/external_weights/ext/external_weights_urls"
    )
    assert set(urls["urls"]) == {"adapter_config.json", "adapter_model.safetensors"}
    url = urls["urls"]["adapter_config.json"].replace(api.base, "")
    status, blob, _ = await api.call("GET", url, key=False)
    assert status == 200 and blob["peft_type"] == "LORA"
    status, _, _ = await api.call("GET", url[:-3] + "000", key=False)
    assert status == 403
    runs = (await api.get("/training_runs?limit=10"))[1]
    assert runs["training_runs"][0]["last_checkpoint"]["checkpoint_id"] == "weights/b"
    session = (await api.get(f"/sessions/{sid}"))[1]
    assert session["training_run_ids"] == [model]
    caps = (await api.get("/get_server_capabilities"))[1]
    assert caps["engine"]["benchmark"] is True and "benchmark" in caps["engine"]["note"]


async def test_sampling_sessions_and_retrieve_futures(api: Api):
    sid = await api.session()
    model = await api.model(sid)
    fut = await api.ok(
        "/save_weights_for_sampler",
        {"model_id": model, "seq_id": 1, "sampling_session_seq_id": 3, "kind": "snapshot"},
    )
    _, res = await api.result(fut["request_id"])
    sampler = res["sampling_session_id"]
    assert sampler == f"{sid}:sample:3" and "path" not in res
    assert (await api.get(f"/samplers/{sampler}"))[1]["base_model"] == "tinker-actors/byte-1m"
    assert (await api.ok("/join_sampling_session", {"sampling_session_id": sampler}))[
        "client_counter"
    ] == 1
    fut = await api.ok(
        "/asample",
        {
            "sampling_session_id": sampler,
            "seq_id": 1_000_000_005,
            "prompt": {"chunks": [{"type": "encoded_text", "tokens": [5]}]},
            "sampling_params": {"max_tokens": 1},
        },
    )
    body = await api.ok(
        "/retrieve_futures",
        {
            "target": {
                "type": "sampling_session",
                "sampling_session_id": sampler,
                "cloned_sampler_id": 1,
            },
            "prev_cursor": 0,
            "retrieved_request_ids": [],
        },
    )
    assert body["completions"] == [{"state": "finished", "request_id": fut["request_id"]}]
    body = await api.ok(
        "/retrieve_futures",
        {
            "target": {
                "type": "sampling_session",
                "sampling_session_id": sampler,
                "cloned_sampler_id": 1,
            },
            "prev_cursor": body["cursor"],
            "timeout": 0,
        },
    )
    assert body["completions"] == []
    # named sampler checkpoint, then a sampling session from its path
    fut = await api.ok(
        "/save_weights_for_sampler",
        {"model_id": model, "seq_id": 2, "path": "s1", "kind": "snapshot"},
    )
    _, res = await api.result(fut["request_id"])
    s2 = await api.ok(
        "/create_sampling_session",
        {"session_id": sid, "sampling_session_seq_id": 4, "model_path": res["path"]},
    )
    assert (await api.get(f"/samplers/{s2['sampling_session_id']}"))[1]["model_path"] == res["path"]
    status, body = await api.post(
        "/create_sampling_session",
        {"session_id": sid, "sampling_session_seq_id": 5, "model_path": "tinker://x/weights/y"},
    )
    assert status == 404


async def test_null_engine_named_as_benchmark(tmp_path):
    async with LocalServer(port=0, data_dir=tmp_path, engine="null", api_key="tml-k") as srv:
        assert srv.engine.name == "null"
        assert "benchmark" in (srv.engine.__doc__ or "").lower()
        async with aiohttp.ClientSession() as http:
            api = Api(srv, http)
            created = await api.ok("/create_session", {"tags": []})
            assert "BENCHMARK" in created["info_message"]
            model = await api.model(created["session_id"])
            info = await api.ok("/get_info", {"model_id": model})
            assert info["engine"]["benchmark"] is True
