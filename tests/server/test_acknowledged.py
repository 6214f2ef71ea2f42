"""The server keeps what it acknowledged across a clean stop (SIGTERM or ``LocalServer.stop``).

Accumulated gradients are live state: a stop between forward_backward and optim_step loses
nothing, and the forward_backward results stay retrievable. A forward_backward that the stop
failed before it ran makes the next optim_step fail loudly, never apply a partial step.
The optimizer-step counts come from the server's own engine counters.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import aiohttp
import numpy as np
import pytest

from tinker_actors import codec

from ._helpers import PROTO, Api

KEY = "tml-acknowledged"


class _Proc:
    """``python -m tinker_actors.server`` (null engine, --stats) on a data dir."""

    def __init__(self, data_dir: Path) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tinker_actors.server",
                *("--port", "0", "--engine", "null", "--data-dir", str(data_dir)),
                *("--api-key", KEY, "--stats", "--quiet", "--long-poll", "1"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "TINKER_API_KEY": ""},
        )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip().startswith("TINKER_BASE_URL="):
                self.base_url = line.strip().partition("=")[2]
                break
        else:
            raise AssertionError(f"server did not start (rc {self.proc.wait(30)})")
        self.api_key = KEY

    def counters_all(self) -> dict[str, dict[str, int]]:
        req = urllib.request.Request(
            self.base_url + "/api/v1/_local/stats", headers={"X-API-Key": KEY}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.load(resp)["models"]

    def counters(self, model_id: str) -> dict[str, int]:
        return self.counters_all()[model_id]

    def sigterm(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            assert self.proc.wait(timeout=60) == 0
        finally:
            self._close_pipe()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self._close_pipe()

    def _close_pipe(self) -> None:
        if self.proc.stdout is not None:
            self.proc.stdout.close()


async def _optim(api: Api, model: str, seq: int) -> tuple[int, dict]:
    fut = await api.ok(
        "/optim_step",
        {"model_id": model, "seq_id": seq, "adam_params": {"learning_rate": 1e-3}},
    )
    return await api.result(fut["request_id"])


async def test_sigterm_between_forward_backward_and_optim_step_loses_no_step(tmp_path):
    data = tmp_path / "data"
    succeeded = 0
    srv = _Proc(data)
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(srv, http)
            model = await api.model(await api.session())
            seq = 1
            for _ in range(3):
                _, fb = await api.fwdbwd(model, seq)
                assert (await api.result(fb["request_id"], accept=PROTO))[0] == 200
                status, body = await _optim(api, model, seq + 1)
                assert status == 200 and "metrics" in body, body
                succeeded += 1
                seq += 2
            _, fb_before = await api.fwdbwd(model, seq)  # acknowledged, then the stop
            status, fb_raw = await api.result(fb_before["request_id"], accept=PROTO)
            assert status == 200
            assert srv.counters(model) == {"optimizer_steps": 3, "pending_gradients": 1}
        srv.sigterm()

        srv = _Proc(data)
        async with aiohttp.ClientSession() as http:
            api = Api(srv, http)
            # the acknowledged forward_backward's result is still there, in protobuf
            assert await api.result(fb_before["request_id"], accept=PROTO) == (200, fb_raw)
            status, body = await _optim(api, model, seq + 1)
            assert status == 200 and "metrics" in body, body
            succeeded += 1
            counts = srv.counters(model)
            assert counts["optimizer_steps"] == succeeded == 4
            assert counts["pending_gradients"] == 0
    finally:
        srv.kill()


async def test_optim_step_after_a_lost_forward_backward_fails_and_says_so(tmp_path):
    data = tmp_path / "data"
    srv = _Proc(data)
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(srv, http)
            model = await api.model(await api.session())
            _, fb1 = await api.fwdbwd(model, 1)
            assert (await api.result(fb1["request_id"], accept=PROTO))[0] == 200
            # seq 3 arrives before seq 2: held, so the stop fails it before it runs
            _, fb3 = await api.fwdbwd(model, 3)
        srv.sigterm()

        srv = _Proc(data)
        async with aiohttp.ClientSession() as http:
            api = Api(srv, http)
            status, body = await api.result(fb3["request_id"])
            assert status == 200 and body["category"] == "server", body
            status, body = await _optim(api, model, 2)
            assert status == 200 and body["category"] == "server", body
            assert "seq_id(s) [3]" in body["error"] and "not applied" in body["error"], body
            assert srv.counters(model) == {"optimizer_steps": 0, "pending_gradients": 0}
            # redoing the step's forward_backward calls, then optim_step, applies it once
            for seq in (3, 4):
                _, fb = await api.fwdbwd(model, seq)
                assert (await api.result(fb["request_id"], accept=PROTO))[0] == 200
            status, body = await _optim(api, model, 5)
            assert status == 200 and "metrics" in body, body
            assert srv.counters(model) == {"optimizer_steps": 1, "pending_gradients": 0}
    finally:
        srv.kill()


def test_torch_engine_gradients_round_trip_exactly(tmp_path):
    """Saved and restored gradients give the same step as never stopping."""
    pytest.importorskip("torch")
    from tinker_actors.server.engine.base import AdamSpec, DatumArrays, LoraSpec
    from tinker_actors.server.engine.torch_engine import TorchEngine

    tokens = np.arange(1, 9, dtype=np.int64)
    datum = DatumArrays(tokens=tokens, inputs={"target_tokens": tokens + 1})
    spec, adam = LoraSpec(rank=2, seed=7), AdamSpec(learning_rate=1e-2)
    state = tmp_path / "state"

    a = TorchEngine(cache_dir=tmp_path / "cache")
    a.create_model("m", "tinker-actors/byte-1m", spec)
    a.forward_backward("m", [datum], "cross_entropy", {}, False)
    a.save_state("m", state)
    assert a.save_gradients("m", state) > 0
    a.optim_step("m", adam)
    a.save_sampler_weights("m", tmp_path / "uninterrupted")

    b = TorchEngine(cache_dir=tmp_path / "cache")
    b.load_state("m", state, with_optimizer=True, base_model=None)
    b.load_gradients("m", state)
    assert b.counters("m") == {"optimizer_steps": 0, "pending_gradients": 1}
    b.optim_step("m", adam)
    assert b.counters("m") == {"optimizer_steps": 1, "pending_gradients": 0}
    b.save_sampler_weights("m", tmp_path / "restarted")

    from safetensors.numpy import load_file

    want = load_file(str(tmp_path / "uninterrupted" / "adapter_model.safetensors"))
    got = load_file(str(tmp_path / "restarted" / "adapter_model.safetensors"))
    assert want.keys() == got.keys()
    assert any(np.any(v != 0) for k, v in want.items() if "lora_B" in k)  # it did train
    for k in want:
        np.testing.assert_array_equal(want[k], got[k])
    # and a save without gradients writes none (a user checkpoint never carries them)
    assert b.save_gradients("m", tmp_path / "none") == 0
    assert not (tmp_path / "none").exists()


def test_codec_round_trip_of_a_kept_result():
    """The stored JSON form of a forward_backward result renders as the same protobuf."""
    from tinker_actors.server import wire
    from tinker_actors.server.engine.base import ForwardBackwardResult
    from tinker_actors.server.futures import Outcome

    result = ForwardBackwardResult(
        [{"logprobs": np.array([-0.5, -1.25], dtype=np.float32)}], {"loss:sum": 1.75}
    )
    outcome = Outcome("fwdbwd", result)
    again = wire.fwdbwd_outcome_from_json(wire.fwdbwd_outcome_json(outcome))
    assert wire._encode(again, True) == wire._encode(outcome, True)
    assert codec.decode_forward_backward_output(wire._encode(again, True)).metrics == {
        "loss:sum": 1.75
    }


async def test_optim_step_after_a_crash_says_the_state_is_lost(tmp_path):
    """SIGKILL between forward_backward and optim_step: no live state survives, so the
    optim_step is refused with an error that says so (never a silent no-op)."""
    data = tmp_path / "data"
    srv = _Proc(data)
    try:
        async with aiohttp.ClientSession() as http:
            api = Api(srv, http)
            model = await api.model(await api.session())
            fut = await api.ok("/save_weights", {"model_id": model, "seq_id": 1, "path": "s1"})
            saved = (await api.result(fut["request_id"]))[1]["path"]
            _, fb = await api.fwdbwd(model, 2)
            assert (await api.result(fb["request_id"], accept=PROTO))[0] == 200
        srv.kill()

        srv = _Proc(data)
        async with aiohttp.ClientSession() as http:
            api = Api(srv, http)
            status, out = await api.post(
                "/optim_step", {"model_id": model, "seq_id": 3, "adam_params": {}}
            )
            assert status == 410, out
            assert "lost its live state" in out["detail"] and saved in out["detail"], out
            assert model not in srv.counters_all()
    finally:
        srv.kill()
