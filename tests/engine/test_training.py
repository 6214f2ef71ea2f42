"""Training: loss falls, models are isolated, optimizer settings, checkpoints and PEFT layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tinker_actors.server.engine.base import AdamSpec, EngineUserError, LoraSpec, SampleJob

M1 = "tinker-actors/byte-1m"
ADAM = AdamSpec(learning_rate=3e-3)


def _train(engine, model_id, batch, steps, adam=ADAM):
    losses = []
    for _ in range(steps):
        res = engine.forward_backward(model_id, batch, "cross_entropy", {}, False)
        metrics = engine.optim_step(model_id, adam)
        assert set(res.metrics) == {"loss:sum"}
        assert all(k.count(":") == 1 for k in metrics)
        losses.append(res.metrics["loss:sum"])
    return losses


def test_cross_entropy_loss_halves_within_30_steps(engine, sft_batch):
    engine.create_model("fit", M1, LoraSpec(rank=32, seed=0))
    losses = _train(engine, "fit", sft_batch, 30)
    assert losses[-1] < 0.5 * losses[0], losses


def test_models_are_isolated_and_base_is_frozen(engine, sft_batch, sft_datum):
    base = engine._base(M1).module
    before = {k: v.clone() for k, v in base.state_dict().items()}
    engine.create_model("iso-a", M1, LoraSpec(rank=8, seed=1))
    engine.create_model("iso-b", M1, LoraSpec(rank=8, seed=1))
    probe = [sft_datum("probe text")]
    b0 = engine.forward_backward("iso-b", probe, "cross_entropy", {}, True).outputs[0]["logprobs"]
    _train(engine, "iso-a", sft_batch, 3)
    a1 = engine.forward_backward("iso-a", probe, "cross_entropy", {}, True).outputs[0]["logprobs"]
    b1 = engine.forward_backward("iso-b", probe, "cross_entropy", {}, True).outputs[0]["logprobs"]
    np.testing.assert_array_equal(b0, b1)
    assert not np.allclose(a1, b1)
    for k, v in base.state_dict().items():
        assert torch.equal(v, before[k]), k
    engine.unload_model("iso-a")
    with pytest.raises(EngineUserError):
        engine.optim_step("iso-a", ADAM)


def test_lora_targets_follow_spec(engine):
    engine.create_model("mlp-only", M1, LoraSpec(rank=2, train_attn=False, train_unembed=False))
    adapter = engine._models["mlp-only"].adapter
    assert adapter.target_modules() == ["down_proj", "gate_proj", "up_proj"]
    a = engine._models["mlp-only"].adapter.pairs["model.layers.0.mlp.up_proj"]
    assert a.a.shape == (2, 128) and a.b.shape == (352, 2) and not a.b.any()
    assert a.scale == 32 / 2
    engine.create_model("same-seed", M1, LoraSpec(rank=2, train_attn=False, train_unembed=False))
    b = engine._models["same-seed"].adapter.pairs["model.layers.0.mlp.up_proj"]
    assert torch.equal(a.a, b.a)
    with pytest.raises(EngineUserError):
        engine.create_model("bad", M1, LoraSpec(rank=0))


def test_optim_step_hyperparameters_and_clipping(engine, sft_batch):
    engine.create_model("opt", M1, LoraSpec(rank=4))
    engine.forward_backward("opt", sft_batch, "cross_entropy", {}, False)
    m = engine._models["opt"]
    before = [p.detach().clone() for p in m.adapter.parameters()]
    metrics = engine.optim_step("opt", AdamSpec(learning_rate=0.0, grad_clip_norm=1.0))
    assert metrics["grad_norm:mean"] > 1.0  # reported before clipping
    for p, b in zip(m.adapter.parameters(), before, strict=True):
        assert torch.equal(p, b)  # lr 0: nothing moves
        assert p.grad is None  # gradients were cleared
    assert m.optimizer.param_groups[0]["betas"] == (0.9, 0.95)
    engine.forward_backward("opt", sft_batch, "cross_entropy", {}, False)
    engine.optim_step("opt", AdamSpec(learning_rate=1e-3, beta1=0.5, weight_decay=0.1))
    group = m.optimizer.param_groups[0]
    assert (group["lr"], group["betas"], group["weight_decay"]) == (1e-3, (0.5, 0.95), 0.1)
    # no accumulated gradient: no step, zero norm
    assert engine.optim_step("opt", ADAM)["grad_norm:mean"] == 0.0


def test_save_and_load_state_round_trip(engine, sft_batch, sft_datum, tmp_path):
    engine.create_model("ck", M1, LoraSpec(rank=8, seed=4, train_unembed=False))
    _train(engine, "ck", sft_batch, 3)
    size = engine.save_state("ck", tmp_path / "state")
    assert size == sum(f.stat().st_size for f in (tmp_path / "state").iterdir())
    probe = [sft_datum("round trip")]
    want = engine.forward_backward("ck", probe, "cross_entropy", {}, True).outputs[0]["logprobs"]

    details = engine.load_state("ck2", tmp_path / "state", with_optimizer=True, base_model=None)
    assert details.base_model == M1
    assert details.lora == LoraSpec(rank=8, seed=4, train_unembed=False)
    got = engine.forward_backward("ck2", probe, "cross_entropy", {}, True).outputs[0]["logprobs"]
    np.testing.assert_array_equal(want, got)
    src, dst = engine._models["ck"], engine._models["ck2"]
    for p, q in zip(src.adapter.parameters(), dst.adapter.parameters(), strict=True):
        s, d = src.optimizer.state[p], dst.optimizer.state[q]
        assert float(s["step"]) == float(d["step"]) == 3
        assert torch.equal(s["exp_avg"], d["exp_avg"])
        assert torch.equal(s["exp_avg_sq"], d["exp_avg_sq"])
    # continuing training from both gives identical results
    a = _train(engine, "ck", sft_batch, 2)
    b = _train(engine, "ck2", sft_batch, 2)
    assert a == pytest.approx(b, rel=1e-6)

    engine.load_state("ck3", tmp_path / "state", with_optimizer=False, base_model=M1)
    assert not engine._models["ck3"].optimizer.state
    got = engine.forward_backward("ck3", probe, "cross_entropy", {}, True).outputs[0]["logprobs"]
    np.testing.assert_array_equal(want, got)
    with pytest.raises(EngineUserError, match="trained on"):
        engine.load_state(
            "x", tmp_path / "state", with_optimizer=False, base_model="tinker-actors/byte-20m"
        )
    with pytest.raises(EngineUserError):
        engine.load_state("x", tmp_path, with_optimizer=False, base_model=None)


def test_sampler_weights_use_the_peft_layout(engine, sft_batch, tmp_path):
    engine.create_model("peft", M1, LoraSpec(rank=4, seed=2))
    _train(engine, "peft", sft_batch, 2)
    size = engine.save_sampler_weights("peft", tmp_path / "s")
    files = sorted(p.name for p in (tmp_path / "s").iterdir())
    assert files == ["adapter_config.json", "adapter_model.safetensors"]
    assert size == sum(f.stat().st_size for f in (tmp_path / "s").iterdir())
    cfg = json.loads((tmp_path / "s" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 4 and cfg["lora_alpha"] == 32
    assert cfg["base_model_name_or_path"] == M1
    assert sorted(cfg["target_modules"]) == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"]
    )
    tensors = load_file(str(tmp_path / "s" / "adapter_model.safetensors"))
    assert tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"].shape == (
        4,
        128,
    )
    assert tensors["base_model.model.model.layers.4.mlp.down_proj.lora_B.weight"].shape == (128, 4)
    assert tensors["base_model.model.lm_head.lora_B.weight"].shape == (259, 4)
    assert len(tensors) == 2 * (5 * 7 + 1)

    # a sampler built from the directory computes the same prompt logprobs as the model
    engine.create_sampler("peft-s", M1, tmp_path / "s")
    prompt = np.array([257, *b"hello world"], dtype=np.int64)
    out = engine.sample("peft-s", [SampleJob(prompt=prompt, max_tokens=1, prompt_logprobs=True)])
    from tinker_actors.server.engine.base import DatumArrays

    fwd = engine.forward_backward(
        "peft",
        [DatumArrays(prompt[:-1], {"target_tokens": prompt[1:]})],
        "cross_entropy",
        {},
        True,
    )
    assert np.isnan(out[0].prompt_logprobs[0])
    np.testing.assert_allclose(out[0].prompt_logprobs[1:], fwd.outputs[0]["logprobs"], atol=1e-5)


def test_peft_loads_the_adapter_if_installed(engine, sft_batch, tmp_path):
    peft = pytest.importorskip("peft")
    from transformers import LlamaForCausalLM

    from tinker_actors.server.engine.model import BUILTIN_MODELS

    engine.create_model("peft2", M1, LoraSpec(rank=4, seed=2))
    _train(engine, "peft2", sft_batch, 2)
    engine.save_sampler_weights("peft2", tmp_path / "s")
    hf = LlamaForCausalLM(BUILTIN_MODELS[M1].to_hf_config()).eval()
    hf.load_state_dict(engine._base(M1).module.state_dict())
    model = peft.PeftModel.from_pretrained(hf, str(tmp_path / "s")).eval()
    batch = sft_batch[:1]
    ids = torch.from_numpy(batch[0].tokens)[None]
    with torch.no_grad():
        lp = torch.log_softmax(model(ids).logits, -1)[0]
    tgt = torch.from_numpy(batch[0].inputs["target_tokens"])
    ours = engine.forward_backward("peft2", batch, "cross_entropy", {}, True).outputs[0]
    np.testing.assert_allclose(lp[torch.arange(len(tgt)), tgt].numpy(), ours["logprobs"], atol=1e-5)
