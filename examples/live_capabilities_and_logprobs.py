"""What the server offers (get_server_capabilities), whether it is up (GET /api/v1/healthz),
and the logprob of every prompt token under a base model (SamplingClient.compute_logprobs).

Env: TINKER_BASE_MODEL, TINKER_PROMPT.
"""

from __future__ import annotations

import _common as c

import tinker_actors as tinker


def main() -> None:
    prompt = c.env_str("TINKER_PROMPT", "Hello from tinker_actors!")
    with tinker.ServiceClient() as service:
        caps = tinker.RestClient().get_server_capabilities().result()
        names = [m.model_name for m in caps.supported_models if m.model_name]
        print("== Server capabilities ==")
        print(f"Supported models ({len(names)} available):")
        for m in caps.supported_models:
            print(f"  - {m.model_name} (context {m.max_context_length})")
        print(f"Model names only: {', '.join(names)}")

        print("== Health check ==")
        status, body = c.http("GET", "healthz", auth=False)
        print(f"Health: {body.get('status') if status == 200 else f'HTTP {status}'}")

        sampler = service.create_sampling_client(base_model=c.base_model()).result()
        ids = sampler.get_tokenizer().encode(prompt, add_special_tokens=False)
        logprobs = sampler.compute_logprobs(tinker.ModelInput.from_ints(ids)).result()
        shown = [None if lp is None else round(lp, 2) for lp in logprobs]
        print(f"Logprobs: {shown}")


if __name__ == "__main__":
    main()
