"""The HTTP seam: one aiohttp session per runtime, headers, error mapping, retry policies.

Nobody above this module sees an aiohttp exception: connection failures become
``errors.APIConnectionError``, timeouts ``errors.APITimeoutError`` and HTTP errors the
``errors.APIStatusError`` subclass for their status. ``RetryPolicy`` is the package's one
retry policy: a frozen value whose tenacity strategies (stop on an injectable clock, waits
honouring ``Retry-After``) drive a fresh controller per call, built only once a call's first
attempt has failed (``resume``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import email.utils
import functools
import math
import os
import platform
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
from tenacity import AsyncRetrying, Future, RetryCallState, retry_if_exception_type
from tenacity.stop import stop_after_attempt, stop_base, stop_never
from tenacity.wait import wait_base, wait_chain, wait_exponential, wait_none

from . import codec, errors, events, manifest, tracing, types
from .config import SDK_VERSION, RetryConfig, Settings
from .runtime import Runtime
from .telemetry import get_logger, redact

if TYPE_CHECKING:
    from .auth import Credential

__all__ = [
    "NO_RETRY",
    "STANDARD",
    "TRAINING",
    "TRAINING_RETRY_BUDGET",
    "JwtAuth",
    "Response",
    "RetryPolicy",
    "Transport",
    "context_without_sdk_method",
    "resume",
    "retry_after_seconds",
    "sdk_method_scope",
    "should_retry",
]

log = get_logger(__name__)

T = TypeVar("T")

USER_AGENT = f"AsyncTinker/Python {SDK_VERSION}"

# The public method a request is made for (x-sdk-method). Only the outermost method counts;
# background actors run in a context without it (protocol.md 4).
_sdk_method: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "tinker_actors_sdk_method", default=None
)


@contextlib.contextmanager
def sdk_method_scope(name: str) -> Iterator[None]:
    """Requests (and tasks created) inside carry ``x-sdk-method: name`` unless one is set."""
    if _sdk_method.get() is not None:
        yield
        return
    token = _sdk_method.set(name)
    try:
        yield
    finally:
        _sdk_method.reset(token)


@contextlib.contextmanager
def without_sdk_method() -> Iterator[None]:
    """Lazy set-up done on behalf of the whole client is not attributed to the caller."""
    token = _sdk_method.set(None)
    try:
        yield
    finally:
        _sdk_method.reset(token)


def context_without_sdk_method() -> contextvars.Context:
    """A copy of the current context with no method in progress (for long-lived tasks)."""
    ctx = contextvars.copy_context()
    ctx.run(_sdk_method.set, None)
    return ctx


_ARCH = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}
_OS = {"Linux": "Linux", "Darwin": "MacOS", "Windows": "Windows"}


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How one call is retried: a value, never a shared controller.

    The one retry policy of the package: the transport's retries, the ``retrieve_future``
    poll's back-offs, ``RetryHandler`` and the sampling retries (an official
    ``RetryConfig``, via :meth:`from_retry_config`) are all values of it. It only says
    *when* to stop and *how long* to wait; *what* is retried is the caller's tenacity
    ``retry`` predicate (for HTTP answers, ``should_retry`` over ``retry_statuses``).

    A call is retried while both budgets last: ``max_attempts`` attempts (1 = no retry;
    None = bounded by time alone) and ``max_total`` seconds since the first attempt (no
    retry starts after it, and the last wait is cut to end at it). Waits follow the server's
    ``Retry-After`` (<= 60 s), else ``base_delay * 2**(n-1)`` before retry n, capped at
    ``max_delay``, then jittered: minus up to ``jitter`` of it (Stainless), or plus or minus
    up to ``jitter`` of it and clamped to ``[0, max_delay]`` with ``symmetric_jitter`` (the
    official RetryHandler). ``immediate_first``: the first retry goes at once and the
    back-off starts at the second. ``billing_pause`` bounds how long 402 responses are
    treated as a pause (retry every ``billing_interval`` s). ``progress_after``: once a call
    has been retrying that long, a warning says so, then at most once per
    ``progress_interval``.
    """

    max_attempts: int | None = 6
    max_total: float = 300.0
    base_delay: float = 0.5
    max_delay: float = 30.0
    retry_statuses: frozenset[int] = frozenset({408, 409, 429})
    retry_5xx: bool = True
    billing_pause: float | None = 3600.0
    billing_interval: float = 5.0
    jitter: float = 0.25
    progress_after: float | None = None
    progress_interval: float = 60.0
    symmetric_jitter: bool = False
    immediate_first: bool = False

    def __post_init__(self) -> None:
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1 or None")
        if self.max_total < 0 or self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("max_total, base_delay and max_delay must be >= 0")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be between 0 and 1")

    def with_billing(self, seconds: float | None) -> RetryPolicy:
        return replace(self, billing_pause=seconds)

    def with_budget(self, seconds: float) -> RetryPolicy:
        """This policy with another time budget (tests shorten it; users may lengthen it)."""
        return replace(self, max_total=seconds)

    @classmethod
    def from_retry_config(cls, config: RetryConfig) -> RetryPolicy:
        """The official ``RetryConfig`` (RetryHandler, sampling retries) as a policy:
        unbounded retries, ``min(retry_delay_base * 2**n, retry_delay_max)`` plus or minus
        ``jitter_factor`` of it, clamped to ``[0, retry_delay_max]``; one attempt when
        ``enable_retry_logic`` is off. (Stuck detection is the caller's: it is a progress
        timeout across calls, not a budget of one call.)"""
        return cls(
            max_attempts=None if config.enable_retry_logic else 1,
            max_total=math.inf,
            base_delay=max(0.0, config.retry_delay_base),
            max_delay=max(0.0, config.retry_delay_max),
            jitter=config.jitter_factor,
            symmetric_jitter=True,
            billing_pause=None,
        )

    # ---------------------------------------------------------------- tenacity strategies
    def stop(self, clock: Callable[[], float] = time.monotonic, start: float = 0.0) -> stop_base:
        """Both budgets as one tenacity stop condition, the time one on ``clock`` from
        ``start``. A 402 pause is not stopped by them (its own bound is ``billing_pause``)."""
        parts: list[stop_base] = []
        if self.max_attempts is not None:
            parts.append(stop_after_attempt(self.max_attempts))
        if math.isfinite(self.max_total):
            parts.append(stop_after_time(self.max_total, clock, start))
        if not parts:
            return stop_never
        stop = parts[0] if len(parts) == 1 else parts[0] | parts[1]
        return stop_unless_billing(stop) if self.billing_pause is not None else stop

    def wait(
        self,
        clock: Callable[[], float] = time.monotonic,
        start: float | None = None,
        rand: Callable[[], float] = random.random,
    ) -> wait_base:
        """The waits as tenacity combinators: the server's ``Retry-After`` over exponential
        back-off (capped, then jittered with ``rand``), cut to the time budget left on
        ``clock`` from ``start`` (None: not cut)."""
        backoff: wait_base = wait_exponential(multiplier=self.base_delay, max=self.max_delay)
        if self.immediate_first:
            # retry 1 at once; retry n >= 2 waits base * 2**(n-2)
            backoff = wait_chain(
                wait_none(), wait_exponential(multiplier=self.base_delay / 2, max=self.max_delay)
            )
        if self.jitter:
            backoff = wait_jittered(
                backoff, self.jitter, rand, cap=self.max_delay if self.symmetric_jitter else None
            )
        wait: wait_base = wait_retry_after(backoff)
        if start is not None and math.isfinite(self.max_total):
            wait = wait_within_budget(wait, self.max_total, clock, start)
        return wait

    def controller(
        self,
        *,
        retry: Any,
        clock: Callable[[], float] = time.monotonic,
        start: float | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
        before_sleep: Callable[[RetryCallState], Any] | None = None,
    ) -> AsyncRetrying:
        """A fresh tenacity controller for ONE call (a controller keeps per-call state: never
        share one). ``retry`` is the tenacity predicate (what is retried); ``start`` is when
        the call's first attempt began on ``clock`` (default: now); ``sleep`` is awaited for
        every wait."""
        if start is None:
            start = clock()
        return AsyncRetrying(
            stop=self.stop(clock, start),
            wait=self.wait(clock, start, rand),
            sleep=sleep,
            retry=retry,
            before_sleep=before_sleep,
            reraise=True,
        )

    def delay(
        self,
        retry_no: int,
        retry_after: float | None = None,
        rand: Callable[[], float] = random.random,
    ) -> float:
        """The wait before retry ``retry_no`` (1: the first), from the same strategies a
        controller uses, for loops that keep their own counters (the ``retrieve_future``
        poll, whose failure kinds back off independently). ``retry_after``: the server's
        hint, which wins as it does in a controller."""
        state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]
        state.attempt_number = retry_no
        if retry_after is not None:
            state.outcome = Future.construct(retry_no, _Retry(_SERVER_HINT, retry_after), True)
        return self.wait(rand=rand)(state)


STANDARD = RetryPolicy()
NO_RETRY = RetryPolicy(max_attempts=1, billing_pause=None)

# Ordered training requests (forward_backward, optim_step, save/load weights): a seq id the
# server never receives stalls every later request, so these retry by time, not by count.
# The official SDK 0.38 retries a training submit for 300 s (execute_with_retries), each
# attempt itself making up to 11 HTTP attempts (about 60 s of backoff), so about 6 min in
# all; 10 min here. A progress warning after 10 s, then once a minute (QueueStateLogger's
# cadence), says what is being retried and until when.
TRAINING_RETRY_BUDGET = 600.0
TRAINING = RetryPolicy(
    max_attempts=None,
    max_total=TRAINING_RETRY_BUDGET,
    base_delay=0.5,
    max_delay=30.0,
    progress_after=10.0,
)


class Response:
    """A fully read HTTP response (a plain slotted class: two are made per sample)."""

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self, status: int, headers: Mapping[str, str], body: bytes, content_type: str = ""
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.content_type = content_type

    def __repr__(self) -> str:
        return f"Response(status={self.status}, content_type={self.content_type!r})"

    @property
    def is_proto(self) -> bool:
        return "application/x-protobuf" in self.content_type

    def json(self) -> Any:
        if not self.body:
            return None
        return codec.json_decode(self.body)


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The server's retry hint (retry-after-ms, then Retry-After), if 0 < hint <= 60 s."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            v = float(ms) / 1000.0
            if 0 < v <= 60:
                return v
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if ra:
        try:
            v = float(ra)
        except ValueError:
            dt = email.utils.parsedate_to_datetime(ra) if ra else None
            v = dt.timestamp() - time.time() if dt is not None else -1
        if 0 < v <= 60:
            return v
    return None


def should_retry(status: int, headers: Mapping[str, str], policy: RetryPolicy) -> bool:
    """Pure decision table: ``x-should-retry`` wins, then the policy's statuses and 5xx."""
    hint = headers.get("x-should-retry")
    if hint == "true":
        return True
    if hint == "false":
        return False
    return status in policy.retry_statuses or (policy.retry_5xx and status >= 500)


# ============================================================================ strategies
class _Retry(Exception):
    """Internal: the attempt failed in a retryable way; ``error`` is what the user would see,
    ``delay`` the server's ``Retry-After`` (None: none given)."""

    def __init__(self, error: BaseException, delay: float | None = None):
        super().__init__(str(error))
        self.error = error
        self.delay = delay


class _Billing(_Retry):
    """A 402 pause: retried every ``billing_interval`` s, bounded by ``billing_pause``."""


# what a bare server hint stands for in ``RetryPolicy.delay`` (no failure object there)
_SERVER_HINT = Exception("Retry-After")


def _failure(retry_state: RetryCallState) -> BaseException | None:
    outcome = retry_state.outcome
    return outcome.exception() if outcome is not None else None


class wait_retry_after(wait_base):
    """Waits what the server asked for (``Retry-After``) when it asked, else ``fallback``."""

    def __init__(self, fallback: wait_base):
        self.fallback = fallback

    def __call__(self, retry_state: RetryCallState) -> float:
        exc = _failure(retry_state)
        if isinstance(exc, _Retry) and exc.delay is not None:
            return exc.delay
        return self.fallback(retry_state)


class wait_jittered(wait_base):
    """``inner``'s wait jittered by up to ``jitter`` of it: downward only (``d * (1 - j*r)``,
    Stainless), or with ``cap`` both ways and clamped to ``[0, cap]`` (the official
    RetryHandler). ``rand`` draws r uniformly from [0, 1) (tests inject it)."""

    def __init__(
        self,
        inner: wait_base,
        jitter: float,
        rand: Callable[[], float] = random.random,
        cap: float | None = None,
    ):
        self.inner = inner
        self.jitter = jitter
        self.rand = rand
        self.cap = cap

    def __call__(self, retry_state: RetryCallState) -> float:
        d = self.inner(retry_state)
        if self.cap is None:
            return d * (1 - self.jitter * self.rand())
        return max(0.0, min(d + d * self.jitter * (2 * self.rand() - 1), self.cap))


class wait_within_budget(wait_base):
    """``inner``'s wait cut so it ends when the time budget does (a 402 pause is not cut)."""

    def __init__(self, inner: wait_base, limit: float, clock: Callable[[], float], start: float):
        self.inner = inner
        self.limit = limit
        self.clock = clock
        self.start = start

    def __call__(self, retry_state: RetryCallState) -> float:
        delay = self.inner(retry_state)
        if isinstance(_failure(retry_state), _Billing):
            return delay
        return max(0.0, min(delay, self.start + self.limit - self.clock()))


class stop_after_time(stop_base):
    """Stops once ``limit`` s have passed since ``start`` on ``clock`` (tenacity's own
    ``stop_after_delay`` reads ``time.monotonic`` from the controller's first attempt; this
    one is injectable and counts from the call's first attempt, made before any controller)."""

    def __init__(self, limit: float, clock: Callable[[], float], start: float):
        self.limit = limit
        self.clock = clock
        self.start = start

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.clock() - self.start >= self.limit


class stop_unless_billing(stop_base):
    """``inner``, except that a 402 pause never stops (it has its own bound)."""

    def __init__(self, inner: stop_base):
        self.inner = inner

    def __call__(self, retry_state: RetryCallState) -> bool:
        return not isinstance(_failure(retry_state), _Billing) and self.inner(retry_state)


async def resume(
    controller: AsyncRetrying, attempt: Callable[[], Awaitable[T]], failed: BaseException
) -> T:
    """Runs ``attempt`` under ``controller`` after a first attempt that failed with ``failed``.

    The fast path: every caller makes its first attempt with no controller (most calls never
    retry, and building one costs allocations), and only a retryable failure builds one.
    That failure is replayed as the controller's attempt 1, so its stop and wait count the
    real attempts. Cancellation is never retried: the predicates take ``Exception`` only.
    """
    pending: BaseException | None = failed
    async for att in controller:
        with att:
            if pending is not None:
                exc, pending = pending, None
                raise exc
            return await attempt()
    raise AssertionError("unreachable")


def _annotate(
    err: BaseException, policy: RetryPolicy, attempts: int, elapsed: float
) -> BaseException:
    """``err`` with how long and how often it was tried (``retry_attempts``/``retry_elapsed``)."""
    err.retry_attempts = attempts  # type: ignore[attr-defined]
    err.retry_elapsed = elapsed  # type: ignore[attr-defined]
    if attempts > 1:
        limit = (
            f"{policy.max_total:g} s"
            if policy.max_attempts is None
            else f"{policy.max_attempts} attempts or {policy.max_total:g} s"
        )
        err.add_note(
            f"gave up after {attempts} attempts over {elapsed:.1f} s (retry budget: {limit})"
        )
    return err


class _Progress:
    """tenacity ``before_sleep``: a warning once a call has retried ``progress_after`` s,
    then at most once per ``progress_interval`` (the QueueStateLogger cadence)."""

    def __init__(
        self,
        policy: RetryPolicy,
        clock: Callable[[], float],
        start: float,
        method: str,
        url: str,
        context: Mapping[str, Any] | None,
    ):
        self.policy = policy
        self.clock = clock
        self.start = start
        self.what = f"{method} {url}"
        self.context = dict(context or {})
        self.last: float | None = None

    def __call__(self, retry_state: RetryCallState) -> None:
        after = self.policy.progress_after
        if after is None:
            return
        now = self.clock()
        elapsed = now - self.start
        if elapsed < after:
            return
        if self.last is not None and now - self.last < self.policy.progress_interval:
            return
        self.last = now
        exc = _failure(retry_state)
        reason = exc.error if isinstance(exc, _Retry) else exc
        log.warning(
            f"{self.what} still failing after {elapsed:.0f} s "
            f"({retry_state.attempt_number} attempts); retrying for up to "
            f"{self.policy.max_total:g} s",
            last_error=redact(repr(reason)),
            **self.context,
        )


def status_error(status: int, body: bytes, headers: Mapping[str, str]) -> errors.APIStatusError:
    """The one place HTTP error statuses become exceptions.

    A server that echoes a credential in its error body must not put it in the exception's
    message (which tracebacks and log lines print); ``.body`` keeps what the server sent.
    """
    # lower-case names, as httpx's headers iterate in the official SDK's errors
    err = errors.status_error_for(
        status, body=body, headers={k.lower(): v for k, v in headers.items()}
    )
    clean = redact(err.message)
    if clean is not err.message:
        err.message = clean
        err.args = (clean,)
    return err


def idempotency_key() -> str:
    """``stainless-python-retry-<uuid4>``: a random version-4 UUID in its canonical form, as
    0.38 sends it, from ``os.urandom`` as ``uuid.uuid4()``, without building a ``uuid.UUID``
    object. The random bytes are read 4 KiB at a time and made into 256 keys at once (one
    system call and one list per 256 requests); a forked child drops its parent's unused
    keys, so no two processes share one."""
    try:
        return next(_random_ids)
    except StopIteration:
        _refill_random_ids()
        return next(_random_ids)


_random_ids: Iterator[str] = iter(())

# the uuid4 variant nibble: the RFC 4122 bits (10xx) over the random nibble's low two bits
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def _refill_random_ids() -> None:
    global _random_ids
    h = os.urandom(4096).hex()
    v = _VARIANT
    _random_ids = iter(
        [
            f"stainless-python-retry-{h[i : i + 8]}-{h[i + 8 : i + 12]}-4{h[i + 13 : i + 16]}"
            f"-{v[h[i + 16]]}{h[i + 17 : i + 20]}-{h[i + 20 : i + 32]}"
            for i in range(0, 8192, 32)
        ]
    )


def _drop_random_ids() -> None:
    global _random_ids
    _random_ids = iter(())


os.register_at_fork(after_in_child=_drop_random_ids)


_RETRY_COUNT = tuple(str(i) for i in range(16))


@functools.lru_cache(maxsize=64)
def _timeout_str(seconds: float) -> str:
    return str(seconds)


def _maybe_multipart(content_type: str | None, headers: Mapping[str, str] | None) -> bool:
    """Whether a request without files may still be multipart (the caller's Content-Type
    says multipart/form-data): only then is ``multipart.for_request`` consulted."""
    if content_type and "multipart" in content_type.lower():
        return True
    if headers:
        for k in headers:
            if len(k) == 12 and k.lower() == "content-type":
                return True
    return False


@dataclass(frozen=True, slots=True)
class _Template:
    """What every request of one kind (method, path, content type, SDK method, timeout and
    the caller's header names) sends alike: its URL, its headers in wire order, and the
    aiohttp timeouts its attempts run under."""

    method: str
    url: str
    headers: dict[str, str]
    has_body: bool
    multipart: bool  # the caller's Content-Type says multipart (the body may be a form)
    timeout_header: str  # set when the caller's headers name x-stainless-read-timeout
    small_timeout: aiohttp.ClientTimeout  # see _client_timeout
    large_timeout: aiohttp.ClientTimeout


#: ``_Call.result`` for a request that returns its ``Response`` itself
_RAW: Any = object()


def _result(resp: Response, result: Any) -> Any:
    """What a request returns: the Response (``_RAW``), None, or its body as ``result``."""
    if result is _RAW:
        return resp
    return None if result is None else codec.json_decode(resp.body, result)


class _Call:
    """One logical request across its attempts (what a closure would otherwise capture)."""

    __slots__ = (
        "attempt",
        "began",
        "billing_started",
        "content",
        "controlled",
        "form",
        "hdrs",
        "jwt",
        "log_context",
        "params",
        "raise_for_status",
        "result",
        "retry",
        "route",
        "started",
        "t",
        "timeout",
    )

    def __init__(
        self,
        t: _Template,
        content: bytes | None,
        form: Any,
        hdrs: dict[str, str],
        params: Mapping[str, Any] | None,
        jwt: JwtAuth | None,
        retry: RetryPolicy,
        raise_for_status: bool,
        route: str | None,
        began: float,
    ) -> None:
        self.t = t
        self.content = content
        self.form = form
        self.hdrs = hdrs
        self.params = params
        self.jwt = jwt
        self.retry = retry
        self.raise_for_status = raise_for_status
        self.route = route
        # a body that fits the socket buffer needs no total bound (see _client_timeout)
        small = form is None and (content is None or len(content) <= _SMALL_BODY)
        self.timeout = t.small_timeout if small else t.large_timeout
        self.started = time.time()
        self.began = began  # on the transport's clock: the retry budget counts from here
        self.attempt = 0
        self.billing_started: float | None = None
        # what a successful attempt returns: the Response (_RAW), None, or this type decoded
        self.result: Any = _RAW
        # set once a retry controller makes the attempts: an attempt then only raises _Retry
        self.controlled = False
        self.log_context: Mapping[str, Any] | None = None

    @property
    def method(self) -> str:
        return self.t.method

    @property
    def url(self) -> str:
        return self.t.url


def _headers(t: _Template, headers: Mapping[str, str] | None) -> dict[str, str]:
    """A request's headers: its kind's, a fresh idempotency key, the caller's values."""
    hdrs = t.headers.copy()
    if t.has_body:
        hdrs["X-Idempotency-Key"] = idempotency_key()
    if headers:
        hdrs.update(headers)  # the template's keys: their places are kept
        if t.timeout_header:
            hdrs["x-stainless-read-timeout"] = t.timeout_header
    return hdrs


@dataclass
class Transport:
    """Sends requests for one client configuration over the runtime's shared session."""

    runtime: Runtime
    settings: Settings
    timeout: float = 60.0
    connect_timeout: float = 5.0
    sleep: Callable[[float], Any] = asyncio.sleep
    clock: Callable[[], float] = time.monotonic  # retry budgets are measured on it
    # repr=False: these hold the API key / JWT (Settings' own repr redacts its secrets)
    _static_headers: dict[str, str] = field(default_factory=dict, init=False, repr=False)
    jwt: JwtAuth | None = field(default=None, init=False, repr=False)
    # the session's telemetry reporter, set while it runs (0.38 reports failed futures to it)
    telemetry: Any = field(default=None, init=False, repr=False)
    # the requests' templates (see _Template), built from _static_headers
    _requests: dict[Any, _Template] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        h = {
            "User-Agent": USER_AGENT,
            "X-Stainless-Package-Version": SDK_VERSION,
            "X-Stainless-OS": _OS.get(platform.system(), platform.system() or "Unknown"),
            "X-Stainless-Arch": _ARCH.get(platform.machine().lower(), platform.machine()),
            "X-Stainless-Runtime": platform.python_implementation(),
            "X-Stainless-Runtime-Version": platform.python_version(),
            "X-Stainless-Async": "async:asyncio",
        }
        s = self.settings
        if s.api_key:
            h["X-API-Key"] = s.api_key
        if s.cf_access_client_id and s.cf_access_client_secret:
            h["CF-Access-Client-Id"] = s.cf_access_client_id
            h["CF-Access-Client-Secret"] = s.cf_access_client_secret
        h.update(dict(s.default_headers))
        self._static_headers = h

    def set_api_key(self, key: str) -> None:
        """The static X-API-Key (a credential command's output, resolved once)."""
        self._static_headers["X-API-Key"] = key
        self._requests.clear()  # the header templates hold the old key

    def enable_jwt(self, credential: Credential, **kw: Any) -> JwtAuth:
        """JWT mode (``pjwt_auth_enabled``): X-API-Key carries a JWT exchanged for the credential."""
        self.jwt = JwtAuth(self, credential, **kw)
        return self.jwt

    async def aclose(self) -> None:
        """Stops background work owned by this transport (the JWT refresh task)."""
        if self.jwt is not None:
            await self.jwt.aclose()

    @property
    def base_url(self) -> str:
        assert self.settings.base_url, "transport used before the base URL was resolved"
        return self.settings.base_url

    async def headers_for(self, sdk_method: str | None = None) -> dict[str, str]:
        """The headers a request would carry now (credentials, current JWT, SDK method), for
        callers that read a response as a stream (``tinker_actors.streaming``)."""
        hdrs = dict(self._static_headers)
        if self.jwt is not None:
            hdrs["X-API-Key"] = await self.jwt.token()
        sdk_method = _sdk_method.get() or sdk_method
        if sdk_method:
            hdrs["x-sdk-version"] = SDK_VERSION
            hdrs["x-sdk-method"] = sdk_method
        return hdrs

    def url(self, path: str) -> str:
        if path.startswith("http://") or path.startswith("https://"):
            return path
        if not path.startswith("/api/"):
            path = "/api/v1/" + path.lstrip("/")
        return self.base_url + path

    # ------------------------------------------------------------------ one attempt
    def _kind(
        self,
        method: str,
        path: str,
        content_type: str | None,
        sdk_method: str | None,
        timeout: float | None,
        headers: Mapping[str, str] | None,
    ) -> _Template:
        """The template of a request's kind: every header in wire order, so that a request
        differs from it only in its idempotency key and the caller's values."""
        if sdk_method != "":  # "" forces no attribution; else the outermost method wins
            sdk_method = _sdk_method.get() or sdk_method
        read_timeout = self.timeout if timeout is None else timeout
        names = tuple(headers) if headers else ()
        key = (method, path, content_type, sdk_method, read_timeout, names)
        return self._requests.get(key) or self._template(key, headers)

    def _template(self, key: tuple[Any, ...], headers: Mapping[str, str] | None) -> _Template:
        """The headers of one request kind, in wire order: the kind's fixed headers around
        X-Idempotency-Key, the caller's headers, then x-stainless-read-timeout and
        x-stainless-retry-count (set per attempt)."""
        method, path, content_type, sdk_method, read_timeout, _ = key
        has_body = method != "GET"
        hdrs = dict(self._static_headers)  # credentials, platform
        hdrs["Accept"] = "application/json"
        if has_body:
            hdrs["Content-Type"] = content_type or "application/json"
            hdrs["X-Idempotency-Key"] = ""
        if sdk_method:
            hdrs["x-sdk-version"] = SDK_VERSION
            hdrs["x-sdk-method"] = sdk_method
        if headers:
            hdrs.update(headers)
        timeout_header = _timeout_str(read_timeout)
        hdrs["x-stainless-read-timeout"] = timeout_header
        hdrs["x-stainless-retry-count"] = "0"
        t = _Template(
            method,
            self.url(path),
            hdrs,
            has_body,
            _maybe_multipart(content_type, headers),
            timeout_header if headers and "x-stainless-read-timeout" in headers else "",
            _client_timeout(self.connect_timeout, read_timeout, True),
            _client_timeout(self.connect_timeout, read_timeout, False),
        )
        if len(self._requests) > 256:
            self._requests.clear()
        self._requests[key] = t
        return t

    # ------------------------------------------------------------------ public
    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        content: bytes | None = None,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
        retry: RetryPolicy = STANDARD,
        sdk_method: str | None = None,
        raise_for_status: bool = True,
        authenticate: bool = True,
        log_context: Mapping[str, Any] | None = None,
        files: Any = None,
        route: str | None = None,
    ) -> Response:
        """Sends one logical request, retrying under ``retry``; raises mapped errors.

        ``sdk_method`` names the public method the request is for; a method already in
        progress (``sdk_method_scope``) wins, since only the outermost call counts.
        ``authenticate=False`` sends the caller's own X-API-Key (the JWT exchange).
        ``log_context`` is added to the retry progress warnings (e.g. the model id).
        ``files`` (POST/PUT) sends ``json`` as multipart form fields plus the files
        (``tinker_actors.multipart``); each attempt streams a freshly built body.
        """
        t = self._kind(method.upper(), path, content_type, sdk_method, timeout, headers)
        c = self._prepare(
            t,
            json,
            content,
            content_type,
            headers,
            params,
            retry,
            raise_for_status,
            authenticate,
            files,
            route,
        )
        if tracing.ENABLED or events.ON:
            return await self._request_observed(c, path, log_context)
        c.log_context = log_context
        resp: Response = await self._attempt(c)
        return resp

    def _prepare(
        self,
        t: _Template,
        json: Any,
        content: bytes | None,
        content_type: str | None,
        headers: Mapping[str, str] | None,
        params: Mapping[str, Any] | None,
        retry: RetryPolicy,
        raise_for_status: bool,
        authenticate: bool,
        files: Any,
        route: str | None,
    ) -> _Call:
        """Everything a logical request of kind ``t`` sends, built once for all its
        attempts (``json`` and ``files`` only from ``request()``)."""
        hdrs = _headers(t, headers)
        form = None
        if files is not None or t.multipart:
            from . import multipart

            form = multipart.for_request(t.method, json, content, files, content_type, headers)
            if form is not None:
                json, content = None, b""
                hdrs = {k: v for k, v in hdrs.items() if k.lower() != "content-type"}
                hdrs["Content-Type"] = form.content_type
        if t.has_body and content is None:
            content = b"" if json is None else codec.json_encode(json)
        return _Call(
            t,
            content,
            form,
            hdrs,
            _query(params),
            self.jwt if authenticate else None,
            retry,
            raise_for_status,
            route,
            self.clock(),
        )

    async def _request_observed(
        self, call: _Call, path: str, log_context: Mapping[str, Any] | None
    ) -> Response:
        """``request`` with the opt-in tracing span and/or the event catalogue around it: the
        attempts report to their own controller, and the Response comes back raw."""
        call.controlled = True
        fn = functools.partial(self._attempt, call)
        method, url, route = call.method, call.url, call.route

        def attempts() -> int:
            return call.attempt

        async def run() -> Response:
            if events.ON:  # the only cost of the event catalogue when nobody listens
                observed: Response = await self._observed(
                    call.retry, fn, method, url, log_context, path, route, attempts
                )
                return observed
            plain: Response = await self._retrying(call.retry, fn, method, url, log_context)
            return plain

        if tracing.ENABLED:  # opt-in OpenTelemetry: a span, traceparent (caller headers win)
            with tracing.request_span(
                method, path, route, self.settings.base_url, call.hdrs
            ) as span:
                resp = await run()
                tracing.set_status(span, resp.status)
                return resp
        return await run()

    async def _attempt(self, c: _Call) -> Any:
        """One HTTP attempt of a logical request (``c`` carries its state across attempts).

        A success returns what the request asks for (``c.result``). A retryable failure of
        the first attempt hands the request to a retry controller, which makes the further
        attempts: a request that never fails costs no controller and no other coroutine.
        """
        try:
            hdrs = c.hdrs
            n = c.attempt
            hdrs["x-stainless-retry-count"] = _RETRY_COUNT[n] if n < 16 else str(n)
            c.attempt = n + 1
            jwt = c.jwt
            form = c.form
            t = c.t
            replayed = False
            try:
                while True:
                    if jwt is not None:
                        hdrs["X-API-Key"] = await jwt.token()
                    content = c.content
                    try:
                        # Every wait is bounded (see _client_timeout). Redirects are
                        # answers, not hops (as httpx in the official SDK): the archive
                        # route's 302 carries the signed URL in Location. Awaited, not
                        # entered: the context manager's five coroutines per request buy
                        # nothing, since the body is read whole and then released (a writer
                        # still sending gives the connection back when it ends).
                        r = await self.runtime.http().request(
                            t.method,
                            t.url,
                            data=(
                                form.writer()
                                if form is not None
                                else _LargeBody(content)
                                if content is not None and len(content) > _TOO_LARGE_BODY
                                else content
                            ),
                            headers=hdrs,
                            params=c.params,
                            timeout=c.timeout,
                            allow_redirects=False,
                        )
                        try:
                            body = await r.read()
                        finally:
                            r.release()
                        rh = r.headers  # case-insensitive, as httpx's headers
                        resp = Response(r.status, rh, body, rh.get("Content-Type", ""))
                    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
                        raise errors.APITimeoutError(errors.RequestInfo(t.method, t.url)) from exc
                    except aiohttp.ClientError as exc:
                        raise errors.APIConnectionError(
                            errors.RequestInfo(t.method, t.url),
                            message=str(exc) or type(exc).__name__,
                        ) from exc
                    if (
                        jwt is not None
                        and not replayed
                        and resp.status == 401
                        and _invalid_token(resp.headers)
                    ):
                        # the JWT was revoked or expired early: exchange it and replay once
                        await jwt.refresh(stale=hdrs["X-API-Key"])
                        replayed = True
                        continue
                    break
            except errors.APIConnectionError as exc:  # APITimeoutError subclasses it
                if self.telemetry is not None:
                    self._report_failure(exc, c.route, c.attempt - 1, c.started)
                raise _Retry(exc) from exc
            if "x-deprecation-note" in resp.headers:
                _deprecation(resp)
            if resp.status >= 400 and c.raise_for_status:
                raise self._failed(c, resp)
        except _Retry as failed:
            if c.controlled:
                raise
            c.controlled = True
            return await self._retry_from(
                c.retry,
                functools.partial(self._attempt, c),
                failed,
                c.began,
                c.method,
                c.url,
                c.log_context,
            )
        return _result(resp, c.result)

    def _failed(self, c: _Call, resp: Response) -> BaseException:
        """The error an attempt's 4xx/5xx answer raises: a ``_Retry`` when the policy retries
        it (402 while the billing pause lasts), else the mapped ``APIStatusError``."""
        status = resp.status
        retry = c.retry
        err = status_error(status, resp.body, resp.headers)
        if self.telemetry is not None and not (status == 402 and retry.billing_pause):
            self._report_failure(err, c.route, c.attempt - 1, c.started)
        if status == 402 and retry.billing_pause:
            now = self.clock()
            c.billing_started = c.billing_started or now
            if now - c.billing_started < retry.billing_pause:
                log.warning("paused due to billing (HTTP 402); retrying", url=c.url)
                return _Billing(err, retry.billing_interval)
            return err
        if should_retry(status, resp.headers, retry):
            return _Retry(err, retry_after_seconds(resp.headers))
        return err

    def _report_failure(
        self, exc: BaseException, route: str | None, attempts: int, started: float
    ) -> None:
        """0.38's ``execute_with_retries`` telemetry: one generic event per failed attempt of
        the calls it wraps (not session/model/sampler creation, polls or heartbeats)."""
        if route is None or route in _NOT_EXECUTE_WITH_RETRIES:
            return
        status = getattr(exc, "status_code", None)
        retryable = isinstance(exc, errors.APIConnectionError) or (
            isinstance(status, int) and (status in (408, 409, 429) or status >= 500)
        )
        user = self.telemetry.is_user_error(exc)
        now = time.time()
        self.telemetry.log(
            "InternalClientHolder.execute_with_retries.exception",
            {
                "func": route,
                "exception": redact(str(exc)),
                "exception_type": type(exc).__name__,
                "exception_stack": None,
                "status_code": status,
                "is_retryable": retryable,
                "is_user_error": user,
                "attempt_count": attempts,
                "start_time": started,
                "current_time": now,
                "elapsed_time": now - started,
            },
            "WARNING" if retryable or user else "ERROR",
        )

    async def _observed(
        self,
        policy: RetryPolicy,
        fn: Callable[[], Any],
        method: str,
        url: str,
        log_context: Mapping[str, Any] | None,
        path: str,
        route: str | None,
        attempts: Callable[[], int],
    ) -> Any:
        """``_retrying`` with the http.request and retry.attempt events around it."""
        meta = {
            "method": method,
            "path": path,
            "route": route,
            "base_url": self.settings.base_url,
            "pool": _POOLS.get(route or "", "default"),
        }
        events.emit(events.HTTP_START, {"system_time": time.time()}, meta)
        start = time.monotonic()

        async def attempt() -> Any:
            n = attempts()  # attempts made before this one
            if n:
                events.emit(
                    events.RETRY_START, {"system_time": time.time()}, {**meta, "attempt": n}
                )
            t0 = time.monotonic()
            try:
                out = await fn()
            except _Retry as r:
                events.emit(
                    events.RETRY_RETRY,
                    {"duration": time.monotonic() - t0},
                    {**meta, "attempt": n, "error": repr(r.error)},
                )
                raise
            if n:
                events.emit(
                    events.RETRY_STOP,
                    {"duration": time.monotonic() - t0},
                    {**meta, "attempt": n, "result": "ok"},
                )
            return out

        try:
            resp = await self._retrying(policy, attempt, method, url, log_context)
        except BaseException as exc:
            retries = max(attempts() - 1, 0)
            dur = time.monotonic() - start
            status = getattr(exc, "status_code", None)
            if retries:
                events.emit(
                    events.RETRY_FAILED,
                    {"duration": dur},
                    {**meta, "attempt": retries, "result": "failed", "error": repr(exc)},
                )
            if isinstance(status, int):  # an HTTP answer: a stop with an error result
                events.emit(
                    events.HTTP_STOP,
                    {"duration": dur, "status": status, "retry_count": retries, "result": "error"},
                    meta,
                )
            else:
                events.emit(
                    events.HTTP_EXCEPTION,
                    {"duration": dur, "retry_count": retries},
                    {**meta, "kind": type(exc).__name__, "reason": redact(str(exc))},
                )
            raise
        events.emit(
            events.HTTP_STOP,
            {
                "duration": time.monotonic() - start,
                "status": resp.status,
                "retry_count": max(attempts() - 1, 0),
                "result": "ok" if resp.status < 300 else "error",
            },
            meta,
        )
        return resp

    async def _retrying(
        self,
        policy: RetryPolicy,
        fn: Callable[[], Any],
        method: str,
        url: str,
        log_context: Mapping[str, Any] | None = None,
    ) -> Any:
        start = self.clock()
        # Fast path: the first attempt runs without a controller (most calls never retry);
        # only a retryable failure builds the tenacity controller, which replays it.
        try:
            return await fn()
        except _Retry as first:
            failed = first
        return await self._retry_from(policy, fn, failed, start, method, url, log_context)

    async def _retry_from(
        self,
        policy: RetryPolicy,
        fn: Callable[[], Any],
        failed: _Retry,
        start: float,
        method: str,
        url: str,
        log_context: Mapping[str, Any] | None,
    ) -> Any:
        """The retries after a retryable first attempt (made at ``start`` on the clock)."""
        controller = policy.controller(
            retry=retry_if_exception_type(_Retry),
            clock=self.clock,
            start=start,
            sleep=self.sleep,
            before_sleep=_Progress(policy, self.clock, start, method, url, log_context),
        )
        try:
            return await resume(controller, fn, failed)
        except _Retry as r:
            attempts = controller.statistics.get("attempt_number", 1)
            raise _annotate(r.error, policy, attempts, self.clock() - start) from None

    def call(
        self,
        route: str | manifest.Route,
        body: Any = None,
        *,
        path_params: Mapping[str, Any] | None = None,
        query: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        retry: RetryPolicy = STANDARD,
        sdk_method: str | None = None,
        raise_for_status: bool = True,
        raw: bool = False,
        authenticate: bool = True,
        log_context: Mapping[str, Any] | None = None,
    ) -> Coroutine[Any, Any, Any]:
        """Calls a manifest route by name: the one way the clients reach an endpoint.

        ``body`` is a wire Struct (JSON routes; already-encoded JSON bytes are sent as
        they are) or the encoded bytes of a protobuf route. The awaited result is the
        decoded ``route.response_type`` (an ``UntypedAPIFuture`` for future routes, None
        for routes without a response type), or the ``Response`` itself with ``raw=True``.

        Not a coroutine function: it checks and builds the request now and returns the
        attempt's coroutine, so a call on the hot path is one coroutine, not two. A bad
        route, query or body raises here, at the call.
        """
        r = manifest.ROUTES.get(route) if isinstance(route, str) else route
        if r is None:
            r = manifest.route(route)  # type: ignore[arg-type]  # raises with the known names
        path = r.format_path(**path_params) if path_params else r.path
        if query:
            unknown = set(query) - set(r.query_params)
            if unknown:
                raise ValueError(f"{r.name}: unknown query parameters {sorted(unknown)}")
        enc = r.request_encoding
        content: bytes | None = None
        ctype: str | None = None
        if enc == "protobuf":
            if not isinstance(body, (bytes, bytearray, memoryview)):
                raise TypeError(f"{r.name} takes an encoded protobuf body")
            content, ctype = bytes(body), "application/x-protobuf"
        elif body is not None:
            if enc == "none":
                raise TypeError(f"{r.name} takes no request body")
            content = body if isinstance(body, bytes) else codec.json_encode(body)
        t = self._kind(r.method, path, ctype, sdk_method, timeout, headers)
        c = self._prepare(
            t,
            None,
            content,
            ctype,
            headers,
            query,
            retry,
            raise_for_status,
            authenticate,
            None,
            r.name,
        )
        rtype = _RAW if raw else r.response_type
        if tracing.ENABLED or events.ON:
            return self._call_observed(c, path, log_context, rtype)
        c.result = rtype
        c.log_context = log_context
        return self._attempt(c)

    async def _call_observed(
        self, c: _Call, path: str, log_context: Mapping[str, Any] | None, rtype: Any
    ) -> Any:
        return _result(await self._request_observed(c, path, log_context), rtype)


# routes 0.38 calls directly, not through execute_with_retries (protocol.md 9.2)
_NOT_EXECUTE_WITH_RETRIES = frozenset(
    {
        "create_session",
        "create_model",
        "create_sampling_session",
        "retrieve_future",
        "session_heartbeat",
        "telemetry",
    }
)

# the official SDK's connection-pool kind per route, for the http.request events' metadata
_POOLS = {
    "telemetry": "telemetry",
    "asample": "sample",
    "retrieve_future": "retrieve_promise",
    "session_heartbeat": "session",
    "create_session": "session",
}


def _invalid_token(headers: Mapping[str, str]) -> bool:
    return "invalid_token" in headers.get("www-authenticate", "")


class JwtAuth:
    """The JWT that X-API-Key carries in ``pjwt_auth_enabled`` mode (protocol.md 4.1).

    Exchanged for the raw credential at ``POST /auth/token``; refreshed in the background at
    45-55 % of its lifetime, on demand when 60 s or less remain, 60 s after a failed
    background refresh, and once when a request gets 401 ``invalid_token``.
    """

    REFRESH_MARGIN = 60.0
    RETRY_AFTER_FAILURE = 60.0

    def __init__(
        self,
        transport: Transport,
        credential: Credential,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Any] = asyncio.sleep,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.transport = transport
        self.credential = credential
        self.clock = clock
        self.sleep = sleep
        self.rand = rand
        self.jwt: str | None = None
        self.claims: dict[str, Any] = {}
        self.exchanges = 0
        self._lock: asyncio.Lock | None = None
        self._task: asyncio.Task[None] | None = None

    def _refresh_lock(self) -> asyncio.Lock:
        # created lazily: the lock binds to the loop of its first use
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    def _remaining(self) -> float:
        exp = self.claims.get("exp")
        return float("inf") if exp is None else float(exp) - self.clock()

    async def token(self) -> str:
        """A JWT with more than a minute left (exchanging one first if needed)."""
        jwt = self.jwt
        if jwt is not None and self._remaining() > self.REFRESH_MARGIN:
            return jwt
        await self.refresh()
        assert self.jwt is not None
        return self.jwt

    async def refresh(self, *, stale: str | None = None) -> None:
        """Exchanges a new JWT unless another caller already did (``stale``: the rejected one)."""
        async with self._refresh_lock():
            if stale is not None and self.jwt is not None and self.jwt != stale:
                return
            if stale is None and self.jwt is not None and self._remaining() > self.REFRESH_MARGIN:
                return
            await self._exchange()

    async def _exchange(self, *, spawn: bool = True) -> None:
        from .auth import decode_jwt_claims

        raw = await self.credential.fetch()
        reply = await self.transport.call(
            "auth_token",
            types.AuthTokenRequest(),
            headers={"X-API-Key": raw},
            authenticate=False,
            sdk_method="",
        )
        self.claims = decode_jwt_claims(reply.jwt)
        self.jwt = reply.jwt
        self.exchanges += 1
        if spawn and (self._task is None or self._task.done()):
            loop = asyncio.get_running_loop()
            self._task = loop.create_task(
                self._background(), name="jwt-refresh", context=context_without_sdk_method()
            )

    def next_refresh_delay(self) -> float:
        """Seconds until the background refresh: 45-55 % into the token's lifetime."""
        exp, iat = self.claims.get("exp"), self.claims.get("iat")
        if exp is None:
            return float("inf")
        iat = float(iat) if iat is not None else self.clock()
        at = iat + (0.45 + 0.1 * self.rand()) * (float(exp) - iat)
        return max(0.0, at - self.clock())

    async def _background(self) -> None:
        delay = self.next_refresh_delay()
        while delay != float("inf"):
            await self.sleep(delay)
            try:
                async with self._refresh_lock():
                    await self._exchange(spawn=False)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("JWT refresh failed; retrying in 60 s", error=repr(exc))
                delay = self.RETRY_AFTER_FAILURE
                continue
            delay = self.next_refresh_delay()

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            # asyncio.wait, not suppress(CancelledError) around ``await task``: that would also
            # swallow a cancellation of the caller arriving while it waits
            await asyncio.wait({task})
            if not task.cancelled():
                task.result()  # an unexpected failure of the refresh task is not hidden


# a body up to this size goes into the socket's send buffer at once: its write never waits
_SMALL_BODY = 16 * 1024


class _LargeBody(aiohttp.BytesPayload):
    """A body over aiohttp's 1 MiB mark (a forward_backward chunk may be 5 MB), sent as
    aiohttp sends any bytes, without the ResourceWarning its ``BytesPayload`` gives such
    bodies: under a user's ``-W error`` that warning would make a large batch fail."""

    def __init__(self, value: bytes) -> None:
        aiohttp.payload.Payload.__init__(self, value, content_type="application/octet-stream")
        self._size = len(value)


_TOO_LARGE_BODY = aiohttp.payload.TOO_LARGE_BYTES_BODY


@functools.lru_cache(maxsize=64)
def _client_timeout(connect: float, read: float, small_body: bool) -> aiohttp.ClientTimeout:
    """aiohttp's timeout for one request, as httpx's ``Timeout(read, connect=connect)`` of the
    official SDK bounds it: the TCP connect within ``connect``, each read of the response
    (from the end of the body on) within ``read``. aiohttp bounds no write, so a large body,
    whose write can wait on a peer that stopped reading, also gets a total bound of
    ``read + connect``; a small one needs none, which spares every such request a timer.
    A wait for a pooled connection ends when a request holding one ends, within its bounds.
    """
    total = None if small_body else read + connect
    return aiohttp.ClientTimeout(total=total, sock_connect=connect, sock_read=read)


def _query(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Query parameters as the official SDK sends them: None left out, booleans lower-case."""
    if not params:
        return None
    return {k: _qv(v) for k, v in params.items() if v is not None}


def _qv(v: Any) -> Any:
    if isinstance(v, bool):
        return "true" if v else "false"
    return v if isinstance(v, str) else str(v)


def _deprecation(resp: Response) -> None:
    note = resp.headers.get("x-deprecation-note")
    if note:
        if resp.headers.get("x-deprecation-level") == "error":
            log.error("server deprecation notice", note=note)
        else:
            log.warning("server deprecation notice", note=note)
