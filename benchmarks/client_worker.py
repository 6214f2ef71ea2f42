"""One benchmark client in a fresh interpreter: the same script for both SDKs.

``python -m benchmarks.client_worker --client {tinker_actors,official} --scenario NAME
--base-url URL --api-key KEY --params JSON`` runs one scenario once and prints one line
``BENCH_RESULT {json}``. The only difference between the two clients is the import:
``import tinker`` (official 0.38.0) or ``import tinker_actors as tinker``.

Timed regions exclude interpreter start-up, imports and building the user's data (both SDKs
get the same Python lists); they include everything the client does for the exchange.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import sys
import time
import traceback
from typing import Any

tinker: Any = None


def cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def thread_count() -> int | None:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return None


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q * (len(s) - 1))))
    return s[k]


class Region:
    """Wall and process CPU (all threads) of a timed region, and the garbage collector's
    share: its CPU seconds (``gc_s``, each collection timed on the thread that ran it) and
    its collections per generation (``gc_runs``)."""

    def __enter__(self) -> Region:
        self.gc_s = 0.0
        self.gc_runs = [0, 0, 0]
        self._gc_t0 = 0.0
        gc.callbacks.append(self._on_gc)
        self.t0, self.c0 = time.perf_counter(), cpu_s()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.t0
        self.cpu = cpu_s() - self.c0
        gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_t0 = time.thread_time()
        else:
            self.gc_s += time.thread_time() - self._gc_t0
            self.gc_runs[info["generation"]] += 1

    def gc_fields(self) -> dict[str, Any]:
        """The GC measures for a scenario's result."""
        return {"gc_s": self.gc_s, "gc_gen0_runs": self.gc_runs[0], "gc_gen2_runs": self.gc_runs[2]}


def service(a: argparse.Namespace) -> Any:
    return tinker.ServiceClient(base_url=a.base_url, api_key=a.api_key)


async def stats(a: argparse.Namespace) -> dict[str, Any]:
    """The server's own request counters (``GET /api/v1/_local/stats``; urllib in a thread)."""
    import urllib.request

    def get() -> dict[str, Any]:
        url = a.base_url + "/api/v1/_local/stats"
        req = urllib.request.Request(url, headers={"X-API-Key": a.api_key})
        with urllib.request.urlopen(req, timeout=10) as r:
            body = json.loads(r.read())
        body["cpu_s"] = body["process"]["cpu_s"]
        return body

    return await asyncio.to_thread(get)


def prompt(n: int) -> Any:
    return tinker.ModelInput.from_ints(list(range(1, n + 1)))


# --------------------------------------------------------------------------- scenarios
async def sc_sample(a: argparse.Namespace, p: dict[str, Any]) -> dict[str, Any]:
    """Closed loop: ``concurrency`` workers issue ``total`` sample_async calls."""
    svc = service(a)
    sc = await svc.create_sampling_client_async(base_model=p["base_model"])
    params = tinker.SamplingParams(max_tokens=p["max_tokens"], temperature=1.0)
    pr = (
        tinker.ModelInput.from_ints(p["prompt_ids"])
        if "prompt_ids" in p
        else prompt(p["prompt_tokens"])
    )
    for _ in range(p.get("warmup", 3)):
        await sc.sample_async(prompt=pr, num_samples=1, sampling_params=params)
    conc, total = p["concurrency"], p["total"]
    lat: list[float] = []
    tokens = 0
    left = total

    async def worker() -> None:
        nonlocal left, tokens
        while left > 0:
            left -= 1
            t0 = time.perf_counter()
            r = await sc.sample_async(prompt=pr, num_samples=1, sampling_params=params)
            lat.append(time.perf_counter() - t0)
            tokens += len(r.sequences[0].tokens)

    s0 = await stats(a)
    with Region() as reg:
        await asyncio.gather(*(worker() for _ in range(conc)))
    s1 = await stats(a)
    out = {
        "requests": len(lat),
        "wall_s": reg.wall,
        "cpu_s": reg.cpu,
        "req_per_s": len(lat) / reg.wall,
        "sampled_tok_per_s": tokens / reg.wall,
        "p50_ms": pct(lat, 0.5) * 1e3,
        "p99_ms": pct(lat, 0.99) * 1e3,
        "http_requests": s1["total"] - s0["total"],
        "server_cpu_s": s1["cpu_s"] - s0["cpu_s"],
        **reg.gc_fields(),
    }
    await close(svc)
    return out


def make_datums(n: int, tokens: int) -> list[Any]:
    import random

    rnd = random.Random(0)
    data = []
    for _ in range(n):
        toks = [rnd.randrange(0, 256) for _ in range(tokens)]
        data.append(
            tinker.Datum(
                model_input=tinker.ModelInput.from_ints(toks),
                loss_fn_inputs={"target_tokens": [*toks[1:], 0], "weights": [1.0] * tokens},
            )
        )
    return data


async def training_client(a: argparse.Namespace, p: dict[str, Any]) -> tuple[Any, Any]:
    svc = service(a)
    tc = await svc.create_lora_training_client_async(
        base_model=p["base_model"], rank=p.get("rank", 8)
    )
    return svc, tc


async def sc_fwdbwd(a: argparse.Namespace, p: dict[str, Any]) -> dict[str, Any]:
    """One forward_backward of ``datums`` x ``tokens``: chunk, encode, send, get the result."""
    svc, tc = await training_client(a, p)
    small = make_datums(2, 16)
    await (await tc.forward_backward_async(small, "cross_entropy"))  # warm the path
    with Region() as build:
        data = make_datums(p["datums"], p["tokens"])
    s0 = await stats(a)
    with Region() as reg:
        fut = await tc.forward_backward_async(data, "cross_entropy")
    submit_wall, submit_cpu = reg.wall, reg.cpu
    with Region() as reg2:
        res = await fut
    s1 = await stats(a)
    assert len(res.loss_fn_outputs) == p["datums"], len(res.loss_fn_outputs)
    body = s1["body_bytes"] - s0["body_bytes"]
    wall, cpu = submit_wall + reg2.wall, submit_cpu + reg2.cpu
    out = {
        "wall_s": wall,
        "cpu_s": cpu,
        "submit_wall_s": submit_wall,
        "submit_cpu_s": submit_cpu,
        "build_datums_cpu_s": build.cpu,
        "body_mb": body / 1e6,
        "mb_per_s": body / 1e6 / wall,
        "tokens_per_s": p["datums"] * p["tokens"] / wall,
        "http_requests": s1["total"] - s0["total"],
        "server_cpu_s": s1["cpu_s"] - s0["cpu_s"],
        "requests_by_path": {
            k: v - s0["requests"].get(k, 0)
            for k, v in s1["requests"].items()
            if v - s0["requests"].get(k, 0)
        },
    }
    await close(svc)
    return out


async def sc_train(a: argparse.Namespace, p: dict[str, Any]) -> dict[str, Any]:
    """Pipelined loop: submit step k (forward_backward + optim_step), then await step k-1."""
    svc, tc = await training_client(a, p)
    data = make_datums(p["datums"], p["tokens"])
    adam = tinker.AdamParams(learning_rate=1e-4)

    async def submit() -> tuple[Any, Any]:
        fb = await tc.forward_backward_async(data, "cross_entropy")
        op = await tc.optim_step_async(adam)
        return fb, op

    for _ in range(p.get("warmup", 2)):
        fb, op = await submit()
        await fb
        await op
    steps = p["steps"]
    s0 = await stats(a)
    with Region() as reg:
        prev = None
        for _ in range(steps):
            cur = await submit()
            if prev is not None:
                await prev[0]
                await prev[1]
            prev = cur
        await prev[0]
        await prev[1]
    s1 = await stats(a)
    n = s1["total"] - s0["total"]
    out = {
        "steps": steps,
        "wall_s": reg.wall,
        "cpu_s": reg.cpu,
        "steps_per_s": steps / reg.wall,
        "tokens_per_s": steps * p["datums"] * p["tokens"] / reg.wall,
        "http_requests": n,
        "requests_per_step": n / steps,
        "requests_by_path": {
            k: round((v - s0["requests"].get(k, 0)) / steps, 2)
            for k, v in s1["requests"].items()
            if v - s0["requests"].get(k, 0)
        },
        "server_cpu_s": s1["cpu_s"] - s0["cpu_s"],
    }
    await close(svc)
    return out


async def sc_idle(a: argparse.Namespace, p: dict[str, Any]) -> dict[str, Any]:
    """Hold a session and a sampling client, doing nothing, for ``seconds``."""
    svc = service(a)
    sc = await svc.create_sampling_client_async(base_model=p["base_model"])
    params = tinker.SamplingParams(max_tokens=4)
    await sc.sample_async(prompt=prompt(8), num_samples=1, sampling_params=params)
    rss0 = rss_mb()
    s0 = await stats(a)
    with Region() as reg:
        await asyncio.sleep(p["seconds"])
    s1 = await stats(a)
    out = {
        "seconds": reg.wall,
        "cpu_s": reg.cpu,
        "cpu_pct": 100 * reg.cpu / reg.wall,
        "rss_mb": rss_mb(),
        "rss_growth_mb": rss_mb() - rss0,
        "http_requests": s1["total"] - s0["total"],
        "requests_by_path": {
            k: v - s0["requests"].get(k, 0)
            for k, v in s1["requests"].items()
            if v - s0["requests"].get(k, 0)
        },
        "threads": thread_count(),
    }
    await close(svc)
    return out


async def close(svc: Any) -> None:
    """Close the ServiceClient if the SDK offers it (bounded; outside timed regions)."""
    for name in ("close_async", "aclose"):
        fn = getattr(svc, name, None)
        if fn is not None:
            try:
                await asyncio.wait_for(fn(), 10)
            except Exception:
                pass
            return
    fn = getattr(svc, "close", None)
    if fn is not None:
        try:
            await asyncio.wait_for(asyncio.to_thread(fn), 10)
        except Exception:
            pass


SCENARIOS = {
    "sample": sc_sample,
    "fwdbwd": sc_fwdbwd,
    "train": sc_train,
    "idle": sc_idle,
    "torch_train": sc_train,
    "torch_sample": sc_sample,
}


def main() -> None:
    global tinker
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--client", required=True, choices=("tinker_actors", "tinker_actors_caller", "official")
    )
    ap.add_argument("--scenario", required=True, choices=sorted(SCENARIOS))
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--api-key", required=True)
    ap.add_argument("--params", default="{}")
    a = ap.parse_args()
    p = json.loads(a.params)
    t_import = time.perf_counter()
    if a.client == "official":
        import tinker as mod
    else:
        if a.client == "tinker_actors_caller":  # the opt-in loop-bound mode
            os.environ["TINKER_ACTORS_LOOP"] = "caller"
        import tinker_actors as mod
    tinker = mod
    # tinker_actors loads its public names on first use: touch them here, so "import" means
    # the same for both SDKs (the official package loads everything at import)
    _ = (mod.ServiceClient, mod.SamplingClient, mod.TrainingClient, mod.types.ModelInput)
    import_s = time.perf_counter() - t_import
    rss_after_import = rss_mb()
    try:
        out = asyncio.run(SCENARIOS[a.scenario](a, p))
        out["ok"] = True
    except BaseException as exc:  # reported, not raised: one failed client is one table cell
        traceback.print_exc()
        out = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:400]}
    out.update(import_s=import_s, rss_after_import_mb=rss_after_import, peak_rss_mb=peak_rss_mb())
    print("BENCH_RESULT " + json.dumps(out), flush=True)
    sys.stdout.flush()
    os._exit(0)  # do not wait on SDK background threads


if __name__ == "__main__":
    main()
