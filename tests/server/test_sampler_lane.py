"""SamplerLane batching: bursts gather into one engine call; jobs arriving while a batch runs
are all answered, with the same seeded results as one at a time."""

from __future__ import annotations

import asyncio
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tinker_actors.server.engine.base import SampleJob
from tinker_actors.server.futures import FutureRegistry, Outcome
from tinker_actors.server.scheduler import SamplerLane
from tinker_actors.server.store import Store

pytestmark = pytest.mark.asyncio


@pytest.fixture
def registry(tmp_path: Path) -> FutureRegistry:
    return FutureRegistry(Store(tmp_path / "db.sqlite"), 3600.0)


def _job(seed: int) -> SampleJob:
    return SampleJob(prompt=np.array([1, 2, 3], dtype=np.int64), max_tokens=4, seed=seed)


class _Recorder:
    """A sample_fn that records batch sizes; ``gate`` holds a batch until released."""

    def __init__(self, hold_first: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.gate = threading.Event()
        self.started = threading.Event()
        if not hold_first:
            self.gate.set()

    def __call__(self, sampler_id: str, jobs: list[SampleJob]) -> list[int]:
        self.batches.append([j.seed for j in jobs])
        self.started.set()
        self.gate.wait(30)
        return [j.seed * 10 for j in jobs]


def _lane(registry, fn, pool, **kw) -> SamplerLane:
    return SamplerLane("s", registry, pool, fn, None, 100, kw.pop("batch_size", 8), **kw)


def _submit(lane, registry, seed):
    rec = registry.create("Sample", sampler_id="s", seq_id=seed)
    lane.submit(seed, str(seed), rec, _job(seed), lambda v: Outcome("json", str(v).encode()))
    return rec


async def test_a_burst_into_an_idle_lane_is_one_batch(registry):
    fn = _Recorder()
    with ThreadPoolExecutor(2) as pool:
        # a long gap and window: the wait ends because the batch is full, not on a clock
        lane = _lane(registry, fn, pool, batch_size=6, batch_gap_s=30.0, batch_window_s=30.0)
        for _ in range(5):
            await asyncio.sleep(0)  # the lane is idle
        first = _submit(lane, registry, 1)
        for _ in range(5):
            await asyncio.sleep(0)  # the lane wakes and waits for the rest of the burst
        rest = [_submit(lane, registry, s) for s in range(2, 7)]
        for rec in [first, *rest]:
            assert await registry.wait(rec, 30)
        assert fn.batches == [[1, 2, 3, 4, 5, 6]]
        assert [r.outcome.value for r in [first, *rest]] == [
            str(s * 10).encode() for s in range(1, 7)
        ]
        await lane.close("done")


async def test_jobs_arriving_during_a_batch_all_run_next(registry):
    fn = _Recorder(hold_first=True)
    with ThreadPoolExecutor(2) as pool:
        lane = _lane(registry, fn, pool, batch_size=4)  # no burst wait
        first = _submit(lane, registry, 1)
        await asyncio.get_running_loop().run_in_executor(None, fn.started.wait, 30)
        later = [_submit(lane, registry, s) for s in range(2, 8)]
        fn.gate.set()
        for rec in [first, *later]:
            assert await registry.wait(rec, 30)
            assert rec.state == "done"
        # the running batch is not joined; the queue then goes out in full batches
        assert fn.batches == [[1], [2, 3, 4, 5], [6, 7]]
        await lane.close("done")


async def test_seeded_samples_through_lanes_equal_one_at_a_time(registry):
    """Real engine: requests arriving while a batch decodes get the one-at-a-time tokens."""
    pytest.importorskip("torch")
    from tinker_actors.server.engine.torch_engine import TorchEngine

    eng = TorchEngine(cache_dir=tempfile.mkdtemp())
    eng.create_sampler("s", "tinker-actors/byte-1m", None)
    jobs = {
        s: SampleJob(
            prompt=np.array([1, *range(40, 40 + s)], dtype=np.int64),
            max_tokens=8 + s,
            seed=s,
            top_k=0 if s % 2 else 7,
        )
        for s in range(1, 13)
    }
    alone = {s: eng.sample("s", [j])[0] for s, j in jobs.items()}
    with ThreadPoolExecutor(2) as pool:
        lane = SamplerLane(
            "s", registry, pool, eng.sample, None, 100, 5, batch_gap_s=0.001, batch_window_s=0.01
        )
        recs = {}
        for s, job in jobs.items():
            rec = registry.create("Sample", sampler_id="s", seq_id=s)
            lane.submit(s, str(s), rec, job, lambda v: Outcome("sample", v))
            recs[s] = rec
            if s % 4 == 0:
                await asyncio.sleep(0.005)  # some arrive while a batch runs
        for s, rec in recs.items():
            assert await registry.wait(rec, 60)
            assert rec.state == "done", rec.error
            got = rec.outcome.value.sequences[0]
            want = alone[s].sequences[0]
            assert got.tokens.tolist() == want.tokens.tolist()
            np.testing.assert_allclose(got.logprobs, want.logprobs, atol=1e-5)
        await lane.close("done")
