"""The sampling actor: one per SamplingClient, many requests in flight, none blocking another.

Every ``sample`` call is ONE task on the runtime loop that walks the whole pipeline itself:

    retry handler (in-flight cap, retries, progress timeout)
      -> attempt: take a seq id -> admission (count + byte budgets, 429 pause)
         -> POST /asample (429 re-sends the SAME seq id after the pause)
         -> long-poll /retrieve_future -> decode the proto result with numpy

There is no per-request helper task, lock or watchdog: the progress timeout is one watchdog
task for the whole actor, admission is loop-local counters, and the request body is encoded
once per seq id. A 410 (promise expired) and the other retryable failures run a new attempt,
which takes a new seq id, as the official SDK does.

The pure decisions (what is retried, how long to wait, when progress has stalled) are
module-level functions so they are tested without a loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import random
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from tenacity import RetryCallState, retry_if_exception

from .. import codec, errors, events, types
from ..config import RetryConfig
from ..futures import LightFuture, QueueStateObserver, poll_future, result_decoder
from ..manifest import ROUTES
from ..telemetry import get_logger
from ..transport import RetryPolicy, resume
from .actor import Actor, Mailbox
from .admission import (
    DEFAULT_DISPATCH_BYTES,
    SamplingAdmission,
    Slots,
    backoff_seconds,
)
from .telemetry import retry_handler_exception

if TYPE_CHECKING:
    from .session import Session

__all__ = [
    "ASAMPLE_RETRY",
    "SEQ_IDS_PER_CLONE",
    "SampleCall",
    "SampleFuture",
    "SamplingActor",
    "admission_for",
    "effective_retry_config",
    "is_retryable",
    "no_progress_error",
    "progress_expired",
    "retry_delay",
]

log = get_logger(__name__)

SEQ_IDS_PER_CLONE = 1_000_000_000
_ASAMPLE = ROUTES["asample"]
_SAMPLE_TYPE = _ASAMPLE.request_type_header or "Sample"
BACKPRESSURE_HEADERS = {"X-Tinker-Sampling-Backpressure": "1"}
RETRYABLE_STATUSES = frozenset({408, 409, 429})

# The asample POST: 408/409/5xx and connection errors re-send the same body (same seq id)
# with backoff 1, 2, 4 ... 30 s for up to 300 s. 429 is NOT retried here: it is the
# backpressure signal, handled by the actor's session-wide pause.
ASAMPLE_RETRY = RetryPolicy(
    max_attempts=1_000,
    max_total=300.0,
    base_delay=1.0,
    max_delay=30.0,
    retry_statuses=frozenset({408, 409}),
    retry_5xx=True,
    billing_pause=None,
)


# ============================================================================ pure decisions
def is_retryable(exc: BaseException, config: RetryConfig) -> bool:
    """Whether the retry handler runs another attempt after ``exc``.

    A failed request (``RequestFailedError``) is final whatever the config says; an expired
    promise (410) always means "resubmit"; then the configured exception types; then the
    retryable statuses 408/409/429/5xx.
    """
    if isinstance(exc, errors.RequestFailedError):
        return False
    if isinstance(exc, errors.PromiseExpiredError):
        return True
    if isinstance(exc, config.retryable_exceptions):
        return True
    if isinstance(exc, errors.APIStatusError):
        status = exc.status_code
        return status in RETRYABLE_STATUSES or 500 <= status < 600
    return False


def retry_delay(attempt: int, config: RetryConfig, rand: float) -> float:
    """``min(base * 2**attempt, max)`` with symmetric jitter, clamped to ``[0, max]``: the
    wait after ``attempt + 1`` failed attempts, as ``RetryPolicy.from_retry_config`` says.

    ``rand`` is a uniform sample in [0, 1) (injected so tests are deterministic).
    """
    return RetryPolicy.from_retry_config(config).delay(attempt + 1, rand=lambda: rand)


def _retried(exc: BaseException, config: RetryConfig) -> bool:
    """The retry handler's predicate (a cancellation is never retried)."""
    return isinstance(exc, Exception) and config.enable_retry_logic and is_retryable(exc, config)


def _report_attempt(actor: SamplingActor, exc: Exception, attempt: int, started: float) -> bool:
    """Whether failed ``attempt`` (1: the first) is retried; reported as 0.38's handler does."""
    retry = _retried(exc, actor.retry_config)
    if (tel := actor.session.telemetry) is not None:
        retry_handler_exception(tel, exc, retry, attempt, started)
    return retry


async def _retry_sample(
    actor: SamplingActor, call: SampleCall, failed: Exception, started: float
) -> types.SampleResponse:
    """The attempts after a retryable first failure: the official RetryConfig as a
    ``RetryPolicy``, run by a fresh tenacity controller (each attempt takes a new seq id)."""
    config = actor.retry_config
    attempt = 1

    async def again() -> types.SampleResponse:
        nonlocal attempt
        attempt += 1
        try:
            return await actor._attempt(call)
        except Exception as exc:
            _report_attempt(actor, exc, attempt, started)
            raise

    def before_sleep(state: RetryCallState) -> None:
        actor.book.retries += 1
        exc = state.outcome.exception() if state.outcome is not None else None
        log.debug(
            "sample attempt failed; retrying",
            sampler=actor.sampling_session_id,
            error=type(exc).__name__,
            attempt=state.attempt_number,
            delay=round(state.next_action.sleep if state.next_action else 0.0, 3),
        )

    controller = RetryPolicy.from_retry_config(config).controller(
        retry=retry_if_exception(lambda e: _retried(e, config)),
        clock=actor.clock,
        sleep=actor.sleep,
        rand=actor.rand,
        before_sleep=before_sleep,
    )
    return await resume(controller, again, failed)


def progress_expired(now: float, last_progress: float, timeout: float, in_flight: int) -> bool:
    """The handler is stuck: requests are in flight and none finished for ``timeout`` s."""
    return in_flight > 0 and now - last_progress > timeout


def no_progress_error(timeout: float) -> errors.APIConnectionError:
    return errors.APIConnectionError(
        message=f"No progress made in {timeout}s. Requests appear to be stuck."
    )


def effective_retry_config(
    config: RetryConfig | None, client_config: types.ClientConfigResponse
) -> RetryConfig:
    """The server's limits override the caller's: in-flight cap and stuck detection."""
    config = config or RetryConfig()
    config = replace(config, max_connections=client_config.sample_max_concurrent_requests)
    if not client_config.sample_enable_stuck_detection:
        config = replace(config, enable_stuck_detection=False)
    return config


# ============================================================================ shared admission
_admissions: weakref.WeakKeyDictionary[Any, SamplingAdmission] = weakref.WeakKeyDictionary()


def admission_for(session: Session) -> SamplingAdmission:
    """One admission controller per session: its samplers share the budgets and the 429 pause."""
    adm = _admissions.get(session)
    if adm is None:
        size = getattr(session.client_config, "sample_dispatch_bytes_semaphore_size", None)
        adm = _admissions[session] = SamplingAdmission(size or DEFAULT_DISPATCH_BYTES)
    return adm


# ============================================================================ the call
@dataclass(slots=True)
class SampleCall:
    """Everything one sample/compute_logprobs call sends, validated and frozen at call time."""

    prompt: types.ModelInput
    num_samples: int
    sampling_params: types.SamplingParams
    include_prompt_logprobs: bool = False
    topk_prompt_logprobs: int = 0
    topk_sample_logprobs: int = 0
    target_prompt_logprobs: types.TensorData | None = None
    prompt_alt_tokens_k: int = 0
    prompt_logprobs_last_n: int | None = None
    sdk_method: str = "SamplingClient.sample"
    estimated_bytes: int = 0


class SampleFuture(LightFuture[Any]):
    """The future of one sample / compute_logprobs call, and the call itself in the mailbox.

    A :class:`~tinker_actors.futures.LightFuture` (no ``concurrent.futures.Future`` unless
    someone asks for one) that the actor settles from the request task. Awaiting it on the
    runtime loop goes straight to that task (no hand-off); from another loop, one asyncio
    future there gets the outcome through the loop's batched inbox. Cancelling that await
    (or a ``result_async`` timeout), or ``cancel()``, abandons the request, as in the
    official SDK, which then asks the server to cancel it when the dynamic config allows.
    """

    __slots__ = ("_task", "call", "decode")

    _abandon_on_cancel = True

    def __init__(
        self, runtime: Any, call: SampleCall, decode: Callable[[types.SampleResponse], Any]
    ) -> None:
        super().__init__(runtime)
        self._task: asyncio.Task[None] | None = None
        self.call = call
        self.decode = decode

    def __await__(self) -> Generator[Any, None, Any]:
        """``await future``: a generator, no coroutine; the request task when on its loop."""
        if not self._state:
            task = self._task
            loop = asyncio.get_running_loop()
            if task is not None and task.get_loop() is loop:
                yield from task  # never raises except CancelledError; outcome in the future
            else:
                fut = loop.create_future()
                self._wait_on(fut)
                try:
                    yield from fut
                except asyncio.CancelledError:
                    self.cancel()  # abandoning the wait abandons the request
                    raise
        return self._outcome()

    def _on_cancel(self) -> None:
        task = self._task
        if task is not None and not task.done() and self._runtime is not None:
            self._runtime.call_soon(task.cancel)


#: An idle sampling actor (no requests, no mail) stops after this many seconds; the next
#: call on its client starts a new one with the same mailbox, seq ids and budgets. So a
#: loop that makes a new SamplingClient per step leaves no actors behind.
IDLE_AFTER = 60.0


# ============================================================================ the actor
class _Book:
    """What a sampler has promised: seq ids, in-flight requests, queued cancels, progress.

    Kept apart from the actor so a restarted actor adopts it whole.
    """

    __slots__ = (
        "activate",
        "active",
        "actor",
        "cancel_wake",
        "cancels",
        "cloned_sampler_id",
        "completed",
        "inflight",
        "last_progress",
        "mailbox",
        "queued",
        "requests",
        "retries",
        "running",
        "seq",
        "stuck",
        "wake",
    )

    def __init__(
        self,
        cloned_sampler_id: int | None,
        max_connections: int | None,
        now: float,
        mailbox: Mailbox[SampleFuture],
    ):
        self.mailbox = mailbox
        # the actor reading the mailbox now, whether one runs, and how to start one (set by
        # the client: an idle sampler stops, and the next call starts a new one)
        self.actor: SamplingActor | None = None
        self.active = False
        self.activate: Callable[[], None] | None = None
        self.cloned_sampler_id = cloned_sampler_id
        self.seq = itertools.count(SEQ_IDS_PER_CLONE * (cloned_sampler_id or 0))
        self.requests: dict[asyncio.Task[None], SampleFuture] = {}
        # calls read from the mailbox that wait for an in-flight slot (0.38's RetryHandler
        # cap): just their futures, in order; a task is made when a slot frees
        self.queued: deque[SampleFuture] = deque()
        self.running: set[asyncio.Task[None]] = set()
        self.stuck: set[asyncio.Task[None]] = set()
        self.inflight = Slots(max_connections) if max_connections else None
        self.cancels: deque[str] = deque()
        self.wake = asyncio.Event()
        self.cancel_wake = asyncio.Event()
        self.last_progress = now
        self.completed = 0
        self.retries = 0


class SamplingActor(Actor):
    """Owns a sampler's in-flight requests, its seq ids, the progress watchdog and cancels."""

    def __init__(
        self,
        session: Session,
        *,
        sampling_session_id: str,
        retry_config: RetryConfig | None = None,
        cloned_sampler_id: int | None = 0,
        record_stability_info: bool = False,
        observer: QueueStateObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
        previous: SamplingActor | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name or f"sampler:{sampling_session_id}")
        self.session = session
        self.sampling_session_id = sampling_session_id
        self.record_stability_info = record_stability_info
        self.observer = observer
        self.clock = clock
        self.sleep = sleep
        self.watch_sleep = sleep
        self.rand = rand
        self.user_retry_config = retry_config
        self.retry_config = effective_retry_config(retry_config, session.client_config)
        self.no_retries = bool(session.client_config.sample_no_retries)
        self.admission = admission_for(session)
        # A restart keeps the promises made so far: mailbox, ids, requests, queued cancels.
        self.book: _Book = (
            previous.book
            if previous is not None
            else _Book(
                cloned_sampler_id,
                self.retry_config.max_connections,
                clock(),
                Mailbox(session.runtime.call_soon, name=self.name),
            )
        )
        self._join_lock = asyncio.Lock()
        #: Seconds without requests or mail after which the actor stops (``IDLE_AFTER``).
        self.idle_after: float | None = IDLE_AFTER
        self._idle_timer: asyncio.Timeout | None = None
        self._passivated = False
        # Every request task's done callback: bound once, and run in one context (the actor's,
        # taken when it starts) instead of a bound method and a context copy per request,
        # which would live as long as the request.
        self._on_request_done = self._request_done
        self._context: contextvars.Context | None = None

    # ------------------------------------------------------------------ public (any thread)
    def submit(
        self, call: SampleCall, decode: Callable[[types.SampleResponse], Any]
    ) -> SampleFuture:
        """Puts one request in the sampler's mailbox; returns its future at once.

        Thread-safe, never blocks. Any instance will do: the mailbox is the sampler's, and a
        call to a sampler whose actor stopped while idle starts a new one.
        """
        runtime = self.session.runtime
        fut = SampleFuture(runtime, call, decode)
        book = self.book
        try:
            book.mailbox.put(fut)
        except errors.ActorDeadError:
            fut._reject(errors.TinkerError("SamplingClient was closed"))
            return fut
        if not book.active and book.activate is not None:
            runtime.call_soon(book.activate)
        return fut

    @property
    def in_flight(self) -> int:
        return len(self.book.requests) + len(self.book.queued)

    @property
    def cloned_sampler_id(self) -> int | None:
        return self.book.cloned_sampler_id

    def next_seq_id(self) -> int:
        return next(self.book.seq)

    # ------------------------------------------------------------------ request lifecycle
    def _start_request(self, fut: SampleFuture) -> None:
        """Starts a call now, or queues it (its future only) while every in-flight slot is
        taken: a call waiting for a slot holds no task, coroutine or asyncio future."""
        if fut._state:  # cancelled before it started: nothing was promised to the server
            return
        book = self.book
        sem = None if self.no_retries else book.inflight
        if sem is not None and (book.queued or not sem.try_acquire()):
            book.queued.append(fut)  # every slot is held by a request in flight: not idle
            return
        self._launch(fut)

    def _launch(self, fut: SampleFuture) -> None:
        """The call's request task (its in-flight slot, if any, is taken; the task's done
        callback gives it back)."""
        task = self.session.runtime.loop.create_task(self._request(fut))
        fut._task = task
        requests = self.book.requests
        requests[task] = fut
        if len(requests) == 1:
            self._arm_idle()
        if events.ON:
            events.emit(events.SAMPLING_START, {"in_flight": len(requests)}, {})
        task.add_done_callback(self._on_request_done, context=self._context)
        if fut._state:  # cancelled from another thread as the task was made: cancel it too
            task.cancel()

    def _request_done(self, task: asyncio.Task[None]) -> None:
        book = self.book
        requests = book.requests
        requests.pop(task, None)
        if events.ON:
            events.emit(events.SAMPLING_STOP, {"in_flight": len(requests)}, {})
        queued, sem = book.queued, book.inflight
        # the slot the task took when it was made goes back here, when it ends, whether its
        # body ran or not (a task cancelled before its first step never runs it)
        if sem is not None and not self.no_retries:
            sem.release()
        actor = book.actor  # the actor reading the mailbox now (maybe a restarted one)
        if queued and sem is not None and actor is not None:
            while queued and sem.try_acquire():  # the freed slots go to the queued calls
                fut = queued.popleft()
                if fut._state:  # cancelled while it waited
                    sem.release()
                    continue
                actor._launch(fut)
        if not requests and not queued and actor is not None:
            actor._arm_idle()

    def _arm_idle(self) -> None:
        """Idle (no requests): stop after ``idle_after`` unless mail comes; busy: never."""
        timer = self._idle_timer
        if timer is None or self.idle_after is None:
            return
        busy = bool(self.book.requests or self.book.queued)
        timer.reschedule(None if busy else asyncio.get_running_loop().time() + self.idle_after)

    async def _request(self, fut: SampleFuture) -> None:
        """The whole life of one call; its outcome goes to ``fut`` (never raised, but cancel)."""
        task = fut._task
        assert task is not None
        call = fut.call
        book = self.book
        try:
            if self.no_retries:
                response = await self._attempt(call)
            else:  # the retry handler (in-flight cap, progress, retries), inline: no coroutine
                config = self.retry_config
                try:
                    running = book.running
                    if not running:
                        book.last_progress = self.clock()
                    running.add(task)
                    if config.enable_stuck_detection and len(running) == 1:
                        book.wake.set()
                    started = time.time()
                    try:  # the fast path: no tenacity controller unless this attempt fails
                        response = await self._attempt(call)
                    except Exception as exc:
                        if not _report_attempt(self, exc, 1, started):
                            raise
                        response = await _retry_sample(self, call, exc, started)
                    book.last_progress = self.clock()
                    book.completed += 1
                finally:
                    book.running.discard(task)
            value = fut.decode(response)
        except asyncio.CancelledError:
            if task in book.stuck:
                book.stuck.discard(task)
                task.uncancel()
                fut._reject(no_progress_error(self.retry_config.progress_timeout))
                return
            fut._abandon()
            raise
        except BaseException as exc:
            fut._reject(exc)
            if (tel := self.session.telemetry) is not None and isinstance(exc, Exception):
                tel.log_fatal_exception_sync(exc)  # 0.38's capture_exceptions(fatal=True)
            return
        fut._resolve(value)

    async def _attempt(self, call: SampleCall) -> types.SampleResponse:
        """One submission under one seq id, then its poll.

        The asample POST runs under admission (count and byte budgets); a 429 pauses the
        session's dispatch and re-sends the SAME body (same seq id) after the pause, and a
        402 does so for up to the billing pause. Both steps are in this one coroutine, not
        one per step: it lives as long as the request.
        """
        if self.cloned_sampler_id is None:
            await self._join()
        transport = self.session.transport
        assert transport is not None, "session not started"
        seq_id = self.next_seq_id()
        adm = self.admission
        ticket = adm.try_acquire(call.estimated_bytes) or await adm.acquire(call.estimated_bytes)
        try:
            body = codec.json_encode(self._sample_request(call, seq_id))
            billing_since: float | None = None
            while True:
                remaining = adm.backoff.remaining()
                while remaining > 0:
                    await self.sleep(min(remaining, 1.0))
                    remaining = adm.backoff.remaining()
                try:
                    untyped: types.UntypedAPIFuture = await transport.call(
                        _ASAMPLE,
                        body,
                        headers=BACKPRESSURE_HEADERS,
                        retry=ASAMPLE_RETRY,
                        sdk_method=call.sdk_method,
                    )
                    break
                except errors.RateLimitError:
                    pass
                except errors.BillingError:
                    now = self.clock()
                    billing_since = billing_since if billing_since is not None else now
                    limit = self.session.client_config.billing_exception_max_pause_duration_sec
                    if now - billing_since >= limit:
                        raise
                adm.backoff.request(backoff_seconds(call.estimated_bytes))
                log.debug("asample backpressure; pausing dispatch", seq_id=seq_id)
        finally:
            adm.release(ticket)
        started = time.time()
        try:
            response: types.SampleResponse = await poll_future(
                transport,
                untyped.request_id,
                _SAMPLE_TYPE,
                result_decoder(_SAMPLE_TYPE, sequence_ids=untyped.sample_sequence_ids),
                observer=self.observer,
                start_time=started,
                billing_max_pause=float(
                    self.session.client_config.billing_exception_max_pause_duration_sec
                ),
                sdk_method=call.sdk_method,
            )
        except asyncio.CancelledError:
            self.request_cancel(untyped.request_id)
            raise
        _check_prompt_alt_tokens(response, call.prompt_alt_tokens_k)
        _check_prompt_logprobs_last_n(response, call.prompt_logprobs_last_n)
        return response

    def _sample_request(self, call: SampleCall, seq_id: int) -> types.SampleRequest:
        return types.SampleRequest(
            sampling_session_id=self.sampling_session_id,
            seq_id=seq_id,
            num_samples=call.num_samples,
            prompt=call.prompt,
            sampling_params=call.sampling_params,
            prompt_logprobs=call.include_prompt_logprobs,
            topk_prompt_logprobs=call.topk_prompt_logprobs,
            topk_sample_logprobs=call.topk_sample_logprobs,
            target_prompt_logprobs=call.target_prompt_logprobs,
            prompt_alt_tokens_k=call.prompt_alt_tokens_k,
            prompt_logprobs_last_n=call.prompt_logprobs_last_n,
            record_stability_info=self.record_stability_info,
        )

    async def _join(self) -> None:
        """An unpickled clone asks the server for its clone id once, before its first id."""
        async with self._join_lock:
            if self.book.cloned_sampler_id is not None:
                return
            transport = self.session.transport
            assert transport is not None
            joined = await transport.call(
                "join_sampling_session",
                types.JoinSamplingSessionRequest(sampling_session_id=self.sampling_session_id),
            )
            self.book.seq = itertools.count(SEQ_IDS_PER_CLONE * joined.client_counter)
            self.book.cloned_sampler_id = joined.client_counter

    # ------------------------------------------------------------------ cancels
    def request_cancel(self, request_id: str) -> None:
        """Queue ``cancel_future`` for an abandoned request (only when the server enables it)."""
        if not self.session.dynamic_config.sample_cancel_enabled:
            return
        self.book.cancels.append(request_id)
        self.book.cancel_wake.set()

    async def _drain_cancels(self) -> None:
        cancels = self.book.cancels
        while True:
            if not cancels:
                self.book.cancel_wake.clear()
                await self.book.cancel_wake.wait()
            while cancels:
                size = max(1, self.session.dynamic_config.sample_cancel_max_batch_size)
                batch = [cancels.popleft() for _ in range(min(size, len(cancels)))]
                await asyncio.gather(*(self._send_cancel(rid) for rid in batch))

    async def _send_cancel(self, request_id: str) -> None:
        transport = self.session.transport
        if transport is None:
            return
        try:
            await transport.call(
                "cancel_future",
                types.CancelFutureRequest(request_id=request_id),
                timeout=30.0,
            )
        except Exception as exc:  # a lost cancel only costs server time
            log.warning("failed to cancel sampling request", request_id=request_id, error=repr(exc))

    # ------------------------------------------------------------------ actor body
    async def on_start(self) -> None:
        self.book.actor = self
        self.book.active = True

    async def main(self) -> None:
        """Starts each call in the mailbox as its request task; stops once idle.

        One watchdog for every request (not one per request) and the cancel drain run
        beside it, in the actor's group.
        """
        self._context = contextvars.copy_context()
        self.spawn(self._drain_cancels(), name=f"{self.name}:cancels")
        config = self.retry_config
        if not self.no_retries and config.enable_stuck_detection:
            self.spawn(self._watchdog(), name=f"{self.name}:watchdog")
        book = self.book
        mailbox = book.mailbox
        while True:
            try:
                async with asyncio.timeout(None) as timer:
                    self._idle_timer = timer
                    self._arm_idle()
                    while True:
                        for fut in await mailbox.get():
                            self._start_request(fut)
            except TimeoutError:
                if not book.requests and not book.queued and not len(mailbox):
                    self._passivated = True
                    return  # idle: the next call starts a new actor
            finally:
                self._idle_timer = None

    async def _watchdog(self) -> None:
        """Fails the requests in flight when none has made progress for progress_timeout."""
        timeout = self.retry_config.progress_timeout
        book = self.book
        while True:
            if not book.running:
                book.wake.clear()
                await book.wake.wait()
                continue
            now = self.clock()
            if progress_expired(now, book.last_progress, timeout, len(book.running)):
                stuck = list(book.running)
                log.warning(
                    "no sampling progress; failing stuck requests",
                    sampler=self.sampling_session_id,
                    requests=len(stuck),
                    timeout=timeout,
                )
                book.stuck.update(stuck)
                for t in stuck:
                    t.cancel()
                book.last_progress = now
                continue
            await self.watch_sleep(max(0.01, book.last_progress + timeout - now + 0.001))

    def on_exit(self, reason: BaseException | None) -> None:
        # Requests and mail outlive a crash (a restarted actor adopts them) and an idle stop
        # (the next call starts a new actor); a stop (the client closed) fails them.
        book = self.book
        if book.actor is self:
            book.active = False
        if reason is not None:
            return
        if self._passivated:
            if len(book.mailbox) and book.activate is not None:
                book.activate()  # a call came in as the actor decided to stop
            return
        self.fail_all(errors.TinkerError("SamplingClient was closed"))

    def fail_all(self, exc: BaseException) -> None:
        """Fails every outstanding future with ``exc`` and closes the mailbox (the supervisor
        gave up, or the client closed): later calls fail at once."""
        for fut in self.book.mailbox.close(exc):
            fut._reject(exc)
        queued, self.book.queued = list(self.book.queued), deque()
        for fut in queued:
            fut._reject(exc)
        for task, fut in list(self.book.requests.items()):
            fut._reject(exc)
            task.cancel()


def _check_prompt_alt_tokens(response: types.SampleResponse, k: int) -> None:
    if k > 0 and response.prompt_alt_tokens is None:
        raise RuntimeError(
            f"prompt_alt_tokens_k={k} was requested but the server returned no "
            "prompt_alt_tokens; it may predate this feature"
        )


def _check_prompt_logprobs_last_n(response: types.SampleResponse, last_n: int | None) -> None:
    if last_n is None or response.prompt_logprobs is None:
        return
    excluded = response.prompt_logprobs[: max(0, len(response.prompt_logprobs) - last_n)]
    if any(v is not None for v in excluded):
        raise RuntimeError(
            f"prompt_logprobs_last_n={last_n} was requested but the server returned prompt "
            "logprobs before that suffix; it may predate this feature"
        )
