"""What a benchmark shows: the JSON document and its schema, the summary table, the live
display and the plot.

The document's figures use vLLM ``benchmark_serving``'s names where they mean the same
(``request_throughput``, ``output_throughput``, ``mean_ttft_ms``, ``p99_e2el_ms``, ...);
``docs/bench.md`` describes every field. ``SCHEMA`` is its JSON Schema (draft 2020-12).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from typing import Any

SCHEMA_ID = "tinker-actors-bench/1"

_NUM = {"type": "number"}
_NUM_OR_NULL = {"type": ["number", "null"]}
_INT = {"type": "integer", "minimum": 0}
_ERRORS = {
    "type": "object",
    "required": ["by_type", "examples", "http_429", "retries"],
    "properties": {
        "by_type": {"type": "object", "additionalProperties": _INT},
        "examples": {"type": "array", "items": {"type": "string"}},
        "http_429": {"type": ["integer", "null"], "minimum": 0},
        "retries": {"type": ["integer", "null"], "minimum": 0},
    },
}
_EVENTS = {
    "type": ["object", "null"],
    "required": ["http_status", "http_429", "retries", "queue_state_changes", "queue_wait_s"],
}


def _latency_keys(names: Sequence[str], percentiles: Sequence[float]) -> list[str]:
    from tinker_actors.bench.measure import pct_label

    keys = []
    for n in names:
        keys += [f"mean_{n}_ms", f"median_{n}_ms", f"std_{n}_ms"]
        keys += [f"p{pct_label(p)}_{n}_ms" for p in percentiles]
    return keys


def schema(kind: str, percentiles: Sequence[float] = (50, 90, 99)) -> dict[str, Any]:
    """The JSON Schema of a ``kind`` ("sample" or "train") document."""
    if kind == "sample":
        lat = _latency_keys(("ttft", "tpot", "itl", "e2el"), percentiles)
        point_required = [
            "mode",
            "max_concurrency",
            "request_rate",
            "arrival",
            "duration",
            "num_requests",
            "completed",
            "failed",
            "total_input_tokens",
            "total_output_tokens",
            "request_throughput",
            "output_throughput",
            "total_token_throughput",
            "max_concurrent_requests",
            "mean_send_lag_ms",
            "errors",
            "events",
            "server_requests",
            "input_lens",
            "output_lens",
            "start_times",
            "scheduled_times",
            "e2els",
            "ttfts",
            "itls",
            "errors_list",
            *lat,
        ]
        props: dict[str, Any] = {k: _NUM_OR_NULL for k in lat}
        props.update(
            {
                "mode": {"enum": ["closed", "open"]},
                "max_concurrency": {"type": ["integer", "null"], "minimum": 1},
                "request_rate": _NUM_OR_NULL,
                "arrival": {"enum": ["poisson", "fixed", None]},
                "duration": _NUM,
                "num_requests": _INT,
                "completed": _INT,
                "failed": _INT,
                "total_input_tokens": _INT,
                "total_output_tokens": _INT,
                "request_throughput": _NUM,
                "output_throughput": _NUM,
                "total_token_throughput": _NUM,
                "max_concurrent_requests": _INT,
                "mean_send_lag_ms": _NUM_OR_NULL,
                "errors": _ERRORS,
                "events": _EVENTS,
                "server_requests": {"type": ["object", "null"]},
                "input_lens": {"type": "array", "items": _INT},
                "output_lens": {"type": "array", "items": _INT},
                "start_times": {"type": "array", "items": _NUM},
                "scheduled_times": {"type": ["array", "null"], "items": _NUM},
                "e2els": {"type": "array", "items": _NUM_OR_NULL},
                "ttfts": {"type": ["array", "null"], "items": _NUM_OR_NULL},
                "itls": {"type": ["array", "null"], "items": {"type": "array", "items": _NUM}},
                "errors_list": {"type": "array", "items": {"type": "string"}},
            }
        )
    else:
        lat = _latency_keys(("step",), percentiles)
        point_required = [
            "depth",
            "batch_size",
            "seq_len",
            "duration",
            "num_steps",
            "completed",
            "failed",
            "total_tokens",
            "steps_per_s",
            "tokens_per_s",
            "queue_wait_s",
            "errors",
            "events",
            "server_requests",
            "step_latencies_ms",
            *lat,
        ]
        props = {k: _NUM_OR_NULL for k in lat}
        props.update(
            {
                "depth": {"type": "integer", "minimum": 1},
                "batch_size": {"type": "integer", "minimum": 1},
                "seq_len": {"type": "integer", "minimum": 1},
                "duration": _NUM,
                "num_steps": _INT,
                "completed": _INT,
                "failed": _INT,
                "total_tokens": _INT,
                "steps_per_s": _NUM,
                "tokens_per_s": _NUM,
                "queue_wait_s": _NUM_OR_NULL,
                "errors": _ERRORS,
                "events": _EVENTS,
                "server_requests": {"type": ["object", "null"]},
                "step_latencies_ms": {"type": "array", "items": _NUM},
            }
        )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"tinker-actors bench {kind}",
        "type": "object",
        "required": [
            "schema",
            "kind",
            "date",
            "command",
            "config",
            "endpoint",
            "model",
            "warmup",
            "versions",
            "machine",
            "results",
        ],
        "properties": {
            "schema": {"const": SCHEMA_ID},
            "kind": {"const": kind},
            "date": {"type": "string"},
            "command": {"type": "array", "items": {"type": "string"}},
            "config": {"type": "object"},
            "endpoint": {
                "type": "object",
                "required": ["base_url", "embedded", "engine", "client"],
                "not": {"required": ["api_key"]},
            },
            "model": {"type": ["string", "null"]},
            "warmup": {"type": "object"},
            "versions": {"type": "object", "required": ["tinker_actors", "python", "client"]},
            "machine": {"type": "object", "required": ["platform", "cpu_count"]},
            "results": {
                "type": "array",
                "minItems": 1,
                "items": {"type": "object", "required": point_required, "properties": props},
            },
        },
    }


# ------------------------------------------------------------------------------ document
def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def versions(client_module: Any = None) -> dict[str, Any]:
    from tinker_actors.bench.drivers import client_version

    out: dict[str, Any] = {
        "tinker_actors": _version("tinker-actors"),
        "python": platform.python_version(),
        "client": client_version(client_module) if client_module is not None else None,
    }
    for dist in ("tinker", "aiohttp", "msgspec", "numpy", "torch"):
        out[dist] = _version(dist)
    return out


def machine() -> dict[str, Any]:
    out: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "python_implementation": platform.python_implementation(),
    }
    try:
        out["memory_bytes"] = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        out["memory_bytes"] = None
    try:
        out["load_average"] = list(os.getloadavg())
    except (AttributeError, OSError):
        out["load_average"] = None
    return out


def document(
    kind: str, config: dict[str, Any], run: dict[str, Any], client_module: Any = None
) -> dict[str, Any]:
    """The full JSON document of one run (every sweep point in ``results``)."""
    return {
        "schema": SCHEMA_ID,
        "kind": kind,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": [os.path.basename(sys.argv[0]), *sys.argv[1:]] if sys.argv else [],
        "config": config,
        "endpoint": run["endpoint"],
        "model": run.get("model"),
        "warmup": run.get("warmup", {}),
        "versions": versions(client_module),
        "machine": machine(),
        "results": run["results"],
    }


# ------------------------------------------------------------------------------ summary
def _f(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def summary_rows(doc: dict[str, Any]) -> tuple[list[str], list[list[str]], str]:
    """Columns, rows and title of the summary table: one row per sweep point."""
    pcts = doc["config"].get("percentiles") or [99]
    top = f"p{max(pcts):g}"
    if doc["kind"] == "sample":
        stream = bool(doc["config"].get("stream"))
        cols = [
            "load",
            "requests",
            "completed",
            "failed",
            "429",
            "retries",
            "req/s",
            "out tok/s",
            "median e2el ms",
            f"{top} e2el ms",
        ]
        if stream:
            cols += ["median ttft ms", f"{top} ttft ms", "median tpot ms", "median itl ms"]
        rows = []
        for p in doc["results"]:
            load = (
                f"c={p['max_concurrency']}"
                if p["mode"] == "closed"
                else f"{p['request_rate']:g}/s {p['arrival']}"
            )
            row = [
                load,
                _f(p["num_requests"]),
                _f(p["completed"]),
                _f(p["failed"]),
                _f(p["errors"]["http_429"]),
                _f(p["errors"]["retries"]),
                _f(p["request_throughput"]),
                _f(p["output_throughput"], 1),
                _f(p["median_e2el_ms"]),
                _f(p[f"{top}_e2el_ms"]),
            ]
            if stream:
                row += [
                    _f(p["median_ttft_ms"]),
                    _f(p[f"{top}_ttft_ms"]),
                    _f(p["median_tpot_ms"]),
                    _f(p["median_itl_ms"]),
                ]
            rows.append(row)
        title = f"bench sample: {doc['model'] or doc['config'].get('model_path')} at {doc['endpoint']['base_url']}"
    else:
        cols = [
            "depth",
            "steps",
            "completed",
            "failed",
            "429",
            "retries",
            "steps/s",
            "tokens/s",
            "median step ms",
            f"{top} step ms",
            "queue wait s",
        ]
        rows = [
            [
                _f(p["depth"]),
                _f(p["num_steps"]),
                _f(p["completed"]),
                _f(p["failed"]),
                _f(p["errors"]["http_429"]),
                _f(p["errors"]["retries"]),
                _f(p["steps_per_s"]),
                _f(p["tokens_per_s"], 1),
                _f(p["median_step_ms"]),
                _f(p[f"{top}_step_ms"]),
                _f(p["queue_wait_s"], 3),
            ]
            for p in doc["results"]
        ]
        title = f"bench train: {doc['model']} batch {doc['config']['batch_size']} x seq {doc['config']['seq_len']} at {doc['endpoint']['base_url']}"
    return cols, rows, title


def print_summary(doc: dict[str, Any]) -> None:
    """The table on stdout (rich on a terminal, tab-separated when piped), then errors."""
    from tinker_actors.cli.render import print_table

    cols, rows, title = summary_rows(doc)
    print_table(cols, rows, title)
    for p in doc["results"]:
        errs = p["errors"]
        if errs["by_type"]:
            kinds = ", ".join(f"{k} x{v}" for k, v in sorted(errs["by_type"].items()))
            sys.stderr.write(f"errors: {kinds}\n")
            for ex in errs["examples"]:
                sys.stderr.write(f"  {ex}\n")


# ------------------------------------------------------------------------------ live display
class LiveProgress:
    """A rich progress bar on stderr per sweep point: done / total (or elapsed / duration),
    failed, in flight, rate. Only built when stderr is a terminal."""

    def __init__(self, unit: str = "req") -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.unit = unit
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=Console(
                stderr=True, color_system=None if os.environ.get("NO_COLOR") else "auto"
            ),
            transient=True,
        )
        self._task: Any = None
        self._t0 = 0.0
        self._duration: float | None = None
        self._total: int | None = None

    def start(self, label: str, total: int | None, duration: float | None) -> None:
        self._t0 = time.perf_counter()
        self._total, self._duration = total, duration
        self._progress.start()
        self._task = self._progress.add_task(label, total=total, status="")

    def update(self, completed: int, failed: int, in_flight: int) -> None:
        if self._task is None:
            return
        elapsed = max(time.perf_counter() - self._t0, 1e-9)
        status = f"failed {failed}  in flight {in_flight}  {completed / elapsed:.1f} {self.unit}/s"
        self._progress.update(self._task, completed=completed + failed, status=status)

    def stop(self) -> None:
        if self._task is not None:
            self._progress.remove_task(self._task)
            self._task = None
        self._progress.stop()


def live_progress(unit: str) -> Any:
    """A LiveProgress on a terminal stderr, else None (no redraws into logs or pipes)."""
    try:
        tty = sys.stderr.isatty() and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError):
        tty = False
    return LiveProgress(unit) if tty else None


# ------------------------------------------------------------------------------ plot
PLOT_HINT = "--plot needs matplotlib: pip install 'tinker-actors[plot]'"


def check_plot_support() -> None:
    """Raises ImportError with the install hint when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ImportError(PLOT_HINT) from exc


def _axis(doc: dict[str, Any]) -> tuple[list[float], str, list[str], str, str]:
    points = doc["results"]
    if doc["kind"] == "sample":
        open_loop = points[0]["mode"] == "open"
        xs = [p["request_rate"] if open_loop else p["max_concurrency"] for p in points]
        xlabel = "request rate (req/s)" if open_loop else "concurrency"
        metrics = ["e2el"] + (["ttft", "itl"] if doc["config"].get("stream") else [])
        return xs, xlabel, metrics, "output_throughput", "output tokens/s"
    return [p["depth"] for p in points], "pipeline depth", ["step"], "tokens_per_s", "tokens/s"


def plot(doc: dict[str, Any] | list[dict[str, Any]], path: str) -> None:
    """Latency percentiles (and throughput) against concurrency, request rate or depth.

    Several documents of the same kind and sweep axis (say, the same sweep through
    ``--client official``) share the axes: one line style per document.
    """
    check_plot_support()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    docs = doc if isinstance(doc, list) else [doc]
    if not docs:
        raise ValueError("nothing to plot")
    first = docs[0]
    _, xlabel, metrics, thr_key, thr_label = _axis(first)
    for other in docs[1:]:
        if other["kind"] != first["kind"] or _axis(other)[1] != xlabel:
            raise ValueError(
                f"cannot share axes: a {other['kind']} run against {_axis(other)[1]} "
                f"and a {first['kind']} run against {xlabel}"
            )
    pcts = first["config"].get("percentiles") or [50, 90, 99]
    labels = [f"{pct}" for pct in ["median", *(f"p{p:g}" for p in pcts if p != 50)]]
    colors = ["tab:blue", "tab:orange", "tab:red", "tab:purple", "tab:brown", "tab:gray"]
    styles = ["-", "--", ":", "-."]
    names = [d["endpoint"].get("client") or f"run {i + 1}" for i, d in enumerate(docs)]
    if len(set(names)) < len(names):
        names = [f"{n} ({i + 1})" for i, n in enumerate(names)]
    all_xs = [x for d in docs for x in _axis(d)[0]]
    log_x = len(set(all_xs)) > 1 and min(all_xs) > 0 and max(all_xs) / min(all_xs) >= 8

    fig, axes = plt.subplots(1, len(metrics) + 1, figsize=(5 * (len(metrics) + 1), 4))
    for ax, metric in zip(axes, metrics, strict=False):
        for d, (name, style) in enumerate(zip(names, styles * len(docs), strict=False)):
            xs, points = _axis(docs[d])[0], docs[d]["results"]
            for label, color in zip(labels, colors * len(labels), strict=False):
                ys = [p.get(f"{label}_{metric}_ms") for p in points]
                if all(y is None for y in ys):
                    continue
                ax.plot(
                    xs,
                    [float("nan") if y is None else y for y in ys],
                    marker="o",
                    linestyle=style,
                    color=color,
                    label=f"{name} {label}" if len(docs) > 1 else label,
                )
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{metric} (ms)")
        ax.set_title(f"{metric} latency")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        if log_x:
            ax.set_xscale("log", base=2)
    ax = axes[-1]
    for d, (name, style) in enumerate(zip(names, styles * len(docs), strict=False)):
        ax.plot(
            _axis(docs[d])[0],
            [p[thr_key] for p in docs[d]["results"]],
            marker="o",
            linestyle=style,
            color="tab:green",
            label=name,
        )
    if len(docs) > 1:
        ax.legend(fontsize="small")
    if log_x:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(thr_label)
    ax.set_title("throughput")
    ax.grid(True, alpha=0.3)
    via = " vs ".join(names)
    fig.suptitle(
        f"{first['kind']}: {first.get('model')} via {via} at {first['endpoint']['base_url']}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
