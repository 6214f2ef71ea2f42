"""A custom loss computed in Python: forward_backward_custom with loss = -mean(logprobs),
reporting its own metric (custom_perplexity), then optim_step.

The client runs a forward pass, evaluates the loss and its gradient with torch, and sends a
cross_entropy backward weighted by -dloss/dlogprobs, so the server trains on your loss.

Env: TINKER_BASE_MODEL, TINKER_PROMPT.
"""

from __future__ import annotations

import math
import time

import _common as c
import torch

import tinker_actors as tinker


def loss_fn(data: list[tinker.Datum], logprobs: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
    flat = torch.cat([lp.flatten() for lp in logprobs])
    loss = -flat.mean()
    return loss, {"custom_perplexity": math.exp(float(loss.detach()))}


def main() -> None:
    text = c.env_str("TINKER_PROMPT", "The quick brown fox jumps over the lazy dog.")
    with tinker.ServiceClient() as service:
        training = service.create_lora_training_client(base_model=c.base_model(), rank=16).result()
        datum = c.text_datum(tinker, training.get_tokenizer(), text)

        start = time.perf_counter()
        out = training.forward_backward_custom([datum], loss_fn).result()
        print(f"Custom loss completed in {(time.perf_counter() - start) * 1000:.0f} ms")
        training.optim_step(tinker.AdamParams(learning_rate=1e-4)).result()
        print("optim_step succeeded.")

        print(f"ForwardBackwardOutput: loss_fn_output_type={out.loss_fn_output_type}")
        print(f"  metrics: {out.metrics}")
        first = out.loss_fn_outputs[0]["logprobs"].tolist()
        print(f"  loss_fn_outputs[0]['logprobs'][:5]: {first[:5]} ... ({len(first)} values)")
        print(f"custom_perplexity={out.metrics['custom_perplexity']:.4f}")
        print("Success! Gradients were sent to the backend and optim_step is ready.")


if __name__ == "__main__":
    main()
