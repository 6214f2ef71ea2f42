"""Bad input gets a clear 4xx from the local server, never a 500, a hang or a lost request.

One test per item of issue 9 (points 5 and 6): bounded integer fields (seq ids, ranks, token
ids, max_tokens against the model's context, num_samples), bounded JSON nesting, 401 for a
key that is not UTF-8, a refused store write failing only its own request, and redirects
built from the configured public URL, not the caller's Host header.
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import aiohttp
import msgspec.inspect as mi
import numpy as np
import pytest

from tinker_actors import codec, manifest
from tinker_actors.server import LocalServer
from tinker_actors.server.engine.base import SampleJob
from tinker_actors.server.engine.null import NullEngine
from tinker_actors.server.futures import FutureRegistry
from tinker_actors.server.store import Store
from tinker_actors.server.wire import MAX_JSON_DEPTH
from tinker_actors.types._bounds import INT64_MAX, MAX_NUM_SAMPLES

from ._helpers import PROTO, Api, fwdbwd_body

BIG = 2**63  # one past what SQLite (and the int64 wire types) can hold


@pytest.fixture
async def api(local_server):
    async with aiohttp.ClientSession() as http:
        yield Api(local_server, http)


async def _sampler(api: Api, base: str = "tinker-actors/byte-1m") -> tuple[str, str]:
    sid = await api.session()
    out = await api.ok(
        "/create_sampling_session",
        {"session_id": sid, "sampling_session_seq_id": 0, "base_model": base},
    )
    return sid, out["sampling_session_id"]


def _sample(sampler: str, seq_id: int | None = None, **kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "sampling_session_id": sampler,
        "prompt": {"chunks": [{"type": "encoded_text", "tokens": kw.pop("tokens", [1, 2])}]},
        "sampling_params": {"max_tokens": kw.pop("max_tokens", 2)},
        "num_samples": kw.pop("num_samples", 1),
        **kw,
    }
    if seq_id is not None:
        body["seq_id"] = seq_id
    return body


# -- every integer field of every request type is bounded ---------------------------------
def _int_fields(tp: Any, path: str, seen: set[Any], out: list[tuple[str, Any, Any]]) -> None:
    if isinstance(tp, mi.StructType):
        if tp.cls in seen:
            return
        seen.add(tp.cls)
        for f in tp.fields:
            _int_fields(f.type, f"{tp.cls.__name__}.{f.name}", seen, out)
    elif isinstance(tp, mi.IntType):
        out.append((path, tp.ge, tp.le))
    elif isinstance(tp, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
        _int_fields(tp.item_type, path + "[]", seen, out)
    elif isinstance(tp, mi.DictType):
        _int_fields(tp.key_type, path + "{key}", seen, out)
        _int_fields(tp.value_type, path + "{value}", seen, out)
    elif isinstance(tp, mi.UnionType):
        for member in tp.types:
            _int_fields(member, path, seen, out)


def test_every_integer_field_of_a_request_type_is_bounded():
    fields: list[tuple[str, Any, Any]] = []
    seen: set[Any] = set()
    for route in manifest.ROUTE_LIST:
        if route.request_type is not None:
            _int_fields(mi.type_info(route.request_type), route.request_type.__name__, seen, fields)
    assert len(fields) > 30
    # seeds are any int (the official types'); the server reduces them (see below)
    unbounded = [p for p, ge, le in fields if (ge is None or le is None) and "seed" not in p]
    assert not unbounded, unbounded
    too_wide = [p for p, ge, le in fields if ge is not None and (ge < -(2**63) or le > INT64_MAX)]
    assert not too_wide, too_wide


# -- seq ids ----------------------------------------------------------------------------------
async def test_seq_ids_past_int64_are_refused_on_json_and_protobuf_routes(api: Api):
    sid, sampler = await _sampler(api)
    model = await api.model(sid)
    for path, body in [
        ("/asample", _sample(sampler, BIG)),
        ("/optim_step", {"model_id": model, "seq_id": BIG}),
        ("/save_weights", {"model_id": model, "seq_id": BIG}),
        ("/create_model", {"session_id": sid, "model_seq_id": BIG, "base_model": "x"}),
        ("/create_sampling_session", {"session_id": sid, "sampling_session_seq_id": -1}),
    ]:
        status, out = await api.post(path, body)
        assert status == 422 and "seq_id" in out["detail"], (path, status, out)
    status, out = await api.post(
        "/forward_backward", data=fwdbwd_body(model, BIG), headers={"Content-Type": PROTO}
    )
    assert status == 422 and "seq_id" in out["detail"], out
    # the largest allowed seq id works
    fut = await api.ok("/asample", _sample(sampler, INT64_MAX))
    assert (await api.result(fut["request_id"], accept=PROTO))[0] == 200


async def test_concurrent_samples_with_bad_seq_ids_lose_no_good_request(api: Api, local_server):
    _, sampler = await _sampler(api)
    bodies = [_sample(sampler, BIG + i if i % 7 == 0 else i) for i in range(40)]
    answers = await asyncio.gather(*(api.post("/asample", b) for b in bodies))
    good = [out["request_id"] for status, out in answers if status == 200]
    refused = [status for status, _ in answers if status != 200]
    assert len(good) == 34 and refused == [422] * 6
    with sqlite3.connect(local_server.data_dir / "server.sqlite3") as db:
        stored = {r[0] for r in db.execute("SELECT request_id FROM futures")}
    assert set(good) <= stored  # every request id handed out has its row
    for rid in good:
        assert (await api.result(rid, accept=PROTO))[0] == 200


# -- ranks, token ids, max_tokens, num_samples ------------------------------------------------
async def test_lora_rank_and_token_ids_are_bounded(api: Api):
    sid = await api.session()
    for i, rank in enumerate((0, 1025, BIG)):
        status, out = await api.post(
            "/create_model",
            {
                "session_id": sid,
                "model_seq_id": i,
                "base_model": "tinker-actors/byte-1m",
                "lora_config": {"rank": rank},
            },
        )
        assert status == 422 and "rank" in out["detail"], out
    _, sampler = await _sampler(api)
    for tokens in ([1, -1], [1, 2**31], [BIG]):
        status, out = await api.post("/asample", _sample(sampler, tokens=tokens))
        assert status == 422 and "tokens" in out["detail"], out
    status, out = await api.post(
        "/asample", {**_sample(sampler), "sampling_params": {"stop": [1, -5]}}
    )
    assert status == 422 and "stop" in out["detail"], out


@pytest.mark.parametrize("max_tokens", [513, 20_000_000])
async def test_max_tokens_must_fit_the_models_context(api: Api, max_tokens: int):
    _, sampler = await _sampler(api)  # byte-1m: 512 tokens of context
    status, out = await api.post("/asample", _sample(sampler, max_tokens=max_tokens))
    assert status == 400 and "context length 512" in out["detail"], out
    fut = await api.ok("/asample", _sample(sampler, max_tokens=512))
    _, res = await api.result(fut["request_id"])
    assert len(res["sequences"][0]["tokens"]) == 512


async def test_any_integer_is_a_seed(api: Api):
    sid, sampler = await _sampler(api)
    for i, seed in enumerate((-(2**70), 2**64 + 5)):
        fut = await api.ok(
            "/create_model",
            {
                "session_id": sid,
                "model_seq_id": i,
                "base_model": "tinker-actors/byte-1m",
                "lora_config": {"rank": 2, "seed": seed},
            },
        )
        status, out = await api.result(fut["request_id"])
        assert status == 200 and out["model_id"] == fut["model_id"], out
        body = _sample(sampler, i)
        body["sampling_params"]["seed"] = seed
        fut = await api.ok("/asample", body)
        assert (await api.result(fut["request_id"], accept=PROTO))[0] == 200


def test_null_engine_bounds_max_tokens_itself():
    engine = NullEngine()
    engine.create_sampler("s", "any-model-name", None)
    with pytest.raises(ValueError, match="context length 4096"):
        engine.sample("s", [SampleJob(prompt=np.array([1]), max_tokens=20_000_000)])
    (out,) = engine.sample("s", [SampleJob(prompt=np.array([1]), max_tokens=4096)])
    assert len(out.sequences[0].tokens) == 4096


async def test_num_samples_and_topk_have_documented_caps(api: Api):
    _, sampler = await _sampler(api)
    for extra in (
        {"num_samples": MAX_NUM_SAMPLES + 1},
        {"num_samples": 0},
        {"topk_prompt_logprobs": 100_000},
    ):
        status, out = await api.post("/asample", _sample(sampler, **extra))
        assert status == 422 and next(iter(extra)) in out["detail"], out


# -- nesting depth ------------------------------------------------------------------------------
async def test_deeply_nested_json_is_a_clear_400(api: Api):
    deep = "[" * 100_000 + "]" * 100_000
    body = ('{"tags": [], "user_metadata": {"x": ' + deep + "}}").encode()
    status, out = await api.post(
        "/create_session", data=body, headers={"Content-Type": "application/json"}
    )
    assert status == 400 and f"deeper than {MAX_JSON_DEPTH}" in out["detail"], out
    legacy = ('{"model_id": "m", "seq_id": 1, "forward_backward_input": ' + deep + "}").encode()
    status, out = await api.post(
        "/forward_backward", data=legacy, headers={"Content-Type": "application/json"}
    )
    assert status == 400 and "deeper" in out["detail"], out
    # brackets inside strings do not count; ordinary nesting is fine
    ok = '{"tags": ["' + "[" * 500 + '"], "user_metadata": {"a": "{{{"}}'
    status, _ = await api.post(
        "/create_session", data=ok.encode(), headers={"Content-Type": "application/json"}
    )
    assert status == 200


# -- a key that is not UTF-8 --------------------------------------------------------------------
async def test_non_utf8_api_key_is_401(local_server):
    reader, writer = await asyncio.open_connection("127.0.0.1", local_server.port)
    writer.write(
        b"POST /api/v1/create_session HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"X-API-Key: tml-\xff\xfe\x80\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
    )
    await writer.drain()
    head = await reader.readline()
    writer.close()
    assert head.split()[1] == b"401", head


# -- a refused store write fails only its own request ------------------------------------------
async def test_a_refused_store_write_fails_only_its_own_request(tmp_path):
    store = Store(tmp_path / "db.sqlite3")
    registry = FutureRegistry(store, 3600)
    good = [registry.create("Sample", seq_id=i) for i in range(3)]
    bad = registry.create("Sample", seq_id=2**64)  # SQLite cannot hold it: OverflowError
    good.append(registry.create("Sample", seq_id=7))
    await registry.persist()  # one transaction for the burst, as a handler's answer waits for
    for rec in good:
        assert store.get_future(rec.request_id) is not None
    assert store.get_future(bad.request_id) is None
    (lost,) = registry.unrecorded([r.request_id for r in (*good, bad)])
    assert lost[0] is bad and "OverflowError" in lost[1]
    assert bad.state == "failed" and all(r.state == "pending" for r in good)
    store.close()


# -- redirects use the configured public URL ---------------------------------------------------
@pytest.mark.parametrize("public", [None, "https://tinker.example.test/base"])
async def test_archive_redirect_uses_the_public_url_not_the_host_header(tmp_path, public):
    opts: dict[str, Any] = {"public_base_url": public} if public else {}
    srv = LocalServer(
        port=0, data_dir=tmp_path / "d", engine="null", api_key="tml-k", **opts
    ).start_in_thread()
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(srv, http)
            model = await api.model(await api.session())
            save = await api.ok("/save_weights", {"model_id": model, "seq_id": 1, "path": "a"})
            assert (await api.result(save["request_id"]))[0] == 200
            status, _, resp = await api.call(
                "GET",
                f"/api/v1/training_runs/{model}/checkpoints/weights/a/archive",
                headers={"Host": "evil.example.test"},
                allow_redirects=False,
            )
            assert status == 302
            location = resp.headers["Location"]
            assert "evil" not in location
            assert location.startswith((public or srv.base_url) + "/api/v1/_files/")
            urls = await api.ok(
                "/save_weights_external", {"model_id": model, "seq_id": 2, "path": "ext"}
            )
            assert (await api.result(urls["request_id"]))[0] == 200
            _, ext = await api.get(
                f"/training_runs/{model}/checkpoints/external_weights/ext/external_weights_urls",
                headers={"Host": "evil.example.test"},
            )
            assert all(u.startswith(public or srv.base_url) for u in ext["urls"].values())
    finally:
        srv.stop_in_thread()


def test_codec_refuses_nothing_the_bounds_allow():
    """The bounds are on decode only: building a request in Python is unchanged."""
    from tinker_actors import types

    req = types.OptimStepRequest(model_id="m", seq_id=INT64_MAX)
    assert codec.json_decode(codec.json_encode(req), types.OptimStepRequest).seq_id == INT64_MAX
