"""The cost of the event catalogue on scenario 1 (concurrent ``sample_async``, null engine).

``python -m benchmarks.bench_events [--concurrency 1000] [--total 3000] [--reps 3]``

Three modes, each client in a fresh interpreter against one local server in its own process
(``benchmarks.server_launcher``), modes rotated between repetitions:

- ``off``: ``TINKER_ACTORS_EVENTS=off`` (every emit site sees ``events.ON`` false);
- ``none``: events on, nobody listening (the default; also ``events.ON`` false);
- ``metrics``: ``import tinker_actors.metrics`` (its listener counts every request).

Telemetry is off in all three (``TINKER_TELEMETRY=0``) so only the catalogue differs.
Reports medians of client CPU seconds, wall seconds and requests per second, as ratios to
``off``. Numbers are recorded in docs/observability.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODES = ("off", "none", "metrics")


def worker(a: argparse.Namespace) -> None:
    if a.mode == "off":
        os.environ["TINKER_ACTORS_EVENTS"] = "off"
    import tinker_actors

    from . import client_worker

    if a.mode == "metrics":
        from tinker_actors import metrics
    client_worker.tinker = tinker_actors
    p = {
        "base_model": "tinker-actors/byte-1m",
        "prompt_tokens": 16,
        "max_tokens": 16,
        "concurrency": a.concurrency,
        "total": a.total,
    }
    out = asyncio.run(client_worker.sc_sample(a, p))
    from tinker_actors import events

    out["events_on"] = events.ON
    if a.mode == "metrics":
        out["metrics_requests_total"] = metrics.snapshot()["counters"].get("requests_total", 0)
    print(json.dumps(out), flush=True)


def run_mode(mode: str, base_url: str, api_key: str, a: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "TINKER_TELEMETRY": "0"}
    env.pop("TINKER_ACTORS_EVENTS", None)
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.bench_events",
        "--worker",
        "--mode",
        mode,
        "--base-url",
        base_url,
        "--api-key",
        api_key,
        "--concurrency",
        str(a.concurrency),
        "--total",
        str(a.total),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} worker failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mode", choices=MODES, default="none")
    ap.add_argument("--base-url", default="")
    ap.add_argument("--api-key", default="")
    ap.add_argument("--concurrency", type=int, default=1000)
    ap.add_argument("--total", type=int, default=3000)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    if a.worker:
        worker(a)
        return
    from .__main__ import API_KEY, start_server

    with tempfile.TemporaryDirectory(prefix="bench-events-") as tmp:
        server = start_server("null", Path(tmp))
        try:
            results: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
            for rep in range(a.reps):
                order = MODES[rep % 3 :] + MODES[: rep % 3]
                for mode in order:
                    r = run_mode(mode, server.base_url, API_KEY, a)
                    results[mode].append(r)
                    print(
                        f"rep {rep + 1} {mode:8s} cpu {r['cpu_s']:.3f} s  wall {r['wall_s']:.3f} s"
                        f"  {r['req_per_s']:.0f} req/s  events.ON={r['events_on']}",
                        flush=True,
                    )
        finally:
            server.stop()
    med = {
        m: {k: statistics.median(r[k] for r in rs) for k in ("cpu_s", "wall_s", "req_per_s")}
        for m, rs in results.items()
    }
    print(f"\n{a.concurrency} concurrent sample_async, {a.total} requests, {a.reps} reps (medians)")
    print("| mode | client CPU s | wall s | req/s | CPU vs off | wall vs off |")
    print("|---|---|---|---|---|---|")
    for m in MODES:
        d = med[m]
        print(
            f"| {m} | {d['cpu_s']:.3f} | {d['wall_s']:.3f} | {d['req_per_s']:.0f} | "
            f"{d['cpu_s'] / med['off']['cpu_s']:.3f} | {d['wall_s'] / med['off']['wall_s']:.3f} |"
        )
    counted = [r.get("metrics_requests_total") for r in results["metrics"]]
    print(f"metrics mode counted requests_total = {counted}")


if __name__ == "__main__":
    main()
