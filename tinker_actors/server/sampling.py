"""Sampling: sampler sessions (immutable weight snapshots), their lanes, ``asample`` and the
``/retrieve_futures`` completion logs."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinker_actors import types
from tinker_actors.server.checkpoints import Checkpoints
from tinker_actors.server.context import Context, implicit_session, session_of
from tinker_actors.server.engine.base import EngineUserError, SampleJob
from tinker_actors.server.errors import HttpError, bad_request, conflict, gone, not_found
from tinker_actors.server.futures import FutureRecord, FutureRegistry, Outcome
from tinker_actors.server.scheduler import (
    SamplerLane,
    _Job,
    _run_finish,
    _SampleItem,
)
from tinker_actors.server.sessions import Sessions
from tinker_actors.server.store import SamplerRow, SessionRow
from tinker_actors.server.users import caller
from tinker_actors.telemetry import get_logger

log = get_logger("tinker_actors.server")


# A runner gives its pool thread back this often (and queues itself again), so samplers that
# never go idle do not starve the others (or create_sampling_session) of the sampling pool.
RUNNER_SLICE_S = 0.25

# An idle continuous lane keeps its batch (the row cache and slot state its last burst sized)
# this long, so the next burst does not allocate and zero them again (for the 64-row cache of
# the smallest built-in model that costs more than the burst's admission); then it drops it,
# so a sampler idle for longer holds no cache and no weights.
IDLE_KEEP_S = 5.0


class ContinuousLane(SamplerLane):
    """A sampler lane that batches continuously: a job joins the running decode at its next
    step (``ContinuousBatch``: that step's forward prefills it beside the running rows), and
    a job's result is delivered the moment its last sequence finishes, not when the batch
    ends. Jobs of one lane share one sampler's weights, so one forward serves them all.

    A runner on the sampling pool owns the engine's batch: it admits what the lane queued (up
    to ``batch_size`` jobs decoding at once), decodes a step, posts finished jobs to the loop,
    and repeats until nothing is queued or decoding. It hands its thread back every
    ``RUNNER_SLICE_S`` (queueing itself again). With nothing to batch against, it needs no
    burst window: the first job of a burst starts at once and the rest join a step later.
    An engine that answers ``continuous_sampler`` with None (a Hugging Face backend) is served
    batch by batch through ``engine.sample``, as by ``SamplerLane``.
    """

    def __init__(
        self,
        sampler_id: str,
        registry: FutureRegistry,
        pool: ThreadPoolExecutor,
        sample_fn: Callable[[str, list[SampleJob]], list[Any]],
        continuous_fn: Callable[[str], Any],
        prepare: Callable[[], None] | None,
        max_depth: int,
        batch_size: int,
    ) -> None:
        super().__init__(sampler_id, registry, pool, sample_fn, prepare, max_depth, batch_size)
        self._continuous_fn = continuous_fn
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()
        self._inbox: deque[_SampleItem] = deque()  # guarded by _lock
        self._running = False  # a runner is queued or running; guarded by _lock
        self._closed = False
        self._items: dict[int, _SampleItem] = {}  # submitted, not answered (loop thread)
        # the runner's; kept IDLE_KEEP_S after the lane goes idle (then dropped on the loop
        # under _lock, only while no runner is queued or running)
        self._batch: Any = None
        self._idle_since = 0  # counts idle transitions (guarded by _lock): a stale drop skips

    async def _run(self) -> None:
        return  # the runners do the work

    @property
    def depth(self) -> int:
        return len(self._items)

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
        item = _SampleItem(rec, job, finish)
        self._items[id(item)] = item
        with self._lock:
            self._inbox.append(item)
            start = not self._running
            self._running = True
        if start:
            self._spawn()

    # the runner (a sampling pool thread) ----------------------------------------------------
    def _take(self, batch: Any) -> list[_SampleItem] | None:
        """What may join ``batch`` now (up to ``batch_size`` jobs decoding); None when there is
        nothing to do: the lane is then idle (the next submit starts a runner), and the batch
        is dropped ``IDLE_KEEP_S`` later unless a runner took it up again."""
        with self._lock:
            if not self._inbox and not batch.jobs:
                self._running = False
                self._idle_since += 1
                mark = self._idle_since
                try:
                    self._loop.call_soon_threadsafe(self._drop_later, mark)
                except RuntimeError:  # the loop is closed
                    self._batch = None
                return None
            out: list[_SampleItem] = []
            while self._inbox and len(out) + batch.jobs < self._batch_size:
                out.append(self._inbox.popleft())
            return out

    def _runner(self) -> None:
        deadline = time.monotonic() + RUNNER_SLICE_S
        taken: list[_SampleItem] = []
        try:
            if self._prepare is not None:
                self._prepare()
                self._prepare = None
            if self._batch is None:
                self._batch = self._continuous_fn(self.sampler_id) or _BatchByBatch(
                    self._sample_fn, self.sampler_id
                )
            batch = self._batch
            while not self._closed:
                took = self._take(batch)
                if took is None:
                    return
                taken = took
                done: list[tuple[Any, Any]] = []
                fresh = []
                for item in taken:
                    if item.rec.cancelled:
                        done.append((item, _Failure("cancelled by the client", "user")))
                    else:
                        fresh.append((item.job, item))
                if fresh:
                    done += batch.admit(fresh)
                taken = []
                if batch.jobs:
                    done += batch.step()
                if done:
                    self._post(done)
                if time.monotonic() > deadline and not self._closed:
                    self._spawn()
                    return
            self._abort("the local server stopped before sampling", "server", [], everything=True)
        except EngineUserError as exc:  # the lazy load of the sampler's weights
            self._abort(str(exc), "user", taken, everything=True)
        except Exception as exc:
            log.exception("sample_error", sampler_id=self.sampler_id)
            self._abort(f"engine error: {type(exc).__name__}: {exc}", "server", taken)

    def _abort(
        self, message: str, category: str, taken: list[_SampleItem], everything: bool = False
    ) -> None:
        """Fails what the runner holds (and, with ``everything``, what is queued); a runner
        starts again for what stays queued, so the lane stays usable."""
        batch, self._batch = self._batch, None
        items = list(taken) + (batch.abort() if batch is not None else [])
        with self._lock:
            if everything:
                items += list(self._inbox)
                self._inbox.clear()
            restart = bool(self._inbox) and not self._closed
            self._running = restart
        self._post([(item, _Failure(message, category)) for item in items])
        if restart:
            self._spawn()

    def _spawn(self) -> None:
        """Queues a runner on the pool (refused once the server shut it down: then the lane
        is as closed, and what it holds fails)."""
        try:
            self._pool.submit(self._runner)
        except RuntimeError:
            self._closed = True
            self._abort("the local server stopped before sampling", "server", [], True)

    def _post(self, done: list[tuple[Any, Any]]) -> None:
        try:
            self._loop.call_soon_threadsafe(self._deliver, done)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            self._closed = True

    # back on the loop ----------------------------------------------------------------------
    def _drop_later(self, mark: int) -> None:
        self._loop.call_later(IDLE_KEEP_S, self._drop_idle, mark)

    def _drop_idle(self, mark: int) -> None:
        """Drops the batch of a lane idle since ``mark`` (not if a runner ran since)."""
        with self._lock:
            if not self._running and self._idle_since == mark:
                self._batch = None

    def _deliver(self, done: list[tuple[Any, Any]]) -> None:
        for item, result in done:
            if self._items.pop(id(item), None) is None:
                continue  # answered already (the lane closed)
            if isinstance(result, _Failure):
                self._registry.fail(item.rec, result.message, result.category)
            elif isinstance(result, EngineUserError):
                self._registry.fail(item.rec, str(result), "user")
            else:
                _run_finish(self._registry, _Job(item.rec, _no_work, item.finish), result)

    async def close(self, reason: str) -> None:
        self._closed = True
        with self._lock:
            self._inbox.clear()
            if not self._running:  # a running runner drops it as it stops
                self._batch = None
        items, self._items = list(self._items.values()), {}
        for item in items:
            self._registry.fail(item.rec, reason)
        await super().close(reason)


@dataclass(frozen=True, slots=True)
class _Failure:
    message: str
    category: str


def _no_work() -> None:
    return None


class _BatchByBatch:
    """``ContinuousBatch``'s interface over ``engine.sample``: a backend that cannot join
    rows into a running decode gets each admission as one whole batch."""

    jobs = 0

    def __init__(self, sample_fn: Callable[[str, list[SampleJob]], list[Any]], sid: str) -> None:
        self._fn, self._sid = sample_fn, sid

    def admit(self, items: list[tuple[SampleJob, Any]]) -> list[tuple[Any, Any]]:
        try:
            results = self._fn(self._sid, [job for job, _ in items])
        except EngineUserError as exc:
            return [(handle, exc) for _, handle in items]
        if len(results) != len(items):
            failure = _Failure("engine returned the wrong number of results", "server")
            return [(handle, failure) for _, handle in items]
        return [(handle, r) for (_, handle), r in zip(items, results, strict=True)]

    def step(self) -> list[tuple[Any, Any]]:
        return []

    def abort(self) -> list[Any]:
        return []


@dataclass(slots=True)
class _CompletionLog:
    """What /retrieve_futures reports for one (sampler, clone): an append-only cursor log."""

    base: int = 0
    items: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=100_000))
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def end(self) -> int:
        return self.base + len(self.items)

    def append(self, item: dict[str, Any]) -> None:
        if len(self.items) == self.items.maxlen:
            self.base += 1
        self.items.append(item)
        self.changed.set()
        self.changed = asyncio.Event()

    def since(self, cursor: int) -> list[dict[str, Any]]:
        start = max(cursor - self.base, 0)
        return list(self.items)[start:]


class Sampling:
    def __init__(self, ctx: Context, sessions: Sessions, checkpoints: Checkpoints) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.sessions = sessions
        self.checkpoints = checkpoints
        self.lanes: dict[str, SamplerLane] = {}
        self.pool = ThreadPoolExecutor(
            max(2, min(8, os.cpu_count() or 2)), thread_name_prefix="sample"
        )
        self._completions: dict[tuple[str, int], _CompletionLog] = {}
        self._sample_ids: dict[str, list[str]] = {}
        self._join_counters: dict[str, int] = {}
        self._context: dict[str, int | None] = {}  # sampler id -> its model's context length
        ctx.registry.add_listener(self._on_future_finished)

    # lanes --------------------------------------------------------------------------------
    def lane(self, sampler_id: str, *, loaded: bool) -> SamplerLane:
        """The sampler's lane; one from before a restart loads its weights lazily."""
        old = self.lanes.get(sampler_id)
        if old is not None:
            return old
        prepare = None
        if not loaded:
            row = self.store.get_sampler(sampler_id)
            if row is None:
                raise not_found(f"sampler {sampler_id!r} not found")
            session = self.store.get_session(row.session_id)
            if session is not None and session.status == "expired":
                raise gone(f"sampler {sampler_id} was released: its session expired")
            weights = Path(row.weights_dir) if row.weights_dir else None

            def prepare() -> None:
                if weights is not None and not weights.exists():
                    raise EngineUserError(
                        f"the weights of sampler {sampler_id} are gone ({weights}); "
                        "create a new sampling client"
                    )
                self.ctx.engine.create_sampler(sampler_id, row.base_model, weights)

        # A benchmark engine answers at once: it has nothing to batch, so waiting for a burst
        # would only add latency to what the benchmarks measure.
        wait = not getattr(self.ctx.engine, "benchmark", False)
        continuous = getattr(self.ctx.engine, "continuous_sampler", None)
        if continuous is not None and self.ctx.config.sample_batch_size > 1:
            lane: SamplerLane = ContinuousLane(
                sampler_id,
                self.ctx.registry,
                self.pool,
                self.ctx.engine.sample,
                continuous,
                prepare,
                self.ctx.config.sample_queue_depth,
                self.ctx.config.sample_batch_size,
            )
            self.lanes[sampler_id] = lane
            return lane
        lane = SamplerLane(
            sampler_id,
            self.ctx.registry,
            self.pool,
            self.ctx.engine.sample,
            prepare,
            self.ctx.config.sample_queue_depth,
            self.ctx.config.sample_batch_size,
            batch_gap_s=self.ctx.config.sample_batch_gap_s if wait else 0.0,
            batch_window_s=self.ctx.config.sample_batch_window_s if wait else 0.0,
        )
        self.lanes[sampler_id] = lane
        return lane

    def add_snapshot(
        self,
        sampler_id: str,
        session_id: str,
        base_model: str,
        model_path: str | None,
        weights_dir: Path | None,
    ) -> None:
        """Records a sampler the engine already holds and opens its lane."""
        self.store.add_sampler(
            SamplerRow(
                sampler_id,
                session_id,
                base_model,
                model_path,
                str(weights_dir) if weights_dir else None,
                time.time(),
            )
        )
        self.lane(sampler_id, loaded=True)

    async def release(self, sampler_ids: list[str], reason: str) -> None:
        """Fails queued samples and frees the engine's copy; the records stay (a sampler of a
        finished session reloads lazily if used again; one of an expired session answers 410)."""
        loop = asyncio.get_running_loop()
        for sampler_id in sampler_ids:
            lane = self.lanes.pop(sampler_id, None)
            if lane is not None:
                await lane.close(reason)
                await loop.run_in_executor(self.pool, self.ctx.engine.close_sampler, sampler_id)

    async def close(self) -> None:
        for lane in list(self.lanes.values()):
            await lane.close("the local server stopped")
        self.lanes.clear()
        self.pool.shutdown(wait=False, cancel_futures=True)

    # sessions -----------------------------------------------------------------------------
    async def create_session(
        self, req: types.CreateSamplingSessionRequest, sampler_id: str | None = None
    ) -> dict[str, Any]:
        session_id = req.session_id
        seq = req.sampling_session_seq_id
        sampler_id = sampler_id or f"{session_id}:sample:{seq}"
        self.ctx.own_session(session_id)
        base_model, model_path = req.base_model, req.model_path
        existing = self.store.get_sampler(sampler_id)
        if existing is not None:
            if existing.model_path == model_path and (
                base_model is None or base_model == existing.base_model
            ):
                return {"type": "create_sampling_session", "sampling_session_id": sampler_id}
            raise conflict(f"sampling_session_seq_id {seq} of session {session_id} was reused")
        self.sessions.check_active(session_id)
        self.sessions.touch(session_id)
        weights_dir = None
        if model_path is not None:
            ck = self.checkpoints.resolve(model_path, ("sampler", "external"), public_ok=True)
            weights_dir = Path(ck.path)
            source = self.store.get_model(ck.model_id)
            base_model = base_model or (source.base_model if source else None)
            if not base_model:
                raise bad_request(f"base model of {model_path} is unknown; pass base_model")
        elif not base_model:
            raise bad_request("create_sampling_session needs base_model or model_path")
        try:
            await asyncio.get_running_loop().run_in_executor(
                self.pool, self.ctx.engine.create_sampler, sampler_id, base_model, weights_dir
            )
        except EngineUserError as exc:
            raise bad_request(str(exc)) from exc
        self.add_snapshot(sampler_id, session_id, base_model, model_path, weights_dir)
        return {"type": "create_sampling_session", "sampling_session_id": sampler_id}

    def get(self, sampler_id: str) -> dict[str, Any]:
        self.ctx.own_sampler(sampler_id)
        row = self.store.get_sampler(sampler_id)
        if row is None:
            raise not_found(f"sampler {sampler_id!r} not found")
        out = {"sampler_id": sampler_id, "base_model": row.base_model}
        if row.model_path:
            out["model_path"] = row.model_path
        with contextlib.suppress(Exception):  # extension field: a local tokenizer directory
            out["tokenizer_id"] = self.ctx.engine.tokenizer_dir(row.base_model)
        return out

    def join(self, req: types.JoinSamplingSessionRequest) -> dict[str, Any]:
        self.get(req.sampling_session_id)
        n = self._join_counters.get(req.sampling_session_id, 0) + 1
        self._join_counters[req.sampling_session_id] = n
        return {"type": "join_sampling_session", "client_counter": n}

    async def implicit_sampler(self, base_model: str | None, model_path: str | None) -> str:
        """Older clients may sample by base_model / model_path without a sampling session."""
        key = hashlib.blake2b(f"{base_model}|{model_path}".encode(), digest_size=8).hexdigest()
        user = caller()
        session_id = implicit_session(user)
        sampler_id = f"{session_id}:sample:{key}"
        if self.store.get_sampler(sampler_id) is None:
            if self.store.get_session(session_id) is None:
                self.store.add_session(
                    SessionRow(
                        session_id,
                        time.time(),
                        [],
                        {},
                        None,
                        None,
                        "implicit samplers",
                        "active",
                        None,
                        None,
                        None,
                        owner=user,
                    )
                )
            req = types.CreateSamplingSessionRequest(
                session_id=session_id,
                sampling_session_seq_id=0,
                base_model=base_model,
                model_path=model_path,
            )
            await self.create_session(req, sampler_id=sampler_id)
        return sampler_id

    # sampling -----------------------------------------------------------------------------
    def asample(
        self,
        sampler_id: str,
        seq_id: int | None,
        digest: str,
        job: SampleJob,
        finish: Callable[[Any], Outcome],
    ) -> dict[str, Any]:
        """Queues one sample; a retry of a seq id already received gets the same future."""
        self.ctx.own_sampler(sampler_id)
        lane = self.lanes.get(sampler_id) or self.lane(sampler_id, loaded=False)
        self._check_length(sampler_id, job)
        self.sessions.touch(session_of(sampler_id))
        rid = lane.lookup(seq_id, digest) if seq_id is not None else None
        if rid is None:
            lane.check_capacity()  # 429 before the seq id is recorded
            rec = self.ctx.registry.create("Sample", sampler_id=sampler_id, seq_id=seq_id)
            rid = rec.request_id
            self._sample_ids[rid] = [f"{rid}:{i}" for i in range(job.num_samples)]
            lane.submit(seq_id, digest, rec, job, finish)
        ids = self._sample_ids.get(rid) or [f"{rid}:{i}" for i in range(job.num_samples)]
        return {"request_id": rid, "sample_sequence_ids": ids}

    def _check_length(self, sampler_id: str, job: SampleJob) -> None:
        """``max_tokens`` and the prompt must fit the model's context (a 400 at submit)."""
        if sampler_id not in self._context:
            row = self.store.get_sampler(sampler_id)
            base = row.base_model if row is not None else None
            specs = {m.model_name: m.max_context_length for m in self._engine_models()}
            self._context[sampler_id] = specs.get(base) if base else None
        limit = self._context[sampler_id]
        if limit is None:
            return  # a model the engine does not list (a local HF directory): it checks
        if job.max_tokens is not None and job.max_tokens > limit:
            raise bad_request(
                f"max_tokens {job.max_tokens} is larger than the model's context length {limit}"
            )
        if len(job.prompt) > limit:
            raise bad_request(
                f"the prompt has {len(job.prompt)} tokens, more than the model's context "
                f"length {limit}"
            )

    def _engine_models(self) -> list[Any]:
        try:
            return list(self.ctx.engine.models())
        except Exception:
            return []

    def queue_reason(self, rec: FutureRecord) -> str | None:
        if rec.sampler_id is not None and (lane := self.lanes.get(rec.sampler_id)):
            return f"queued with {lane.depth} sample request(s)"
        return None

    def _on_future_finished(self, rec: FutureRecord) -> None:
        self._sample_ids.pop(rec.request_id, None)
        if rec.sampler_id is None or rec.seq_id is None:
            return
        log = self._log((rec.sampler_id, rec.seq_id // 1_000_000_000))
        log.append(
            {"state": "finished" if rec.state == "done" else "failed", "request_id": rec.request_id}
        )

    def _log(self, key: tuple[str, int]) -> _CompletionLog:
        log = self._completions.get(key)
        if log is None:
            log = self._completions[key] = _CompletionLog()
        return log

    async def retrieve_futures(
        self, req: types.FuturesRetrieveRequest, max_poll_s: float
    ) -> dict[str, Any]:
        poll_s = max_poll_s if req.timeout is None else min(float(req.timeout), max_poll_s)
        key = (req.target.sampling_session_id, req.target.cloned_sampler_id)
        try:
            self.ctx.own_sampler(key[0])
            log = self._log(key)
        except HttpError:  # someone else's (or no) sampler: an empty log, as for a new one
            log = _CompletionLog()
        if req.prev_cursor >= log.end and poll_s > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(poll_s):
                    await log.changed.wait()
        return {"completions": log.since(req.prev_cursor), "cursor": log.end}
