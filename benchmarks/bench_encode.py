"""Encode a forward_backward of 1,000,000 tokens in 1,000 datums: ours vs the official SDK.

Run: ``.venv/bin/python benchmarks/bench_encode.py [--datums N] [--tokens-per-datum M]``.
Both sides start from the same user data (Python lists of token ids, plus list
``target_tokens`` and ``weights`` converted by each library's Datum constructor),
build their Datum objects outside the timed region, then time only the body encode
(the bytes that go on the wire). Prints the best and median of several runs and the
ratio official / ours (> 1 means we are faster). A script, not a test.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def _time(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datums", type=int, default=1000)
    ap.add_argument("--tokens-per-datum", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    raw = []
    for _ in range(args.datums):
        toks = rng.integers(0, 150_000, args.tokens_per_datum).tolist()
        raw.append((toks, [*toks[1:], 0], [1.0] * args.tokens_per_datum))

    from tinker_actors import codec
    from tinker_actors import types as ours

    our_data = [
        ours.Datum(
            model_input=ours.ModelInput.from_ints(t),
            loss_fn_inputs={"target_tokens": tt, "weights": w},
        )
        for t, tt, w in raw
    ]

    def encode_ours() -> bytes:
        return codec.encode_forward_backward_request(
            "sess:train:0", 1, our_data, "cross_entropy", None, False
        )

    results: dict[str, list[float]] = {}
    sizes: dict[str, int] = {}
    encode_ours()
    results["tinker_actors"] = _time(encode_ours, args.repeat)
    sizes["tinker_actors"] = len(encode_ours())

    try:
        from tinker import types as official
        from tinker.proto.request_conv import forward_backward_request_to_proto
    except ImportError:
        official = None
    if official is not None:
        off_data = [
            official.Datum(
                model_input=official.ModelInput.from_ints(t),
                loss_fn_inputs={"target_tokens": tt, "weights": w},
            )
            for t, tt, w in raw
        ]
        req = official.ForwardBackwardRequest(
            forward_backward_input=official.ForwardBackwardInput(
                data=off_data, loss_fn="cross_entropy"
            ),
            model_id="sess:train:0",
            seq_id=1,
        )

        def encode_official() -> bytes:
            return forward_backward_request_to_proto(req).SerializeToString()

        encode_official()
        results["official tinker 0.38"] = _time(encode_official, args.repeat)
        sizes["official tinker 0.38"] = len(encode_official())

    n_tokens = args.datums * args.tokens_per_datum
    print(f"forward_backward encode: {args.datums} datums, {n_tokens:,} tokens, {args.repeat} runs")
    for name, ts in results.items():
        print(
            f"  {name:22s} best {min(ts) * 1e3:8.2f} ms   median {statistics.median(ts) * 1e3:8.2f} ms"
            f"   body {sizes[name]:,} B"
        )
    if len(results) == 2:
        o, t = results["official tinker 0.38"], results["tinker_actors"]
        print(
            f"  ratio official/ours: best {min(o) / min(t):.2f}x, "
            f"median {statistics.median(o) / statistics.median(t):.2f}x"
        )
    else:
        print("  (official SDK not installed: no ratio)")


if __name__ == "__main__":
    main()
