"""sample_stream against the real local server (torch engine): tokens arrive while the request
is still decoding, equal sample()'s for the same seed, and a client that leaves stops the
decode. Decode progress is observed through the engine's own per-token hook (events, no
timers)."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import AsyncIterator
from typing import Any

import pytest

pytest.importorskip("torch")

import tinker_actors as tinker
from tinker_actors import errors, types
from tinker_actors.server import LocalServer
from tinker_actors.server.engine import torch_engine
from tinker_actors.server.engine.sampling import ContinuousBatch
from tinker_actors.streaming import SampleStreamChunk, parse_sse

pytestmark = pytest.mark.e2e
MODEL = "tinker-actors/byte-1m"
PROMPT = types.ModelInput.from_ints(list(b"hello world"))


class DecodeProbe:
    """Wraps the engine's decode (batch by batch or continuous): sees every token it hands
    over, and when it finishes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tokens = 0
        self.refused = False  # the server's hook answered False (client gone)
        self.finished = threading.Event()
        self.after_first: Any = None  # called (in the decode thread) after the first token
        real = torch_engine.sample_batch

        def sample_batch(backend: Any, jobs: list[Any], decode: Any) -> Any:
            wrapped = [
                dataclasses.replace(j, on_token=self._wrap(j.on_token))
                if j.on_token is not None
                else j
                for j in jobs
            ]
            try:
                return real(backend, wrapped, decode)
            finally:
                if any(j.on_token is not None for j in jobs):
                    self.finished.set()

        monkeypatch.setattr(torch_engine, "sample_batch", sample_batch)

        # the server's continuous batching decodes through ContinuousBatch instead
        streamed: set[int] = set()
        real_admit, real_step = ContinuousBatch.admit, ContinuousBatch.step

        def seen(done: list[Any]) -> list[Any]:
            if any(id(handle) in streamed for handle, _ in done):
                self.finished.set()
            return done

        def admit(batch: Any, items: list[Any]) -> list[Any]:
            streamed.update(id(h) for j, h in items if j.on_token is not None)
            wrapped = [
                (dataclasses.replace(j, on_token=self._wrap(j.on_token)), h)
                if j.on_token is not None
                else (j, h)
                for j, h in items
            ]
            return seen(real_admit(batch, wrapped))

        monkeypatch.setattr(ContinuousBatch, "admit", admit)
        monkeypatch.setattr(ContinuousBatch, "step", lambda batch: seen(real_step(batch)))

    def _wrap(self, inner: Any) -> Any:
        def on_token(index: int, step: int, token_id: int, logprob: float) -> bool:
            self.tokens += 1
            ok = inner(index, step, token_id, logprob)
            if not ok:
                self.refused = True
            elif self.tokens == 1 and self.after_first is not None:
                self.after_first()
            return ok

        return on_token


@pytest.fixture
async def sampler() -> AsyncIterator[Any]:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        async with LocalServer(engine="torch", data_dir=d) as srv:
            service = tinker.ServiceClient(base_url=srv.base_url, api_key=srv.api_key)
            # The deprecated twin is the one way to start the session without blocking this
            # loop, which also runs the server (`await create_sampling_client(...)` blocks).
            with pytest.warns(FutureWarning, match="create_sampling_client_async"):
                s = await service.create_sampling_client_async(base_model=MODEL)
            try:
                yield s
            finally:
                await service.aclose()


async def test_the_first_chunk_arrives_while_the_request_is_still_decoding(
    sampler: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = DecodeProbe(monkeypatch)
    client_has_first = threading.Event()
    waited: list[bool] = []
    # The decode holds after its first token until the client has that token: a server that
    # buffered the body would never deliver it, and this wait would time out.
    probe.after_first = lambda: waited.append(client_has_first.wait(60))
    params = types.SamplingParams(max_tokens=12, seed=5, stop=[])
    chunks: list[SampleStreamChunk] = []
    async for chunk in sampler.sample_stream(PROMPT, params, 1):
        if not chunks:
            assert not probe.finished.is_set()  # the decode of this request is not over
            client_has_first.set()
        chunks.append(chunk)
    assert waited == [True]
    assert probe.finished.is_set()
    assert [c.event_type for c in chunks] == ["token"] * 12 + ["done"]
    assert chunks[-1].finish_reason == "length" and chunks[-1].total_tokens == 12


async def test_streamed_tokens_equal_sample_for_the_same_seed(sampler: Any) -> None:
    params = types.SamplingParams(max_tokens=16, seed=11, temperature=0.9)
    chunks = [c async for c in sampler.sample_stream(PROMPT, params, 3)]
    res = await sampler.sample(PROMPT, 3, params)
    for i, seq in enumerate(res.sequences):
        mine = [c for c in chunks if c.index == i]
        tokens = [c for c in mine if c.event_type == "token"]
        assert [c.token_id for c in tokens] == seq.tokens
        assert [c.logprob for c in tokens] == pytest.approx(seq.logprobs, abs=1e-5)
        (done,) = [c for c in mine if c.done]
        assert done.finish_reason == seq.stop_reason
        assert done.total_tokens == len(seq.tokens)
        assert mine[-1] is done
    # the token text is the tokenizer's decoding of the ids
    tok = sampler.get_tokenizer()
    text = "".join(c.token or "" for c in chunks if c.index == 0 and c.event_type == "token")
    assert text == tok.decode(res.sequences[0].tokens, skip_special_tokens=True).rstrip("\ufffd")


async def test_a_client_that_leaves_stops_the_decode(
    sampler: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = DecodeProbe(monkeypatch)
    max_tokens = 1000
    params = types.SamplingParams(max_tokens=max_tokens, seed=1, stop=[])
    stream = sampler.sample_stream(PROMPT, params, 1)
    first = await stream.__anext__()
    assert first.event_type == "token"
    await stream.aclose()  # closes the connection
    await asyncio.to_thread(probe.finished.wait, 60)
    assert probe.finished.is_set()
    assert probe.refused  # the server's hook told the decode to stop
    assert probe.tokens < max_tokens


async def test_bad_requests_fail_typed(sampler: Any) -> None:
    with pytest.raises(errors.InvalidInputError, match="ModelInput"):
        sampler.sample_stream([1, 2], types.SamplingParams())
    with pytest.raises(errors.InvalidInputError, match="num_samples"):
        sampler.sample_stream(PROMPT, types.SamplingParams(), 0)
    stream = sampler.sample_stream(PROMPT, types.SamplingParams(max_tokens=5000), 1)
    with pytest.raises(errors.BadRequestError, match="context length"):
        await stream.__anext__()


def test_sse_grammar() -> None:
    events = parse_sse(
        [
            ": keep-alive\n",
            "event: token\n",
            'data: {"a":\n',
            "data: 1}\r\n",
            "\n",
            "data:no-space\n",
            "id: 7\n",
            "retry: 100\n",
            "\n",
            "data: tail\n",
        ]
    )
    assert [(e.event, e.data) for e in events] == [
        ("token", '{"a":\n1}'),
        ("message", "no-space"),
        ("message", "tail"),
    ]
    assert events[1].id == "7" and events[1].retry == 100


def test_an_engine_without_the_token_hook_streams_its_result(local_server: Any) -> None:
    """The null engine answers at once; the stream still carries every token, then done."""

    async def go() -> None:
        service = tinker.ServiceClient(base_url=local_server.base_url, api_key=local_server.api_key)
        try:
            with pytest.warns(FutureWarning, match="create_sampling_client_async"):
                s = await service.create_sampling_client_async(base_model=MODEL)
            params = types.SamplingParams(max_tokens=7, seed=2)
            chunks = [c async for c in s.sample_stream(PROMPT, params, 2)]
            res = await s.sample(PROMPT, 2, params)
        finally:
            await service.aclose()
        for i, seq in enumerate(res.sequences):
            mine = [c for c in chunks if c.index == i]
            assert [c.token_id for c in mine if c.event_type == "token"] == seq.tokens
            assert mine[-1].done and mine[-1].total_tokens == len(seq.tokens)

    asyncio.run(go())
