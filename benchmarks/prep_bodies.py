"""Prebuilds the floor's forward_backward bodies (run in its own process, outside any timing).

``python -m benchmarks.prep_bodies --datums N --tokens M --out DIR`` writes one ``chunk_XXX.bin``
per chunk: a ``ForwardBackwardRequest`` encoded by the official SDK's own converter, without
``model_id`` and ``seq_id`` (the floor prepends those two protobuf fields at send time).
Chunking follows the official SDK (<= 1024 datums and <= 5 MB estimated bytes per chunk).
Same data as ``client_worker.make_datums``.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datums", type=int, required=True)
    ap.add_argument("--tokens", type=int, required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    import tinker
    from tinker import types
    from tinker.lib.public_interfaces.training_client import _estimate_datum_bytes_count_proto
    from tinker.proto.request_conv import forward_backward_request_to_proto

    rnd = random.Random(0)
    data = []
    for _ in range(a.datums):
        toks = [rnd.randrange(0, 256) for _ in range(a.tokens)]
        data.append(
            tinker.Datum(
                model_input=tinker.ModelInput.from_ints(toks),
                loss_fn_inputs={"target_tokens": [*toks[1:], 0], "weights": [1.0] * a.tokens},
            )
        )
    max_bytes, max_len = 5_000_000, 1024
    chunks: list[list[object]] = [[]]
    size = 0
    for d in data:
        est = _estimate_datum_bytes_count_proto(d)
        if chunks[-1] and (size + est > max_bytes or len(chunks[-1]) == max_len):
            chunks.append([])
            size = 0
        chunks[-1].append(d)
        size += est
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    for i, chunk in enumerate(chunks):
        req = types.ForwardBackwardRequest(
            forward_backward_input=types.ForwardBackwardInput(data=chunk, loss_fn="cross_entropy"),
            model_id="",
            seq_id=0,
        )
        (out / f"chunk_{i:03d}.bin").write_bytes(
            forward_backward_request_to_proto(req).SerializeToString()
        )
    print(len(chunks))


if __name__ == "__main__":
    main()
