"""Client metrics (tinker_actors.metrics): reset, one sample, then the snapshot: request
counters and latency percentiles that the library keeps without any user code.

Env: TINKER_BASE_MODEL, TINKER_PROMPT, TINKER_MAX_TOKENS (32), TINKER_TEMPERATURE (0.7),
TINKER_NUM_SAMPLES (1), TINKER_SAMPLE_TIMEOUT (ms, 30000).
"""

from __future__ import annotations

import _common as c

import tinker_actors as tinker
from tinker_actors import metrics


def main() -> None:
    prompt = c.env_str("TINKER_PROMPT", "Hello from tinker_actors!")
    metrics.reset()
    with tinker.ServiceClient() as service:
        sampler = service.create_sampling_client(base_model=c.base_model()).result()
        ids = sampler.get_tokenizer().encode(prompt, add_special_tokens=False)
        params = tinker.SamplingParams(
            max_tokens=c.env_int("TINKER_MAX_TOKENS", 32),
            temperature=c.env_float("TINKER_TEMPERATURE", 0.7),
        )
        res = sampler.sample(
            tinker.ModelInput.from_ints(ids), c.env_int("TINKER_NUM_SAMPLES", 1), params
        )
        res.result(timeout=c.env_int("TINKER_SAMPLE_TIMEOUT", 30_000) / 1000)
    metrics.flush()
    snap = metrics.snapshot()

    print("=== Metrics Snapshot ===")
    print("Counters:")
    for name, value in sorted(snap["counters"].items()):
        if "{" not in name:  # the totals; per-route series are keyed name{route=...}
            print(f"  {name}: {value:g}")
    print("Latency (ms):")
    lat = snap["histograms"].get("request_duration_ms")
    if not lat or not lat["count"]:
        print("  no data yet")
    else:
        print(
            f"  count={lat['count']} mean={lat['mean']:.2f} p50={lat['p50']:.2f} "
            f"p95={lat['p95']:.2f} p99={lat['p99']:.2f}"
        )
    per_route = {k: v for k, v in snap["counters"].items() if k.startswith("requests_total{")}
    print("Requests by route:")
    for name, value in sorted(per_route.items()):
        print(f"  {name.removeprefix('requests_total')}: {value:g}")


if __name__ == "__main__":
    main()
