"""Time to first token with ``sample_stream`` against total time with ``sample``.

Run: ``.venv/bin/python benchmarks/bench_stream.py [--max-tokens N] [--repeat R]``.
Starts the local server (torch engine, ``tinker-actors/byte-1m``) in its own process
(``benchmarks.server_launcher``; ``--in-process`` shares the client's process and GIL
instead), then for 1 and 16 concurrent requests measures, per request: the time to the first streamed token, the time
to the end of the stream, and the time to the whole result of ``sample`` (same prompt, same
parameters, same seeds). Prints medians over the requests of every repetition. A script, not
a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


async def _stream_one(sampler, prompt, params) -> tuple[float, float, int]:
    t0 = time.perf_counter()
    first = None
    n = 0
    async for chunk in sampler.sample_stream(prompt, params, 1):
        if chunk.event_type == "token":
            n += 1
            if first is None:
                first = time.perf_counter() - t0
    return (first if first is not None else float("nan")), time.perf_counter() - t0, n


async def _sample_one(sampler, prompt, params) -> tuple[float, int]:
    t0 = time.perf_counter()
    res = await sampler.sample(prompt, 1, params)
    return time.perf_counter() - t0, len(res.sequences[0].tokens)


async def run(
    max_tokens: int, repeat: int, concurrency: list[int], model: str, base_url: str, key: str
) -> None:
    import tinker_actors as tinker
    from tinker_actors import types

    service = tinker.ServiceClient(base_url=base_url, api_key=key)
    sampler = await service.create_sampling_client_async(base_model=model)
    prompt = types.ModelInput.from_ints(list(b"The quick brown fox"))

    def params(seed: int) -> types.SamplingParams:
        return types.SamplingParams(max_tokens=max_tokens, seed=seed, stop=[])

    # warm-up: load the sampler, tokenizer and kernels
    await _sample_one(sampler, prompt, params(0))
    await _stream_one(sampler, prompt, params(0))
    print(f"model={model} max_tokens={max_tokens} repeat={repeat}")
    print(f"{'conc':>4} {'stream TTFT ms':>15} {'stream total ms':>16} {'sample ms':>10}")
    for c in concurrency:
        ttft, stream_total, sample_total = [], [], []
        for r in range(repeat):
            seeds = [r * 1000 + i for i in range(c)]
            outs = await asyncio.gather(*(_stream_one(sampler, prompt, params(s)) for s in seeds))
            ttft += [o[0] for o in outs]
            stream_total += [o[1] for o in outs]
            assert all(o[2] == max_tokens for o in outs)
            res = await asyncio.gather(*(_sample_one(sampler, prompt, params(s)) for s in seeds))
            sample_total += [o[0] for o in res]
        print(
            f"{c:>4} {statistics.median(ttft) * 1e3:>15.1f} "
            f"{statistics.median(stream_total) * 1e3:>16.1f} "
            f"{statistics.median(sample_total) * 1e3:>10.1f}"
        )
    await service.aclose()


async def in_process(args: argparse.Namespace) -> None:
    from tinker_actors.server import LocalServer

    with tempfile.TemporaryDirectory() as d:
        async with LocalServer(engine="torch", data_dir=d) as srv:
            await run(
                args.max_tokens,
                args.repeat,
                args.concurrency,
                args.model,
                srv.base_url,
                srv.api_key,
            )


def own_process(args: argparse.Namespace) -> None:
    cmd = [sys.executable, "-m", "benchmarks.server_launcher", "--engine", "torch"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        asyncio.run(
            run(
                args.max_tokens,
                args.repeat,
                args.concurrency,
                args.model,
                info["base_url"],
                info["api_key"],
            )
        )
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--model", default="tinker-actors/byte-1m")
    ap.add_argument("--in-process", action="store_true", help="server on the client's loop")
    args = ap.parse_args()
    if args.in_process:
        asyncio.run(in_process(args))
    else:
        own_process(args)


if __name__ == "__main__":
    main()
