from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import LlamaForCausalLM

from tinker_actors.server.engine.base import AdamSpec, DatumArrays, LoraSpec, SampleJob
from tinker_actors.server.engine.model import BUILTIN_MODELS, build_builtin, count_parameters
from tinker_actors.server.engine.tokenizer import byte_tokenizer_dir

M1 = "tinker-actors/byte-1m"
M20 = "tinker-actors/byte-20m"


def test_builtin_models_are_listed_with_sizes(engine):
    specs = {s.model_name: s for s in engine.models()}
    assert set(specs) >= {M1, M20}
    assert 0.8e6 < specs[M1].num_parameters < 1.5e6
    assert 15e6 < specs[M20].num_parameters < 25e6
    assert specs[M1].max_context_length == 1024
    module = build_builtin(M1, torch.device("cpu"))
    assert sum(p.numel() for p in module.parameters()) == count_parameters(BUILTIN_MODELS[M1])


def test_builtin_weights_are_deterministic_and_do_not_touch_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = build_builtin(M1, torch.device("cpu"))
    assert torch.equal(torch.rand(3), expected)
    b = build_builtin(M1, torch.device("cpu"))
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert na == nb and torch.equal(pa, pb)


def test_native_model_matches_transformers_llama():
    """Same parameter names and the same function as LlamaForCausalLM."""
    native = build_builtin(M1, torch.device("cpu"))
    hf = LlamaForCausalLM(BUILTIN_MODELS[M1].to_hf_config()).eval()
    hf.load_state_dict(native.state_dict(), strict=True)
    ids = torch.randint(0, 259, (2, 33), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(native(ids), hf(ids).logits, atol=1e-5, rtol=1e-5)


def test_padded_batch_equals_one_datum_at_a_time(engine, sft_datum):
    engine.create_model("pad", M1, LoraSpec(rank=4, seed=3))
    # make B non-zero so the adapter matters
    m = engine._models["pad"]
    with torch.no_grad():
        for pair in m.adapter.pairs.values():
            pair.b.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
    data = [sft_datum("a"), sft_datum("a much longer sequence of bytes\n"), sft_datum("mid one")]
    together = engine.forward_backward("pad", data, "cross_entropy", {}, True)
    total = 0.0
    for d, out in zip(data, together.outputs, strict=True):
        alone = engine.forward_backward("pad", [d], "cross_entropy", {}, True)
        assert out["logprobs"].dtype == np.float32
        assert out["logprobs"].shape == d.inputs["target_tokens"].shape
        np.testing.assert_allclose(out["logprobs"], alone.outputs[0]["logprobs"], atol=2e-5)
        total += alone.metrics["loss:sum"]
    assert together.metrics["loss:sum"] == pytest.approx(total, rel=1e-5)


def test_hf_model_directory_is_served(tmp_path, cache_dir):
    """A causal LM saved with save_pretrained (plus a tokenizer) trains and samples by path."""
    from transformers import AutoTokenizer

    from tinker_actors.server.engine.torch_engine import TorchEngine

    cfg = BUILTIN_MODELS[M1].to_hf_config()
    cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers = 32, 64, 2
    cfg.num_attention_heads = cfg.num_key_value_heads = 2
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    path = tmp_path / "tiny-llama"
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(str(byte_tokenizer_dir(cache_dir))).save_pretrained(path)

    engine = TorchEngine(cache_dir=cache_dir)
    details = engine.create_model("hf", str(path), LoraSpec(rank=2))
    assert details.tokenizer_dir == str(path.resolve())
    assert engine.eos_token_id(str(path)) == 258
    data = [DatumArrays(np.array([1, 2, 3]), {"target_tokens": np.array([2, 3, 4])})]
    out = engine.forward_backward("hf", data, "cross_entropy", {}, False)
    with torch.no_grad():
        ref = torch.log_softmax(model(torch.tensor([[1, 2, 3]])).logits, -1)[0]
    expected = ref[torch.arange(3), torch.tensor([2, 3, 4])].numpy()
    np.testing.assert_allclose(out.outputs[0]["logprobs"], expected, atol=1e-5)
    assert engine.optim_step("hf", AdamSpec())["grad_norm:mean"] > 0

    engine.create_sampler("hf-s", str(path), None)
    job = SampleJob(prompt=np.array([5, 6, 7]), num_samples=2, max_tokens=5, temperature=0.0)
    res = engine.sample("hf-s", [job, SampleJob(prompt=np.array([9]), max_tokens=3, seed=1)])
    greedy = model.generate(
        torch.tensor([[5, 6, 7]]),
        max_new_tokens=5,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
    )[0, 3:].tolist()
    for seq in res[0].sequences:
        assert seq.tokens.tolist()[: len(seq.tokens)] == greedy[: len(seq.tokens)]
    assert len(res[1].sequences[0].tokens) <= 3


def test_unknown_base_model_is_a_user_error(engine):
    from tinker_actors.server.engine.base import EngineUserError

    with pytest.raises(EngineUserError, match="unknown base model"):
        engine.create_model("x", "no/such-model", LoraSpec())
