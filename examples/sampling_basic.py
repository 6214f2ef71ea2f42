"""Sample from a base model: ServiceClient -> SamplingClient -> sample -> decode.

Env: TINKER_BASE_MODEL, TINKER_PROMPT, TINKER_MAX_TOKENS, TINKER_TEMPERATURE,
TINKER_NUM_SAMPLES, TINKER_SAMPLE_TIMEOUT (ms).
"""

from __future__ import annotations

import _common as c

import tinker_actors as tinker


def main() -> None:
    model = c.base_model()
    prompt = c.env_str("TINKER_PROMPT", "Hello from tinker_actors!")
    max_tokens = c.env_int("TINKER_MAX_TOKENS", 64)
    temperature = c.env_float("TINKER_TEMPERATURE", 0.7)
    num_samples = c.env_int("TINKER_NUM_SAMPLES", 1)
    timeout_s = c.env_int("TINKER_SAMPLE_TIMEOUT", 30_000) / 1000

    with tinker.ServiceClient() as service:
        sampler = service.create_sampling_client(base_model=model).result()
        tokenizer = sampler.get_tokenizer()
        model_input = tinker.ModelInput.from_ints(
            tokenizer.encode(prompt, add_special_tokens=False)
        )
        params = tinker.SamplingParams(max_tokens=max_tokens, temperature=temperature)
        print(f"Sampling {num_samples} sequence(s) from {model} ...")
        try:
            response = sampler.sample(model_input, num_samples, params).result(timeout=timeout_s)
        except Exception as exc:
            c.fail(f"Sampling failed: {exc!r}")
        print(f"Received {len(response.sequences)} sequence(s):")
        for i, seq in enumerate(response.sequences, 1):
            print(f"Sample {i}: {tokenizer.decode(seq.tokens)!r}")


if __name__ == "__main__":
    main()
