"""Per-model seq_id ordering and per-sampler batching, with compute off the event loop.

* A ``ModelLane`` owns one worker thread (a single-thread executor) and runs its model's
  requests strictly in seq_id order: early arrivals (e.g. parallel forward_backward chunks,
  the first chunk sent last) are held until the gap fills; a retry of a seq id already
  received returns the original future; the same seq id with a different body is a conflict.
* A ``SamplerLane`` queues sample jobs of one sampler and hands everything queued (up to a
  batch size) to one ``engine.sample`` call on a shared sampling pool, so sampling never waits
  behind another model's training. A job that finds the lane idle waits for the rest of its
  burst (until no job arrived for a short gap, at most a short window): concurrent requests
  reach the server one HTTP request at a time, and without the wait the first would decode
  alone while the others queue behind it for a whole generation. Past a queue depth it refuses (429) before the seq id is
  recorded, so the client's resubmission with the same seq id is accepted later.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tinker_actors.server.engine.base import EngineUserError, RequestRefused, SampleJob
from tinker_actors.server.futures import FutureRecord, FutureRegistry, Outcome
from tinker_actors.telemetry import get_logger

log = get_logger("tinker_actors.server")

# How many past seq ids per model are remembered for retries.
SEEN_WINDOW = 4096


class SeqConflict(Exception):
    """The same seq id arrived with a different body (HTTP 409)."""


class QueueFull(Exception):
    """Backpressure: the sampler queue is at its depth limit (HTTP 429)."""


Work = Callable[[], Any]
Finish = Callable[[Any], Outcome]


@dataclass(slots=True)
class _Job:
    rec: FutureRecord
    work: Work  # runs on the worker thread
    finish: Finish  # runs on the loop with work's value: store updates, result shaping


def _run_finish(registry: FutureRegistry, job: _Job, value: Any) -> None:
    try:
        outcome = job.finish(value)
    except EngineUserError as exc:
        registry.fail(job.rec, str(exc), "user")
    except Exception as exc:
        log.exception("finish_failed", request_id=job.rec.request_id)
        registry.fail(job.rec, f"internal error: {exc}", "server")
    else:
        registry.resolve(job.rec, outcome)


class ModelLane:
    def __init__(
        self,
        model_id: str,
        registry: FutureRegistry,
        next_seq: int,
        on_ran: Callable[[int], None] | None = None,
        prelude: tuple[FutureRecord, Work, Finish] | None = None,
        recall: Callable[[int, str], str | None] | None = None,
    ) -> None:
        """``recall(seq_id, digest)`` finds a request id for a seq id that ran before this
        lane existed (before a restart) and whose result is still known."""
        self.model_id = model_id
        self._recall = recall
        self._prelude = _Job(*prelude) if prelude else None
        self._broken: str | None = None  # set when the prelude (a revive) failed
        self.next_seq = next_seq
        self._registry = registry
        self._on_ran = on_ran
        self._held: dict[int, _Job] = {}
        self._seen: dict[int, tuple[str, str]] = {}  # seq -> (digest, request_id)
        self._tail: deque[_Job] = deque()  # unsequenced work (legacy unload): after the rest
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"model-{model_id}")
        self.running: FutureRecord | None = None
        self._progress = asyncio.Event()  # replaced after each job: wakes drain waiters
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"lane-{model_id}")

    @property
    def depth(self) -> int:
        return len(self._held) + len(self._tail) + (1 if self.running else 0)

    @property
    def broken(self) -> bool:
        return self._broken is not None

    def lookup(self, seq_id: int, digest: str) -> str | None:
        """The request id already given to ``seq_id``, or None if it is new.

        Raises SeqConflict for a different body, or a seq id that already ran and is no
        longer remembered.
        """
        seen = self._seen.get(seq_id)
        if seen is not None:
            if seen[0] != digest:
                raise SeqConflict(
                    f"seq_id {seq_id} of model {self.model_id} was already used by a "
                    "different request"
                )
            return seen[1]
        if seq_id < self.next_seq:
            recalled = self._recall(seq_id, digest) if self._recall is not None else None
            if recalled is not None:
                return recalled
            raise SeqConflict(
                f"seq_id {seq_id} of model {self.model_id} is behind the next expected "
                f"seq_id {self.next_seq} (it already ran and its result is no longer known)"
            )
        return None

    def submit(
        self, seq_id: int, digest: str, rec: FutureRecord, work: Work, finish: Finish
    ) -> None:
        if self._closed:
            self._registry.fail(rec, f"model {self.model_id} was unloaded", "user")
            return
        self._seen[seq_id] = (digest, rec.request_id)
        if len(self._seen) > 2 * SEEN_WINDOW:  # trim in batches: amortised O(1)
            for old in sorted(self._seen)[: len(self._seen) - SEEN_WINDOW]:
                del self._seen[old]
        self._held[seq_id] = _Job(rec, work, finish)
        self._wake.set()

    def submit_unsequenced(self, rec: FutureRecord, work: Work, finish: Finish) -> None:
        self._tail.append(_Job(rec, work, finish))
        self._wake.set()

    def queued(self) -> list[FutureRecord]:
        """The records received but not started (what a close fails)."""
        return [job.rec for job in (*self._held.values(), *self._tail)]

    def waiting_for_gap(self) -> bool:
        return bool(self._held) and self.next_seq not in self._held and self.running is None

    async def _execute(self, job: _Job) -> bool:
        """Runs one job on the model thread; False when it failed."""
        if self._broken is not None:
            self._registry.fail(job.rec, self._broken)
            return False
        self.running = job.rec
        self._idle.clear()
        try:
            value = await asyncio.get_running_loop().run_in_executor(self._executor, job.work)
        except asyncio.CancelledError:
            self._registry.fail(job.rec, "the local server stopped before this request ran")
            raise
        except EngineUserError as exc:
            self._registry.fail(job.rec, str(exc), "user")
            return False
        except RequestRefused as exc:
            self._registry.fail(job.rec, str(exc), "server")
            return False
        except Exception as exc:
            log.exception("engine_error", model_id=self.model_id, request_id=job.rec.request_id)
            self._registry.fail(job.rec, f"engine error: {type(exc).__name__}: {exc}")
            return False
        finally:
            self.running = None
            self._idle.set()
            self._progress.set()
            self._progress = asyncio.Event()
        _run_finish(self._registry, job, value)
        return job.rec.state == "done"

    async def _run(self) -> None:
        if self._prelude is not None:
            # e.g. reloading a model's live state after a restart: everything waits for it
            if not await self._execute(self._prelude):
                self._broken = (
                    f"model {self.model_id} could not be restored: {self._prelude.rec.error}"
                )
            self._prelude = None
        while True:
            job = self._held.pop(self.next_seq, None)
            if job is not None:
                seq = self.next_seq
                self.next_seq += 1
            elif self._tail and not self._held:
                job, seq = self._tail.popleft(), -1
            else:
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._execute(job)
            if seq >= 0 and self._on_ran is not None:
                self._on_ran(seq)

    async def drained(self) -> None:
        """Waits until everything received has run (or waits on a seq gap that never fills)."""
        while self.depth and not self.waiting_for_gap():
            await self._progress.wait()

    async def close(self, reason: str, final: Work | None = None) -> Any:
        """Fails queued work, lets the running step finish, runs ``final`` on the model
        thread (e.g. the stop-time state save), then stops the thread."""
        self._closed = True
        for job in [*self._held.values(), *self._tail]:
            self._registry.fail(job.rec, reason)
        self._held.clear()
        self._tail.clear()
        await self._idle.wait()  # a step's thread cannot be interrupted
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        try:
            if final is not None:
                return await asyncio.get_running_loop().run_in_executor(self._executor, final)
            return None
        finally:
            self._executor.shutdown(wait=False)


@dataclass(slots=True)
class _SampleItem:
    rec: FutureRecord
    job: SampleJob
    finish: Callable[[Any], Outcome]


class SamplerLane:
    def __init__(
        self,
        sampler_id: str,
        registry: FutureRegistry,
        pool: Executor,
        sample_fn: Callable[[str, list[SampleJob]], list[Any]],
        prepare: Callable[[], None] | None,
        max_depth: int,
        batch_size: int,
        *,
        batch_gap_s: float = 0.0,
        batch_window_s: float = 0.0,
    ) -> None:
        self.sampler_id = sampler_id
        self._batch_gap_s = batch_gap_s
        self._batch_window_s = batch_window_s
        self._registry = registry
        self._pool = pool
        self._sample_fn = sample_fn
        self._prepare = prepare  # loads the sampler into the engine once (lazy after restart)
        self._max_depth = max_depth
        self._batch_size = batch_size
        self._queue: deque[_SampleItem] = deque()
        self._in_flight = 0
        self._seen: dict[int, tuple[str, str]] = {}
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"sampler-{sampler_id}"
        )

    @property
    def depth(self) -> int:
        return len(self._queue) + self._in_flight

    def lookup(self, seq_id: int, digest: str) -> str | None:
        seen = self._seen.get(seq_id)
        if seen is None:
            return None
        if seen[0] != digest:
            raise SeqConflict(
                f"seq_id {seq_id} of sampler {self.sampler_id} was already used by a "
                "different request"
            )
        return seen[1]

    def check_capacity(self) -> None:
        if self.depth >= self._max_depth:
            raise QueueFull(
                f"sampler {self.sampler_id} has {self.depth} requests queued; retry later"
            )

    def submit(
        self,
        seq_id: int | None,
        digest: str,
        rec: FutureRecord,
        job: SampleJob,
        finish: Callable[[Any], Outcome],
    ) -> None:
        if seq_id is not None:
            self._remember(seq_id, digest, rec.request_id)
        self._queue.append(_SampleItem(rec, job, finish))
        self._wake.set()

    def _remember(self, seq_id: int, digest: str, request_id: str) -> None:
        """Keeps the last seq ids seen (duplicate detection), trimmed in batches."""
        self._seen[seq_id] = (digest, request_id)
        if len(self._seen) > 4 * SEEN_WINDOW:
            for old in list(self._seen)[: len(self._seen) - SEEN_WINDOW]:
                del self._seen[old]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                await self._gather_burst()
                continue
            batch: list[_SampleItem] = []
            while self._queue and len(batch) < self._batch_size:
                item = self._queue.popleft()
                if item.rec.cancelled:
                    self._registry.fail(item.rec, "cancelled by the client", "user")
                    continue
                batch.append(item)
            if not batch:
                continue
            self._in_flight = len(batch)
            jobs = [item.job for item in batch]
            try:
                if self._prepare is not None:
                    await loop.run_in_executor(self._pool, self._prepare)
                    self._prepare = None
                results = await loop.run_in_executor(
                    self._pool, self._sample_fn, self.sampler_id, jobs
                )
            except asyncio.CancelledError:
                for item in batch:
                    self._registry.fail(item.rec, "the local server stopped before sampling")
                raise
            except EngineUserError as exc:
                for item in batch:
                    self._registry.fail(item.rec, str(exc), "user")
            except Exception as exc:
                log.exception("sample_error", sampler_id=self.sampler_id)
                for item in batch:
                    self._registry.fail(item.rec, f"engine error: {type(exc).__name__}: {exc}")
            else:
                if len(results) != len(batch):
                    for item in batch:
                        self._registry.fail(item.rec, "engine returned the wrong number of results")
                    continue
                for item, result in zip(batch, results, strict=True):
                    _run_finish(self._registry, _Job(item.rec, lambda: None, item.finish), result)
            finally:
                self._in_flight = 0

    async def _gather_burst(self) -> None:
        """Lets the rest of a burst arrive before an idle lane starts a batch.

        Waits while jobs keep arriving less than ``batch_gap_s`` apart, at most
        ``batch_window_s`` in all, and not once a full batch is queued. Only after idling:
        jobs queued behind a running batch go out as soon as it ends.
        """
        if self._batch_gap_s <= 0 or self._batch_window_s <= 0:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._batch_window_s
        while len(self._queue) < self._batch_size:
            left = deadline - loop.time()
            if left <= 0:
                return
            seen = len(self._queue)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(self._batch_gap_s, left)):
                    await self._wake.wait()
            if len(self._queue) <= seen:
                return  # a quiet gap: the burst is over

    async def close(self, reason: str) -> None:
        for item in self._queue:
            self._registry.fail(item.rec, reason)
        self._queue.clear()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
