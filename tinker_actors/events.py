"""The library's event catalogue: what happened, for whoever listens. No I/O.

Python form of Tinkex's ``:telemetry`` events. An event is a dotted name, a dict of
measurements (numbers: durations in seconds, counts) and a dict of metadata. Handlers are
plain callables ``handler(name, measurements, metadata)`` attached with :func:`attach`
(public as ``tinker_actors.telemetry.attach``); they run synchronously in the thread that
emits (usually the runtime loop's), so they must be quick and must not block.

Emit sites are guarded by one module attribute read so that an event nobody listens to costs
a single bool check::

    if events.ON:
        events.emit(events.HTTP_STOP, {"duration": d}, {"route": name})

``ON`` is true only while at least one handler is attached (and ``TINKER_ACTORS_EVENTS`` is
not ``off``); attaching and detaching are thread-safe and publish an immutable routing
table, so :func:`emit` takes no lock. A handler that raises is detached (as ``:telemetry``
does) and the failure is logged once.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = [
    "CATALOGUE",
    "ON",
    "Handler",
    "attach",
    "attached",
    "detach",
    "disable",
    "emit",
    "enable",
]

Handler = Callable[[str, Mapping[str, Any], Mapping[str, Any]], Any]

# ---------------------------------------------------------------------------- catalogue
# HTTP: one logical request (all its retries). start: system_time; stop: duration, status,
# retry_count, result ("ok" for 2xx else "error"); exception: duration, retry_count, kind,
# reason. Metadata: method, path, route (manifest name or None), base_url, pool.
HTTP_START = "http.request.start"
HTTP_STOP = "http.request.stop"
HTTP_EXCEPTION = "http.request.exception"
# Retry attempts inside one logical request: start (attempt, 0-based), retry (delay, error),
# stop (result ok), failed (gave up). Metadata as HTTP plus attempt.
RETRY_START = "retry.attempt.start"
RETRY_STOP = "retry.attempt.stop"
RETRY_RETRY = "retry.attempt.retry"
RETRY_FAILED = "retry.attempt.failed"
# Future polling: a (queue_state, reason) change, and the poll's outcome.
QUEUE_STATE_CHANGE = "queue.state_change"
FUTURE_RESOLVED = "future.resolved"
FUTURE_TIMEOUT = "future.timeout"
FUTURE_API_ERROR = "future.api_error"
FUTURE_CONNECTION_ERROR = "future.connection_error"
FUTURE_REQUEST_FAILED = "future.request_failed"
FUTURE_VALIDATION_ERROR = "future.validation_error"
# Sampling requests from submit to result (in-flight accounting).
SAMPLING_START = "sampling.request.start"
SAMPLING_STOP = "sampling.request.stop"
# Custom loss (forward_backward_custom) and the regularizer pipeline.
CUSTOM_LOSS_START = "custom_loss.start"
CUSTOM_LOSS_STOP = "custom_loss.stop"
CUSTOM_LOSS_EXCEPTION = "custom_loss.exception"
REGULARIZER_START = "regularizer.compute.start"
REGULARIZER_STOP = "regularizer.compute.stop"
REGULARIZER_EXCEPTION = "regularizer.compute.exception"
# Recovery (monitor + executor), in the order one successful recovery emits them.
RECOVERY_DETECTED = "recovery.detected"
RECOVERY_STARTED = "recovery.started"
RECOVERY_CHECKPOINT_SELECTED = "recovery.checkpoint_selected"
RECOVERY_CLIENT_CREATED = "recovery.client_created"
RECOVERY_COMPLETED = "recovery.completed"
RECOVERY_FAILED = "recovery.failed"
RECOVERY_EXHAUSTED = "recovery.exhausted"
RECOVERY_POLL_ERROR = "recovery.poll_error"

CATALOGUE: frozenset[str] = frozenset(
    v for k, v in dict(globals()).items() if k.isupper() and isinstance(v, str) and "." in v
)

# ---------------------------------------------------------------------------- routing
log = logging.getLogger("tinker_actors.events")

ON = False  # read by every emit site: True while someone listens
_enabled = (os.environ.get("TINKER_ACTORS_EVENTS") or "").strip().lower() not in {
    "0",
    "off",
    "false",
    "no",
}
_lock = threading.Lock()
_ids = itertools.count(1)
# handler id -> (handler, patterns or None for every event)
_subs: dict[str, tuple[Handler, tuple[str, ...] | None]] = {}
_routes: dict[str, tuple[Handler, ...]] = {}  # name -> handlers; rebuilt on (de)attach


def _matches(name: str, patterns: tuple[str, ...] | None) -> bool:
    if patterns is None:
        return True
    for p in patterns:
        if name == p or (p.endswith("*") and name.startswith(p[:-1])):
            return True
        if name.startswith(p + "."):  # "http" or "http.request" selects the whole family
            return True
    return False


def _publish() -> None:
    """Rebuilds the routing table from the subscriptions (caller holds the lock)."""
    global ON, _routes
    _routes = {}
    ON = _enabled and bool(_subs)


def attach(
    handler: Handler,
    events: str | Iterable[str] | None = None,
    *,
    handler_id: str | None = None,
) -> str:
    """Calls ``handler(name, measurements, metadata)`` for the selected events; returns its id.

    ``events``: None for every event, or names / family prefixes (``"http"``,
    ``"recovery.*"``, ``"http.request.stop"``). Attaching an id already in use raises.
    """
    if not callable(handler):
        raise TypeError(f"handler must be callable, got {type(handler).__name__}")
    if isinstance(events, str):
        events = [events]
    patterns = None if events is None else tuple(events)
    if patterns is not None:
        for p in patterns:
            if not isinstance(p, str) or not p:
                raise TypeError(f"event selectors are non-empty strings, got {p!r}")
    with _lock:
        hid = handler_id or f"handler-{next(_ids)}"
        if hid in _subs:
            raise ValueError(f"a handler with id {hid!r} is already attached")
        _subs[hid] = (handler, patterns)
        _publish()
    return hid


def detach(handler_id: str) -> bool:
    """Removes a handler; False when no handler has that id."""
    with _lock:
        found = _subs.pop(handler_id, None) is not None
        _publish()
    return found


def attached() -> list[str]:
    """The ids of the handlers attached now."""
    with _lock:
        return list(_subs)


def disable() -> None:
    """Turns every emit site off, handlers or not (the ``TINKER_ACTORS_EVENTS=off`` switch)."""
    global _enabled
    with _lock:
        _enabled = False
        _publish()


def enable() -> None:
    global _enabled
    with _lock:
        _enabled = True
        _publish()


def _handlers(name: str) -> tuple[Handler, ...]:
    found = _routes.get(name)
    if found is None:
        with _lock:
            found = tuple(h for h, pats in _subs.values() if _matches(name, pats))
            _routes[name] = found
    return found


def emit(
    name: str,
    measurements: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Hands the event to its handlers; never raises (a failing handler is detached)."""
    if not ON:
        return
    handlers = _handlers(name)
    if not handlers:
        return
    meas = measurements if measurements is not None else {}
    meta = metadata if metadata is not None else {}
    for h in handlers:
        try:
            h(name, meas, meta)
        except Exception as exc:
            _drop(h, name, exc)


def _drop(handler: Handler, name: str, exc: BaseException) -> None:
    with _lock:
        ids = [hid for hid, (h, _) in _subs.items() if h is handler]
        for hid in ids:
            _subs.pop(hid, None)
        _publish()
    log.warning("event handler %r failed on %s and was detached: %r", ids or handler, name, exc)
