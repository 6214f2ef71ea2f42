"""Logging for library code: structlog loggers bound to stdlib ``logging``, never configured.

``get_logger(name)`` wraps ``logging.getLogger(name)`` with a small local processor chain
(level filter, contextvars merge, secret redaction, key=value rendering), so the application
decides where lines go and at which level. Nothing here calls ``structlog.configure`` or adds
handlers: a user who configures nothing sees warnings and errors only (stdlib's last-resort
handler). ``TINKER_LOG=debug|info`` lowers the ``tinker_actors`` logger level, as the
official SDK's variable does for its ``tinker`` logger.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import MutableMapping
from typing import Any

from . import events as _events
from .events import attach, detach

__all__ = [
    "apply_env_log_level",
    "attach",
    "attach_logger",
    "detach",
    "get_logger",
    "redact",
    "redact_secrets",
]

ROOT_LOGGER = "tinker_actors"

# Keys whose values are credentials whatever they look like.
_SECRET_KEYS = frozenset(
    {
        "api_key",
        "apikey",
        "x-api-key",
        "authorization",
        "jwt",
        "token",
        "access_token",
        "refresh_token",
        "password",
        "secret",
        "credential",
        "cf-access-client-secret",
        "weights_access_token",
        "x-tinker-weights-access-token",
    }
)
# API keys (tml-...) and JWTs (eyJ<header>.<claims>.<signature>) anywhere in a string.
_SECRET_RE = re.compile(
    r"\btml-[A-Za-z0-9_\-]{4,}|\beyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.?[A-Za-z0-9_\-]*"
)
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """``text`` with API keys and JWTs replaced."""
    if "tml-" not in text and "eyJ" not in text:
        return text
    return _SECRET_RE.sub(REDACTED, text)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {
            k: (REDACTED if str(k).lower() in _SECRET_KEYS else _scrub(v)) for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return type(value)(_scrub(v) for v in value)
    if isinstance(value, BaseException):
        return redact(repr(value))
    return value


def redact_secrets(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: no credential reaches a log line (keys by name, values by shape)."""
    for key, value in list(event.items()):
        if key.lower() in _SECRET_KEYS:
            event[key] = REDACTED
        else:
            event[key] = _scrub(value)
    return event


def _drop_logger_name(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    event.pop("logger", None)
    return event


def _render(_: Any, __: str, event: MutableMapping[str, Any]) -> str:
    """``message key=value ...``: the event text first, then the context."""
    msg = str(event.pop("event", ""))
    exc = event.pop("exception", None)
    parts = [msg, *(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in event.items())]
    line = " ".join(p for p in parts if p)
    return f"{line}\n{exc}" if exc else line


_STRUCTLOG: tuple[Any, list[Any], type] | None = None


def _structlog() -> tuple[Any, list[Any], type]:
    """structlog, the processor chain and the wrapper class, made on the first log call."""
    global _STRUCTLOG
    if _STRUCTLOG is None:
        import structlog

        class _Logger(structlog.stdlib.BoundLogger):
            """A stdlib BoundLogger whose disabled levels cost one ``isEnabledFor`` check."""

            def debug(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
                if not self._logger.isEnabledFor(logging.DEBUG):
                    return None
                return super().debug(event, *args, **kw)

            def info(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
                if not self._logger.isEnabledFor(logging.INFO):
                    return None
                return super().info(event, *args, **kw)

        processors: list[Any] = [
            structlog.stdlib.filter_by_level,
            structlog.contextvars.merge_contextvars,
            redact_secrets,
            _drop_logger_name,
            structlog.processors.format_exc_info,
            _render,
        ]
        _STRUCTLOG = (structlog, processors, _Logger)
    return _STRUCTLOG


class _LazyLogger:
    """What ``get_logger`` returns: the structlog logger is made by the first call on it.
    Importing structlog also imports rich and pygments when they are installed (about 40 ms
    and 6,000 objects that every full garbage collection walks); a client that logs nothing,
    the common case on the request path, never pays for them."""

    __slots__ = ("_initial", "_real", "_std")

    def __init__(self, name: str | None, initial: dict[str, Any]) -> None:
        self._std = logging.getLogger(name or ROOT_LOGGER)
        self._initial = initial
        self._real: Any = None

    def __getattr__(self, attr: str) -> Any:
        real = self._real
        if real is None:
            structlog, processors, wrapper = _structlog()
            real = self._real = structlog.wrap_logger(
                self._std,
                processors=processors,
                wrapper_class=wrapper,
                cache_logger_on_first_use=True,
                **self._initial,
            )
        return getattr(real, attr)

    # a line at a level that is off costs one check, as in ``_Logger``, and no structlog
    def debug(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        if self._std.isEnabledFor(logging.DEBUG):
            return self.__getattr__("debug")(event, *args, **kw)
        return None

    def info(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        if self._std.isEnabledFor(logging.INFO):
            return self.__getattr__("info")(event, *args, **kw)
        return None


def get_logger(name: str | None = None, **initial: Any) -> Any:
    """A structlog logger writing through ``logging.getLogger(name)``; no global config."""
    apply_env_log_level()
    return _LazyLogger(name, initial)


_applied = False


def apply_env_log_level() -> None:
    """``TINKER_LOG=debug|info`` sets the ``tinker_actors`` logger level (once per process).

    Like the official SDK it also gives that logger a stderr handler, since stdlib's
    last-resort handler shows warnings only; without ``TINKER_LOG`` nothing is touched.
    """
    global _applied
    if _applied:
        return
    _applied = True
    level = {"debug": logging.DEBUG, "info": logging.INFO}.get(
        (os.environ.get("TINKER_LOG") or "").strip().lower()
    )
    if level is None:
        return
    logger = logging.getLogger(ROOT_LOGGER)
    logger.setLevel(level)
    if not logging.getLogger().handlers and not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(
            logging.Formatter("[%(asctime)s - %(name)s - %(levelname)s] %(message)s")
        )
        logger.addHandler(handler)


# ---------------------------------------------------------------------------- event logger
_LOGGER_EVENTS = ("http.request", "queue.state_change")
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}


def _ms(measurements: Any) -> str:
    return f"{float(measurements.get('duration', 0.0)) * 1000:.0f}"


def _event_line(name: str, meas: Any, meta: Any) -> tuple[bool, str]:
    """(is_error, line) in Tinkex's console formats."""
    method, path = meta.get("method"), meta.get("path")
    if name == _events.HTTP_START:
        return False, (
            f"HTTP {method} {path} start (pool={meta.get('pool')} base={meta.get('base_url')})"
        )
    if name == _events.HTTP_STOP:
        return False, (
            f"HTTP {method} {path} {meas.get('result', 'ok')} in {_ms(meas)}ms "
            f"retries={meas.get('retry_count', 0)} base={meta.get('base_url')}"
        )
    if name == _events.HTTP_EXCEPTION:
        return True, f"HTTP {method} {path} exception after {_ms(meas)}ms reason={meas.get('reason')!r}"
    if name == _events.QUEUE_STATE_CHANGE:
        return False, (
            f"Queue state changed to {meta.get('queue_state')} "
            f"(request_id={meta.get('request_id')})"
        )
    return False, f"Unhandled telemetry {name} {dict(meta)}"


def attach_logger(
    events: str | list[str] | tuple[str, ...] | None = _LOGGER_EVENTS,
    *,
    level: str = "info",
    handler_id: str | None = None,
    logger_name: str = "tinker_actors.events",
) -> str:
    """Logs events through a ``tinker_actors`` structlog logger, one line each; returns the id.

    Defaults to HTTP start/stop/exception and queue-state changes at ``level``; exceptions
    always log at error. ``detach(id)`` removes it.
    """
    lvl = _LEVELS.get(level.lower()) if isinstance(level, str) else None
    if lvl is None:
        raise ValueError(f"level must be one of {sorted(_LEVELS)}, got {level!r}")
    logger = get_logger(logger_name)

    def handler(name: str, meas: Any, meta: Any) -> None:
        is_error, line = _event_line(name, meas, meta)
        if is_error:
            logger.error(redact(line))
        elif lvl == logging.DEBUG:
            logger.debug(redact(line))
        elif lvl == logging.INFO:
            logger.info(redact(line))
        else:
            logger.warning(redact(line))

    return attach(handler, events, handler_id=handler_id)
