"""APIFuture (await it or ``.result()`` it) and the ``retrieve_future`` long-poll loop.

The poll loop follows protocol.md section 3.3: try_again and 408 re-poll at once (the server
long-polls), 5xx re-polls at once (a run of them backs off, ``POLL_5XX``), 429 and connection
errors back off ``min(2**n, 30)`` s or as the server's Retry-After says (``POLL_BACKOFF``),
bare 400 is retried three times, 402 is a bounded billing pause, 410 means the promise is
gone, ``{"error", "category"}`` is a terminal ``RequestFailedError``. Try-again and queue
states are business outcomes, not errors, so they never go through the transport retries;
each failure kind keeps its own count (they reset differently) and takes its waits from a
``RetryPolicy``, the same strategies the transport's controllers use.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import math
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, Self, TypeVar

from . import codec, errors, events, manifest, types
from .runtime import Runtime, await_concurrent, inbox_for, warn_if_blocking_async
from .telemetry import get_logger
from .transport import NO_RETRY, Response, RetryPolicy, retry_after_seconds

if TYPE_CHECKING:
    from .transport import Transport

T = TypeVar("T")
U = TypeVar("U")

__all__ = [
    "POLL_5XX",
    "POLL_BACKOFF",
    "APIFuture",
    "AwaitableConcurrentFuture",
    "LightFuture",
    "PromiseExpiredError",
    "QueueState",
    "QueueStateLogger",
    "QueueStateObserver",
    "poll_future",
    "result_decoder",
]

log = get_logger(__name__)

POLL_TIMEOUT = 45.0
# Back-off of consecutive 5xx answers to a poll: the first re-poll at once, then 0.25 s
# doubling up to 10 s; no limit.
POLL_5XX_BASE = 0.25
POLL_5XX_CAP = 10.0
POLL_5XX = RetryPolicy(
    max_attempts=None,
    max_total=math.inf,
    base_delay=POLL_5XX_BASE,
    max_delay=POLL_5XX_CAP,
    jitter=0.0,
    immediate_first=True,
    billing_pause=None,
)
# 429 and connection errors (one count): the server's Retry-After (429), else
# ``min(2**n, 30)`` s; 402: a pause every 5 s (bounded by the caller's billing_max_pause).
POLL_BACKOFF = RetryPolicy(
    max_attempts=None,
    max_total=math.inf,
    base_delay=1.0,
    max_delay=30.0,
    jitter=0.0,
    billing_interval=5.0,
)


def _result_routes() -> dict[str, manifest.Route]:
    out = {r.request_type_header: r for r in manifest.ROUTE_LIST if r.request_type_header}
    # 0.38 sends forward-only work to /forward_backward: its result is protobuf too
    out[manifest.FORWARD_REQUEST_TYPE_HEADER] = manifest.ROUTES["forward_backward"]
    return out


# X-Tinker-Request-Type -> the route whose result it is (result type and encoding).
RESULT_ROUTES = _result_routes()
PROTO_REQUEST_TYPES = frozenset(
    h for h, r in RESULT_ROUTES.items() if r.result_encoding == "protobuf"
)


def result_decoder(
    request_type: str, *, sequence_ids: list[str] | None = None
) -> Callable[[Response], Any]:
    """Turns the final 200 of a future into the manifest's result type for ``request_type``.

    Protobuf results are SampleResponse (``sequence_ids`` from the submit reply fill each
    sequence's id) or ForwardBackwardOutput; JSON results decode into ``route.result_type``.
    """
    if sequence_ids is None:
        decoder = _DECODERS.get(request_type)
        if decoder is not None:
            return decoder
    route = RESULT_ROUTES.get(request_type)
    if route is None:
        raise KeyError(f"unknown request type {request_type!r}")
    rtype = route.result_type
    if route.result_encoding == "protobuf" and rtype not in _PROTO_RESULTS:
        raise TypeError(f"no protobuf decoder for {rtype!r}")
    decoder = _Decoder(rtype, sequence_ids)
    if sequence_ids is None:
        _DECODERS[request_type] = decoder
    return decoder


class _Decoder:
    """A future's result decoder: one small object per poll (or one per request type)
    rather than a closure, which costs three objects alive for as long as the poll."""

    __slots__ = ("result_type", "sequence_ids")

    def __init__(self, result_type: Any, sequence_ids: list[str] | None) -> None:
        self.result_type = result_type
        self.sequence_ids = sequence_ids

    def __call__(self, r: Response) -> Any:
        rtype = self.result_type
        if rtype is types.SampleResponse:
            return codec.decode_sample_response(r.body, self.sequence_ids)
        if rtype is types.ForwardBackwardOutput:
            return codec.decode_forward_backward_output(r.body)
        return codec.json_decode(r.body, rtype)


_PROTO_RESULTS = (types.SampleResponse, types.ForwardBackwardOutput)
_DECODERS: dict[str, _Decoder] = {}


# ============================================================================ APIFuture
class APIFuture(Generic[T]):
    """The result of an operation, usable from sync and async code.

    Backed by a ``concurrent.futures.Future``. ``cancel()`` cancels only the caller's view:
    work that already holds a sequence id still goes to the server and its result is dropped.
    """

    __slots__ = ("__weakref__", "_cf", "_runtime")

    def __init__(self, cf: concurrent.futures.Future[T], runtime: Runtime | None = None):
        self._cf = cf
        self._runtime = runtime

    # -- construction helpers
    @classmethod
    def from_coro(cls, runtime: Runtime, coro: Coroutine[Any, Any, T]) -> Self:
        return cls(runtime.submit(coro), runtime)

    @classmethod
    def completed(cls, value: T) -> Self:
        cf: concurrent.futures.Future[T] = concurrent.futures.Future()
        cf.set_result(value)
        return cls(cf)

    # -- official API
    def result(self, timeout: float | None = None) -> T:
        """Blocks until the result is there. Inside ``async def`` code it works (and warns,
        as the official SDK does); on the runtime's own loop it raises instead of hanging."""
        if not self._cf.done():
            warn_if_blocking_async(self._runtime, f"{type(self).__name__}.result()")
        try:
            return self._cf.result(timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"APIFuture did not complete within {timeout} s") from None

    async def result_async(self, timeout: float | None = None) -> T:  # noqa: ASYNC109
        cf = self._cf
        if cf.done():
            return cf.result()
        # A timeout or cancel of this await abandons the wait, never the operation itself.
        if timeout is None:
            return await await_concurrent(cf)
        async with asyncio.timeout(timeout):
            return await await_concurrent(cf)

    def future(self) -> concurrent.futures.Future[T]:
        return self._cf

    async def coroutine(self) -> T:
        return await self.result_async()

    def __await__(self) -> Generator[Any, None, T]:
        return self.result_async().__await__()

    # -- extras
    def done(self) -> bool:
        return self._cf.done()

    def cancel(self) -> bool:
        return self._cf.cancel()

    def cancelled(self) -> bool:
        return self._cf.cancelled()

    def exception(self, timeout: float | None = None) -> BaseException | None:
        return self._cf.exception(timeout)

    def add_done_callback(self, fn: Callable[[concurrent.futures.Future[T]], Any]) -> None:
        self._cf.add_done_callback(fn)

    def __repr__(self) -> str:
        cf = self._cf
        state = "pending" if not cf.done() else "cancelled" if cf.cancelled() else "done"
        return f"<APIFuture {state}>"


class AwaitableConcurrentFuture(APIFuture[T]):
    """An :class:`APIFuture` over a plain ``concurrent.futures.Future`` (0.38's name).

    What ``ServiceClient.close()`` returns, and what code that wraps its own
    ``concurrent.futures.Future`` for a Tinker-shaped API uses: ``AwaitableConcurrentFuture(f)``.
    """

    __slots__ = ()

    def __init__(
        self, future: concurrent.futures.Future[T], runtime: Runtime | None = None
    ) -> None:
        super().__init__(future, runtime)

    def result(self, timeout: float | None = None) -> T:
        """Blocks until done. Unlike a request's future it does not warn inside ``async def``
        (0.38 does not either: ``with ServiceClient()`` there is ordinary), but it still
        refuses to wait on the runtime's own loop."""
        cf = self._cf
        if not cf.done() and self._runtime is not None and self._runtime.on_loop():
            self._runtime.check_can_block(f"{type(self).__name__}.result()")
        try:
            return cf.result(timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"future did not complete within {timeout} s") from None


_PENDING, _FINISHED, _CANCELLED = 0, 1, 2
# One lock for every LightFuture: held for a few bytecodes, to settle an outcome or to
# register a waiter (a per-future lock would be an object per request).
_light_lock = threading.Lock()


class LightFuture(APIFuture[T]):
    """An :class:`APIFuture` settled on the runtime loop, with no ``concurrent.futures.Future``
    unless something needs one.

    A ``concurrent.futures.Future`` is a dozen objects (its Condition, RLock, bound methods,
    callback list); with thousands of requests in flight they are what the garbage collector
    walks. This future keeps its outcome in slots: the owner settles it once
    (``_resolve``/``_reject``/``_abandon``, on its loop), ``cancel()`` may settle it from any
    thread, and both go through one process-wide lock, as does an awaiter registering itself.
    ``await`` from another loop waits on one asyncio future of that loop, which the outcome
    reaches through the loop's batched :class:`~tinker_actors.runtime.Inbox` (as
    ``await_concurrent`` does). A real ``concurrent.futures.Future`` is made, chained both
    ways (cancelling it cancels this future), only for a blocking ``result()`` or
    ``exception()``, ``future()`` and ``add_done_callback``.

    Same public behaviour as an ``APIFuture`` over a ``concurrent.futures.Future``:
    ``result()`` of a cancelled future raises ``concurrent.futures.CancelledError``, a wait
    in progress ends in ``asyncio.CancelledError``; ``cancel()`` is True unless the outcome
    is already there. With ``_abandon_on_cancel`` (a sample request) cancelling an ``await``
    or a ``result_async`` timeout cancels the future itself; otherwise only the wait ends.
    """

    __slots__ = ("_exc", "_lazy_cf", "_more", "_state", "_value", "_waiter")

    _abandon_on_cancel: ClassVar[bool] = False

    def __init__(self, runtime: Runtime | None = None) -> None:  # no super(): no cf
        self._runtime = runtime
        self._state = _PENDING
        self._value: Any = None
        self._exc: BaseException | None = None
        self._waiter: asyncio.Future[Any] | None = None  # the first awaiter (the usual one)
        self._more: list[asyncio.Future[Any]] | None = None  # any further awaiters
        self._lazy_cf: concurrent.futures.Future[T] | None = None

    # -- settling (the owner, on its loop; cancel() from anywhere)
    def _settle(self, state: int, value: Any, exc: BaseException | None) -> bool:
        with _light_lock:
            if self._state:
                return False
            self._state = state
            self._value = value
            self._exc = exc
            waiter, more, cf = self._waiter, self._more, self._lazy_cf
            self._waiter = self._more = None
        if waiter is not None:
            _hand_over(self, waiter)
            if more:
                for w in more:
                    _hand_over(self, w)
        if cf is not None:
            _copy_to_cf(self, cf)
        return True

    def _resolve(self, value: T) -> bool:
        """Sets the result unless the future is already settled (a cancelled caller's result
        is dropped)."""
        return self._settle(_FINISHED, value, None)

    def _reject(self, exc: BaseException) -> bool:
        return self._settle(_FINISHED, None, exc)

    def _abandon(self) -> bool:
        """The owner gave the operation up: the future ends cancelled (no cancel hook)."""
        return self._settle(_CANCELLED, None, None)

    def _on_cancel(self) -> None:
        """Called once when a caller's ``cancel()`` settled the future (any thread)."""

    def _outcome(self) -> T:
        if self._state == _CANCELLED:
            raise concurrent.futures.CancelledError()
        exc = self._exc
        if exc is not None:
            raise exc
        value: T = self._value
        return value

    # -- waiting
    def _wait_on(self, fut: asyncio.Future[Any]) -> None:
        """Registers an asyncio future (of the running loop) to receive the outcome."""
        with _light_lock:
            if not self._state:
                if self._waiter is None:
                    self._waiter = fut
                elif self._more is None:
                    self._more = [fut]
                else:
                    self._more.append(fut)
                return
        _deliver(self, fut)

    def _stop_waiting(self, fut: asyncio.Future[Any]) -> None:
        with _light_lock:
            if self._waiter is fut:
                self._waiter = None
            elif self._more is not None and fut in self._more:
                self._more.remove(fut)

    def _await_outcome(self) -> Generator[Any, None, T]:
        if not self._state:
            fut = asyncio.get_running_loop().create_future()
            self._wait_on(fut)
            try:
                yield from fut
            except asyncio.CancelledError:
                if self._abandon_on_cancel:
                    self.cancel()  # abandoning the wait abandons the operation
                else:
                    self._stop_waiting(fut)
                raise
        return self._outcome()

    def __await__(self) -> Generator[Any, None, T]:
        return self._await_outcome()

    async def result_async(self, timeout: float | None = None) -> T:  # noqa: ASYNC109
        if self._state:
            return self._outcome()
        if timeout is None:
            return await self
        async with asyncio.timeout(timeout):
            return await self

    def result(self, timeout: float | None = None) -> T:
        if not self._state:
            warn_if_blocking_async(self._runtime, f"{type(self).__name__}.result()")
            try:
                return self.future().result(timeout)
            except concurrent.futures.TimeoutError:
                raise TimeoutError(f"APIFuture did not complete within {timeout} s") from None
        return self._outcome()

    def exception(self, timeout: float | None = None) -> BaseException | None:
        if not self._state:
            return self.future().exception(timeout)
        if self._state == _CANCELLED:
            raise concurrent.futures.CancelledError()
        return self._exc

    def future(self) -> concurrent.futures.Future[T]:
        """A ``concurrent.futures.Future`` with this future's outcome (made on first use);
        cancelling it cancels this future."""
        with _light_lock:
            cf = self._lazy_cf
            if cf is not None:
                return cf
            cf = self._lazy_cf = concurrent.futures.Future()
            pending = not self._state
        if pending:
            cf.add_done_callback(self._cf_done)
        else:
            _copy_to_cf(self, cf)
        return cf

    def _cf_done(self, cf: concurrent.futures.Future[T]) -> None:
        if cf.cancelled():
            self.cancel()

    def add_done_callback(self, fn: Callable[[concurrent.futures.Future[T]], Any]) -> None:
        self.future().add_done_callback(fn)

    # -- state
    def done(self) -> bool:
        return self._state != _PENDING

    def cancelled(self) -> bool:
        return self._state == _CANCELLED

    def cancel(self) -> bool:
        if not self._state and self._settle(_CANCELLED, None, None):
            self._on_cancel()
            return True
        return self._state == _CANCELLED

    def __repr__(self) -> str:
        state = self._state
        name = "pending" if not state else "cancelled" if state == _CANCELLED else "done"
        return f"<APIFuture {name}>"


def _hand_over(f: LightFuture[Any], fut: asyncio.Future[Any]) -> None:
    """Gives a settled future's outcome to an awaiter's asyncio future, on its loop."""
    loop = fut.get_loop()
    if loop is asyncio._get_running_loop():
        _deliver(f, fut)
    else:
        inbox_for(loop).post(_deliver, f, fut)


def _deliver(f: LightFuture[Any], fut: asyncio.Future[Any]) -> None:
    if not fut.done():  # else the awaiter gave up
        _settle_into(f, fut)


def _copy_to_cf(f: LightFuture[Any], cf: concurrent.futures.Future[Any]) -> None:
    try:
        _settle_into(f, cf)
    except concurrent.futures.InvalidStateError:  # its holder cancelled it meanwhile
        pass


def _settle_into(
    f: LightFuture[Any], target: asyncio.Future[Any] | concurrent.futures.Future[Any]
) -> None:
    """Gives ``target`` the settled ``f``'s outcome: cancelled, an exception or a value."""
    if f._state == _CANCELLED:
        target.cancel()
    elif f._exc is not None:
        target.set_exception(f._exc)
    else:
        target.set_result(f._value)


def resolve(cf: concurrent.futures.Future[T], value: T) -> None:
    """Sets a result unless the caller cancelled (their result is dropped)."""
    if not cf.done():
        try:
            cf.set_result(value)
        except concurrent.futures.InvalidStateError:
            pass


def reject(cf: concurrent.futures.Future[Any], exc: BaseException) -> None:
    if not cf.done():
        try:
            cf.set_exception(exc)
        except concurrent.futures.InvalidStateError:
            pass


# ============================================================================ queue state
class QueueState(enum.Enum):
    ACTIVE = "active"
    PAUSED_RATE_LIMIT = "paused_rate_limit"
    PAUSED_CAPACITY = "paused_capacity"
    UNKNOWN = "unknown"

    @classmethod
    def parse(cls, value: Any) -> QueueState:
        try:
            return cls(str(value).lower())
        except ValueError:
            return cls.UNKNOWN


class QueueStateObserver(Protocol):
    def on_queue_state_change(
        self, queue_state: QueueState, queue_state_reason: str | None
    ) -> None: ...


PAUSE_GRACE_PERIOD = 15 * 60.0
QUEUE_STATE_LOG_INTERVAL = 60.0


class QueueStateLogger:
    """Warns about a non-active queue only after 15 min of it, then at most once a minute."""

    def __init__(
        self,
        identifier: str,
        message_prefix: str = "Operation",
        *,
        clock: Callable[[], float] = time.monotonic,
        grace_period: float = PAUSE_GRACE_PERIOD,
    ):
        self._identifier = identifier
        self._prefix = message_prefix
        self._clock = clock
        self._grace = grace_period
        self._last_logged: float | None = None
        self._last_state: QueueState | None = None
        self._since = 0.0

    def on_queue_state_change(
        self, queue_state: QueueState, queue_state_reason: str | None
    ) -> None:
        now = self._clock()
        if queue_state != self._last_state:
            self._last_state = queue_state
            self._since = now
        if queue_state == QueueState.ACTIVE or now - self._since < self._grace:
            return
        if self._last_logged is not None and now - self._last_logged < QUEUE_STATE_LOG_INTERVAL:
            return
        self._last_logged = now
        reason = queue_state_reason or _default_reason(queue_state, training=True)
        log.warning(f"{self._prefix} for {self._identifier} is paused. Reason: {reason}.")


def _default_reason(state: QueueState, *, training: bool) -> str:
    if state == QueueState.PAUSED_RATE_LIMIT:
        return (
            "concurrent training clients rate limit hit"
            if training
            else "concurrent sampler weights limit hit"
        )
    if state == QueueState.PAUSED_CAPACITY:
        return "Tinker backend is running short on capacity, please wait"
    return "unknown"


def _notify(observer: QueueStateObserver | None, state: QueueState, reason: str | None) -> None:
    if observer is None:
        return
    try:
        observer.on_queue_state_change(state, reason)
    except Exception as exc:  # an observer must never break a poll
        log.warning("queue state observer failed", error=repr(exc))


# ============================================================================ poll loop
PromiseExpiredError = errors.PromiseExpiredError


async def poll_future(
    transport: Transport,
    request_id: str,
    request_type: str,
    decode: Callable[[Response], T] | None = None,
    *,
    observer: QueueStateObserver | None = None,
    start_time: float | None = None,
    allow_metadata_only: bool = True,
    billing_max_pause: float = 3600.0,
    reserve_bytes: Callable[[int], Awaitable[Any]] | None = None,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    poll_timeout: float = POLL_TIMEOUT,
    sdk_method: str | None = None,
) -> T:
    """Long-polls ``/retrieve_future`` until the result is there; returns ``decode(response)``.

    ``decode`` receives the 200 response holding the final result (proto or JSON) and turns
    it into the result type; by default the manifest's result type for ``request_type``.
    ``sdk_method`` attributes the polls to the public method that made the request, as the
    official SDK does (its polls run in that method's context). ``reserve_bytes`` (optional)
    is awaited with the payload size of a ``complete_metadata`` reply before the full fetch;
    if what it returns has ``.release()``, that is called when the poll ends.
    """
    iteration = 0
    conn_errors = 0
    server_errors = 0
    bad_requests = 0
    billing_since: float | None = None
    reservation: Any = None
    if decode is None:
        decode = result_decoder(request_type)
    accept = "application/x-protobuf" if request_type in PROTO_REQUEST_TYPES else "application/json"
    body = _retrieve_body(request_id, allow_metadata_only)  # encoded once, not once per poll
    started = time.monotonic()
    qstate: tuple[QueueState, str | None] | None = None  # last (state, reason), for events
    try:
        while True:
            headers = {
                "X-Tinker-Request-Iteration": str(iteration),
                "X-Tinker-Request-Type": request_type,
                "X-Stainless-Raw-Response": "raw",
                "Accept": accept,
            }
            if iteration == 0 and start_time is not None:
                headers["X-Tinker-Create-Promise-Roundtrip-Time"] = str(time.time() - start_time)
            iteration += 1
            try:
                resp = await transport.call(
                    _RETRIEVE,
                    body,
                    headers=headers,
                    timeout=poll_timeout,
                    retry=NO_RETRY,
                    raise_for_status=False,
                    raw=True,
                    sdk_method=sdk_method,
                )
            except errors.APIConnectionError as exc:
                if events.ON:
                    _emit_failure(exc, request_id, request_type, iteration, started)
                conn_errors += 1
                await sleep(POLL_BACKOFF.delay(conn_errors))
                continue
            status = resp.status
            if status < 500:
                server_errors = 0
            if status == 200:
                conn_errors = 0
                bad_requests = 0
                billing_since = None
                if resp.is_proto:
                    if request_type not in PROTO_REQUEST_TYPES:
                        raise ValueError(
                            f"Proto deserialization not supported for request type {request_type}"
                        )
                    _notify(observer, QueueState.ACTIVE, None)
                    return _done(decode(resp), request_id, request_type, iteration, started)
                data = resp.json()
                if isinstance(data, dict):
                    if data.get("type") == "try_again":
                        qstate = _on_try_again(observer, data, request_id, qstate, request_type)
                        continue
                    if data.get("status") == "complete_metadata" and allow_metadata_only:
                        allow_metadata_only = False
                        body = _retrieve_body(request_id, allow_metadata_only)
                        size = int(data.get("response_payload_size") or 0)
                        if reserve_bytes is not None and reservation is None:
                            reservation = await reserve_bytes(size)
                        continue
                    if "error" in data:
                        _notify(observer, QueueState.ACTIVE, None)
                        err = _request_failed(data, request_id)
                        if (tel := transport.telemetry) is not None:
                            _application_error(tel, err, request_type, iteration - 1, start_time)
                        raise err
                if request_type in PROTO_REQUEST_TYPES:
                    raise ValueError(
                        f"{request_type} results are only supported as proto, got JSON"
                    )
                _notify(observer, QueueState.ACTIVE, None)
                return _done(decode(resp), request_id, request_type, iteration, started)
            if status == 408:
                data = _safe_json(resp)
                if isinstance(data, dict) and data.get("type") == "try_again":
                    qstate = _on_try_again(observer, data, request_id, qstate, request_type)
                bad_requests = 0
                continue
            if status == 410:
                raise PromiseExpiredError(f"Promise expired/broken for request {request_id}")
            if status >= 500:
                # The first re-poll goes at once (a long-poll worker restarting is routine);
                # a run of them backs off, capped, so an outage is not hammered.
                server_errors += 1
                delay = POLL_5XX.delay(server_errors)
                if delay > 0:
                    await sleep(delay)
                continue
            if status == 429:
                conn_errors += 1
                await sleep(POLL_BACKOFF.delay(conn_errors, retry_after_seconds(resp.headers)))
                continue
            if status == 400 and bad_requests < 3:
                bad_requests += 1
                continue
            if status == 402:
                now = time.monotonic()
                billing_since = billing_since or now
                if now - billing_since < billing_max_pause:
                    await sleep(POLL_BACKOFF.billing_interval)
                    continue
                raise _status(resp)
            raise ValueError(
                f"Error retrieving result for request {request_id} with status {status}: "
                f"{resp.body[:500].decode('utf-8', 'replace')}"
            ) from _status(resp)
    except Exception as exc:
        if events.ON:
            _emit_failure(exc, request_id, request_type, iteration, started)
        raise
    finally:
        if reservation is not None and hasattr(reservation, "release"):
            reservation.release()


_RETRIEVE = manifest.ROUTES["retrieve_future"]


def _retrieve_body(request_id: str, allow_metadata_only: bool) -> bytes:
    return codec.json_encode(
        types.FutureRetrieveRequest(request_id=request_id, allow_metadata_only=allow_metadata_only)
    )


def _status(resp: Response) -> BaseException:
    from .transport import status_error

    return status_error(resp.status, resp.body, resp.headers)


def _safe_json(resp: Response) -> Any:
    try:
        return resp.json()
    except Exception:
        return None


def _on_try_again(
    observer: QueueStateObserver | None,
    data: dict[str, Any],
    rid: str,
    last: tuple[QueueState, str | None] | None = None,
    request_type: str | None = None,
) -> tuple[QueueState, str | None]:
    state = QueueState.parse(data.get("queue_state"))
    log.debug("retrying request because of try_again", request_id=rid, queue_state=state.value)
    reason = data.get("queue_state_reason")
    _notify(observer, state, reason)
    if events.ON and (state, reason) != last:
        events.emit(
            events.QUEUE_STATE_CHANGE,
            {},
            {
                "request_id": rid,
                "request_type": request_type,
                "queue_state": state.value,
                "queue_state_reason": reason,
            },
        )
    return state, reason


def _application_error(
    tel: Any, err: Any, request_type: str, iteration: int, start_time: float | None
) -> None:
    """0.38's generic event for a future that failed server-side, sent before it raises."""
    is_user = err.category is types.RequestErrorCategory.User
    tel.log(
        "APIFuture.result_async.application_error",
        {
            "request_id": err.request_id,
            "request_type": request_type,
            "error": str(err),
            "error_category": err.category.name,
            "is_user_error": is_user,
            "iteration": iteration,
            "elapsed_time": time.time() - start_time if start_time is not None else 0.0,
        },
        "WARNING" if is_user else "ERROR",
    )


def _done(value: T, rid: str, request_type: str, iteration: int, started: float) -> T:
    """The poll's result, with a future.resolved event when someone listens."""
    if events.ON:
        events.emit(
            events.FUTURE_RESOLVED,
            {"elapsed_time": time.monotonic() - started},
            {"request_id": rid, "request_type": request_type, "iteration": iteration},
        )
    return value


def _emit_failure(
    exc: BaseException, rid: str, request_type: str, iteration: int, started: float
) -> None:
    """future.<outcome> for a poll that failed (or, for connection errors, will poll again)."""
    if isinstance(exc, errors.APIConnectionError):
        timeout = isinstance(exc, errors.APITimeoutError)
        name = events.FUTURE_TIMEOUT if timeout else events.FUTURE_CONNECTION_ERROR
    elif isinstance(exc, errors.RequestFailedError):
        name = events.FUTURE_REQUEST_FAILED
    elif isinstance(exc, errors.APIStatusError | PromiseExpiredError):
        name = events.FUTURE_API_ERROR
    else:
        name = events.FUTURE_VALIDATION_ERROR
    events.emit(
        name,
        {"elapsed_time": time.monotonic() - started},
        {
            "request_id": rid,
            "request_type": request_type,
            "iteration": iteration,
            "status": getattr(exc, "status_code", None),
            "category": getattr(getattr(exc, "category", None), "value", None),
            "error_type": type(exc).__name__,
        },
    )


def _request_failed(data: dict[str, Any], request_id: str) -> BaseException:
    return errors.RequestFailedError(
        str(data.get("error")), request_id, data.get("category") or "unknown"
    )


# ============================================================================ combining
def combine(
    runtime: Runtime,
    futures: list[APIFuture[U]],
    fn: Callable[[list[U]], T],
) -> APIFuture[T]:
    """One future over many (e.g. the chunks of a forward_backward)."""

    async def run() -> T:
        return fn([await f.result_async() for f in futures])

    return APIFuture.from_coro(runtime, run())
