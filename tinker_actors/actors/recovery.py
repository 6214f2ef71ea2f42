"""Corrupted-run recovery: Tinkex's Recovery.Monitor and Recovery.Executor, on our supervisor.

A :class:`RecoveryMonitor` polls ``get_training_run`` for every TrainingClient it watches;
when the server reports ``corrupted`` (the local server does once an optim_step leaves the
weights or optimizer state non-finite) it hands the client to a :class:`RecoveryExecutor`.

Unlike Tinkex, which creates a new client and passes it to a callback, the executor rebuilds
the *same* TrainingClient: it picks the checkpoint (the client's last ``save_state``, or the
policy's ``tinker://`` path), checks the server can load it, then asks the client's training
actor to restart from it under its supervisor (``TrainingState.recovery_request``). The
requests the caller was already told succeeded since that checkpoint are rolled back, not
replayed (one of them corrupted the weights); requests still in flight are sent again to the
rebuilt model, and everything issued later runs there. The client keeps its object, its
futures and its monitoring (the monitor follows its new run id).

Executor: a FIFO queue, at most ``max_concurrent`` recoveries at once, up to
``policy.max_attempts`` attempts per run with ``backoff * 2**(n-1)`` s between them (capped at
``max_backoff``), then ``policy.on_failure(run_id, error)``. Events, in order, for one
success: ``recovery.detected`` (monitor), ``started``, ``checkpoint_selected``,
``client_created``, ``completed``; a failed attempt emits ``failed``, the last one
``exhausted``; a poll that errors emits ``poll_error``.

Both are actors on the client runtime's loop; their public methods are thread-safe::

    executor = RecoveryExecutor.start_for(service_client)
    monitor = RecoveryMonitor.start_for(service_client, executor)
    monitor.monitor(training_client, RecoveryPolicy(poll_interval=5, on_failure=...))
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import functools
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from .. import errors, events, types
from ..config import RecoveryPolicy, Restart
from ..errors import RunCorruptedError
from ..telemetry import get_logger
from ..transport import RetryPolicy
from .actor import Actor, ActorState, Mailbox
from .supervisor import ChildSpec

if TYPE_CHECKING:
    from .training import TrainingState

__all__ = ["RecoveryExecutor", "RecoveryMonitor", "RunCorruptedError"]

log = get_logger(__name__)

A = TypeVar("A", bound=Actor)
REBUILD_TIMEOUT = 600.0  # one attempt's rebuild (create-from-checkpoint) at most


def _state(client: Any) -> TrainingState:
    """The TrainingState behind a TrainingClient, its handle, or the state itself."""
    from .training import TrainingHandle, TrainingState

    handle = getattr(client, "_handle", client)
    st = handle._state if isinstance(handle, TrainingHandle) else handle
    if not isinstance(st, TrainingState):
        raise TypeError(f"expected a TrainingClient, got {type(client).__name__}")
    return st


def _start_under(service_client: Any, actor: A) -> A:
    """Starts ``actor`` as a temporary child of the client's supervisor (not restarted: the
    caller holds this instance) and blocks until it runs."""
    session = service_client.holder  # the started session

    async def start(_: Actor | None) -> Actor:
        await actor.start()
        return actor

    spec = ChildSpec(f"{actor.name}-{id(actor):x}", start, restart=Restart.TEMPORARY)
    service_client._runtime.submit(session.supervisor.start_child(spec)).result()
    return actor


def _call_user(fn: Callable[..., Any] | None, *args: Any) -> None:
    if fn is None:
        return
    try:
        fn(*args)
    except Exception as exc:  # a user callback must not break recovery
        log.warning(
            "recovery callback failed", callback=getattr(fn, "__name__", fn), error=repr(exc)
        )


@dataclasses.dataclass(eq=False)
class _Entry:
    state: TrainingState
    policy: RecoveryPolicy
    run_id: str
    attempt: int = 0
    done: concurrent.futures.Future[str] = dataclasses.field(
        default_factory=concurrent.futures.Future
    )


class RecoveryExecutor(Actor):
    """Runs recoveries from a queue, ``max_concurrent`` at once, with exponential backoff."""


    def __init__(
        self,
        *,
        max_concurrent: int = 1,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rebuild_timeout: float = REBUILD_TIMEOUT,
    ) -> None:
        if isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int):
            raise TypeError("max_concurrent must be an int")
        if max_concurrent < 1:
            raise ValueError(f"max_concurrent must be >= 1, got {max_concurrent}")
        super().__init__(name="recovery-executor")
        self.max_concurrent = max_concurrent
        self._sleep = sleep
        self.rebuild_timeout = rebuild_timeout
        self._queue: collections.deque[_Entry] = collections.deque()
        self._known: dict[int, _Entry] = {}  # id(state) -> entry queued, running or waiting
        self._lock = threading.Lock()  # recover() is called from any thread
        self._running = 0
        # recoveries to queue; None is a freed slot (a recovery ended: start the next)
        self._mailbox: Mailbox[_Entry | None] | None = None

    # ------------------------------------------------------------------ public
    @classmethod
    def start_for(cls, service_client: Any, **kw: Any) -> RecoveryExecutor:
        """A started executor under ``service_client``'s supervisor (stopped with it)."""
        return _start_under(service_client, cls(**kw))

    def recover(
        self, client: Any, policy: RecoveryPolicy | None = None, *, run_id: str | None = None
    ) -> concurrent.futures.Future[str] | None:
        """Queues a recovery of ``client``; None when one is already queued or running.

        The future resolves to the new run id, or fails with the last attempt's error once
        ``max_attempts`` are spent. Thread-safe.
        """
        st = _state(client)
        policy = policy or st.recovery or RecoveryPolicy()
        if not policy.enabled:
            raise ValueError("recovery is disabled by the policy")
        entry = _Entry(st, policy, run_id or st.model_id)
        with self._lock:
            if id(st) in self._known:
                return None
            self._known[id(st)] = entry
        mailbox = self._mailbox
        if mailbox is None:
            raise RuntimeError("RecoveryExecutor is not started")
        mailbox.put(entry)
        return entry.done

    def pending(self, client: Any) -> bool:
        return id(_state(client)) in self._known

    # ------------------------------------------------------------------ loop side
    async def on_start(self) -> None:
        self._mailbox = Mailbox(self.loop.call_soon_threadsafe, name=self.name)

    async def main(self) -> None:
        mailbox = self._mailbox
        assert mailbox is not None
        while True:
            self._queue.extend(e for e in await mailbox.get() if e is not None)
            while self._queue and self._running < self.max_concurrent:
                entry = self._queue.popleft()
                self._running += 1
                self.spawn(self._recover_one(entry), name=f"recover-{entry.run_id}")

    async def _recover_one(self, entry: _Entry) -> None:
        try:
            new_run = await self._attempt(entry)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._failed(entry, exc)
        else:
            with self._lock:
                self._known.pop(id(entry.state), None)
            _call_user(entry.policy.on_recovery, entry.run_id, new_run, self._checkpoint(entry))
            if not entry.done.done():
                entry.done.set_result(new_run)
        finally:
            self._running -= 1
            if self._mailbox is not None:
                self._mailbox.put(None)

    def _meta(self, entry: _Entry, **extra: Any) -> dict[str, Any]:
        strategy = "latest" if entry.policy.checkpoint == "latest" else "specific"
        return {"run_id": entry.run_id, "attempt": entry.attempt, "strategy": strategy, **extra}

    def _checkpoint(self, entry: _Entry) -> str | None:
        if entry.policy.checkpoint != "latest":
            return entry.policy.checkpoint
        last = entry.state.last_checkpoint
        return last[0] if last else None

    async def _attempt(self, entry: _Entry) -> str:
        entry.attempt += 1
        st, policy = entry.state, entry.policy
        events.emit(events.RECOVERY_STARTED, {"attempt": entry.attempt}, self._meta(entry))
        if st.dead is not None:
            raise errors.TinkerError(f"the TrainingClient cannot be recovered: {st.dead}")
        path = self._checkpoint(entry)
        t = st.session.transport
        assert t is not None
        if path is not None:  # fail here, not in the actor, when the server cannot load it
            await t.call("weights_info", types.WeightsInfoRequest(tinker_path=path))
        events.emit(
            events.RECOVERY_CHECKPOINT_SELECTED,
            {"attempt": entry.attempt},
            self._meta(entry, checkpoint=path),
        )
        actor = st.actor
        if actor is None or actor.state is not ActorState.RUNNING:
            raise errors.TinkerError(f"the training actor of {st.model_id} is not running")
        rebuilt: concurrent.futures.Future[str] = concurrent.futures.Future()
        st.recovery_request = (
            dataclasses.replace(policy, enabled=True, replay=True, checkpoint=path or "latest"),
            rebuilt,
        )
        actor.kill(RunCorruptedError(f"training run {entry.run_id} is corrupted; recovering"))
        async with asyncio.timeout(self.rebuild_timeout):
            new_run = await asyncio.wrap_future(rebuilt)
        events.emit(
            events.RECOVERY_CLIENT_CREATED,
            {"attempt": entry.attempt},
            self._meta(entry, checkpoint=path, new_run_id=new_run),
        )
        events.emit(
            events.RECOVERY_COMPLETED,
            {"attempt": entry.attempt},
            self._meta(entry, checkpoint=path, new_run_id=new_run),
        )
        log.warning(
            "corrupted training run recovered",
            run_id=entry.run_id,
            new_run_id=new_run,
            checkpoint=path,
            attempt=entry.attempt,
        )
        return new_run

    def _failed(self, entry: _Entry, exc: Exception) -> None:
        st = entry.state
        if st.recovery_request is not None and st.recovery_request[1].done() is False:
            st.recovery_request = None  # the actor never took it
        events.emit(
            events.RECOVERY_FAILED, {"attempt": entry.attempt}, self._meta(entry, error=repr(exc))
        )
        policy = entry.policy
        if entry.attempt >= policy.max_attempts:
            with self._lock:
                self._known.pop(id(st), None)
            events.emit(
                events.RECOVERY_EXHAUSTED,
                {"attempt": entry.attempt},
                self._meta(entry, error=repr(exc)),
            )
            log.error("recovery of a corrupted run failed", run_id=entry.run_id, error=repr(exc))
            _call_user(policy.on_failure, entry.run_id, exc)
            if not entry.done.done():
                entry.done.set_exception(exc)
            return
        # the one retry-policy type: exponential from backoff, capped, no jitter
        backoff = RetryPolicy(
            max_attempts=policy.max_attempts,
            base_delay=policy.backoff,
            max_delay=policy.max_backoff,
            jitter=0.0,
        )
        delay = backoff.delay(entry.attempt)
        log.warning(
            "recovery attempt failed; retrying",
            run_id=entry.run_id,
            attempt=entry.attempt,
            delay=delay,
            error=repr(exc),
        )

        async def later() -> None:
            await self._sleep(delay)
            if self._mailbox is not None:
                self._mailbox.put(entry)  # back at the tail of the queue

        self.spawn(later(), name=f"recover-retry-{entry.run_id}")


class RecoveryMonitor(Actor):
    """Polls ``get_training_run`` for watched clients; hands corrupted runs to the executor."""


    def __init__(
        self,
        executor: RecoveryExecutor,
        *,
        policy: RecoveryPolicy | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        if not isinstance(executor, RecoveryExecutor):
            raise TypeError("executor must be a RecoveryExecutor")
        super().__init__(name="recovery-monitor")
        self.executor = executor
        self.policy = policy
        self._sleep = sleep
        self._watched: dict[int, tuple[TrainingState, RecoveryPolicy]] = {}
        self._lock = threading.Lock()  # monitor() / stop_monitoring() from any thread
        self._wake: asyncio.Event | None = None
        self.polls = 0

    @classmethod
    def start_for(
        cls, service_client: Any, executor: RecoveryExecutor, **kw: Any
    ) -> RecoveryMonitor:
        """A started monitor under ``service_client``'s supervisor (stopped with it)."""
        return _start_under(service_client, cls(executor, **kw))

    def monitor(self, client: Any, policy: RecoveryPolicy | None = None) -> None:
        """Watches ``client``'s run (and the runs recovery rebuilds it as). Thread-safe."""
        st = _state(client)
        policy = policy or self.policy or st.recovery
        if policy is None or not policy.enabled:
            raise ValueError("recovery is disabled: pass an enabled RecoveryPolicy")
        with self._lock:
            self._watched[id(st)] = (st, policy)
        if self._wake is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def stop_monitoring(self, client: Any) -> bool:
        with self._lock:
            return self._watched.pop(id(_state(client)), None) is not None

    def watching(self, client: Any) -> bool:
        return id(_state(client)) in self._watched

    async def on_start(self) -> None:
        self._wake = asyncio.Event()

    async def main(self) -> None:
        wake = self._wake
        assert wake is not None
        while True:
            with self._lock:
                idle = not self._watched
            if idle:
                wake.clear()
                await wake.wait()
                continue
            with self._lock:
                interval = min(p.poll_interval for _, p in self._watched.values())
            await self._sleep(interval)
            await self.poll_once()

    async def poll_once(self) -> None:
        """One pass over the watched runs, one at a time (as Tinkex does)."""
        self.polls += 1
        with self._lock:
            watched = list(self._watched.items())
        for key, (st, policy) in watched:
            if self.executor.pending(st):
                continue  # a recovery is on its way; the run id changes when it is done
            run_id = st.model_id
            t = st.session.transport
            if t is None or st.dead is not None:
                continue
            try:
                run = await t.call("get_training_run", path_params={"run_id": run_id})
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                events.emit(events.RECOVERY_POLL_ERROR, {}, {"run_id": run_id, "error": repr(exc)})
                continue
            if not run.corrupted or run_id != st.model_id:
                continue
            last = run.last_checkpoint.tinker_path if run.last_checkpoint else None
            events.emit(events.RECOVERY_DETECTED, {}, {"run_id": run_id, "checkpoint": last})
            log.warning("training run is corrupted", run_id=run_id)
            done = self.executor.recover(st, policy, run_id=run_id)
            if done is not None:
                done.add_done_callback(functools.partial(self._after, key))

    def _after(self, key: int, f: concurrent.futures.Future[str]) -> None:
        """An exhausted recovery stops the watch (as in Tinkex); a success keeps it."""
        if f.exception() is not None:
            with self._lock:
                self._watched.pop(key, None)
