"""Official-SDK names that user code imports and that have no other home here.

``RetryHandler`` (``tinker.lib.retry_handler``), ``TelemetryProvider`` and the
``capture_exceptions`` decorator (``tinker.lib.telemetry``), ``Timeout`` (httpx's shape),
``ExperimentalWarning``. They are reached at their official paths through the alias table
(``_layout``); the clients do not depend on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import random
import time
import warnings
from collections.abc import Awaitable, Callable
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, overload, runtime_checkable

from tenacity import RetryCallState, retry_if_exception

from . import types
from .actors.telemetry import is_user_error
from .config import RetryConfig
from .errors import (
    APIConnectionError,
    APIStatusError,
    ExperimentalWarning,
    RetryableException,
)
from .telemetry import get_logger
from .transport import RetryPolicy, resume

__all__ = [
    "CustomLossFnV1",
    "ExperimentalWarning",
    "Metrics",
    "RetryHandler",
    "RetryableException",
    "TelemetryProvider",
    "Timeout",
    "capture_exceptions",
    "experimental",
    "is_retryable_status_code",
]

log = get_logger(__name__)

T = TypeVar("T")
P = ParamSpec("P")
R = TypeVar("R")


def experimental(
    message: str, /, *, category: type[Warning] | None = ExperimentalWarning, stacklevel: int = 1
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator: calling the function (or instantiating the class) warns ``message``.

    The official ``tinker.lib.experimental.experimental`` (``typing_extensions.deprecated``
    with ``category=ExperimentalWarning``); ``category=None`` only marks it.
    """

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        if category is None:
            return fn
        if isinstance(fn, type):
            original_init = fn.__init__  # type: ignore[misc]

            @functools.wraps(original_init)
            def init(self: Any, *args: Any, **kwargs: Any) -> None:
                warnings.warn(message, category, stacklevel=stacklevel + 1)
                original_init(self, *args, **kwargs)

            fn.__init__ = init  # type: ignore[misc]
            return fn

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            warnings.warn(message, category, stacklevel=stacklevel + 1)
            return fn(*args, **kwargs)

        return wrapper

    return decorate


# Official type aliases that user code annotates with.
Metrics = dict[str, float]
CustomLossFnV1 = Callable[[list[types.Datum], list[Any]], tuple[Any, dict[str, float]]]


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


_UNSET: Any = _Unset()


class Timeout:
    """Request timeouts in seconds, with ``httpx.Timeout``'s constructor and attributes.

    ``Timeout(5.0)`` sets every phase; ``Timeout(5.0, connect=1.0)`` overrides one;
    ``Timeout((connect, read[, write[, pool]]))`` and ``Timeout(other)`` work too; without a
    default all four phases must be given. ``None`` means no limit.
    """

    connect: float | None
    read: float | None
    write: float | None
    pool: float | None

    def __init__(
        self,
        timeout: Any = _UNSET,
        *,
        connect: Any = _UNSET,
        read: Any = _UNSET,
        write: Any = _UNSET,
        pool: Any = _UNSET,
    ) -> None:
        phases = (connect, read, write, pool)
        if isinstance(timeout, Timeout):
            if any(p is not _UNSET for p in phases):
                raise TypeError("Timeout(other) takes no per-phase values")
            values = (timeout.connect, timeout.read, timeout.write, timeout.pool)
        elif isinstance(timeout, tuple):
            padded = (*timeout, None, None)
            values = (timeout[0], timeout[1], padded[2], padded[3])
        elif all(p is not _UNSET for p in phases):
            values = phases
        elif timeout is _UNSET:
            raise ValueError(
                "Timeout must either include a default, or set all four parameters explicitly."
            )
        else:
            values = tuple(timeout if p is _UNSET else p for p in phases)
        self.connect, self.read, self.write, self.pool = values

    def as_dict(self) -> dict[str, float | None]:
        return {"connect": self.connect, "read": self.read, "write": self.write, "pool": self.pool}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, self.__class__) and self.as_dict() == other.as_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable, as httpx's

    def __repr__(self) -> str:
        name = type(self).__name__
        if len({self.connect, self.read, self.write, self.pool}) == 1:
            return f"{name}(timeout={self.connect})"
        return (
            f"{name}(connect={self.connect}, read={self.read}, write={self.write}, "
            f"pool={self.pool})"
        )


def is_retryable_status_code(status_code: int) -> bool:
    """408, 409, 429 and every 5xx are worth retrying."""
    return status_code in (408, 409, 429) or 500 <= status_code < 600


@runtime_checkable
class TelemetryProvider(Protocol):
    """Anything that can hand out its telemetry (every client does)."""

    def get_telemetry(self) -> Any: ...


class RetryHandler(Generic[T]):
    """Runs async calls with the official retry behaviour of a :class:`RetryConfig`.

    At most ``max_connections`` calls at once; retryable failures (the config's exception
    types, :class:`RetryableException`, a retryable HTTP status) are retried with exponential
    backoff and jitter; when no call has finished for ``progress_timeout`` seconds, waiting
    calls fail with ``APIConnectionError`` (unless ``enable_stuck_detection`` is off).

    The retries are ``policy`` (``RetryPolicy.from_retry_config(config)``), run by a tenacity
    controller that is built only once a call's first attempt has failed. ``sleep``, ``clock``
    and ``rand`` (keyword-only, beyond the official signature) let tests run without real
    time.
    """

    def __init__(
        self,
        config: RetryConfig | None = None,
        name: str = "default",
        telemetry: Any = None,
        *,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.config = config if config is not None else RetryConfig()
        self.name = name
        self.policy = RetryPolicy.from_retry_config(self.config)
        self._telemetry = telemetry
        self._sleep = sleep
        self._clock = clock
        self._rand = rand
        self._semaphore = (
            asyncio.Semaphore(self.config.max_connections)
            if self.config.max_connections is not None
            else None
        )
        self._last_progress = clock()
        self._in_flight = 0
        self.processed_count = 0
        self.retry_count = 0

    def get_telemetry(self) -> Any:
        return self._telemetry

    async def execute(self, func: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """``await func(*args, **kwargs)``, retried as the config says."""
        slot = self._semaphore if self._semaphore is not None else contextlib.nullcontext()
        async with slot:
            if self._in_flight == 0:
                self._last_progress = self._clock()
            self._in_flight += 1
            try:
                if not self.config.enable_stuck_detection:
                    return await self._attempts(func, args, kwargs)
                return await self._watched(func, args, kwargs)
            finally:
                self._in_flight -= 1

    async def _watched(
        self, func: Callable[..., Awaitable[T]], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> T:
        # The progress watchdog, not a retry loop: the call fails once no call of this
        # handler has finished for progress_timeout seconds.
        task = asyncio.ensure_future(self._attempts(func, args, kwargs))
        try:
            while True:
                remaining = self._last_progress + self.config.progress_timeout - self._clock()
                if remaining <= 0:
                    task.cancel()
                    raise APIConnectionError(
                        message=f"No progress made in {self.config.progress_timeout}s. "
                        "Requests appear to be stuck."
                    )
                done, _ = await asyncio.wait({task}, timeout=remaining)
                if done:
                    return task.result()
        finally:
            if not task.done():
                task.cancel()

    def _should_retry(self, exc: BaseException) -> bool:
        if not isinstance(exc, Exception):  # a cancellation is never retried
            return False
        if isinstance(exc, (*self.config.retryable_exceptions, RetryableException)):
            return True
        return isinstance(exc, APIStatusError) and is_retryable_status_code(exc.status_code)

    def _delay(self, attempt: int) -> float:
        """The wait after failed attempt ``attempt`` (1: the first), as ``policy`` says."""
        return self.policy.delay(attempt, rand=self._rand)

    async def _attempts(
        self, func: Callable[..., Awaitable[T]], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> T:
        if not self.config.enable_retry_logic:
            return await func(*args, **kwargs)
        try:  # the fast path: no controller unless the first attempt fails retryably
            result = await func(*args, **kwargs)
        except Exception as exc:
            retry = self._should_retry(exc)
            self._report(func, exc, retry, 1)
            if not retry:
                raise
            result = await self._retried(func, args, kwargs, exc)
        self._last_progress = self._clock()
        self.processed_count += 1
        return result

    async def _retried(
        self,
        func: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        failed: Exception,
    ) -> T:
        """The attempts after a retryable first failure, under a fresh tenacity controller."""
        attempt = 1

        async def again() -> T:
            nonlocal attempt
            attempt += 1
            try:
                return await func(*args, **kwargs)
            except Exception as exc:
                self._report(func, exc, self._should_retry(exc), attempt)
                raise

        def before_sleep(state: RetryCallState) -> None:
            self.retry_count += 1
            exc = state.outcome.exception() if state.outcome is not None else None
            log.debug("retrying", handler=self.name, attempt=state.attempt_number, error=repr(exc))

        controller = self.policy.controller(
            retry=retry_if_exception(self._should_retry),
            clock=self._clock,
            sleep=self._sleep,
            rand=self._rand,
            before_sleep=before_sleep,
        )
        return await resume(controller, again, failed)

    def _report(self, func: Any, exc: Exception, retry: bool, attempt: int) -> None:
        telemetry = self._telemetry
        if telemetry is None:
            return
        user = is_user_error(exc)
        telemetry.log(
            "RetryHandler.execute.exception",
            {
                "func": getattr(func, "__qualname__", type(func).__name__),
                "exception": str(exc),
                "exception_type": type(exc).__name__,
                "status_code": getattr(exc, "status_code", None),
                "should_retry": retry,
                "is_user_error": user,
                "attempt_count": attempt,
            },
            "WARNING" if retry or user else "ERROR",
        )


def _provider_telemetry(func: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    if args and isinstance(args[0], TelemetryProvider):
        return args[0].get_telemetry()
    return None


@overload
def capture_exceptions(
    func: Callable[P, R], *, fatal: bool = False, severity: str = "ERROR"
) -> Callable[P, R]: ...


@overload
def capture_exceptions(
    *, fatal: bool = False, severity: str = "ERROR"
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...


def capture_exceptions(
    func: Callable[P, R] | None = None, *, fatal: bool = False, severity: str = "ERROR"
) -> Any:
    """Decorator for methods of a :class:`TelemetryProvider`: report what they raise.

    ``@capture_exceptions`` or ``@capture_exceptions(fatal=True, severity="CRITICAL")``;
    works on sync and async methods; without telemetry the method just runs.
    """

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def awrapper(*args: Any, **kwargs: Any) -> Any:
                telemetry = _provider_telemetry(fn, args)
                if telemetry is None:
                    return await fn(*args, **kwargs)
                async with telemetry.acapture_exceptions(fatal=fatal, severity=severity):
                    return await fn(*args, **kwargs)

            return awrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            telemetry = _provider_telemetry(fn, args)
            if telemetry is None:
                return fn(*args, **kwargs)
            with telemetry.capture_exceptions(fatal=fatal, severity=severity):
                return fn(*args, **kwargs)

        return wrapper

    return decorate if func is None else decorate(func)
