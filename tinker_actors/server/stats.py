"""Per-route request counts, kept by the middleware (a dict increment per request).

Read in-process with ``LocalServer.stats()``, or over HTTP at ``GET /api/v1/_local/stats``
when the server runs with ``stats_route=True`` (``tinker-actors serve --stats``). Benchmarks
use them to report HTTP requests per training step from the server's side.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

UNMATCHED = "unmatched"  # requests for paths no route serves (404/405)


def _process() -> dict[str, float]:
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return {}
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu_s": ru.ru_utime + ru.ru_stime, "maxrss_mb": ru.ru_maxrss / 1024}


class RequestStats:
    __slots__ = ("_exclude", "body_bytes", "requests", "since", "statuses")

    def __init__(self, exclude: Iterable[str] = ()) -> None:
        self._exclude = frozenset(exclude)
        self.requests: dict[str, int] = {}
        self.statuses: dict[int, int] = {}
        self.body_bytes = 0
        self.since = time.time()

    def record(self, route: str | None, body_bytes: int | None, status: int) -> None:
        name = route or UNMATCHED
        if name in self._exclude:
            return
        self.requests[name] = self.requests.get(name, 0) + 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if body_bytes:
            self.body_bytes += body_bytes

    def reset(self) -> None:
        self.requests.clear()
        self.statuses.clear()
        self.body_bytes = 0
        self.since = time.time()

    def snapshot(self) -> dict[str, Any]:
        """``requests`` by manifest route name, their ``total``, counts by HTTP status,
        request body bytes (as sent, before decompression), and the process's CPU/RSS."""
        requests, statuses = dict(self.requests), dict(self.statuses)  # atomic copies
        return {
            "requests": requests,
            "total": sum(requests.values()),
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "body_bytes": self.body_bytes,
            "since": self.since,
            "uptime_s": time.time() - self.since,
            "process": _process(),
        }
