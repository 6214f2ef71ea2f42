"""End-to-end: the public clients against the real LocalServer on port 0."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

import tinker_actors as tinker
from tinker_actors import types

from .conftest import Proxy, make_datum

pytestmark = pytest.mark.e2e

MODEL = "tinker-actors/byte-1m"
TORCH = {"engine": "torch"}
DATA = [
    make_datum(b"the quick brown fox jumps over the lazy dog"),
    make_datum(b"hello tinker actors"),
]


def test_public_surface_covers_the_official_sdk() -> None:
    import tinker as official

    missing = set(official.__all__) - set(tinker.__all__)
    assert not missing
    for name in official.__all__:
        assert getattr(tinker, name) is not None


@pytest.mark.parametrize("local_server", [TORCH], indirect=True)
def test_sync_training_loop_save_restore_custom_loss_rest(local_server: Any) -> None:
    with tinker.ServiceClient(base_url=local_server.base_url, api_key=local_server.api_key) as sc:
        tc = sc.create_lora_training_client(MODEL, rank=8, seed=0).result()
        losses = []
        for _ in range(4):
            fb = tc.forward_backward(DATA, "cross_entropy")  # pipelined: optim_step queued at once
            opt = tc.optim_step(types.AdamParams(learning_rate=5e-3))
            losses.append(fb.result().metrics["loss:sum"])
            assert isinstance(opt.result(), types.OptimStepResponse)
        assert losses[-1] < losses[0]

        saved = tc.save_state("step-4").result()
        assert saved.path.endswith("/weights/step-4")
        before = tc.forward(DATA, "cross_entropy").result().metrics["loss:sum"]
        restored = sc.create_training_client_from_state_with_optimizer(saved.path).result()
        assert restored.model_id != tc.model_id
        after = restored.forward(DATA, "cross_entropy").result().metrics["loss:sum"]
        assert after == pytest.approx(before, rel=1e-4)
        # both keep training with their own sequence
        restored.forward_backward(DATA, "cross_entropy")
        assert restored.optim_step(types.AdamParams(learning_rate=1e-3)).result() is not None

        def neg_logprob_sum(data: list[Any], logprobs: list[Any]) -> tuple[Any, dict[str, float]]:
            loss = sum((-lp).sum() for lp in logprobs)
            return loss, {"custom:sum": float(loss.item())}

        custom = tc.forward_backward_custom(DATA, neg_logprob_sum).result()
        assert custom.metrics["custom:sum"] == pytest.approx(custom.metrics["loss:sum"])
        assert "surrogate_loss:sum" in custom.metrics

        info = tc.get_info()
        assert info.model_id == tc.model_id
        tok = tc.get_tokenizer()
        assert tok.decode(tok.encode("abc", add_special_tokens=False)) == "abc"

        with pytest.warns(FutureWarning, match=r"create_rest_client\(\) is deprecated"):
            rc = sc.create_rest_client()
        cps = rc.list_checkpoints(tc.model_id).result()
        assert [c.tinker_path for c in cps.checkpoints] == [saved.path]
        run = rc.get_training_run_by_tinker_path(saved.path).result()
        assert run.training_run_id == tc.model_id
        winfo = rc.get_weights_info_by_tinker_path(saved.path).result()
        assert winfo.base_model == MODEL and winfo.lora_rank == 8
        assert rc.list_training_runs().result().training_runs
        assert rc.list_user_checkpoints().result().checkpoints
        sessions = rc.list_sessions().result()
        assert sc.holder.session_id in sessions.sessions
        rc.publish_checkpoint_from_tinker_path(saved.path).result()
        assert rc.list_checkpoints(tc.model_id).result().checkpoints[0].public
        rc.unpublish_checkpoint_from_tinker_path(saved.path).result()
        rc.delete_checkpoint_from_tinker_path(saved.path).result()
        assert rc.list_checkpoints(tc.model_id).result().checkpoints == []
        with pytest.warns(FutureWarning, match=r"get_server_capabilities\(\) is deprecated"):
            caps = sc.get_server_capabilities()
        assert caps.supported_models


@pytest.mark.parametrize("local_server", [TORCH], indirect=True)
async def test_async_training_loop_with_blocking_calls_inside(
    local_server: Any, caplog: Any
) -> None:
    async with tinker.ServiceClient(
        base_url=local_server.base_url, api_key=local_server.api_key
    ) as sc:
        tc = await sc.create_lora_training_client(MODEL, rank=8, seed=1)
        first = last = None
        for _ in range(3):
            fb = tc.forward_backward(DATA, "cross_entropy")
            opt = tc.optim_step(types.AdamParams(learning_rate=5e-3))
            out = await fb
            await opt
            first = first if first is not None else out.metrics["loss:sum"]
            last = out.metrics["loss:sum"]
        assert last < first
        # Blocking inside async code works, as in the official SDK, and warns as it does.
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="tinker_actors"):
            blocked = tc.forward(DATA, "cross_entropy").result()
        assert blocked.metrics["loss:sum"] > 0
        assert any("called from async context" in r.getMessage() for r in caplog.records)
        saved = await tc.save_state("a")
        tc2 = await sc.create_training_client_from_state(saved.path)
        assert (await tc2.forward(DATA, "cross_entropy")).metrics["loss:sum"] > 0


@pytest.mark.parametrize("proxy", [{"delay_acks": 0.02, "seed": 7}], indirect=True)
async def test_seq_ids_reach_the_server_in_order_from_many_tasks(
    local_server: Any, proxy: Proxy
) -> None:
    async with tinker.ServiceClient(base_url=proxy.base_url, api_key=local_server.api_key) as sc:
        tc = await sc.create_lora_training_client(MODEL, rank=4)
        futures: list[Any] = []

        async def worker(i: int) -> None:
            for j in range(6):
                futures.append(tc.forward_backward([DATA[1]], "cross_entropy"))
                await asyncio.sleep(0)  # interleave with the other tasks
                futures.append(tc.optim_step(types.AdamParams()))
                if j % 3 == 2:
                    futures.append(tc.save_state(f"w{i}-{j}"))

        await asyncio.gather(*(worker(i) for i in range(4)))
        # a cancelled future still sends its request (only the result is dropped)
        cancelled = tc.optim_step(types.AdamParams())
        assert cancelled.cancel()
        last = tc.optim_step(types.AdamParams())
        await last
        await asyncio.gather(*(f.result_async() for f in futures))
        n = len(futures) + 2
        assert proxy.seq_ids(tc.model_id) == list(range(1, n + 1))


async def test_chunks_of_one_call_go_out_together_first_chunk_last(
    local_server: Any, proxy: Proxy
) -> None:
    async with tinker.ServiceClient(base_url=proxy.base_url, api_key=local_server.api_key) as sc:
        tc = await sc.create_lora_training_client(MODEL, rank=4)
        sc.holder.client_config = types.ClientConfigResponse(fwdbwd_max_chunk_len=2)
        out = await tc.forward_backward([DATA[1]] * 5, "cross_entropy")  # 3 chunks: ids 1..3
        await tc.optim_step(types.AdamParams())
        assert len(out.loss_fn_outputs) == 5
        ids = proxy.seq_ids(tc.model_id)
        assert sorted(ids[:3]) == [1, 2, 3] and ids[2] == 1
        assert ids[3] == 4


@pytest.mark.parametrize("local_server", [TORCH], indirect=True)
async def test_killed_training_actor_recovers_from_checkpoint(
    local_server: Any, proxy: Proxy
) -> None:
    steps, ckpt_at, kill_at = 8, 3, 5
    async with tinker.ServiceClient(
        base_url=proxy.base_url,
        api_key=local_server.api_key,
        recovery_policy=tinker.RecoveryPolicy(),  # opt-in
    ) as sc:
        tc = await sc.create_lora_training_client(MODEL, rank=4, seed=3)
        first_model = tc.model_id
        results = []
        for step in range(1, steps + 1):
            fb = tc.forward_backward(DATA, "cross_entropy")
            opt = tc.optim_step(types.AdamParams(learning_rate=1e-3))
            if step == kill_at:
                tc._handle._state.actor.kill()  # crash mid-loop, with this step in flight
            results.append((await fb, await opt))
            if step == ckpt_at:
                await tc.save_state("ckpt")
        assert len(results) == steps
        assert tc.model_id != first_model
        assert sc.holder.supervisor.restarts == 1
        # the new model restored the checkpoint (3 steps) and ran the other 5
        assert proxy.count(tc.model_id, "optim_step") == steps - ckpt_at
        assert proxy.seq_ids(tc.model_id) == list(range(1, 2 * (steps - ckpt_at) + 1))


async def test_restart_limit_fails_outstanding_futures(local_server: Any) -> None:
    policy = tinker.RestartPolicy(intensity=0, period=60.0)
    async with tinker.ServiceClient(
        base_url=local_server.base_url, api_key=local_server.api_key, restart_policy=policy
    ) as sc:
        tc = await sc.create_lora_training_client(MODEL, rank=4)
        await tc.optim_step(types.AdamParams())
        tc._handle._state.actor.kill()
        fut = tc.optim_step(types.AdamParams())
        with pytest.raises(tinker.TinkerError, match="crashed more than 0 times"):
            await asyncio.wait_for(fut.result_async(), 10)


@pytest.mark.parametrize("local_server", [TORCH], indirect=True)
def test_sampling_clients_from_training_and_service(local_server: Any) -> None:
    with tinker.ServiceClient(base_url=local_server.base_url, api_key=local_server.api_key) as sc:
        tc = sc.create_lora_training_client(MODEL, rank=4).result()
        prompt = types.ModelInput.from_ints(list(b"hi"))
        s1 = tc.save_weights_and_get_sampling_client().result()
        out = s1.sample(prompt, 1, types.SamplingParams(max_tokens=4, temperature=0.0)).result()
        assert len(out.sequences[0].tokens) == 4
        path = tc.save_weights_for_sampler("s").result().path
        s2 = sc.create_sampling_client(model_path=path).result()
        out2 = s2.sample(prompt, 1, types.SamplingParams(max_tokens=4, temperature=0.0)).result()
        assert out2.sequences[0].tokens == out.sequences[0].tokens


def test_archive_url_is_the_redirect_target_not_the_archive(local_server: Any) -> None:
    """The older archive route answers 302 with the signed URL; the client returns that URL:
    it must not follow the redirect (httpx in the SDKs does not) and read the archive as JSON.
    (0.38 dropped these RestClient methods; we keep them for older code.)"""
    import urllib.request

    sdk = tinker
    with sdk.ServiceClient(base_url=local_server.base_url, api_key=local_server.api_key) as sc:
        tc = sc.create_lora_training_client(base_model=MODEL, rank=4).result()
        path = tc.save_weights_for_sampler("arch").result().path
        rc = sdk.RestClient(base_url=local_server.base_url, api_key=local_server.api_key)
        got = rc.get_checkpoint_archive_url_from_tinker_path(path).result()
    assert got.url.startswith("http")
    with urllib.request.urlopen(got.url, timeout=30) as r:  # the signed URL serves the archive
        assert r.read(2) == b"\x1f\x8b"  # gzip
