"""Recovery is opt-in; without it a failed submit fails later work loudly, never hangs.

Also: the forward_backward dispatch byte budget, per-datum LossHandles, and the session an
unpickled SamplingClient builds for itself.
"""

from __future__ import annotations

import asyncio
import pickle
from typing import Any

import pytest

import tinker_actors as tinker
from tinker_actors import errors, types
from tinker_actors.actors.admission import BytesBudget

from .conftest import Proxy, make_datum

MODEL = "tinker-actors/byte-1m"
DATA = [make_datum(b"hello tinker actors")]


@pytest.mark.parametrize("proxy", [{"fail": {"/api/v1/optim_step": {2}}}], indirect=True)
async def test_without_recovery_a_failed_submit_breaks_the_client_loudly(
    local_server: Any, proxy: Proxy
) -> None:
    async with tinker.ServiceClient(base_url=proxy.base_url, api_key=local_server.api_key) as sc:
        tc = await sc.create_lora_training_client(MODEL, rank=2)
        assert tc._handle._state.recovery is None  # opt-in: off by default
        ok_fb = tc.forward_backward(DATA, "cross_entropy")
        ok_opt = tc.optim_step(tinker.AdamParams())
        fb = tc.forward_backward(DATA, "cross_entropy")
        bad = tc.optim_step(tinker.AdamParams())  # the proxy answers 400 to this submit
        later = [tc.forward_backward(DATA, "cross_entropy"), tc.save_state("x")]
        # hang guard only: every future settles at once
        done = await asyncio.wait_for(
            asyncio.gather(ok_fb, ok_opt, fb, bad, *later, return_exceptions=True), 20
        )
        assert isinstance(done[0], types.ForwardBackwardOutput)
        assert isinstance(done[1], types.OptimStepResponse)
        assert isinstance(done[2], types.ForwardBackwardOutput)  # sent before the failure
        assert isinstance(done[3], errors.BadRequestError)
        for exc in done[4:]:
            assert isinstance(exc, tinker.SequenceBrokenError)
            assert "Create a new TrainingClient" in str(exc)
        # and every call after that fails the same way, without reaching the server
        with pytest.raises(tinker.SequenceBrokenError):
            await asyncio.wait_for(tc.optim_step(tinker.AdamParams()).result_async(), 10)
        assert tc._handle._state.replay_log == []  # nothing kept for a replay that cannot happen
        assert sc.holder.supervisor.restarts == 0
    assert proxy.count(tc.model_id, "optim_step") == 1


async def test_killed_actor_without_recovery_resends_with_the_same_seq_ids(
    local_server: Any, proxy: Proxy
) -> None:
    async with tinker.ServiceClient(base_url=proxy.base_url, api_key=local_server.api_key) as sc:
        tc = await sc.create_lora_training_client(MODEL, rank=2)
        futs = []
        for step in range(4):
            futs.append(tc.forward_backward(DATA, "cross_entropy"))
            futs.append(tc.optim_step(tinker.AdamParams()))
            if step == 1:
                tc._handle._state.actor.kill()
        await asyncio.wait_for(asyncio.gather(*futs), 20)
        assert sc.holder.supervisor.restarts == 1
        model_id = tc.model_id
    seen = proxy.seq_ids(model_id)
    assert sorted(set(seen)) == list(range(1, 9))  # no gap, at most a deduplicated resend


@pytest.mark.parametrize("proxy", [{"delay_acks": 0.05}], indirect=True)
@pytest.mark.parametrize(("budget", "expect"), [(1, 1), (None, 2)])
async def test_fwdbwd_dispatch_byte_budget_is_shared_by_the_session(
    local_server: Any, proxy: Proxy, budget: int | None, expect: int
) -> None:
    async with tinker.ServiceClient(base_url=proxy.base_url, api_key=local_server.api_key) as sc:
        a = await sc.create_lora_training_client(MODEL, rank=2)
        b = await sc.create_lora_training_client(MODEL, rank=2)
        if budget is not None:  # smaller than one request: each dispatch then runs alone
            sc.holder.fwdbwd_bytes = BytesBudget(budget)
        else:
            assert sc.holder.fwdbwd_bytes.capacity == 50_000_000
        await asyncio.gather(
            *(c.forward_backward(DATA, "cross_entropy") for c in (a, b) for _ in range(3))
        )
    assert proxy.max_inflight["/api/v1/forward_backward"] == expect


@pytest.mark.parametrize("local_server", [{"engine": "torch"}], indirect=True)
def test_loss_handle_runs_per_datum_and_sums(local_server: Any) -> None:
    pytest.importorskip("torch")
    data = [make_datum(b"abcdef"), make_datum(b"hello there")]

    def neg_logprob(logprobs: Any, weights: Any) -> Any:
        loss = -(logprobs * weights).sum()
        return loss, {"custom/nll:sum": loss, "custom/nll:mean": loss}

    with tinker.ServiceClient(base_url=local_server.base_url, api_key=local_server.api_key) as sc:
        handle = sc.create_custom_loss(neg_logprob, {"logprobs": 1, "weights": 1}).result()
        assert isinstance(handle, tinker.LossHandle)
        assert handle.input_names == ("weights",) and handle.loss_id is None
        tc = sc.create_lora_training_client(MODEL, rank=2, seed=0).result()
        per = [tc.forward([d], "cross_entropy").result().metrics["loss:sum"] for d in data]
        out = tc.forward_backward_custom(data, handle).result()
    assert out.metrics["loss:sum"] == pytest.approx(sum(per), rel=1e-4)
    assert out.metrics["custom/nll:sum"] == pytest.approx(sum(per), rel=1e-4)
    assert out.metrics["custom/nll:mean"] == pytest.approx(sum(per) / 2, rel=1e-4)
    with pytest.raises(ValueError, match="logprobs"):
        from tinker_actors.clients.custom_loss import trace_loss

        trace_loss(lambda x: (x, {}), {"x": 1}, "s")


async def test_unpickled_sampler_session_owns_and_releases_its_transport(
    local_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tinker_actors.actors import sampling as sampling_actor

    monkeypatch.setenv("TINKER_API_KEY", local_server.api_key)
    monkeypatch.setattr(sampling_actor, "IDLE_AFTER", 0.0)  # stop as soon as idle
    sc = tinker.ServiceClient(base_url=local_server.base_url, api_key=local_server.api_key)
    with pytest.warns(FutureWarning, match="create_sampling_client_async"):
        sampler = await sc.create_sampling_client_async(base_model=MODEL)
    clone = pickle.loads(pickle.dumps(sampler))
    session = clone._session
    assert session.for_handles and session is not sc.holder
    users = session.runtime._users
    prompt = types.ModelInput.from_ints([1, 2])
    await clone.sample(prompt, 1, types.SamplingParams(max_tokens=2))
    # Idle, the clone's actor stops (no GC finalizer involved) and the session gives its
    # transport back; the next call starts a new actor on a new transport.
    released = session.runtime.submit(session.transport_released.wait())  # on its loop
    await asyncio.wait_for(asyncio.wrap_future(released), timeout=30)
    assert session.transport is None and session.runtime._users == users
    session.runtime.loop.call_soon_threadsafe(session.transport_released.clear)
    out = await clone.sample(prompt, 1, types.SamplingParams(max_tokens=2))
    assert len(out.sequences) == 1
    released = session.runtime.submit(session.transport_released.wait())
    await asyncio.wait_for(asyncio.wrap_future(released), timeout=30)
    assert session.runtime._users == users
    await sc.aclose()
