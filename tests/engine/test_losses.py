"""Loss math against a direct per-token formula, and the user errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tinker_actors.server.engine.base import AdamSpec, DatumArrays, EngineUserError, LoraSpec

M1 = "tinker-actors/byte-1m"


def _ratio_terms(lp, q, adv, fn, cfg):
    """Per-token objective values and d(objective)/d(lp), written out one token at a time."""
    vals, grads = [], []
    for lp_t, q_t, a in zip(lp, q, adv, strict=True):
        r = math.exp(lp_t - q_t)
        if fn == "importance_sampling":
            vals.append(r * a)
            grads.append(r * a)
        elif fn == "ppo":
            lo, hi = cfg.get("clip_low_threshold", 0.8), cfg.get("clip_high_threshold", 1.2)
            unclipped, clipped = r * a, min(max(r, lo), hi) * a
            vals.append(min(unclipped, clipped))
            grads.append(r * a if unclipped <= clipped else 0.0)
        elif fn == "cispo":
            lo, hi = cfg.get("clip_low_threshold", 0.0), cfg.get("clip_high_threshold", 4.0)
            c = min(max(r, lo), hi)
            vals.append(c * lp_t * a)
            grads.append(c * a)
        elif fn == "dro":
            beta = cfg.get("beta", 0.05)
            vals.append(lp_t * a - 0.5 * beta * (lp_t - q_t) ** 2)
            grads.append(a - beta * (lp_t - q_t))
    return vals, grads


@pytest.fixture(scope="module")
def model(engine):
    engine.create_model("loss", M1, LoraSpec(rank=4, seed=0))
    return "loss"


def _rl_datum(n: int, seed: int) -> DatumArrays:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, 256, n).astype(np.int64)
    return DatumArrays(
        tokens,
        {
            "target_tokens": rng.integers(0, 256, n).astype(np.int64),
            # q near the model's logprob (about -log 259) so ratios straddle the clip range
            "logprobs": (-5.56 + rng.normal(0, 0.4, n)).astype(np.float32),
            "advantages": rng.normal(0, 1, n).astype(np.float32),
        },
    )


@pytest.mark.parametrize(
    ("fn", "cfg"),
    [
        ("importance_sampling", {}),
        ("ppo", {}),
        ("ppo", {"clip_low_threshold": 0.9, "clip_high_threshold": 1.1}),
        ("cispo", {}),
        ("cispo", {"clip_low_threshold": 0.8, "clip_high_threshold": 1.05}),
        ("dro", {"beta": 0.3}),
    ],
)
def test_rl_losses_match_per_token_formula(engine, model, fn, cfg):
    data = [_rl_datum(7, 1), _rl_datum(4, 2)]
    fwd = engine.forward_backward(model, data, "cross_entropy", {}, True)
    res = engine.forward_backward(model, data, fn, cfg, True)
    expected = 0.0
    for d, out, ref in zip(data, res.outputs, fwd.outputs, strict=True):
        np.testing.assert_allclose(out["logprobs"], ref["logprobs"], atol=1e-6)
        vals, _ = _ratio_terms(
            out["logprobs"].astype(float), d.inputs["logprobs"], d.inputs["advantages"], fn, cfg
        )
        expected -= sum(vals)
    assert res.metrics["loss:sum"] == pytest.approx(expected, rel=1e-4, abs=1e-4)


@pytest.mark.parametrize("fn", ["importance_sampling", "ppo", "cispo", "dro"])
def test_rl_loss_gradient_wrt_logprobs(fn):
    """d loss / d lp per token equals minus the hand-derived objective derivative."""
    from tinker_actors.server.engine.losses import LOSSES, Batch, compute_loss

    g = torch.Generator().manual_seed(0)
    lp = (-1.0 + 0.5 * torch.randn(1, 9, generator=g, dtype=torch.float64)).requires_grad_()
    q = lp.detach() + 0.3 * torch.randn(1, 9, generator=g, dtype=torch.float64)
    adv = torch.randn(1, 9, generator=g, dtype=torch.float64)
    mask = torch.ones(1, 9, dtype=torch.float64)
    mask[0, -2:] = 0  # padding contributes nothing
    batch = Batch(None, None, {"logprobs": q, "advantages": adv}, mask, [7])
    cfg = dict(LOSSES[fn].config)
    compute_loss(fn, cfg, lp, batch).backward()
    _, grads = _ratio_terms(lp[0].tolist(), q[0].tolist(), adv[0].tolist(), fn, cfg)
    expected = [-g_t * m for g_t, m in zip(grads, mask[0].tolist(), strict=True)]
    np.testing.assert_allclose(lp.grad[0].numpy(), expected, atol=1e-9)


def test_cross_entropy_is_weighted_token_sum_with_any_real_weights(engine, model, sft_datum):
    d = sft_datum("weights here")
    n = d.tokens.shape[0]
    d.inputs["weights"] = np.linspace(-1.0, 2.0, n).astype(np.float32)
    res = engine.forward_backward(model, [d], "cross_entropy", {}, True)
    lp = res.outputs[0]["logprobs"].astype(float)
    assert res.metrics["loss:sum"] == pytest.approx(-(lp * d.inputs["weights"]).sum(), rel=1e-5)
    # missing weights mean all ones
    del d.inputs["weights"]
    res = engine.forward_backward(model, [d], "cross_entropy", {}, True)
    assert res.metrics["loss:sum"] == pytest.approx(-lp.sum(), rel=1e-5)


def test_gspo_uses_sequence_ratio(engine, model):
    d = _rl_datum(6, 5)
    res = engine.forward_backward(
        model, [d], "gspo", {"clip_low_threshold": 0.0, "clip_high_threshold": 100.0}, True
    )
    lp = res.outputs[0]["logprobs"].astype(float)
    s = math.exp(np.mean(lp - d.inputs["logprobs"]))
    expected = -(s * d.inputs["advantages"].astype(float)).sum()
    assert res.metrics["loss:sum"] == pytest.approx(expected, rel=1e-4)


def test_forward_only_leaves_no_gradient_and_backward_accumulates(engine, model, sft_datum):
    m = engine._models[model]
    engine.optim_step(model, AdamSpec())
    engine.forward_backward(model, [sft_datum("abc")], "cross_entropy", {}, True)
    assert all(p.grad is None for p in m.adapter.parameters())
    engine.forward_backward(model, [sft_datum("abc")], "cross_entropy", {}, False)
    first = [p.grad.clone() for p in m.adapter.parameters()]
    engine.forward_backward(model, [sft_datum("abc")], "cross_entropy", {}, False)
    for p, g in zip(m.adapter.parameters(), first, strict=True):
        torch.testing.assert_close(p.grad, 2 * g)
    m.optimizer.zero_grad(set_to_none=True)


@pytest.mark.parametrize(
    ("loss_fn", "inputs", "config", "match"),
    [
        ("nope", {}, {}, "unsupported loss_fn 'nope'"),
        ("cross_entropy", {"weights": np.ones(3, np.float32)}, {}, "'target_tokens' is missing"),
        ("ppo", {"target_tokens": np.arange(3)}, {}, "'logprobs' is missing"),
        ("cross_entropy", {"target_tokens": np.arange(4)}, {}, r"shape \(4,\), expected \(3,\)"),
        ("cross_entropy", {"target_tokens": np.array([1, 2, 999])}, {}, "outside"),
        (
            "cross_entropy",
            {"target_tokens": np.arange(3), "weights": np.ones((3, 2))},
            {},
            "weights",
        ),
        (
            "ppo",
            {"target_tokens": np.arange(3), "logprobs": np.zeros(3), "advantages": np.zeros(3)},
            {"clip_low_threshold": "x"},
            "must be a number",
        ),
    ],
)
def test_user_errors(engine, model, loss_fn, inputs, config, match):
    d = DatumArrays(np.array([1, 2, 3], dtype=np.int64), inputs)
    with pytest.raises(EngineUserError, match=match):
        engine.forward_backward(model, [d], loss_fn, config, False)


def test_more_user_errors(engine, model):
    with pytest.raises(EngineUserError, match="unknown model"):
        engine.forward_backward("missing", [], "cross_entropy", {}, False)
    with pytest.raises(EngineUserError, match="at least one datum"):
        engine.forward_backward(model, [], "cross_entropy", {}, False)
    long = np.zeros(2000, dtype=np.int64)
    with pytest.raises(EngineUserError, match="exceed"):
        engine.forward_backward(
            model, [DatumArrays(long, {"target_tokens": long})], "cross_entropy", {}, False
        )
