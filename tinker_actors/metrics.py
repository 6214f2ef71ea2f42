"""Client metrics: counters, gauges and histograms fed by the event catalogue.

Importing this module attaches its listener (handler id ``"tinker_actors-metrics"``), so a
program that never uses metrics pays nothing for them. From then on requests, retries,
queue pauses, sampling in flight and training step latencies are counted without any user
code::

    from tinker_actors import metrics
    ...
    snap = metrics.snapshot()
    snap["counters"]["requests_total"], snap["histograms"]["request_duration_ms"]["p95"]

Names take labels as keyword arguments; a labelled series is keyed ``name{k=v,...}`` (keys
sorted), next to the unlabelled total the listener keeps as well. Histograms keep count,
sum, min and max over every sample and the most recent ``max_samples`` values (default 1000)
for the percentiles: p50 is the true median, p95/p99 the nearest rank.

Optional exports, when the package is installed (no hand-written exposition format):
:func:`export_prometheus` registers a ``prometheus_client`` collector; :func:`export_otel`
creates OpenTelemetry observable instruments on a meter.

Automatic series: ``requests_total``, ``requests_success``, ``requests_failure`` and
``request_duration_ms`` (all also per ``route``), ``requests_429``, ``retries_total``,
``queue_pauses_total`` (per ``state``), gauge ``sampling_in_flight``, histogram
``training_step_ms`` (per ``request_type``), ``futures_failed_total`` (per ``outcome``),
``custom_loss_ms``, ``regularizer_ms`` (per ``regularizer``), ``recovery_total`` (per ``event``).
"""

from __future__ import annotations

import collections
import math
import threading
from collections.abc import Mapping
from typing import Any

from . import events

__all__ = [
    "HANDLER_ID",
    "disable",
    "enable",
    "export_otel",
    "export_prometheus",
    "flush",
    "increment",
    "record",
    "reset",
    "set_gauge",
    "snapshot",
]

HANDLER_ID = "tinker_actors-metrics"
MAX_SAMPLES = 1000
_TRAINING_TYPES = {"ForwardBackward", "Forward", "OptimStep"}


def _key(name: str, labels: Mapping[str, Any]) -> str:
    if not isinstance(name, str) or not name:
        raise TypeError(f"metric names are non-empty strings, got {name!r}")
    if not labels:
        return name
    return name + "{" + ",".join(f"{k}={labels[k]}" for k in sorted(labels)) + "}"


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number, got {type(value).__name__}")
    return value


class _Histogram:
    __slots__ = ("count", "max", "min", "recent", "sum")

    def __init__(self, max_samples: int) -> None:
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.recent: collections.deque[float] = collections.deque(maxlen=max_samples)

    def add(self, v: float) -> None:
        self.count += 1
        self.sum += v
        self.min = min(self.min, v)
        self.max = max(self.max, v)
        self.recent.append(v)

    def summary(self) -> dict[str, Any]:
        if not self.count:
            return dict.fromkeys(("sum", "mean", "min", "max", "p50", "p95", "p99"), None) | {
                "count": 0
            }
        s = sorted(self.recent)
        n = len(s)
        mid = n // 2
        p50 = s[mid] if n % 2 else (s[mid - 1] + s[mid]) / 2

        def rank(p: float) -> float:
            return s[max(math.ceil(n * p / 100) - 1, 0)]

        return {
            "count": self.count,
            "sum": self.sum,
            "mean": self.sum / self.count,
            "min": self.min,
            "max": self.max,
            "p50": p50,
            "p95": rank(95),
            "p99": rank(99),
        }


class Registry:
    """Thread-safe counters, gauges and histograms (the module functions use one instance)."""

    def __init__(self, max_samples: int = MAX_SAMPLES) -> None:
        if not isinstance(max_samples, int) or max_samples < 1:
            raise ValueError(f"max_samples must be a positive int, got {max_samples!r}")
        self.max_samples = max_samples
        self._lock = threading.Lock()
        self.counters: dict[str, float] = {}
        self.gauges: dict[str, float] = {}
        self.histograms: dict[str, _Histogram] = {}

    def increment(self, name: str, delta: float = 1, /, **labels: Any) -> None:
        key = _key(name, labels)
        d = _number(delta, "delta")
        with self._lock:
            self.counters[key] = self.counters.get(key, 0) + d

    def set_gauge(self, name: str, value: float, /, **labels: Any) -> None:
        key = _key(name, labels)
        v = _number(value, "value")
        with self._lock:
            self.gauges[key] = v

    def add_gauge(self, name: str, delta: float, /, **labels: Any) -> None:
        key = _key(name, labels)
        with self._lock:
            self.gauges[key] = self.gauges.get(key, 0) + delta

    def record(self, name: str, value: float, /, **labels: Any) -> None:
        key = _key(name, labels)
        v = float(_number(value, "value"))
        if not math.isfinite(v):
            raise ValueError(f"histogram values must be finite, got {v!r}")
        with self._lock:
            h = self.histograms.get(key)
            if h is None:
                h = self.histograms[key] = _Histogram(self.max_samples)
            h.add(v)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "counters": dict(self.counters),
                "gauges": dict(self.gauges),
                "histograms": {k: h.summary() for k, h in self.histograms.items()},
            }

    def reset(self) -> None:
        with self._lock:
            self.counters.clear()
            self.gauges.clear()
            self.histograms.clear()


REGISTRY = Registry()


def increment(name: str, delta: float = 1, /, **labels: Any) -> None:
    """Adds ``delta`` to a counter."""
    REGISTRY.increment(name, delta, **labels)


def set_gauge(name: str, value: float, /, **labels: Any) -> None:
    REGISTRY.set_gauge(name, value, **labels)


def record(name: str, value: float, /, **labels: Any) -> None:
    """Adds one sample (for durations: milliseconds) to a histogram."""
    REGISTRY.record(name, value, **labels)


def snapshot() -> dict[str, Any]:
    """``{"counters": {...}, "gauges": {...}, "histograms": {name: {count, mean, min, max,
    p50, p95, p99, sum}}}``: a copy, consistent at one instant."""
    return REGISTRY.snapshot()


def reset() -> None:
    REGISTRY.reset()


def flush() -> None:
    """Updates are applied synchronously, so this only pushes to the OpenTelemetry export
    (if any) so that a reader sees every update made before the call."""
    for f in list(_flushers):
        f()


# ---------------------------------------------------------------------------- the listener
def _on_event(name: str, m: Mapping[str, Any], md: Mapping[str, Any]) -> None:
    r = REGISTRY
    if name == events.HTTP_STOP or name == events.HTTP_EXCEPTION:
        route = md.get("route") or md.get("path") or "unknown"
        ok = name == events.HTTP_STOP and m.get("result") == "ok"
        outcome = "requests_success" if ok else "requests_failure"
        ms = float(m.get("duration", 0.0)) * 1000
        with r._lock:
            c = r.counters
            for key in (
                "requests_total",
                f"requests_total{{route={route}}}",
                outcome,
                f"{outcome}{{route={route}}}",
            ):
                c[key] = c.get(key, 0) + 1
            if m.get("status") == 429:
                c["requests_429"] = c.get("requests_429", 0) + 1
            for key in ("request_duration_ms", f"request_duration_ms{{route={route}}}"):
                h = r.histograms.get(key)
                if h is None:
                    h = r.histograms[key] = _Histogram(r.max_samples)
                h.add(ms)
    elif name == events.RETRY_RETRY:
        if md.get("error", "").startswith("RateLimitError"):
            r.increment("requests_429")
        r.increment("retries_total")
        r.increment("retries_total", route=md.get("route") or "unknown")
    elif name == events.SAMPLING_START:
        r.add_gauge("sampling_in_flight", 1)
    elif name == events.SAMPLING_STOP:
        r.add_gauge("sampling_in_flight", -1)
    elif name == events.QUEUE_STATE_CHANGE:
        state = md.get("queue_state")
        if state and state != "active":
            r.increment("queue_pauses_total")
            r.increment("queue_pauses_total", state=state)
    elif name == events.FUTURE_RESOLVED:
        rtype = md.get("request_type")
        if rtype in _TRAINING_TYPES:
            ms = float(m.get("elapsed_time", 0.0)) * 1000
            r.record("training_step_ms", ms)
            r.record("training_step_ms", ms, request_type=rtype)
    elif name.startswith("future."):
        r.increment("futures_failed_total", outcome=name.partition(".")[2])
    elif name == events.CUSTOM_LOSS_STOP:
        r.record("custom_loss_ms", float(m.get("duration", 0.0)) * 1000)
    elif name == events.REGULARIZER_STOP:
        r.record("regularizer_ms", float(m.get("duration", 0.0)) * 1000, regularizer=md.get("name"))
    elif name.startswith("recovery."):
        r.increment("recovery_total", event=name.partition(".")[2])


def enable() -> None:
    """Attaches the listener (done at import); idempotent."""
    if HANDLER_ID not in events.attached():
        events.attach(_on_event, handler_id=HANDLER_ID)


def disable() -> None:
    """Detaches the listener; the values kept so far stay until :func:`reset`."""
    events.detach(HANDLER_ID)


enable()

# ---------------------------------------------------------------------------- exports
_flushers: list[Any] = []


def _split(key: str) -> tuple[str, dict[str, str]]:
    name, _, rest = key.partition("{")
    if not rest:
        return name, {}
    return name, dict(kv.split("=", 1) for kv in rest.rstrip("}").split(","))


def export_prometheus(registry: Any = None, prefix: str = "tinker_actors_") -> Any:
    """Registers a ``prometheus_client`` collector that reads :func:`snapshot` at scrape
    time; returns it. Counters become counters, gauges gauges, histograms summaries with
    p50/p95/p99 quantiles. Needs ``pip install 'tinker-actors[prometheus]'``."""
    try:
        from prometheus_client import REGISTRY as default_registry
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        from prometheus_client.metrics_core import SummaryMetricFamily
    except ImportError as exc:
        raise ImportError(
            "export_prometheus needs prometheus_client: pip install 'tinker-actors[prometheus]'"
        ) from exc

    def families(kind: str, snap: dict[str, Any]) -> dict[str, list[tuple[dict[str, str], Any]]]:
        out: dict[str, list[tuple[dict[str, str], Any]]] = {}
        for key, value in snap[kind].items():
            name, labels = _split(key)
            out.setdefault(name, []).append((labels, value))
        return out

    class Collector:
        def collect(self) -> Any:
            snap = snapshot()
            for kind, family in (("counters", CounterMetricFamily), ("gauges", GaugeMetricFamily)):
                for name, series in families(kind, snap).items():
                    names = sorted({k for labels, _ in series for k in labels})
                    fam = family(prefix + name, name, labels=names)
                    for labels, v in series:
                        fam.add_metric([labels.get(k, "") for k in names], v)
                    yield fam
            for name, series in families("histograms", snap).items():
                names = sorted({k for labels, _ in series for k in labels})
                sfam = SummaryMetricFamily(prefix + name, name, labels=[*names])
                for labels, h in series:
                    if h["count"]:
                        sfam.add_metric([labels.get(k, "") for k in names], h["count"], h["sum"])
                yield sfam
                qfam = GaugeMetricFamily(
                    prefix + name + "_quantile", name + " quantiles", labels=[*names, "quantile"]
                )
                for labels, h in series:
                    for q in ("p50", "p95", "p99"):
                        if h[q] is not None:
                            qfam.add_metric(
                                [*(labels.get(k, "") for k in names), f"0.{q[1:]}"], h[q]
                            )
                yield qfam

    collector = Collector()
    (registry or default_registry).register(collector)
    return collector


def export_otel(meter: Any = None) -> list[Any]:
    """Observable OpenTelemetry instruments that read :func:`snapshot` on collection:
    counters as observable counters, gauges and histogram p50/p95/p99/mean as observable
    gauges. Needs ``pip install 'tinker-actors[otel]'``; ``meter`` defaults to
    ``metrics.get_meter("tinker_actors")``."""
    try:
        from opentelemetry import metrics as otel_metrics
        from opentelemetry.metrics import Observation
    except ImportError as exc:
        raise ImportError(
            "export_otel needs opentelemetry-api: pip install 'tinker-actors[otel]'"
        ) from exc
    meter = meter or otel_metrics.get_meter("tinker_actors")

    def observe(kind: str, field: str | None = None) -> Any:
        def cb(_options: Any) -> Any:
            for key, v in snapshot()[kind].items():
                name, labels = _split(key)
                value = v if field is None else v.get(field)
                if value is not None:
                    yield Observation(value, {"metric": name, **labels})

        return cb

    instruments = [
        meter.create_observable_counter("tinker_actors.counters", [observe("counters")]),
        meter.create_observable_gauge("tinker_actors.gauges", [observe("gauges")]),
    ]
    for f in ("mean", "p50", "p95", "p99"):
        instruments.append(
            meter.create_observable_gauge(
                f"tinker_actors.histograms.{f}", [observe("histograms", f)]
            )
        )
    return instruments
