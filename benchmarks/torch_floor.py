"""The torch-engine floor, in its own process: ``benchmarks/bench_engine.py``'s bare loop.

Prints ``BENCH_RESULT {json}`` with training tokens/s of the bare torch loop (same built-in
model, same LoRA rank, same batch shape) and of the engine called in-process (no HTTP), and
sampled tokens/s of one ``engine.sample`` call with 1 and with N jobs (the server scenario's
requests, which EOS ends; ``..._no_eos_...``: every sequence run to max_tokens). All of it
comes from ``bench_engine.py`` (owned by the engine engineer); this file only calls it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import traceback

from benchmarks.client_worker import Region, peak_rss_mb


def run(p: dict) -> dict:
    from benchmarks import bench_engine as be
    from tinker_actors.server.engine.torch_engine import TorchEngine

    engine = TorchEngine(cache_dir=tempfile.mkdtemp(prefix="tinker-bench-engine-"))
    data = be.make_batch(p["datums"], p["tokens"])
    ntok = p["datums"] * p["tokens"]
    out: dict = {}
    with Region() as reg:
        t_bare = be.bench_bare_train(engine, p["base_model"], data, p["steps"])
    out.update(
        bare_train_tokens_per_s=ntok / t_bare, bare_train_step_ms=t_bare * 1e3, bare_cpu_s=reg.cpu
    )
    t_eng = be.bench_engine_train(engine, p["base_model"], data, p["steps"])
    out.update(engine_train_tokens_per_s=ntok / t_eng, engine_train_step_ms=t_eng * 1e3)
    for n in p["sample_concurrency"]:
        # the server scenario's requests (EOS ends a sequence), and every sequence run to
        # max_tokens (work the server is never asked for: for reference only)
        out[f"engine_sample_tok_per_s_{n}"] = be.bench_sample(
            engine, p["base_model"], n, p["max_tokens"]
        )
        out[f"engine_sample_no_eos_tok_per_s_{n}"] = be.bench_sample(
            engine, p["base_model"], n, p["max_tokens"], stop_at_eos=False
        )
        # the same jobs through the continuous batch the server's lane drives (for reference)
        out[f"engine_continuous_tok_per_s_{n}"] = be.bench_continuous(
            engine, p["base_model"], n, p["max_tokens"]
        )
    import torch

    out["torch_threads"] = torch.get_num_threads()
    return out


def run_sample(p: dict) -> dict:
    """The floor of one torch sampling scenario, run beside it in every repetition: the
    scenario's ``concurrency`` jobs in one in-process ``engine.sample`` call, on an engine
    warmed with the same call (the server it is compared with is warm too); the median of
    three such calls, as the machine's speed wanders even within a repetition."""
    from benchmarks import bench_engine as be
    from tinker_actors.server.engine.torch_engine import TorchEngine

    engine = TorchEngine(cache_dir=tempfile.mkdtemp(prefix="tinker-bench-engine-"))
    n, model = p["concurrency"], p["base_model"]
    be.bench_sample(engine, model, n, p["max_tokens"])  # warm-up: the same shape
    rates = sorted(be.bench_sample(engine, model, n, p["max_tokens"]) for _ in range(3))
    return {"sampled_tok_per_s": rates[1]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", default="{}")
    ap.add_argument("--scenario", default="torch_floor")
    ap.add_argument("--base-url", default="")
    ap.add_argument("--api-key", default="")
    ap.add_argument("--client", default="bare_torch")
    a = ap.parse_args()
    try:
        params = json.loads(a.params)
        out = run_sample(params) if a.scenario == "torch_sample" else run(params)
        out["ok"] = True
    except BaseException as exc:
        traceback.print_exc()
        out = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:400]}
    out["peak_rss_mb"] = peak_rss_mb()
    print("BENCH_RESULT " + json.dumps(out), flush=True)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
