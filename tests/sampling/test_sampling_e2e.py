"""SamplingClient against the real LocalServer on port 0 (null and torch engines)."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import pickle

import pytest

import tinker_actors as tinker
from tinker_actors import types
from tinker_actors.futures import APIFuture
from tinker_actors.server import LocalServer

pytestmark = pytest.mark.e2e
BASE_MODEL = "tinker-actors/byte-1m"


@pytest.fixture
async def null_server(tmp_path):
    async with LocalServer(engine="null", data_dir=tmp_path) as srv:
        yield srv


@pytest.fixture
async def torch_server(tmp_path):
    async with LocalServer(engine="torch", data_dir=tmp_path) as srv:
        yield srv


async def _client(srv: LocalServer) -> tuple[tinker.ServiceClient, tinker.SamplingClient]:
    service = tinker.ServiceClient(base_url=srv.base_url, api_key=srv.api_key)
    # The deprecated twin starts the session without blocking this loop, which also runs the
    # server (`await service.create_sampling_client(...)` would block it).
    with pytest.warns(FutureWarning, match="create_sampling_client_async"):
        sampler = await service.create_sampling_client_async(base_model=BASE_MODEL)
    return service, sampler


async def test_2000_concurrent_sample_async_none_lost(null_server):
    service, sampler = await _client(null_server)
    prompts = [types.ModelInput.from_ints([1 + i % 200, 2, 3]) for i in range(2000)]
    params = types.SamplingParams(max_tokens=4)
    with pytest.warns(FutureWarning, match="sample_async"):  # deprecated in 0.38
        results = await asyncio.gather(*(sampler.sample_async(p, 2, params) for p in prompts))
    assert len(results) == 2000
    assert all(isinstance(r, types.SampleResponse) for r in results)
    assert all(len(r.sequences) == 2 for r in results)
    assert all(len(s.tokens) == 4 for r in results for s in r.sequences)
    ids = [s.sequence_id for r in results for s in r.sequences]
    assert len(set(ids)) == 4000  # every sequence came from its own submission
    # The actor's books live on the runtime thread: read them there, once its last request
    # tasks have finished (a result is delivered just before its task ends).
    actor = sampler._actor

    async def drained() -> int:
        for _ in range(1000):
            if actor.in_flight == 0:
                return 0
            await asyncio.sleep(0)
        return actor.in_flight

    assert await APIFuture.from_coro(actor.session.runtime, drained()) == 0
    await service.close()


async def test_sampler_tokenizer_is_the_directory_the_server_reports(torch_server):
    service, sampler = await _client(torch_server)
    assert sampler._tokenizer_id is not None  # from GET /samplers/{id}, no server imports
    tok = sampler.get_tokenizer()
    assert tok.decode(tok.encode("abc", add_special_tokens=False)) == "abc"
    await service.aclose()


async def test_sample_with_stop_strings_and_logprobs(torch_server):
    service, sampler = await _client(torch_server)
    tokenizer = sampler.get_tokenizer()
    prompt = types.ModelInput.from_ints(tokenizer.encode("The capital of France is"))
    found = None
    for seed in range(20):
        free = (
            await sampler.sample(prompt, 1, types.SamplingParams(max_tokens=24, seed=seed))
        ).sequences[0]
        # A printable byte that first appears after position 0 makes a usable stop string.
        for k, t in enumerate(free.tokens[1:], start=1):
            if 33 <= t <= 126 and t not in free.tokens[:k]:
                found = (seed, free, k, chr(t))
                break
        if found:
            break
    assert found is not None, "no printable byte in 20 samples of the 1M model"
    seed, free, k, stop = found
    stopped = (
        await sampler.sample(prompt, 1, types.SamplingParams(max_tokens=24, seed=seed, stop=[stop]))
    ).sequences[0]
    assert stopped.stop_reason == "stop"
    assert stopped.tokens == free.tokens[: len(stopped.tokens)]
    assert len(stopped.tokens) in (k, k + 1)
    for seq in (free, stopped):
        assert seq.logprobs is not None and len(seq.logprobs) == len(seq.tokens)
        assert all(math.isfinite(x) and x <= 0.0 for x in seq.logprobs)

    with_prompt = await sampler.sample(
        prompt,
        1,
        types.SamplingParams(max_tokens=1),
        include_prompt_logprobs=True,
        topk_prompt_logprobs=3,
    )
    plp = with_prompt.prompt_logprobs
    assert plp is not None and len(plp) == len(prompt.to_ints())
    assert plp[0] is None and all(x is not None and x <= 0.0 for x in plp[1:])
    topk = with_prompt.topk_prompt_logprobs
    assert topk is not None and topk[0] is None
    assert all(row is not None and len(row) == 3 for row in topk[1:])

    scored = await sampler.compute_logprobs(prompt)
    assert scored[0] is None and len(scored) == len(plp)
    assert scored[1:] == pytest.approx(plp[1:], abs=1e-4)
    await service.close()


async def test_pickled_and_handle_clients_sample_in_their_own_seq_block(null_server, monkeypatch):
    monkeypatch.setenv("TINKER_API_KEY", null_server.api_key)
    service, sampler = await _client(null_server)
    handle = sampler.get_sampler_handle()
    state = json.loads(base64.urlsafe_b64decode(handle))
    assert state["holder"]["api_key"] is None  # no credentials in the handle
    assert state["sampling_session_id"] == sampler._sampling_session_id
    assert state["base_model"] == BASE_MODEL

    clone = pickle.loads(pickle.dumps(sampler))
    from_handle = tinker.SamplingClient.from_sampler_handle(handle)
    prompt = types.ModelInput.from_ints([5, 6, 7])
    for c in (clone, from_handle):
        assert c.get_base_model() == BASE_MODEL
        result = await c.sample(prompt, 1, types.SamplingParams(max_tokens=3))
        assert len(result.sequences[0].tokens) == 3
        assert c._actor.cloned_sampler_id not in (None, 0)
        assert c._actor.next_seq_id() >= 1_000_000_000
    await service.close()


def test_sync_sample_and_compute_logprobs(tmp_path):
    with LocalServer(engine="null", data_dir=tmp_path) as srv:
        service = tinker.ServiceClient(base_url=srv.base_url, api_key=srv.api_key)
        sampler = service.create_sampling_client(base_model=BASE_MODEL).result()
        prompt = types.ModelInput.from_ints([1, 2, 3, 4])
        futures = [sampler.sample(prompt, 1, types.SamplingParams(max_tokens=2)) for _ in range(50)]
        assert all(len(f.result(timeout=60).sequences[0].tokens) == 2 for f in futures)
        logprobs = sampler.compute_logprobs(prompt).result(timeout=60)
        assert len(logprobs) == 4 and logprobs[0] is None
        service.close().result()
