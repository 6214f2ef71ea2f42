"""Restart on the same data dir: runs, checkpoints and sessions survive; futures fail cleanly."""

from __future__ import annotations

import sqlite3
import time

import aiohttp
import pytest

from tinker_actors.server import LocalServer

from ._helpers import PROTO, Api

tinker = pytest.importorskip("tinker")


async def test_restart_keeps_runs_checkpoints_and_live_models(tmp_path):
    data_dir = tmp_path / "data"
    srv = LocalServer(
        port=0, data_dir=data_dir, engine="null", api_key="tml-k", long_poll_s=0.5
    ).start_in_thread()
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(srv, http)
            sid = await api.session()
            model = await api.model(sid)
            _, fb = await api.fwdbwd(model, 1)
            assert (await api.result(fb["request_id"], accept=PROTO))[0] == 200
            save = await api.ok("/save_weights", {"model_id": model, "seq_id": 2, "path": "keep"})
            _, saved = await api.result(save["request_id"])
            pending = await api.fwdbwd(model, 5)  # waits for seq 3: pending at the stop
    finally:
        srv.stop_in_thread()

    # a crash leaves a future pending in the store: the next start fails it cleanly
    with sqlite3.connect(data_dir / "server.sqlite3") as db:
        db.execute(
            "INSERT INTO futures (request_id, request_type, created_at) VALUES (?,?,?)",
            ("req-crashed", "OptimStep", time.time()),
        )

    srv2 = LocalServer(
        port=0, data_dir=data_dir, engine="null", api_key="tml-k", long_poll_s=0.5
    ).start_in_thread()
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(srv2, http)
            # finished JSON results survive; so does a forward_backward whose gradients still
            # wait for optim_step (they are live state, saved at the clean stop)
            assert (await api.result(save["request_id"]))[1] == saved
            assert (await api.result(fb["request_id"], accept=PROTO))[0] == 200
            for rid in ("req-crashed", pending[1]["request_id"]):
                _status, body = await api.result(rid)
                assert body["category"] == "server"
                assert "restarted" in body["error"] or "stopped" in body["error"], body
            # the live model resumes where it was (saved at the clean stop), seq ids continue
            _, fb3 = await api.fwdbwd(model, 3)
            assert (await api.result(fb3["request_id"], accept=PROTO))[0] == 200
            assert (await api.get(f"/sessions/{sid}"))[1]["training_run_ids"] == [model]
    finally:
        srv2.stop_in_thread()

    # with the official SDK: runs and checkpoints are listed and loadable after a restart
    srv3 = LocalServer(port=0, data_dir=data_dir, engine="null", api_key="tml-k").start_in_thread()
    try:
        rest = tinker.RestClient(base_url=srv3.base_url, api_key=srv3.api_key)
        runs = rest.list_training_runs().result()
        assert model in {r.training_run_id for r in runs.training_runs}
        ckpts = rest.list_checkpoints(model).result().checkpoints
        assert [c.tinker_path for c in ckpts] == [saved["path"]]
        sc = tinker.ServiceClient(base_url=srv3.base_url, api_key=srv3.api_key)
        tc = sc.create_training_client_from_state_with_optimizer(saved["path"])
        tc = tc.result() if hasattr(tc, "result") else tc
        assert tc.get_info().model_data.model_name == "tinker-actors/byte-1m"
        sc.close("success").result()
    finally:
        srv3.stop_in_thread()


async def test_model_lost_in_a_crash_reports_clearly(tmp_path):
    data_dir = tmp_path / "data"
    srv = LocalServer(
        port=0, data_dir=data_dir, engine="null", api_key="tml-k", save_live_state_on_stop=False
    ).start_in_thread()
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(srv, http)
            model = await api.model(await api.session())
    finally:
        srv.stop_in_thread()
    srv = LocalServer(port=0, data_dir=data_dir, engine="null", api_key="tml-k").start_in_thread()
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(srv, http)
            status, body = await api.fwdbwd(model, 1)
            assert status == 410 and "lost its live state" in body["detail"]
    finally:
        srv.stop_in_thread()


async def test_one_server_per_data_dir(tmp_path):
    from tinker_actors.server.local import DataDirInUse

    async with LocalServer(port=0, data_dir=tmp_path, engine="null", api_key="tml-k"):
        with pytest.raises(DataDirInUse):
            await LocalServer(port=0, data_dir=tmp_path, engine="null", api_key="tml-k").start()
    # released at stop: the directory can be used again
    async with LocalServer(port=0, data_dir=tmp_path, engine="null", api_key="tml-k") as srv:
        assert srv.data_dir == tmp_path
