"""Figures from measurements: percentile summaries, and what the event catalogue saw.

Percentiles are numpy's linear interpolation (as vLLM's ``benchmark_serving`` computes
them). :class:`EventTally` listens to ``tinker_actors.events`` for the duration of a run
point: HTTP statuses (429s among them), retries, and per-request queue states, from which it
derives the time requests spent waiting in a queue.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from tinker_actors import events


def summarize(
    name: str, values_ms: Sequence[float], percentiles: Iterable[float]
) -> dict[str, float | None]:
    """``mean_<name>_ms``, ``median_<name>_ms``, ``std_<name>_ms``, ``p<P>_<name>_ms``.

    vLLM's keys; every value None when there are no values (say, TTFT without --stream).
    """
    arr = np.asarray(values_ms, dtype=float)
    have = arr.size > 0
    out: dict[str, float | None] = {
        f"mean_{name}_ms": float(arr.mean()) if have else None,
        f"median_{name}_ms": float(np.median(arr)) if have else None,
        f"std_{name}_ms": float(arr.std()) if have else None,
    }
    for p in percentiles:
        out[f"p{pct_label(p)}_{name}_ms"] = float(np.percentile(arr, p)) if have else None
    return out


def pct_label(p: float) -> str:
    """99 -> "99", 99.9 -> "99.9" (vLLM's key spelling)."""
    return f"{p:g}"


def _waiting(state: str, reason: str | None) -> bool:
    """A request is waiting when the service paused it (any state but ``active``) or, while
    active, its reason says it is queued (the local server's ``queued behind ...`` and
    ``waiting for seq_id ...``)."""
    if state != "active":
        return True
    return bool(reason) and str(reason).lower().startswith(("queued", "waiting"))


class EventTally:
    """Counts what the runtime reports through the event catalogue while attached.

    Handlers run on the runtime's loop thread; one lock keeps the tallies consistent.
    """

    _EVENTS = (
        events.HTTP_STOP,
        events.HTTP_EXCEPTION,
        events.RETRY_RETRY,
        events.QUEUE_STATE_CHANGE,
        events.FUTURE_RESOLVED,
        "future",
    )

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.http_status: Counter[str] = Counter()
        self.http_exceptions: Counter[str] = Counter()
        self.retries = 0
        self.queue_changes: Counter[str] = Counter()
        # request_id -> (since, waiting) of its last state; closed spans add to waited
        self._open: dict[str, tuple[float, bool]] = {}
        self.queue_wait_s = 0.0
        self.queue_wait_by_type: dict[str, float] = {}
        self._types: dict[str, str] = {}
        self._hid: str | None = None

    def __enter__(self) -> EventTally:
        self._hid = events.attach(self._on_event, list(self._EVENTS))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._hid is not None:
            events.detach(self._hid)
            self._hid = None
        with self._lock:
            now = self._clock()
            for rid in list(self._open):
                self._close(rid, now)

    def _close(self, rid: str, now: float) -> None:
        since, waiting = self._open.pop(rid)
        if waiting:
            self.queue_wait_s += now - since
            kind = self._types.get(rid) or "unknown"
            self.queue_wait_by_type[kind] = self.queue_wait_by_type.get(kind, 0.0) + now - since

    def _on_event(
        self, name: str, measurements: Mapping[str, Any], metadata: Mapping[str, Any]
    ) -> None:
        now = self._clock()
        with self._lock:
            if name == events.HTTP_STOP:
                self.http_status[str(measurements.get("status"))] += 1
            elif name == events.HTTP_EXCEPTION:
                self.http_exceptions[str(metadata.get("kind") or "exception")] += 1
            elif name == events.RETRY_RETRY:
                self.retries += 1
            elif name == events.QUEUE_STATE_CHANGE:
                rid = str(metadata.get("request_id"))
                state = str(metadata.get("queue_state") or "unknown")
                self.queue_changes[state] += 1
                if rid in self._open:
                    self._close(rid, now)
                if metadata.get("request_type"):
                    self._types[rid] = str(metadata["request_type"])
                self._open[rid] = (now, _waiting(state, metadata.get("queue_state_reason")))
            elif name.startswith("future."):
                rid = str(metadata.get("request_id"))
                if rid in self._open:
                    self._close(rid, now)
                self._types.pop(rid, None)

    def snapshot(self) -> dict[str, Any]:
        """``errors``-side and ``queue``-side figures of the JSON document."""
        with self._lock:
            return {
                "http_status": dict(sorted(self.http_status.items())),
                "http_429": self.http_status.get("429", 0),
                "http_exceptions": dict(self.http_exceptions),
                "retries": self.retries,
                "queue_state_changes": dict(self.queue_changes),
                "queue_wait_s": self.queue_wait_s,
                "queue_wait_s_by_request_type": dict(self.queue_wait_by_type),
            }
