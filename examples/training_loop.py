"""A LoRA training loop: forward_backward (cross_entropy) -> optim_step -> save weights, then
an optional sample from the trained weights.

Env: TINKER_BASE_MODEL, TINKER_PROMPT (the training text), TINKER_STEPS (3),
TINKER_LORA_RANK (16), TINKER_SAMPLE_AFTER_TRAIN ("1"), TINKER_SAMPLE_PROMPT, TINKER_MAX_TOKENS.
"""

from __future__ import annotations

import time

import _common as c

import tinker_actors as tinker


def timed(label: str, fut: tinker.APIFuture) -> object:
    start = time.perf_counter()
    result = fut.result()
    print(f"[step] {label} completed in {(time.perf_counter() - start) * 1000:.0f}ms")
    return result


def main() -> None:
    model = c.base_model()
    text = c.env_str("TINKER_PROMPT", "The quick brown fox jumps over the lazy dog.")
    steps = c.env_int("TINKER_STEPS", 3)
    rank = c.env_int("TINKER_LORA_RANK", 16)
    started = time.perf_counter()
    print(f"=== training loop: {model}, LoRA rank {rank}, {steps} step(s) ===")

    with tinker.ServiceClient() as service:
        training = service.create_lora_training_client(base_model=model, rank=rank).result()
        tokenizer = training.get_tokenizer()
        datum = c.text_datum(tinker, tokenizer, text)
        adam = tinker.AdamParams(learning_rate=1e-3)
        for step in range(1, steps + 1):
            fwd = training.forward_backward([datum], "cross_entropy")
            opt = training.optim_step(adam)  # queued behind the forward_backward, in order
            out = timed(f"{step}/{steps} forward_backward", fwd)
            opt_out = timed(f"{step}/{steps} optim_step", opt)
            print(f"[metrics] forward_backward: {out.metrics}")
            print(f"[metrics] optim_step: {opt_out.metrics or '(none)'}")

        saved = training.save_weights_for_sampler("training-loop").result()
        print(f"[result] save_weights: {{'path': {saved.path!r}}}")

        if c.env_flag("TINKER_SAMPLE_AFTER_TRAIN", True):
            sampler = service.create_sampling_client(model_path=saved.path).result()
            prompt = c.env_str("TINKER_SAMPLE_PROMPT", text[:12])
            params = tinker.SamplingParams(
                max_tokens=c.env_int("TINKER_MAX_TOKENS", 24), temperature=0.0
            )
            ids = tokenizer.encode(prompt, add_special_tokens=False)
            res = sampler.sample(tinker.ModelInput.from_ints(ids), 1, params).result()
            print(f"[sample] {prompt!r} -> {tokenizer.decode(res.sequences[0].tokens)!r}")

    print(f"[done] Training loop finished in {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()
