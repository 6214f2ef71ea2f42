"""Sampling from Kimi K2 (moonshotai/Kimi-K2-Thinking): tokenize with its tokenizer (a
round trip), then sample, if the server serves the model.

The local server has no Kimi model and, offline, no Kimi tokenizer: the script says so for
each missing piece and stops there (it does not substitute another model).

Env: TINKER_BASE_MODEL (moonshotai/Kimi-K2-Thinking), TINKER_PROMPT ("Say hi"),
TINKER_MAX_TOKENS (32), TINKER_TEMPERATURE (0.7), TINKER_NUM_SAMPLES (1).
"""

from __future__ import annotations

import os

import _common as c

import tinker_actors as tinker
from tinker_actors import tokenizers


def main() -> None:
    model = c.env_str("TINKER_BASE_MODEL", "moonshotai/Kimi-K2-Thinking")
    prompt = c.env_str("TINKER_PROMPT", "Say hi")

    print("== Kimi K2 tokenization")
    if c.is_local():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ref = tokenizers.resolve(model)
    print(
        f"Tokenizer: {ref.tokenizer_id} revision={ref.revision} trust_remote_code={ref.trust_remote_code}"
    )
    try:
        ids = tokenizers.encode(prompt, model, add_special_tokens=False)
        print(f"Token IDs (first 32): {ids[:32]} ({len(ids)} total)")
        print(f"Round-trip decode: {tokenizers.decode(ids, model)!r}")
    except tokenizers.TokenizerError as exc:
        ids = None
        c.not_available(f"the Kimi tokenizer: {str(exc).splitlines()[0]}")

    print("== Live sampling")
    with tinker.ServiceClient() as service:
        served = {
            m.model_name
            for m in tinker.RestClient().get_server_capabilities().result().supported_models
        }
        if model not in served:
            c.not_available(f"{model} is not served here (models: {', '.join(sorted(served))})")
            return
        if ids is None:
            c.not_available("sampling needs the tokenizer to build the prompt")
            return
        sampler = service.create_sampling_client(base_model=model).result()
        params = tinker.SamplingParams(
            max_tokens=c.env_int("TINKER_MAX_TOKENS", 32),
            temperature=c.env_float("TINKER_TEMPERATURE", 0.7),
        )
        res = sampler.sample(
            tinker.ModelInput.from_ints(ids), c.env_int("TINKER_NUM_SAMPLES", 1), params
        ).result()
        for i, seq in enumerate(res.sequences, 1):
            print(f"Sample {i}: {tokenizers.decode(seq.tokens, model)!r}")


if __name__ == "__main__":
    main()
