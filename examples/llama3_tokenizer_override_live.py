"""Tokenizer resolution: which tokenizer a model name maps to (Llama-3 names go to
thinkingmachineslabinc's ungated copy), encoding with it, and decoding a sample.

The Llama-3 tokenizer comes from the Hugging Face Hub. Against the local server the script
looks only in the local cache (HF_HUB_OFFLINE=1) and says so if it is not there; then it
does the same round trip with the built-in model's tokenizer and samples from it.

Env: TINKER_TOKENIZER_MODEL (meta-llama/Llama-3.1-8B), TINKER_BASE_MODEL, TINKER_PROMPT,
TINKER_MAX_TOKENS (16).
"""

from __future__ import annotations

import os

import _common as c

import tinker_actors as tinker
from tinker_actors import tokenizers


def main() -> None:
    llama = c.env_str("TINKER_TOKENIZER_MODEL", "meta-llama/Llama-3.1-8B")
    prompt = c.env_str("TINKER_PROMPT", "Hello from tinker_actors!")
    ref = tokenizers.resolve(llama)
    print(f"Tokenizer ID: {ref.tokenizer_id} (for {llama})")
    if c.is_local():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no network use on a fresh machine
    try:
        ids = tokenizers.encode(prompt, llama)
        print(f"Encoded prompt token IDs ({len(ids)}): {ids}")
        print(f"Decoded: {tokenizers.decode(ids, llama)!r}")
    except tokenizers.TokenizerError as exc:
        c.not_available(f"the {ref.tokenizer_id} tokenizer: {str(exc).splitlines()[0]}")

    model = c.base_model()
    with tinker.ServiceClient() as service:
        sampler = service.create_sampling_client(base_model=model).result()
        tokenizer = sampler.get_tokenizer()
        ids = tokenizer.encode(prompt, add_special_tokens=False)
        print(f"{model} tokenizer: {len(ids)} ids {ids[:16]}")
        params = tinker.SamplingParams(
            max_tokens=c.env_int("TINKER_MAX_TOKENS", 16), temperature=0.7
        )
        res = sampler.sample(tinker.ModelInput.from_ints(ids), 1, params).result()
        print(f"Decoded first sequence: {tokenizer.decode(res.sequences[0].tokens)!r}")


if __name__ == "__main__":
    main()
