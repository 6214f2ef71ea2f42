"""The threading model and start-up of 0.38, checked against the official SDK itself.

The runtime's loop runs on its own thread by default, so blocking calls work inside
``async def`` code (with 0.38's warning); ``TINKER_ACTORS_LOOP=caller`` binds the actors to
the caller's loop instead, where a blocking call must raise. Start-up sends the same requests
as 0.38, in the same order, and a wrong key raises from the same call.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import pytest

import tinker_actors as tinker
from tinker_actors import types
from tinker_actors.runtime import BlockingOnLoopError

from .conftest import Proxy, make_datum

pytestmark = pytest.mark.e2e

MODEL = "tinker-actors/byte-1m"
DATA = [make_datum(b"hello tinker actors"), make_datum(b"the quick brown fox")]
# Background traffic whose timing is not part of the start-up order.
BACKGROUND = {"/api/v1/session_heartbeat", "/api/v1/telemetry", "/api/v1/client/dynamic_config"}


def _warned(caplog: Any) -> bool:
    return any("called from async context" in r.getMessage() for r in caplog.records)


async def test_blocking_calls_inside_async_def_work_and_warn(
    local_server: Any, caplog: Any
) -> None:
    caplog.set_level(logging.WARNING)
    # `with` (not `async with`) inside async code: __exit__ blocks on close(), as in 0.38.
    with tinker.ServiceClient(base_url=local_server.base_url, api_key=local_server.api_key) as sc:
        tc = sc.create_lora_training_client(MODEL, rank=4).result()
        assert isinstance(tc, tinker.TrainingClient)
        out = tc.forward_backward(DATA, "cross_entropy").result()
        assert len(out.loss_fn_outputs) == len(DATA)
        assert tc.optim_step(types.AdamParams(learning_rate=1e-3)).result() is not None
        saved = tc.save_state("ckpt").result()
        assert saved.path.startswith("tinker://")
        sampler = tc.save_weights_and_get_sampling_client().result()
        prompt = types.ModelInput.from_ints([1, 2, 3])
        resp = sampler.sample(prompt, 2, types.SamplingParams(max_tokens=3)).result()
        assert len(resp.sequences) == 2
        # awaiting still works beside the blocking calls, on the same caller loop
        assert (
            len((await sampler.sample(prompt, 1, types.SamplingParams(max_tokens=2))).sequences)
            == 1
        )
        with pytest.warns(FutureWarning, match=r"create_rest_client\(\) is deprecated"):
            rc = sc.create_rest_client()  # deprecated in 0.38 too
        runs = rc.list_training_runs().result()
        assert any(r.training_run_id == tc.model_id for r in runs.training_runs)
    assert _warned(caplog)


async def test_many_blocking_calls_from_several_loops_at_once(local_server: Any) -> None:
    """Each thread runs its own loop and blocks inside it; the one runtime serves them all."""
    sc = tinker.ServiceClient(base_url=local_server.base_url, api_key=local_server.api_key)
    tc = await sc.create_lora_training_client(MODEL, rank=4)

    async def user(n: int) -> list[float]:
        return [tc.forward(DATA, "cross_entropy").result().metrics["loss:sum"] for _ in range(n)]

    results = await asyncio.gather(*(asyncio.to_thread(asyncio.run, user(3)) for _ in range(4)))
    assert [len(r) for r in results] == [3, 3, 3, 3]
    await sc.aclose()


async def test_caller_loop_mode_binds_to_this_loop_and_refuses_to_block_it(
    local_server: Any, monkeypatch: Any
) -> None:
    monkeypatch.setenv("TINKER_ACTORS_LOOP", "caller")
    sc = tinker.ServiceClient(base_url=local_server.base_url, api_key=local_server.api_key)
    tc = await sc.create_lora_training_client(MODEL, rank=4)
    assert tc._runtime.loop is asyncio.get_running_loop()
    fut = tc.forward(DATA, "cross_entropy")
    with pytest.raises(BlockingOnLoopError, match="await it"):
        fut.result()
    assert len((await fut).loss_fn_outputs) == len(DATA)
    await sc.aclose()


def _startup(sdk: Any, proxy: Proxy, api_key: str) -> tuple[list[str], list[str], list[str]]:
    """(sent by the constructor, sent by the first create call, sent by close)."""

    def paths(start: int) -> list[str]:
        # ids differ between the runs; the paths' shapes must not
        return [
            re.sub(r"sess-[0-9a-f]+", "{session_id}", p)
            for p, _, _ in proxy.log[start:]
            if p not in BACKGROUND
        ]

    mark = len(proxy.log)
    sc = sdk.ServiceClient(base_url=proxy.base_url, api_key=api_key)
    after_init = paths(mark)
    mark = len(proxy.log)
    fut = sc.create_lora_training_client(base_model=MODEL, rank=4)
    assert isinstance(fut, sdk.TrainingClient) and isinstance(fut, sdk.APIFuture)
    assert not isinstance(fut, sdk.SamplingClient)
    tc = fut.result()
    created = paths(mark)
    assert tc.model_id
    mark = len(proxy.log)
    sc.close("success").result()
    return after_init, created, paths(mark)


def test_startup_requests_in_the_order_the_official_sdk_sends_them(
    proxy: Proxy, local_server: Any
) -> None:
    import tinker as official

    theirs = _startup(official, proxy, local_server.api_key)
    ours = _startup(tinker, proxy, local_server.api_key)
    assert theirs[0] == ours[0] == []  # nothing at construction
    assert ours[1] == theirs[1]
    assert ours[1][:2] == ["/api/v1/client/config", "/api/v1/create_session"]
    assert ours[2] == theirs[2]


@pytest.mark.parametrize("sdk_name", ["official", "ours"])
def test_wrong_key_raises_from_the_create_call(local_server: Any, sdk_name: str) -> None:
    import tinker as official

    sdk = official if sdk_name == "official" else tinker
    sc = sdk.ServiceClient(base_url=local_server.base_url, api_key="tml-wrong-key-0000")
    with pytest.raises(sdk.AuthenticationError) as info:
        sc.create_lora_training_client(base_model=MODEL, rank=4)  # no .result(): raises here
    assert info.value.status_code == 401
    assert "tml-wrong-key-0000" not in str(info.value)
    sc.close("success").result()


async def test_wrong_key_raises_from_await_in_async_twin(local_server: Any) -> None:
    sc = tinker.ServiceClient(base_url=local_server.base_url, api_key="tml-wrong-key-0000")
    with (
        pytest.warns(FutureWarning, match="create_lora_training_client_async"),
        pytest.raises(tinker.AuthenticationError),
    ):
        await sc.create_lora_training_client_async(base_model=MODEL, rank=4)
    await sc.aclose()


def test_backcompat_futures_are_told_apart_as_in_038(local_server: Any) -> None:
    with tinker.ServiceClient(base_url=local_server.base_url, api_key=local_server.api_key) as sc:
        tfut = sc.create_lora_training_client(MODEL, rank=4)
        assert isinstance(tfut, tinker.BackcompatTrainingClientFuture)
        assert isinstance(tfut, tinker.TrainingClient) and isinstance(tfut, tinker.APIFuture)
        with pytest.warns(FutureWarning, match="deprecated"):
            model_id = tfut.model_id  # the deprecated use as the client still works
        assert model_id == tfut.result().model_id
        sfut = sc.create_sampling_client(base_model=MODEL)
        assert isinstance(sfut, tinker.BackcompatSamplingClientFuture)
        assert isinstance(sfut, tinker.SamplingClient) and not isinstance(
            sfut, tinker.TrainingClient
        )
        with pytest.warns(FutureWarning):
            resp = sfut.sample(
                types.ModelInput.from_ints([1, 2]), 1, types.SamplingParams(max_tokens=2)
            )
        assert len(resp.result().sequences) == 1


def test_close_returns_within_its_bound_when_the_server_stops_answering(
    proxy: Proxy, local_server: Any
) -> None:
    from tinker_actors.actors.session import CLOSE_TIMEOUT

    sc = tinker.ServiceClient(base_url=proxy.base_url, api_key=local_server.api_key)
    tc = sc.create_lora_training_client(MODEL, rank=4).result()
    tc.forward(DATA, "cross_entropy").result()
    proxy.blackhole = True  # accepts every connection, answers nothing
    # Returns (rather than raising TimeoutError) well inside the bound plus slack.
    assert sc.close("success").result(timeout=CLOSE_TIMEOUT + 5) is None


async def test_exit_returns_within_its_bound_when_the_server_stops_answering(
    proxy: Proxy, local_server: Any
) -> None:
    from tinker_actors.actors.session import CLOSE_TIMEOUT

    sc = tinker.ServiceClient(base_url=proxy.base_url, api_key=local_server.api_key)
    await sc.create_lora_training_client(MODEL, rank=4)
    proxy.blackhole = True
    await asyncio.wait_for(sc.aclose(), CLOSE_TIMEOUT + 5)
