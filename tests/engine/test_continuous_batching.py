"""Continuous batching: jobs join a running decode between two steps and leave it the step they
finish, with the tokens they sample alone (per-row generators), through the engine's
``ContinuousBatch`` and through the server's ``ContinuousLane``. Progress is observed through
the decode's own per-token hook and the futures' events (no timers)."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tinker_actors.server import sampling as sampling_module
from tinker_actors.server.engine import model as model_module
from tinker_actors.server.engine.base import EngineUserError, LoraSpec, SampleJob
from tinker_actors.server.engine.sampling import ContinuousBatch
from tinker_actors.server.engine.tokenizer import BOS_ID, EOS_ID
from tinker_actors.server.engine.torch_engine import TorchEngine
from tinker_actors.server.futures import FutureRegistry, Outcome
from tinker_actors.server.sampling import ContinuousLane
from tinker_actors.server.store import Store

M1 = "tinker-actors/byte-1m"


def _prompt(text: str) -> np.ndarray:
    return np.array([BOS_ID, *text.encode()], dtype=np.int64)


def _jobs() -> list[SampleJob]:
    """Mixed prompt lengths, stops and settings, so rows join and finish at different steps."""
    return [
        SampleJob(prompt=_prompt("hello"), num_samples=3, max_tokens=20, seed=1),
        SampleJob(prompt=_prompt("a longer prompt here"), max_tokens=7, seed=2, top_k=5),
        SampleJob(prompt=_prompt("x"), max_tokens=25, temperature=0.0, stop_tokens=(101, 32)),
        SampleJob(prompt=_prompt("the"), max_tokens=30, seed=4, stop_strings=("e", "zz")),
        SampleJob(prompt=_prompt("q"), max_tokens=0, seed=5, prompt_logprobs=True),
        SampleJob(prompt=_prompt("abc"), num_samples=2, max_tokens=16, seed=6, top_p=0.8),
        SampleJob(prompt=_prompt("eos"), max_tokens=40, seed=7, stop_tokens=(EOS_ID,)),
        SampleJob(
            prompt=_prompt("logprobs please"),
            max_tokens=9,
            seed=8,
            temperature=0.7,
            prompt_logprobs=True,
            topk_prompt_logprobs=3,
        ),
        SampleJob(prompt=_prompt("long one"), max_tokens=90, seed=9, stop_at_eos=False),
    ]


def _lora_engine(cache_dir: Path, **kw: Any) -> TorchEngine:
    eng = TorchEngine(cache_dir=cache_dir, **kw)
    eng.create_model("m", M1, LoraSpec(rank=4, seed=3))
    with torch.no_grad():
        g = torch.Generator().manual_seed(5)
        for pair in eng._models["m"].adapter.pairs.values():
            pair.b.copy_(torch.randn(pair.b.shape, generator=g) * 0.05)
    eng.snapshot_sampler("lora", "m")
    eng.create_sampler("base", M1, None)
    return eng


@pytest.fixture(scope="module")
def engine(cache_dir) -> TorchEngine:
    return _lora_engine(cache_dir)


def _alone(engine: TorchEngine, sampler: str, job: SampleJob):
    (out,) = engine.sample(sampler, [job])
    return out


def _assert_same(a, b) -> None:
    assert [(s.tokens.tolist(), s.stop_reason) for s in a.sequences] == [
        (s.tokens.tolist(), s.stop_reason) for s in b.sequences
    ]
    for x, y in zip(a.sequences, b.sequences, strict=True):
        assert x.tokens.dtype == y.tokens.dtype and x.logprobs.dtype == y.logprobs.dtype
        np.testing.assert_allclose(x.logprobs, y.logprobs, atol=1e-4)
    if a.prompt_logprobs is None:
        assert b.prompt_logprobs is None
    else:
        np.testing.assert_allclose(a.prompt_logprobs, b.prompt_logprobs, atol=1e-4)
    if a.topk_prompt_logprobs is None:
        assert b.topk_prompt_logprobs is None
    else:
        assert (a.topk_prompt_logprobs[0] == b.topk_prompt_logprobs[0]).all()
        np.testing.assert_allclose(a.topk_prompt_logprobs[1], b.topk_prompt_logprobs[1], atol=1e-4)


def _drain(batch: ContinuousBatch, got: dict[Any, Any]) -> None:
    while batch.jobs:
        got.update(batch.step())


@pytest.mark.parametrize("sampler", ["base", "lora"])
def test_jobs_joining_a_running_batch_sample_what_they_sample_alone(engine, sampler):
    jobs = _jobs()
    alone = [_alone(engine, sampler, j) for j in jobs]
    batch = engine.continuous_sampler(sampler)
    got: dict[Any, Any] = {}
    # the long job first, then one job joins every third step; two arrive together once
    got.update(batch.admit([(jobs[-1], len(jobs) - 1)]))
    pending = list(enumerate(jobs[:-1]))
    while pending:
        for _ in range(3):
            got.update(batch.step())
        take, pending = (
            (pending[:2], pending[2:]) if len(pending) == 4 else (pending[:1], pending[1:])
        )
        got.update(batch.admit([(j, i) for i, j in take]))
    _drain(batch, got)
    assert sorted(got) == list(range(len(jobs)))
    for i in range(len(jobs)):
        _assert_same(alone[i], got[i])
    assert batch.live == 0 and batch.jobs == 0


def test_an_unmerged_lora_sampler_samples_in_a_running_batch_what_it_samples_alone(cache_dir):
    """A sampler whose merged weights do not fit the budget keeps its LoRA pairs: the batch's
    forward adds them per projection (no fused q/k/v, gate/up matmul) and samples as alone."""
    eng = _lora_engine(cache_dir, merged_budget_bytes=0)
    assert not eng._samplers["lora"].merge
    jobs = _jobs()
    alone = [_alone(eng, "lora", j) for j in jobs]
    batch = eng.continuous_sampler("lora")
    got = dict(batch.admit([(j, i) for i, j in enumerate(jobs[:5])]))
    got.update(batch.step())
    got.update(batch.admit([(j, i + 5) for i, j in enumerate(jobs[5:])]))
    _drain(batch, got)
    for i in range(len(jobs)):
        _assert_same(alone[i], got[i])


def test_a_short_job_finishes_while_a_long_one_decodes_and_its_slot_is_reused(engine):
    long_job = SampleJob(prompt=_prompt("long"), max_tokens=200, seed=1, stop_at_eos=False)
    short = [
        SampleJob(prompt=_prompt(f"short {i}"), max_tokens=3 + i, seed=10 + i, stop_at_eos=False)
        for i in range(6)
    ]
    batch = engine.continuous_sampler("base")
    assert batch.admit([(long_job, "long")]) == []
    heights = []
    for i, job in enumerate(short):
        batch.step()
        assert batch.admit([(job, i)]) == []
        done: dict[Any, Any] = {}
        steps = 0
        while i not in done:
            done.update(batch.step())
            steps += 1
        assert steps == job.max_tokens  # the first step prefills it and picks its first token
        assert "long" not in done and batch.jobs == 1  # the long job is still decoding
        _assert_same(_alone(engine, "base", job), done[i])
        heights.append(len(batch._rows))
    assert heights == [1] * len(short)  # a finished row's slot is free for the next job
    got: dict[Any, Any] = {}
    _drain(batch, got)
    _assert_same(_alone(engine, "base", long_job), got["long"])


@pytest.mark.parametrize("sampler", ["base", "lora"])
def test_old_and_new_rows_attend_in_two_blocks_and_sample_what_they_sample_alone(
    engine, sampler, monkeypatch
):
    """Rows of very different lengths side by side (a long job, then a burst of short ones
    above it): the decode attention runs in two blocks of rows, each over the keys its
    longest row needs, and every job still samples what it samples alone."""
    blocks: list[int] = []
    real = model_module._row_groups

    def row_groups(lens: list[int], keys: int) -> list[tuple[int, int, int]]:
        out = real(lens, keys)
        blocks.append(len(out))
        return out

    monkeypatch.setattr(model_module, "_row_groups", row_groups)
    long_job = SampleJob(prompt=_prompt("a long one"), max_tokens=150, seed=1, stop_at_eos=False)
    short = [SampleJob(prompt=_prompt(f"s{i}"), max_tokens=12, seed=20 + i) for i in range(16)]
    batch = engine.continuous_sampler(sampler)
    got = dict(batch.admit([(long_job, "long")]))
    for _ in range(100):
        got.update(batch.step())
    got.update(batch.admit([(j, i) for i, j in enumerate(short)]))
    _drain(batch, got)
    assert 2 in blocks and blocks.count(2) < len(blocks)
    _assert_same(_alone(engine, sampler, long_job), got["long"])
    for i, job in enumerate(short):
        _assert_same(_alone(engine, sampler, job), got[i])


def test_row_groups_split_only_when_it_reads_enough_fewer_keys():
    rng = np.random.default_rng(0)
    for _ in range(500):
        b = int(rng.integers(1, 70))
        lens = [int(x) if rng.random() < 0.8 else 0 for x in rng.integers(0, 100, b)]
        keys = max(lens) + 1
        groups = model_module._row_groups(lens, keys)
        assert groups[0][0] == 0 and groups[-1][1] == b
        if len(groups) == 1:
            assert groups == [(0, b, keys)]
            continue
        (_, mid, k1), (mid2, _, k2) = groups
        assert mid == mid2 and k1 == max(lens[:mid]) + 1 and k2 == max(lens[mid:]) + 1
        cost = mid * k1 + (b - mid) * k2
        best = min(r * (max(lens[:r]) + 1) + (b - r) * (max(lens[r:]) + 1) for r in range(1, b))
        assert cost == best
        saved = b * keys - cost
        assert saved * 6 >= b * keys and saved >= model_module.ROW_SPLIT_MIN_KEYS
    assert model_module._row_groups([80] * 64, 81) == [(0, 64, 81)]  # lock-step: one block
    assert model_module._row_groups([100, *[5] * 20], 101) == [(0, 1, 101), (1, 21, 6)]


def test_holes_below_the_top_are_compacted_without_changing_samples(engine):
    jobs = [
        SampleJob(prompt=_prompt("p" * (1 + i % 5)), max_tokens=4 + 7 * (i % 4), seed=i)
        for i in range(16)
    ]
    batch = engine.continuous_sampler("base")
    got = dict(batch.admit([(j, i) for i, j in enumerate(jobs)]))
    heights = []
    while batch.jobs:
        got.update(batch.step())
        heights.append((len(batch._rows), batch.live))
    assert all(h <= max(live + live // 3 + 1, 1) for h, live in heights if live)
    for i, job in enumerate(jobs):
        _assert_same(_alone(engine, "base", job), got[i])


def test_a_bad_job_fails_alone(engine):
    batch = engine.continuous_sampler("base")
    good = SampleJob(prompt=_prompt("ok"), max_tokens=3, seed=1)
    bad = SampleJob(prompt=np.array([1, 10**6], dtype=np.int64), max_tokens=3)
    done = dict(batch.admit([(bad, "bad"), (good, "good")]))
    assert isinstance(done.pop("bad"), EngineUserError)
    _drain(batch, done)
    _assert_same(_alone(engine, "base", good), done["good"])


def test_streams_see_each_token_and_can_stop_their_row(engine):
    seen: list[tuple[int, int, int]] = []

    def on_token(index: int, step: int, token: int, logprob: float) -> bool:
        seen.append((index, step, token))
        return not (index == 1 and step == 4)  # sample 1 stops after its fifth token

    job = SampleJob(
        prompt=_prompt("stream"),
        num_samples=2,
        max_tokens=10,
        seed=3,
        stop_at_eos=False,
        on_token=on_token,
    )
    batch = engine.continuous_sampler("base")
    got = dict(batch.admit([(job, 0)]))
    _drain(batch, got)
    seqs = got[0].sequences
    assert [len(s.tokens) for s in seqs] == [10, 5]
    assert [s.stop_reason for s in seqs] == ["length", "stop"]
    for k, s in enumerate(seqs):
        assert [t for i, _, t in seen if i == k] == s.tokens.tolist()
        assert [st for i, st, _ in seen if i == k] == list(range(len(s.tokens)))


# --------------------------------------------------------------------------------------------
# the server's lane


@pytest.fixture
def registry(tmp_path: Path) -> FutureRegistry:
    return FutureRegistry(Store(tmp_path / "db.sqlite"), 3600.0)


class _Results:
    """The lane's ``finish``: keeps each engine outcome by seq id."""

    def __init__(self) -> None:
        self.by_seq: dict[int, Any] = {}

    def finish(self, seq: int):
        def f(value: Any) -> Outcome:
            self.by_seq[seq] = value
            return Outcome("json", b"{}")

        return f


async def _lane(registry, engine, pool, batch_size=64) -> ContinuousLane:
    return ContinuousLane(
        "base",
        registry,
        pool,
        engine.sample,
        engine.continuous_sampler,
        None,
        100,
        batch_size,
    )


def _submit(lane, registry, results, seq, job):
    rec = registry.create("Sample", sampler_id="base", seq_id=seq)
    lane.submit(seq, str(seq), rec, job, results.finish(seq))
    return rec


@pytest.mark.asyncio
async def test_a_request_arriving_mid_decode_decodes_beside_the_running_one(engine, registry):
    """Issue 15's acceptance, observed through events only (no timers): the long request's
    token hook holds the runner inside the long request's decode step 3 until the short
    request has been submitted. The short request is then prefilled by the very next step
    (its first token comes with the long request's token 4: time to first token is one
    step, the one that prefills it), decodes beside the long request (its tokens come with
    the long request's tokens 4..8), is answered while the long one still decodes, and has
    the tokens and logprobs it samples alone with the same seed."""
    decoding, submitted, release = threading.Event(), threading.Event(), threading.Event()
    long_steps: list[int] = []  # the long request's decode steps, in order (runner thread)
    short_at: list[int] = []  # for each short token: how many long tokens there were then

    def on_long_token(index: int, step: int, token: int, logprob: float) -> bool:
        long_steps.append(step)
        if step == 3:
            decoding.set()
            assert submitted.wait(60)  # the runner stays in this step until the short is queued
        return not release.is_set()

    def on_short_token(index: int, step: int, token: int, logprob: float) -> bool:
        assert step == len(short_at)
        short_at.append(len(long_steps))
        return True

    long_job = SampleJob(
        prompt=_prompt("a long story"),
        max_tokens=1000,
        seed=1,
        stop_at_eos=False,
        on_token=on_long_token,
    )
    short_job = SampleJob(prompt=_prompt("short"), max_tokens=5, seed=2, temperature=0.8)
    alone = _alone(engine, "base", short_job)  # the same request, sampled on its own
    results = _Results()
    with ThreadPoolExecutor(2) as pool:
        lane = await _lane(registry, engine, pool)
        long_rec = _submit(lane, registry, results, 1, long_job)
        assert await asyncio.to_thread(decoding.wait, 60)
        short_rec = _submit(
            lane, registry, results, 2, dataclasses.replace(short_job, on_token=on_short_token)
        )
        submitted.set()
        await asyncio.wait_for(short_rec.event.wait(), 60)
        assert short_rec.state == "done"
        assert not long_rec.finished and lane.depth == 1  # the long request still decodes
        # token k of the short request came in the step of the long request's token 4 + k
        assert short_at == [5, 6, 7, 8, 9]
        assert long_steps[:5] == [0, 1, 2, 3, 4]
        _assert_same(alone, results.by_seq[2])
        release.set()
        await asyncio.wait_for(long_rec.event.wait(), 60)
        await lane.close("test over")
    (seq,) = results.by_seq[1].sequences
    assert seq.stop_reason == "stop"
    assert 9 <= len(seq.tokens) < 1000  # it decoded on after the short request had finished
    assert long_steps == list(range(len(seq.tokens)))


@pytest.mark.asyncio
async def test_a_job_queued_behind_a_full_batch_joins_the_step_after_a_slot_frees(engine, registry):
    """A lane at its batch size admits a queued job in the step right after a running job
    finished (its slot is free), not when the whole batch has finished; it then samples what
    it samples alone."""
    holding, held = threading.Event(), threading.Event()
    events: list[tuple[str, int]] = []  # (job, token index), in the order the runner made them

    def hook(name: str, hold_at: int = -1) -> Any:
        def on_token(index: int, step: int, token: int, logprob: float) -> bool:
            events.append((name, step))
            if step == hold_at:
                holding.set()
                assert held.wait(60)  # the runner stays here until the third job is queued
            return True

        return on_token

    long_job = SampleJob(
        prompt=_prompt("long"), max_tokens=40, seed=1, stop_at_eos=False, on_token=hook("long", 1)
    )
    short_job = SampleJob(
        prompt=_prompt("short"), max_tokens=4, seed=2, stop_at_eos=False, on_token=hook("short")
    )
    queued = SampleJob(prompt=_prompt("queued"), max_tokens=3, seed=3, stop_at_eos=False)
    alone = _alone(engine, "base", queued)
    results = _Results()
    with ThreadPoolExecutor(2) as pool:
        lane = await _lane(registry, engine, pool, batch_size=2)
        recs = [
            _submit(lane, registry, results, 1, long_job),
            _submit(lane, registry, results, 2, short_job),
        ]
        assert await asyncio.to_thread(holding.wait, 60)  # the batch is full and decoding
        queued_job = dataclasses.replace(queued, on_token=hook("queued"))
        recs.append(_submit(lane, registry, results, 3, queued_job))
        held.set()
        await asyncio.wait_for(asyncio.gather(*(r.event.wait() for r in recs)), 60)
        await lane.close("test over")
    assert all(r.state == "done" for r in recs)
    pos = {e: i for i, e in enumerate(events)}
    # the long job's token made in the step where the short job made its last one
    j = sum(1 for e in events[: pos[("short", 3)]] if e[0] == "long") - 1
    assert pos[("long", j + 1)] < pos[("queued", 0)] < pos[("long", j + 2)]
    assert j + 2 < 40  # the long job was far from done
    _assert_same(alone, results.by_seq[3])


@pytest.mark.asyncio
async def test_a_burst_through_the_lane_equals_each_job_alone(engine, registry):
    jobs = _jobs()
    alone = [_alone(engine, "base", j) for j in jobs]
    results = _Results()
    with ThreadPoolExecutor(2) as pool:
        lane = await _lane(registry, engine, pool, batch_size=3)  # more jobs than room
        recs = [_submit(lane, registry, results, i, j) for i, j in enumerate(jobs)]
        await asyncio.wait_for(asyncio.gather(*(r.event.wait() for r in recs)), 120)
        assert lane.depth == 0
        await lane.close("test over")
    assert all(r.state == "done" for r in recs)
    for i in range(len(jobs)):
        _assert_same(alone[i], results.by_seq[i])


@pytest.mark.asyncio
async def test_an_idle_lane_keeps_its_batch_for_the_next_burst_then_drops_it(
    engine, registry, monkeypatch
):
    """The row cache and slot state outlive a short idle spell (the next burst does not
    allocate them again); after ``IDLE_KEEP_S`` idle the lane holds no batch."""
    results = _Results()

    def job(seed: int) -> SampleJob:
        return SampleJob(prompt=_prompt("idle"), max_tokens=3, seed=seed)

    with ThreadPoolExecutor(2) as pool:
        lane = await _lane(registry, engine, pool)
        first = _submit(lane, registry, results, 1, job(1))
        await asyncio.wait_for(first.event.wait(), 60)
        batch = lane._batch
        assert batch is not None
        second = _submit(lane, registry, results, 2, job(2))
        await asyncio.wait_for(second.event.wait(), 60)
        assert lane._batch is batch
        monkeypatch.setattr(sampling_module, "IDLE_KEEP_S", 0.0)
        third = _submit(lane, registry, results, 3, job(3))
        await asyncio.wait_for(third.event.wait(), 60)
        for _ in range(600):
            if lane._batch is None:
                break
            await asyncio.sleep(0.05)
        assert lane._batch is None
        await lane.close("test over")
    for seq in (1, 2, 3):
        _assert_same(_alone(engine, "base", job(seq)), results.by_seq[seq])


@pytest.mark.asyncio
async def test_bad_jobs_cancelled_jobs_and_close_fail_their_futures(engine, registry):
    release = threading.Event()
    running = threading.Event()

    def on_token(index: int, step: int, token: int, logprob: float) -> bool:
        running.set()
        return not release.is_set()

    results = _Results()
    with ThreadPoolExecutor(2) as pool:
        lane = await _lane(registry, engine, pool)
        bad = _submit(
            lane, registry, results, 1, SampleJob(prompt=np.array([5, 10**6]), max_tokens=2)
        )
        await asyncio.wait_for(bad.event.wait(), 60)
        assert bad.state == "failed" and bad.category == "user"
        long_job = SampleJob(
            prompt=_prompt("x"), max_tokens=1000, stop_at_eos=False, on_token=on_token
        )
        held = _submit(lane, registry, results, 2, long_job)
        assert await asyncio.to_thread(running.wait, 60)
        await lane.close("the sampler was released")
        assert held.state == "failed" and held.error == "the sampler was released"
        release.set()
    assert lane.depth == 0


def test_a_backend_without_row_caches_is_served_batch_by_batch(engine):
    class NoRows(type(engine._samplers["base"].base)):
        new_row_cache = ContinuousBatch.__init__.__globals__["Backend"].new_row_cache

    s = engine._samplers["base"]
    original = s.base.__class__
    s.base.__class__ = NoRows
    try:
        assert engine.continuous_sampler("base") is None
    finally:
        s.base.__class__ = original
    assert isinstance(engine.continuous_sampler("base"), ContinuousBatch)
    with pytest.raises(EngineUserError, match="unknown sampler"):
        engine.continuous_sampler("nope")


@pytest.mark.asyncio
async def test_a_lane_without_a_continuous_batch_samples_batch_by_batch(engine, registry):
    """A backend that cannot join rows (continuous_sampler answers None): each admission is
    one ``engine.sample`` call, and its results are answered in order."""
    calls: list[int] = []

    def sample(sampler_id: str, jobs: list[SampleJob]):
        calls.append(len(jobs))
        return engine.sample(sampler_id, jobs)

    jobs = _jobs()[:4]
    alone = [_alone(engine, "base", j) for j in jobs]
    results = _Results()
    with ThreadPoolExecutor(2) as pool:
        lane = ContinuousLane("base", registry, pool, sample, lambda _: None, None, 100, 64)
        recs = [_submit(lane, registry, results, i, j) for i, j in enumerate(jobs)]
        await asyncio.wait_for(asyncio.gather(*(r.event.wait() for r in recs)), 120)
        await lane.close("test over")
    assert sum(calls) == len(jobs) and all(r.state == "done" for r in recs)
    for i in range(len(jobs)):
        _assert_same(alone[i], results.by_seq[i])


@pytest.mark.e2e
async def test_through_the_server_a_short_request_overtakes_a_long_one(tmp_path):
    """The real server and client: a short seeded request sent while a 1000-token request
    decodes is answered first (the long one cannot finish in the few steps the short one
    needs), with the tokens it gets alone. A batch-by-batch lane answers it only after the
    long one."""
    import tinker_actors as tinker
    from tinker_actors.server import LocalServer

    prompt = tinker.types.ModelInput.from_ints([BOS_ID, *b"Once upon a time"])
    short = tinker.types.SamplingParams(max_tokens=6, seed=7, temperature=0.9)
    long = tinker.types.SamplingParams(max_tokens=1000, seed=1, stop=[])
    async with LocalServer(engine="torch", data_dir=tmp_path) as srv:
        service = tinker.ServiceClient(base_url=srv.base_url, api_key=srv.api_key)
        try:
            # the deprecated twin starts the session without blocking this loop (the server's)
            with pytest.warns(FutureWarning, match="create_sampling_client_async"):
                sampler = await service.create_sampling_client_async(base_model=M1)
            alone = await sampler.sample(prompt, 1, short)
            stream = sampler.sample_stream(prompt, long, 1)
            first = await stream.__anext__()  # the long request is decoding
            assert first.event_type == "token"

            async def rest() -> int:
                return 1 + sum([c.event_type == "token" async for c in stream])

            long_task = asyncio.ensure_future(rest())
            res = await sampler.sample(prompt, 1, short)
            assert not long_task.done()  # about 990 decode steps to go
            assert res.sequences[0].tokens == alone.sequences[0].tokens
            assert await long_task == 1000
        finally:
            await service.aclose()
