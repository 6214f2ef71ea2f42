"""While a training step runs, heartbeats, long polls, REST and other samplers still answer.

No timing assertions: the slow step is a gated engine stub, and each call is shown to finish
while the step provably still runs (its gate is still closed and its future still pending).
"""

from __future__ import annotations

import aiohttp

from tinker_actors.server import LocalServer

from ._helpers import PROTO, Api, GatedEngine, wait_event


async def test_control_plane_answers_while_a_step_runs(tmp_path):
    engine = GatedEngine()
    server = LocalServer(
        port=0, data_dir=tmp_path, engine=engine, api_key="tml-k", long_poll_s=0.2
    ).start_in_thread()
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(server, http)
            sid = await api.session()
            model = await api.model(sid)
            other = await api.model(sid, seq=1)
            _, step = await api.fwdbwd(model, 1)
            await wait_event(engine.fb_entered)  # the step is now inside the engine

            hb = await api.ok(
                "/session_heartbeat", {"session_id": sid, "type": "session_heartbeat"}
            )
            assert hb == {"type": "session_heartbeat"}
            status, runs = await api.get("/training_runs")
            assert status == 200 and len(runs["training_runs"]) == 2
            assert (await api.ok("/get_info", {"model_id": model}))["model_id"] == model
            polled = await api.ok("/retrieve_future", {"request_id": step["request_id"]})
            assert polled["type"] == "try_again" and polled["queue_state_reason"] == "running"

            # sampling never waits behind another model's training
            s = await api.ok(
                "/create_sampling_session",
                {"session_id": sid, "sampling_session_seq_id": 0, "base_model": "b"},
            )
            fut = await api.ok(
                "/asample",
                {
                    "sampling_session_id": s["sampling_session_id"],
                    "seq_id": 0,
                    "prompt": {"chunks": [{"type": "encoded_text", "tokens": [1]}]},
                    "sampling_params": {"max_tokens": 2},
                },
            )
            status, payload = await api.result(fut["request_id"], accept=PROTO)
            assert status == 200 and isinstance(payload, bytes)
            # another model's optim_step is not serialised behind this model's step either
            opt = await api.ok(
                "/optim_step",
                {"model_id": other, "seq_id": 1, "adam_params": {"learning_rate": 0.1}},
            )
            status, res = await api.result(opt["request_id"])
            assert res["metrics"]["learning_rate:mean"] == 0.1

            assert not engine.fb_release.is_set()
            assert (await api.ok("/retrieve_future", {"request_id": step["request_id"]}))[
                "type"
            ] == "try_again"
            engine.fb_release.set()
            status, _out = await api.result(step["request_id"], accept=PROTO)
            assert status == 200
    finally:
        engine.fb_release.set()
        server.stop_in_thread()
