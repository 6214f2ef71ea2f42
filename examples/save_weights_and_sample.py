"""Save a training client's weights and get a SamplingClient on them in one call
(save_weights_and_get_sampling_client), resolve the sampler's tokenizer, and sample.

Env: TINKER_BASE_MODEL, TINKER_PROMPT, TINKER_MAX_TOKENS (32), TINKER_LORA_RANK (8).
"""

from __future__ import annotations

import _common as c

import tinker_actors as tinker


def main() -> None:
    model = c.base_model()
    rank = c.env_int("TINKER_LORA_RANK", 8)
    prompt = c.env_str("TINKER_PROMPT", "Hello from tinker_actors!")
    print(f"[setup] base_model={model} rank={rank}")
    with tinker.ServiceClient() as service:
        training = service.create_lora_training_client(base_model=model, rank=rank).result()
        print("[save] saving weights and creating a SamplingClient (sync helper)...")
        sampler = training.save_weights_and_get_sampling_client().result()
        tokenizer = sampler.get_tokenizer()
        print("[tokenizer] resolved sampler tokenizer from sampler metadata")
        ids = tokenizer.encode(prompt, add_special_tokens=False)
        params = tinker.SamplingParams(
            max_tokens=c.env_int("TINKER_MAX_TOKENS", 32), temperature=0.7
        )
        res = sampler.sample(tinker.ModelInput.from_ints(ids), 1, params).result()
        print("== SAMPLE ==")
        seq = res.sequences[0]
        print(f"tokens={len(seq.tokens)} stop_reason={seq.stop_reason}")
        print(repr(tokenizer.decode(seq.tokens)))


if __name__ == "__main__":
    main()
