"""Environment knobs, policy values and the server-negotiated client configuration.

Policies are frozen values; the controllers that act on them (tenacity ``AsyncRetrying``,
restart windows) are built per use.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "RecoveryPolicy",
    "Restart",
    "RestartPolicy",
    "RetryConfig",
    "Settings",
    "Strategy",
]

SDK_VERSION = "0.38.0"
_TRUE = {"1", "true", "yes", "on"}


def _check_base_url(url: object) -> str:
    """``url`` if it is an absolute http(s) URL; a clear error now, not retries then a
    bare connection error later."""
    from urllib.parse import urlsplit

    from .errors import InvalidInputError

    if not isinstance(url, str):
        raise InvalidInputError(f"base_url must be a string, got {type(url).__name__}")
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018  (raises ValueError on a malformed port)
    except ValueError:
        ok = False
    if not ok:
        raise InvalidInputError(
            f"base_url must be an absolute http:// or https:// URL with a host, got {url!r} "
            "(check the base_url argument or TINKER_BASE_URL)"
        )
    return url


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value else None


def _redact(secret: str | None) -> str:
    return "None" if secret is None else "'<redacted>'"


def _redact_url(url: str | None) -> str | None:
    """``url`` without the password of any ``user:password@`` part."""
    if url is None:
        return None
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.partition("@")
    if not sep or not at or "/" in userinfo:
        return url
    return f"{scheme}://{userinfo.partition(':')[0]}:<redacted>@{host}"


_SECRET_HEADER_WORDS = ("key", "secret", "token", "auth", "cookie", "password")


def _redact_headers(headers: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    return tuple(
        (k, "<redacted>" if any(w in k.lower() for w in _SECRET_HEADER_WORDS) else v)
        for k, v in headers
    )


@dataclass(frozen=True, slots=True)
class Settings:
    """Where and how to talk to the API; resolved once per ServiceClient/RestClient.

    ``base_url`` None means "no URL given anywhere": the embedded local server is used.
    """

    base_url: str | None
    api_key: str | None
    project_id: str | None = None
    tags: tuple[str, ...] = ()
    feature_gates: tuple[str, ...] = ("async_sampling",)
    telemetry_enabled: bool = True
    log_level: str | None = None
    cf_access_client_id: str | None = None
    cf_access_client_secret: str | None = None
    default_headers: tuple[tuple[str, str], ...] = ()
    credential_cmd: str | None = None
    credential_source: str = "argument"

    def __repr__(self) -> str:
        # Secrets never reach logs or tracebacks through a repr.
        return (
            f"Settings(base_url={_redact_url(self.base_url)!r}, api_key={_redact(self.api_key)}, "
            f"project_id={self.project_id!r}, tags={self.tags!r}, "
            f"feature_gates={self.feature_gates!r}, telemetry_enabled={self.telemetry_enabled!r}, "
            f"cf_access_client_id={self.cf_access_client_id!r}, "
            f"cf_access_client_secret={_redact(self.cf_access_client_secret)}, "
            f"default_headers={_redact_headers(self.default_headers)!r}, "
            f"credential_cmd={'<set>' if self.credential_cmd else None}, "
            f"credential_source={self.credential_source!r})"
        )

    __str__ = __repr__

    @classmethod
    def from_env(
        cls,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        project_id: str | None = None,
        default_headers: dict[str, str] | None = None,
    ) -> Settings:
        """The environment (``TINKER_*``, Cloudflare) under the explicit arguments; no I/O.

        The credential for a remote server (``TINKER_CREDENTIAL_CMD``, the stored key file)
        is not looked up here: ``auth.settings_from_env`` does that on top of this.
        """
        from .errors import InvalidInputError

        if api_key is not None and not isinstance(api_key, str):
            raise InvalidInputError(f"api_key must be a string, got {type(api_key).__name__}")
        url = base_url or _env("TINKER_BASE_URL")
        if url:
            url = _check_base_url(url).rstrip("/")
        tags = tuple(t.strip() for t in (_env("TINKER_TAGS") or "").split(",") if t.strip())
        gates_env = _env("TINKER_FEATURE_GATES")
        gates = (
            tuple(g.strip() for g in gates_env.split(",") if g.strip())
            if gates_env is not None
            else ("async_sampling",)
        )
        telemetry = (os.environ.get("TINKER_TELEMETRY", "1").strip().lower()) in _TRUE
        if not url:
            source = "embedded"  # the embedded server brings its own key
        else:
            source = (
                "argument" if api_key else "TINKER_API_KEY" if _env("TINKER_API_KEY") else "none"
            )
        return cls(
            base_url=url or None,
            api_key=api_key or _env("TINKER_API_KEY"),
            credential_source=source,
            project_id=project_id or _env("TINKER_PROJECT_ID"),
            tags=tags,
            feature_gates=gates,
            telemetry_enabled=telemetry,
            log_level=_env("TINKER_LOG"),
            cf_access_client_id=_env("CLOUDFLARE_ACCESS_CLIENT_ID"),
            cf_access_client_secret=_env("CLOUDFLARE_ACCESS_CLIENT_SECRET"),
            default_headers=tuple((default_headers or {}).items()),
        )

    def with_endpoint(self, base_url: str, api_key: str | None) -> Settings:
        """These settings pointed at the embedded server, with that server's own key."""
        return Settings(
            base_url=base_url.rstrip("/"),
            api_key=api_key or self.api_key,
            project_id=self.project_id,
            tags=self.tags,
            feature_gates=self.feature_gates,
            telemetry_enabled=self.telemetry_enabled,
            log_level=self.log_level,
            cf_access_client_id=self.cf_access_client_id,
            cf_access_client_secret=self.cf_access_client_secret,
            default_headers=self.default_headers,
        )


def _default_retryable() -> tuple[type[BaseException], ...]:
    from . import errors

    names = ("APIConnectionError", "APITimeoutError", "RetryableError", "PromiseExpiredError")
    found = tuple(getattr(errors, n) for n in names if hasattr(errors, n))
    import asyncio

    return (asyncio.TimeoutError, *found)


@dataclass(frozen=True)
class RetryConfig:
    """Sampling retry behaviour; the official SDK's fields and defaults."""

    max_connections: int | None = 1000
    progress_timeout: float = 120 * 60
    retry_delay_base: float = 0.5
    retry_delay_max: float = 10.0
    jitter_factor: float = 0.25
    enable_retry_logic: bool = True
    enable_stuck_detection: bool = True
    retryable_exceptions: tuple[type[BaseException], ...] = field(
        default_factory=_default_retryable
    )

    def __post_init__(self) -> None:
        if self.max_connections is not None and self.max_connections <= 0:
            raise ValueError("max_connections must be positive or None")
        if not 0 <= self.jitter_factor <= 1:
            raise ValueError("jitter_factor must be between 0 and 1")


class Strategy(enum.Enum):
    """OTP restart strategies (only one_for_one is used by ServiceClient today)."""

    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"
    REST_FOR_ONE = "rest_for_one"


class Restart(enum.Enum):
    """OTP child restart types."""

    PERMANENT = "permanent"  # always restarted
    TRANSIENT = "transient"  # restarted only after an abnormal exit
    TEMPORARY = "temporary"  # never restarted


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """At most ``intensity`` restarts in any ``period`` seconds, else the supervisor gives up."""

    intensity: int = 3
    period: float = 30.0
    strategy: Strategy = Strategy.ONE_FOR_ONE

    def __post_init__(self) -> None:
        if self.intensity < 0 or self.period <= 0:
            raise ValueError("intensity must be >= 0 and period > 0")


@dataclass(frozen=True, slots=True)
class RecoveryPolicy:
    """What a restarted training actor rebuilds from.

    ``checkpoint="latest"`` restores the last checkpoint this client saved with
    ``save_state`` (or a fresh model when none exists) and replays the requests issued after
    it; a ``tinker://`` path pins a specific checkpoint. ``restore_optimizer`` chooses between
    ``create_training_client_from_state_with_optimizer`` and the weights-only form.
    A request reported failed is never replayed; one reported successful always is; one lost
    with the server is carried to the rebuilt model once (``actors/training.py``).
    ``replay=False`` replays nothing and fails the requests still owed by the old model;
    ``max_replay`` bounds the requests kept between checkpoints.

    Corrupted runs (Tinkex's Recovery.Policy; ``actors/recovery.py``): a RecoveryMonitor polls
    ``get_training_run`` every ``poll_interval`` s; a RecoveryExecutor makes up to
    ``max_attempts`` attempts, ``backoff * 2**(n-1)`` s apart (at most ``max_backoff``), then
    calls ``on_failure(run_id, error)``; a success calls ``on_recovery(old_run_id,
    new_run_id, checkpoint_path)``. Bad values raise at construction (Tinkex silently
    substitutes defaults).
    """

    enabled: bool = True  # a policy passed by the user is on; recovery is off without one
    checkpoint: Literal["latest"] | str = "latest"
    restore_optimizer: bool = True
    replay: bool = True
    max_replay: int = 10_000
    max_attempts: int = 3
    backoff: float = 5.0
    max_backoff: float = 60.0
    poll_interval: float = 30.0
    on_recovery: Callable[[str, str, str | None], Any] | None = None
    on_failure: Callable[[str, BaseException], Any] | None = None

    def __post_init__(self) -> None:
        for name in ("enabled", "restore_optimizer", "replay"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"RecoveryPolicy.{name} must be a bool")
        for name in ("max_attempts", "max_replay"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"RecoveryPolicy.{name} must be an int >= 1, got {v!r}")
        for name in ("backoff", "max_backoff", "poll_interval"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < float("inf"):
                raise ValueError(
                    f"RecoveryPolicy.{name} must be a number of seconds > 0, got {v!r}"
                )
        if self.max_backoff < self.backoff:
            raise ValueError("RecoveryPolicy.max_backoff must be >= backoff")
        if not isinstance(self.checkpoint, str) or not (
            self.checkpoint == "latest" or self.checkpoint.startswith("tinker://")
        ):
            raise ValueError(
                "RecoveryPolicy.checkpoint must be 'latest' or a tinker:// checkpoint path "
                f"('best' is not supported), got {self.checkpoint!r}"
            )
        for name in ("on_recovery", "on_failure"):
            if getattr(self, name) is not None and not callable(getattr(self, name)):
                raise TypeError(f"RecoveryPolicy.{name} must be callable or None")

    @classmethod
    def disabled(cls) -> RecoveryPolicy:
        return cls(enabled=False)
