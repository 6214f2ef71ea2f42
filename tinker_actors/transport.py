"""The HTTP seam: one aiohttp session per runtime, headers, error mapping, retry policies.

Nobody above this module sees an aiohttp exception: connection failures become
``errors.APIConnectionError``, timeouts ``errors.APITimeoutError`` and HTTP errors the
``errors.APIStatusError`` subclass for their status. Retry policies are frozen values; a
fresh tenacity controller is built for every call.
"""

from __future__ import annotations

import asyncio
import email.utils
import platform
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
)

from . import errors
from .config import SDK_VERSION, Settings
from .runtime import Runtime
from .telemetry import get_logger

__all__ = [
    "NO_RETRY",
    "STANDARD",
    "Response",
    "RetryPolicy",
    "Transport",
    "retry_after_seconds",
    "should_retry",
]

log = get_logger(__name__)

USER_AGENT = f"AsyncTinker/Python {SDK_VERSION}"
_ARCH = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}
_OS = {"Linux": "Linux", "Darwin": "MacOS", "Windows": "Windows"}


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How one call is retried: a value, never a shared controller.

    ``max_attempts`` counts HTTP attempts (1 = no retry). ``billing_pause`` bounds how long
    402 responses are treated as a pause (retry every ``billing_interval`` s).
    """

    max_attempts: int = 6
    max_total: float = 300.0
    base_delay: float = 0.5
    max_delay: float = 30.0
    retry_statuses: frozenset[int] = frozenset({408, 409, 429})
    retry_5xx: bool = True
    billing_pause: float | None = 3600.0
    billing_interval: float = 5.0

    def with_billing(self, seconds: float | None) -> RetryPolicy:
        return RetryPolicy(
            self.max_attempts,
            self.max_total,
            self.base_delay,
            self.max_delay,
            self.retry_statuses,
            self.retry_5xx,
            seconds,
            self.billing_interval,
        )


STANDARD = RetryPolicy()
NO_RETRY = RetryPolicy(max_attempts=1, billing_pause=None)


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
        return _json_decode(self.body)


def _json_decode(body: bytes) -> Any:
    import msgspec

    return msgspec.json.decode(body)


def _json_encode(obj: Any) -> bytes:
    from . import codec

    enc = getattr(codec, "json_encode", None)
    if enc is not None:
        return enc(obj)
    import msgspec

    return msgspec.json.encode(obj)


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


def status_error(status: int, body: bytes, headers: Mapping[str, str]) -> errors.APIStatusError:
    """The one place HTTP error statuses become exceptions."""
    return errors.status_error_for(status, body=body, headers=dict(headers))


@dataclass
class Transport:
    """Sends requests for one client configuration over the runtime's shared session."""

    runtime: Runtime
    settings: Settings
    timeout: float = 60.0
    connect_timeout: float = 5.0
    sleep: Callable[[float], Any] = asyncio.sleep
    _static_headers: dict[str, str] = field(default_factory=dict, init=False)

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

    @property
    def base_url(self) -> str:
        assert self.settings.base_url, "transport used before the base URL was resolved"
        return self.settings.base_url

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
        data: bytes | None,
        headers: dict[str, str],
        params: Mapping[str, Any] | None,
        timeout: float,  # noqa: ASYNC109
    ) -> Response:
        http = self.runtime.http()
        to = aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout, sock_read=timeout)
        try:
            async with asyncio.timeout(timeout + self.connect_timeout):
                async with http.request(
                    method, url, data=data, headers=headers, params=params, timeout=to
                ) as resp:
                    body = await resp.read()
                    hdrs = {k.lower(): v for k, v in resp.headers.items()}
                    ctype = hdrs.get("content-type", "")
                    return Response(resp.status, hdrs, body, ctype)
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise errors.APITimeoutError(_request_info(method, url)) from exc
        except aiohttp.ClientError as exc:
            raise errors.APIConnectionError(
                _request_info(method, url), message=str(exc) or type(exc).__name__
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
    ) -> Response:
        """Sends one logical request, retrying under ``retry``; raises mapped errors."""
        method = method.upper()
        url = self.url(path)
        hdrs = dict(self._static_headers)
        hdrs["Accept"] = "application/json"
        if method != "GET":
            if content is None:
                content = b"" if json is None else _json_encode(json)
            hdrs["Content-Type"] = content_type or "application/json"
            hdrs["X-Idempotency-Key"] = f"stainless-python-retry-{uuid.uuid4()}"
        if sdk_method:
            hdrs["x-sdk-version"] = SDK_VERSION
            hdrs["x-sdk-method"] = sdk_method
        if headers:
            hdrs.update(headers)
        read_timeout = self.timeout if timeout is None else timeout
        hdrs["x-stainless-read-timeout"] = str(read_timeout)
        if params:
            params = {k: _qv(v) for k, v in params.items() if v is not None}

        attempt = 0
        billing_started: float | None = None

        async def attempt_once() -> Response:
            nonlocal attempt, billing_started
            hdrs["x-stainless-retry-count"] = str(attempt)
            attempt += 1
            try:
                resp = await self._send_once(
                    method, url, data=content, headers=hdrs, params=params, timeout=read_timeout
                )
            except errors.APIConnectionError as exc:  # APITimeoutError subclasses it
                raise _Retry(exc) from exc
            if resp.status < 400 or not raise_for_status:
                _deprecation(resp)
                return resp
            _deprecation(resp)
            err = status_error(resp.status, resp.body, resp.headers)
            if resp.status == 402 and retry.billing_pause:
                now = time.monotonic()
                billing_started = billing_started or now
                if now - billing_started < retry.billing_pause:
                    log.warning("paused due to billing (HTTP 402); retrying", url=url)
                    raise _Billing(err, retry.billing_interval)
                raise err
            if should_retry(resp.status, resp.headers, retry):
                raise _Retry(err, retry_after_seconds(resp.headers))
            raise err

        return await self._retrying(retry, attempt_once, method, url)

    async def _retrying(self, policy: RetryPolicy, fn: Callable[[], Any], method: str, url: str):
        start = time.monotonic()

        def wait(rs: RetryCallState) -> float:
            exc = rs.outcome.exception() if rs.outcome else None
            if isinstance(exc, _Retry) and exc.delay is not None:
                return exc.delay
            n = rs.attempt_number - 1
            d = min(policy.base_delay * 2**n, policy.max_delay)
            return d * (1 - 0.25 * random.random())

        def stop(rs: RetryCallState) -> bool:
            exc = rs.outcome.exception() if rs.outcome else None
            if isinstance(exc, _Billing):
                return False  # billing has its own bound, checked in attempt_once
            return (stop_after_attempt(policy.max_attempts) | stop_after_delay(policy.max_total))(
                rs
            ) or time.monotonic() - start > policy.max_total

        controller = AsyncRetrying(
            stop=stop,
            wait=wait,
            sleep=self.sleep,
            retry=retry_if_exception(lambda e: isinstance(e, _Retry)),
            reraise=True,
        )
        try:
            async for att in controller:
                with att:
                    return await fn()
        except _Retry as r:
            raise r.error from None
        raise AssertionError("unreachable")

    async def call(
        self,
        route: str,
        body: Any = None,
        *,
        path_params: Mapping[str, Any] | None = None,
        query: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109
        retry: RetryPolicy = STANDARD,
        sdk_method: str | None = None,
        decode: bool = True,
    ) -> Any:
        """Calls a manifest route by name; returns the decoded response type (or raw Response)."""
        from . import manifest

        r = manifest.route(route)
        path = r.path
        if path_params:
            path = path.format(**{k: _path_quote(str(v)) for k, v in path_params.items()})
        content = None
        ctype = None
        if body is not None and not isinstance(body, (bytes, bytearray)):
            content = _json_encode(body)
        elif body is not None:
            content = bytes(body)
            ctype = "application/x-protobuf"
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
        )
        if not decode:
            return resp
        rtype = getattr(r, "response_type", None)
        if rtype is None or rtype is type(None):
            return None
        from . import codec

        return codec.json_decode(resp.body, rtype)


class _Billing(_Retry):
    pass


def _request_info(method: str, url: str) -> Any:
    try:
        return errors.RequestInfo(method=method, url=url)
    except TypeError:
        return None


def _qv(v: Any) -> Any:
    if isinstance(v, bool):
        return "true" if v else "false"
    return v if isinstance(v, str) else str(v)


def _path_quote(s: str) -> str:
    from urllib.parse import quote

    return quote(s, safe="/:")


def _deprecation(resp: Response) -> None:
    note = resp.headers.get("x-deprecation-note")
    if note:
        if resp.headers.get("x-deprecation-level") == "error":
            log.error("server deprecation notice", note=note)
        else:
            log.warning("server deprecation notice", note=note)
