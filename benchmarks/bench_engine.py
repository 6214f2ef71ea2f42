"""Torch engine throughput against the physical floor of a bare torch loop.

Training: tokens/s of one forward_backward + optim_step through the Engine, against a bare loop
(the same base module, the same LoRA tensors applied directly, torch AdamW, the same batch).
Sampling: sampled tokens/s with 1 and with 64 concurrent jobs in one ``sample`` call. The jobs
are what the server's sampling scenarios send (``benchmarks/client_worker.py``:
``SamplingParams(max_tokens=64, temperature=1.0)``, whose default stop ends a sequence at EOS),
so "the engine alone" and "through the server" count the same work; they are seeded here (the
same tokens every run). ``--no-eos`` samples every sequence to max_tokens instead. The same 64
jobs also run through the engine's continuous batch (the path the server's sampler lane
drives), all admitted at once.

    .venv/bin/python benchmarks/bench_engine.py [--model tinker-actors/byte-1m] [--steps 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from tinker_actors.server.engine.base import AdamSpec, DatumArrays, LoraSpec, SampleJob
from tinker_actors.server.engine.lora import Adapter, use_adapter
from tinker_actors.server.engine.torch_engine import TorchEngine


def make_batch(n: int, length: int) -> list[DatumArrays]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        toks = rng.integers(0, 256, length + 1).astype(np.int64)
        out.append(
            DatumArrays(
                toks[:-1],
                {"target_tokens": toks[1:], "weights": np.ones(length, np.float32)},
            )
        )
    return out


def bench_engine_train(engine, model, data, steps) -> float:
    engine.create_model("bench", model, LoraSpec(rank=32, seed=0))
    adam = AdamSpec(learning_rate=1e-4)
    for _ in range(3):
        engine.forward_backward("bench", data, "cross_entropy", {}, False)
        engine.optim_step("bench", adam)
    t = time.perf_counter()
    for _ in range(steps):
        engine.forward_backward("bench", data, "cross_entropy", {}, False)
        engine.optim_step("bench", adam)
    return (time.perf_counter() - t) / steps


def bench_bare_train(engine, model, data, steps) -> float:
    """The floor: the same module and LoRA, no validation, no numpy round trips."""
    base = engine._base(model)
    adapter = Adapter.init(base.lora_targets(), 32, 0, True, True, True, base.device)
    opt = torch.optim.AdamW(
        adapter.parameters(), lr=1e-4, betas=(0.9, 0.95), eps=1e-12, foreach=True
    )
    tokens = torch.from_numpy(np.stack([d.tokens for d in data]))
    targets = torch.from_numpy(np.stack([d.inputs["target_tokens"] for d in data]))

    def step():
        with use_adapter(adapter.pairs):
            logits = base.module(tokens)
            loss = torch.nn.functional.cross_entropy(
                logits.flatten(0, 1), targets.flatten(), reduction="sum"
            )
            loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t) / steps


def sample_jobs(jobs_n: int, max_tokens: int, stop_at_eos: bool) -> list[SampleJob]:
    """The server scenario's requests (prompt, max_tokens, temperature 1), seeded 0..n-1."""
    prompt = np.array([257, *b"Once upon a time"], dtype=np.int64)
    return [
        SampleJob(
            prompt=prompt, max_tokens=max_tokens, temperature=1.0, seed=i, stop_at_eos=stop_at_eos
        )
        for i in range(jobs_n)
    ]


def bench_sample(engine, model, jobs_n, max_tokens, stop_at_eos: bool = True) -> float:
    """Sampled tokens/s of one ``engine.sample`` call with ``jobs_n`` jobs: the server
    scenario's requests (prompt, max_tokens, temperature 1, EOS stops them), seeded."""
    engine.create_sampler("bench-s", model, None)
    jobs = sample_jobs(jobs_n, max_tokens, stop_at_eos)
    engine.sample("bench-s", jobs[:1])
    t = time.perf_counter()
    out = engine.sample("bench-s", jobs)
    dt = time.perf_counter() - t
    return sum(len(s.tokens) for o in out for s in o.sequences) / dt


def bench_continuous(engine, model, jobs_n, max_tokens, stop_at_eos: bool = True) -> float:
    """``bench_sample``'s jobs through the engine's continuous batch (what the server's lane
    drives), all admitted at once and stepped to the end: the server's engine path, alone."""
    engine.create_sampler("bench-c", model, None)
    jobs = sample_jobs(jobs_n, max_tokens, stop_at_eos)

    batch = engine.continuous_sampler("bench-c")  # kept, as a busy lane keeps its batch

    def run() -> tuple[float, int]:
        t = time.perf_counter()
        got = dict(batch.admit([(job, i) for i, job in enumerate(jobs)]))
        while batch.jobs:
            got.update(batch.step())
        tokens = sum(len(s.tokens) for o in got.values() for s in o.sequences)
        return time.perf_counter() - t, tokens

    run()  # sizes the batch's row cache
    dt, n = run()
    return n / dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tinker-actors/byte-1m")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--no-eos", action="store_true", help="sample every sequence to max_tokens")
    args = ap.parse_args()
    engine = TorchEngine(cache_dir=tempfile.mkdtemp())
    data = make_batch(args.batch, args.length)
    ntok = args.batch * args.length
    t_engine = bench_engine_train(engine, args.model, data, args.steps)
    t_bare = bench_bare_train(engine, args.model, data, args.steps)
    s1 = bench_sample(engine, args.model, 1, args.max_tokens, not args.no_eos)
    s64 = bench_sample(engine, args.model, 64, args.max_tokens, not args.no_eos)
    c64 = bench_continuous(engine, args.model, 64, args.max_tokens, not args.no_eos)
    print(
        f"model {args.model}, torch threads {torch.get_num_threads()}, "
        f"train batch {args.batch}x{args.length} tokens, LoRA rank 32"
    )
    print(f"{'measure':<34}{'value':>14}{'ratio':>10}")
    print(f"{'train tokens/s, bare torch loop':<34}{ntok / t_bare:>14.0f}{1.0:>10.2f}")
    print(f"{'train tokens/s, engine':<34}{ntok / t_engine:>14.0f}{t_bare / t_engine:>10.2f}")
    print(f"{'train step ms, engine':<34}{t_engine * 1e3:>14.1f}")
    print(f"{'sampled tokens/s, 1 job':<34}{s1:>14.0f}{1.0:>10.2f}")
    print(f"{'sampled tokens/s, 64 jobs':<34}{s64:>14.0f}{s64 / s1:>10.2f}")
    print(f"{'  continuous batch, 64 jobs':<34}{c64:>14.0f}{c64 / s1:>10.2f}")


if __name__ == "__main__":
    main()
