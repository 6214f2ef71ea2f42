"""``deterministic_sampling``: a sample request with no seed gets one derived from the request.

Two fresh clients making the same requests (same seq ids, prompts) get the same tokens and
logprobs; successive requests of one client (different seq ids) do not repeat each other.
"""

from __future__ import annotations

import pytest

tinker = pytest.importorskip("tinker")
pytest.importorskip("torch")

pytestmark = pytest.mark.e2e

MODEL = "tinker-actors/byte-1m"
PARAMS = {"max_tokens": 12, "temperature": 1.0}  # no seed


def _samples(server) -> list[tuple[list[int], list[float]]]:
    with tinker.ServiceClient(base_url=server.base_url, api_key=server.api_key) as service:
        sampler = service.create_sampling_client(base_model=MODEL).result()
        prompt = tinker.types.ModelInput.from_ints(list(b"User: hi\n\nAssistant:"))
        out = []
        for _ in range(3):
            res = sampler.sample(prompt, 2, tinker.types.SamplingParams(**PARAMS)).result()
            out += [(list(s.tokens), list(s.logprobs or [])) for s in res.sequences]
        return out


@pytest.mark.parametrize(
    "local_server",
    [{"engine": "torch", "deterministic_sampling": True, "sample_batch_size": 1}],
    indirect=True,
)
def test_unseeded_samples_repeat_across_clients(local_server):
    first, second = _samples(local_server), _samples(local_server)
    assert first == second
    assert len({tuple(tokens) for tokens, _ in first}) > 1, first
