"""Regularizers on a real training step: forward_backward_custom with a base NLL plus weighted
penalties (L1, L2, elastic net, entropy, KL against a reference, consistency, orthogonality,
gradient penalty), with gradient norms tracked; every term shapes the backward weights.

Env: TINKER_BASE_MODEL, TINKER_PROMPT.
"""

from __future__ import annotations

import time

import _common as c
import numpy as np
import torch

import tinker_actors as tinker
from tinker_actors.regularizers import (
    L1,
    L2,
    Consistency,
    ElasticNet,
    Entropy,
    GradientPenalty,
    KLDivergence,
    Orthogonality,
    RegularizerSpec,
)


def base_nll(data: list, logprobs: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
    nll = -torch.cat([lp.flatten() for lp in logprobs]).mean()
    return nll, {"base_nll": float(nll.detach()), "custom_perplexity": float(nll.detach().exp())}


def total(logprobs: list[torch.Tensor]) -> torch.Tensor:
    """The function whose gradient norm GradientPenalty keeps near 1 (it gets the list)."""
    return torch.cat([lp.flatten() for lp in logprobs]).sum()


def main() -> None:
    text = c.env_str("TINKER_PROMPT", "The quick brown fox jumps over the lazy dog.")
    with tinker.ServiceClient() as service:
        training = service.create_lora_training_client(base_model=c.base_model(), rank=16).result()
        datum = c.text_datum(tinker, training.get_tokenizer(), text)
        # The reference and paired logprobs are the model's own, from one forward pass.
        ref = training.forward([datum], "cross_entropy").result().loss_fn_outputs[0]["logprobs"]
        ref = ref.to_numpy().astype(np.float32)
        datum = tinker.Datum(
            model_input=datum.model_input,
            loss_fn_inputs={
                **datum.loss_fn_inputs,
                "reference_logprobs": ref - 0.1,
                "original_logprobs": ref,
            },
        )
        regularizers = [
            RegularizerSpec(L1(reduction="mean"), 0.01, "l1"),
            RegularizerSpec(L2(reduction="mean"), 0.005, "l2"),
            RegularizerSpec(ElasticNet(reduction="mean"), 0.002, "elastic_net"),
            RegularizerSpec(Entropy(), 0.001, "entropy"),
            RegularizerSpec(KLDivergence(reference_field="reference_logprobs"), 0.01, "kl_forward"),
            RegularizerSpec(
                KLDivergence(reference_field="reference_logprobs", direction="reverse"),
                0.01,
                "kl_reverse",
            ),
            RegularizerSpec(
                KLDivergence(reference_field="reference_logprobs", symmetric=True), 0.005, "kl_sym"
            ),
            RegularizerSpec(Consistency(), 0.02, "consistency"),
            RegularizerSpec(Orthogonality(), 0.003, "orthogonality"),
            RegularizerSpec(GradientPenalty(loss_fn=total), 0.001, "gradient_penalty"),
        ]
        start = time.perf_counter()
        out = training.forward_backward_custom(
            [datum], base_nll, regularizers=regularizers, track_grad_norms=True
        ).result()
        print(f"Completed in {(time.perf_counter() - start) * 1000:.0f}ms")
        training.optim_step(tinker.AdamParams(learning_rate=1e-4)).result()

        print("=== Metrics ===")
        for key in sorted(out.metrics):
            print(f"{key}: {out.metrics[key]:.6f}")


if __name__ == "__main__":
    main()
