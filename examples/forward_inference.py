"""A forward pass without backward (TrainingClient.forward): the per-token logprobs of a
text under the model, as a numpy array, with simple statistics.

Env: TINKER_BASE_MODEL, TINKER_PROMPT.
"""

from __future__ import annotations

import time

import _common as c
import numpy as np

import tinker_actors as tinker


def main() -> None:
    text = c.env_str("TINKER_PROMPT", "Hello from tinker_actors!")
    with tinker.ServiceClient() as service:
        training = service.create_lora_training_client(base_model=c.base_model(), rank=8).result()
        datum = c.text_datum(tinker, training.get_tokenizer(), text)

        start = time.perf_counter()
        out = training.forward([datum], "cross_entropy").result()
        print(f"Forward pass completed in {(time.perf_counter() - start) * 1000:.0f}ms")
        print(f"Output type: {out.loss_fn_output_type}")
        print(f"Metrics: {out.metrics}")

        logprobs = np.asarray(out.loss_fn_outputs[0]["logprobs"].to_numpy(), dtype=np.float32)
        print(f"Logprobs tensor: shape={logprobs.shape} dtype={logprobs.dtype}")
        print(f"First 5 values: {np.round(logprobs[:5], 4).tolist()}")
        print(
            f"Stats: mean={logprobs.mean():.4f} min={logprobs.min():.4f} max={logprobs.max():.4f}"
        )


if __name__ == "__main__":
    main()
