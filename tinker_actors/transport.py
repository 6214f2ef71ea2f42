"""The HTTP seam: one aiohttp session per runtime, headers, error mapping, retry policies.

Nobody above this module sees an aiohttp exception: connection failures become
``errors.APIConnectionError``, timeouts ``errors.APITimeoutError`` and HTTP errors the
``errors.APIStatusError`` subclass for their status. Retry policies are frozen values; a
fresh tenacity controller is built for every call.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import email.utils
import functools
import platform
import random
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import aiohttp
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from . import codec, errors, events, manifest, tracing, types
from .config import SDK_VERSION, Settings
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
    "retry_after_seconds",
    "sdk_method_scope",
    "should_retry",
]

log = get_logger(__name__)

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

    A call is retried while both budgets last: ``max_attempts`` HTTP attempts (1 = no retry;
    None = bounded by time alone) and ``max_total`` seconds since the first attempt (no
    retry starts after it, and the last wait is cut to end at it). Waits follow the server's
    ``Retry-After`` (<= 60 s), else ``base_delay * 2**n`` capped at ``max_delay`` minus up to
    ``jitter`` of it. ``billing_pause`` bounds how long 402 responses are treated as a pause
    (retry every ``billing_interval`` s). ``progress_after``: once a call has been retrying
    that long, a warning says so, then at most once per ``progress_interval``.
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


@dataclass(frozen=True, slots=True)
class Response:
    """A fully read HTTP response."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    content_type: str = ""

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


class _Retry(Exception):
    """Internal: the attempt failed in a retryable way; ``error`` is what the user would see."""

    def __init__(self, error: BaseException, delay: float | None = None):
        super().__init__(str(error))
        self.error = error
        self.delay = delay


class _Billing(_Retry):
    """A 402 pause: retried every ``billing_interval`` s, bounded by ``billing_pause``."""


class wait_retry_after(wait_base):
    """Waits what the server asked for (``Retry-After``) when it asked, else ``fallback``."""

    def __init__(self, fallback: wait_base):
        self.fallback = fallback

    def __call__(self, retry_state: RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, _Retry) and exc.delay is not None:
            return exc.delay
        return self.fallback(retry_state)


class _jittered_backoff(wait_base):
    """``base * 2**(n-1)`` capped at ``max_delay``, minus up to ``jitter`` of it (n: retry no.)."""

    def __init__(self, policy: RetryPolicy, rand: Callable[[], float] = random.random):
        self.policy = policy
        self.rand = rand

    def __call__(self, retry_state: RetryCallState) -> float:
        # the controller's attempt 1 is the call's second HTTP attempt
        return self.delay(retry_state.attempt_number + 1)

    def delay(self, retry_no: int) -> float:
        p = self.policy
        d = min(p.base_delay * 2 ** min(retry_no - 1, 64), p.max_delay)
        return d * (1 - p.jitter * self.rand())


class _Budget(stop_base):
    """Both retry budgets of a policy on an injectable clock: a tenacity stop condition that
    also cuts each wait so the last attempt starts when the time budget ends."""

    def __init__(self, policy: RetryPolicy, clock: Callable[[], float], start: float):
        self.policy = policy
        self.clock = clock
        self.start = start

    def exhausted(self, attempts: int) -> bool:
        p = self.policy
        return (p.max_attempts is not None and attempts >= p.max_attempts) or (
            self.clock() - self.start >= p.max_total
        )

    def __call__(self, retry_state: RetryCallState) -> bool:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, _Billing):
            return False  # billing has its own bound, checked where the 402 is seen
        return self.exhausted(retry_state.attempt_number + 1)

    def capped(self, inner: wait_base) -> _CappedWait:
        return _CappedWait(inner, self)

    def annotate(self, err: BaseException, attempts: int) -> BaseException:
        """``err`` with how long and how often it was tried (``retry_attempts``/``retry_elapsed``)."""
        elapsed = self.clock() - self.start
        err.retry_attempts = attempts  # type: ignore[attr-defined]
        err.retry_elapsed = elapsed  # type: ignore[attr-defined]
        if attempts > 1:
            limit = (
                f"{self.policy.max_total:g} s"
                if self.policy.max_attempts is None
                else f"{self.policy.max_attempts} attempts or {self.policy.max_total:g} s"
            )
            err.add_note(
                f"gave up after {attempts} attempts over {elapsed:.1f} s (retry budget: {limit})"
            )
        return err


class _CappedWait(wait_base):
    def __init__(self, inner: wait_base, budget: _Budget):
        self.inner = inner
        self.budget = budget

    def _cap(self, delay: float, billing: bool) -> float:
        if billing:
            return delay
        left = self.budget.start + self.budget.policy.max_total - self.budget.clock()
        return max(0.0, min(delay, left))

    def __call__(self, retry_state: RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        return self._cap(self.inner(retry_state), isinstance(exc, _Billing))

    def first(self, failed: _Retry) -> float:
        """The wait after the first (controller-less) attempt."""
        if failed.delay is not None:
            delay = failed.delay
        else:
            backoff = self.inner.fallback if isinstance(self.inner, wait_retry_after) else None
            delay = backoff.delay(1) if isinstance(backoff, _jittered_backoff) else 0.0
        return self._cap(delay, isinstance(failed, _Billing))


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
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        reason = exc.error if isinstance(exc, _Retry) else exc
        log.warning(
            f"{self.what} still failing after {elapsed:.0f} s "
            f"({retry_state.attempt_number + 1} attempts); retrying for up to "
            f"{self.policy.max_total:g} s",
            last_error=redact(repr(reason)),
            **self.context,
        )


def status_error(status: int, body: bytes, headers: Mapping[str, str]) -> errors.APIStatusError:
    """The one place HTTP error statuses become exceptions.

    A server that echoes a credential in its error body must not put it in the exception's
    message (which tracebacks and log lines print); ``.body`` keeps what the server sent.
    """
    err = errors.status_error_for(status, body=body, headers=dict(headers))
    clean = redact(err.message)
    if clean is not err.message:
        err.message = clean
        err.args = (clean,)
    return err


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
    async def _send_once(
        self,
        method: str,
        url: str,
        *,
        data: bytes | aiohttp.MultipartWriter | None,
        headers: dict[str, str],
        params: Mapping[str, Any] | None,
        timeout: float,  # noqa: ASYNC109
    ) -> Response:
        http = self.runtime.http()
        to = _client_timeout(self.connect_timeout, timeout)
        try:
            async with asyncio.timeout(timeout + self.connect_timeout):
                # Redirects are answers, not hops (as httpx in the official SDK): the
                # archive route's 302 carries the signed URL in Location.
                async with http.request(
                    method,
                    url,
                    data=data,
                    headers=headers,
                    params=params,
                    timeout=to,
                    allow_redirects=False,
                ) as resp:
                    body = await resp.read()
                    hdrs = {k.lower(): v for k, v in resp.headers.items()}
                    ctype = hdrs.get("content-type", "")
                    return Response(resp.status, hdrs, body, ctype)
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise errors.APITimeoutError(errors.RequestInfo(method, url)) from exc
        except aiohttp.ClientError as exc:
            raise errors.APIConnectionError(
                errors.RequestInfo(method, url), message=str(exc) or type(exc).__name__
            ) from exc

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
        method = method.upper()
        form = None
        if files is not None or content_type or headers:
            from . import multipart

            form = multipart.for_request(method, json, content, files, content_type, headers)
            if form is not None:
                json, content = None, b""
        if sdk_method != "":  # "" forces no attribution; else the outermost method wins
            sdk_method = _sdk_method.get() or sdk_method
        url = self.url(path)
        hdrs = dict(self._static_headers)
        hdrs["Accept"] = "application/json"
        if method != "GET":
            if content is None:
                content = b"" if json is None else codec.json_encode(json)
            hdrs["Content-Type"] = content_type or "application/json"
            hdrs["X-Idempotency-Key"] = f"stainless-python-retry-{uuid.uuid4()}"
        if sdk_method:
            hdrs["x-sdk-version"] = SDK_VERSION
            hdrs["x-sdk-method"] = sdk_method
        if headers:
            hdrs.update(headers)
        if form is not None:
            hdrs = {k: v for k, v in hdrs.items() if k.lower() != "content-type"}
            hdrs["Content-Type"] = form.content_type
        read_timeout = self.timeout if timeout is None else timeout
        hdrs["x-stainless-read-timeout"] = str(read_timeout)
        if params:
            params = {k: _qv(v) for k, v in params.items() if v is not None}

        attempt = 0
        started = time.time()
        billing_started: float | None = None
        jwt = self.jwt if authenticate else None

        async def attempt_once() -> Response:
            nonlocal attempt, billing_started
            hdrs["x-stainless-retry-count"] = str(attempt)
            attempt += 1
            try:
                if jwt is not None:
                    hdrs["X-API-Key"] = await jwt.token()
                resp = await self._send_once(
                    method,
                    url,
                    data=content if form is None else form.writer(),
                    headers=hdrs,
                    params=params,
                    timeout=read_timeout,
                )
                if jwt is not None and resp.status == 401 and _invalid_token(resp.headers):
                    # the JWT was revoked or expired early: exchange it and replay once
                    await jwt.refresh(stale=hdrs["X-API-Key"])
                    hdrs["X-API-Key"] = await jwt.token()
                    resp = await self._send_once(
                        method,
                        url,
                        data=content if form is None else form.writer(),
                        headers=hdrs,
                        params=params,
                        timeout=read_timeout,
                    )
            except errors.APIConnectionError as exc:  # APITimeoutError subclasses it
                if self.telemetry is not None:
                    self._report_failure(exc, route, attempt - 1, started)
                raise _Retry(exc) from exc
            _deprecation(resp)
            if resp.status < 400 or not raise_for_status:
                return resp
            err = status_error(resp.status, resp.body, resp.headers)
            if self.telemetry is not None and not (resp.status == 402 and retry.billing_pause):
                self._report_failure(err, route, attempt - 1, started)
            if resp.status == 402 and retry.billing_pause:
                now = self.clock()
                billing_started = billing_started or now
                if now - billing_started < retry.billing_pause:
                    log.warning("paused due to billing (HTTP 402); retrying", url=url)
                    raise _Billing(err, retry.billing_interval)
                raise err
            if should_retry(resp.status, resp.headers, retry):
                raise _Retry(err, retry_after_seconds(resp.headers))
            raise err

        if tracing.ENABLED:  # opt-in OpenTelemetry: a span, traceparent (caller headers win)
            with tracing.request_span(method, path, route, self.settings.base_url, hdrs) as span:
                resp: Response = await (
                    self._observed(
                        retry, attempt_once, method, url, log_context, path, route, lambda: attempt
                    )
                    if events.ON
                    else self._retrying(retry, attempt_once, method, url, log_context)
                )
                tracing.set_status(span, resp.status)
                return resp
        if events.ON:  # the only cost of the event catalogue when nobody listens
            observed: Response = await self._observed(
                retry, attempt_once, method, url, log_context, path, route, lambda: attempt
            )
            return observed
        final: Response = await self._retrying(retry, attempt_once, method, url, log_context)
        return final

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
        # only a retryable failure builds the tenacity controller for the attempts after it.
        try:
            return await fn()
        except _Retry as first:
            failed = first
        budget = _Budget(policy, self.clock, start)
        if budget.exhausted(1) and not isinstance(failed, _Billing):
            raise budget.annotate(failed.error, 1) from None
        wait = budget.capped(wait_retry_after(_jittered_backoff(policy)))
        progress = _Progress(policy, self.clock, start, method, url, log_context)
        # the controller numbers its attempts from the second HTTP attempt
        await self.sleep(wait.first(failed))
        controller = AsyncRetrying(
            stop=budget,
            wait=wait,
            sleep=self.sleep,
            retry=retry_if_exception_type(_Retry),
            before_sleep=progress,
            reraise=True,
        )
        attempts = 1
        try:
            async for att in controller:
                attempts += 1
                with att:
                    return await fn()
        except _Retry as r:
            raise budget.annotate(r.error, attempts) from None
        raise AssertionError("unreachable")

    async def call(
        self,
        route: str | manifest.Route,
        body: Any = None,
        *,
        path_params: Mapping[str, Any] | None = None,
        query: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
        retry: RetryPolicy = STANDARD,
        sdk_method: str | None = None,
        raise_for_status: bool = True,
        raw: bool = False,
        authenticate: bool = True,
        log_context: Mapping[str, Any] | None = None,
    ) -> Any:
        """Calls a manifest route by name: the one way the clients reach an endpoint.

        ``body`` is a wire Struct (JSON routes; already-encoded JSON bytes are sent as
        they are) or the encoded bytes of a protobuf route. Returns the decoded
        ``route.response_type`` (an ``UntypedAPIFuture`` for future routes, None for
        routes without a response type), or the ``Response`` itself with ``raw=True``.
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
        resp = await self.request(
            r.method,
            path,
            content=content,
            content_type=ctype,
            headers=headers,
            params=query,
            timeout=timeout,
            retry=retry,
            sdk_method=sdk_method,
            raise_for_status=raise_for_status,
            authenticate=authenticate,
            log_context=log_context,
            route=r.name,
        )
        if raw:
            return resp
        rtype = r.response_type
        if rtype is None:
            return None
        return codec.json_decode(resp.body, rtype)


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
            with contextlib.suppress(asyncio.CancelledError):
                await task


@functools.lru_cache(maxsize=32)
def _client_timeout(connect: float, read: float) -> aiohttp.ClientTimeout:
    """aiohttp's per-request timeout (a frozen value, shared by every request alike)."""
    return aiohttp.ClientTimeout(total=None, sock_connect=connect, sock_read=read)


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
