"""Recipe: thousands of sample requests in flight at once, with a progress bar, under
backpressure.

Every request is submitted up front (``sample()`` returns a future at once); the client's
sampling admission meters them out (400 concurrent submits, a byte budget), and when the
server's queue is full it answers 429: the client pauses dispatch, throttles for a while and
resends the same request, so nothing is lost and nothing is duplicated. The local server
holds 2048 requests per sampler by default and drains fast, so a 429 is rare there; a
server with a small queue (``LocalServer(sample_queue_depth=16)``, as the test runs it)
pushes back on almost every burst.

Env: TINKER_BASE_MODEL, TINKER_NUM_REQUESTS (3000), TINKER_MAX_TOKENS (8).
Prints a progress line every 10 % and ``RESULT completed=N failed=N tokens=N 429s=N``.
"""

from __future__ import annotations

import asyncio
import time

import _common as c

import tinker_actors as tinker
from tinker_actors import metrics


def bar(done: int, total: int, width: int = 30) -> str:
    filled = round(width * done / total)
    return "#" * filled + "." * (width - filled)


async def main() -> None:
    total = c.env_int("TINKER_NUM_REQUESTS", 3000)
    params = tinker.SamplingParams(max_tokens=c.env_int("TINKER_MAX_TOKENS", 8), temperature=1.0)
    service = tinker.ServiceClient()
    sampler = await service.create_sampling_client(base_model=c.base_model())
    tok = sampler.get_tokenizer()
    prompts = [
        tinker.ModelInput.from_ints(tok.encode(f"request {i}:", add_special_tokens=False))
        for i in range(total)
    ]

    started = time.perf_counter()
    futures = [asyncio.ensure_future(sampler.sample(p, 1, params)) for p in prompts]
    print(
        f"{total} requests submitted in {time.perf_counter() - started:.2f}s; waiting for results",
        flush=True,
    )

    done = failed = tokens = 0
    next_report = 0.1
    for fut in asyncio.as_completed(futures):
        try:
            res = await fut
            tokens += len(res.sequences[0].tokens)
        except tinker.TinkerError as exc:
            failed += 1
            print(f"request failed: {exc!r}")
        done += 1
        if done / total >= next_report or done == total:
            snap = metrics.snapshot()
            in_flight = snap["gauges"].get("sampling_in_flight", 0)
            print(
                f"[{bar(done, total)}] {done}/{total}  in flight {in_flight:g}  "
                f"429s {snap['counters'].get('requests_429', 0):g}  {time.perf_counter() - started:.1f}s",
                flush=True,
            )
            next_report += 0.1
    elapsed = time.perf_counter() - started
    n429 = metrics.snapshot()["counters"].get("requests_429", 0)
    print(
        f"{done - failed} samples ({tokens} tokens) in {elapsed:.1f}s: {(done - failed) / elapsed:.0f} samples/s"
    )
    print(f"RESULT completed={done - failed} failed={failed} tokens={tokens} 429s={n429:g}")
    await service.aclose()


if __name__ == "__main__":
    asyncio.run(main())
