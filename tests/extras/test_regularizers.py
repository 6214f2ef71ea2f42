"""Regularizers: every built-in's value and gradient against a direct torch computation, the
pipeline's totals and grad norms, parallel == sequential, dispatch and validation."""

from __future__ import annotations

import asyncio
import math
import threading
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tinker_actors import types  # noqa: E402
from tinker_actors.regularizers import (  # noqa: E402
    L1,
    L2,
    Consistency,
    ElasticNet,
    Entropy,
    Executor,
    GradientPenalty,
    GradientTracker,
    KLDivergence,
    Orthogonality,
    Pipeline,
    RegularizerError,
    RegularizerSpec,
    RegularizerTimeoutError,
    execute,
    regularized_loss_fn,
)

GEN = torch.Generator().manual_seed(0)
LP = torch.log_softmax(torch.randn(4, 6, generator=GEN, dtype=torch.float64), dim=-1)
REF = torch.log_softmax(torch.randn(4, 6, generator=GEN, dtype=torch.float64), dim=-1)
ORIG = torch.log_softmax(torch.randn(4, 6, generator=GEN, dtype=torch.float64), dim=-1)
DATA = [
    types.Datum(
        model_input=types.ModelInput.from_ints([1, 2, 3]),
        loss_fn_inputs={
            "target_tokens": np.array([1, 2, 3], dtype=np.int64),
            "reference_logprobs": REF.numpy().astype(np.float32),
            "original_logprobs": ORIG.numpy().astype(np.float32),
        },
    )
]
REF32, ORIG32 = REF.float().double(), ORIG.float().double()  # as stored in TensorData


def _value_and_grad(fn: Any, x: torch.Tensor) -> tuple[float, torch.Tensor]:
    x = x.detach().clone().requires_grad_(True)
    out = fn(x)
    loss = out[0] if isinstance(out, tuple) else out
    (g,) = torch.autograd.grad(loss, x)
    return float(loss.detach()), g


def _entropy(x: torch.Tensor) -> torch.Tensor:
    return -(x.exp() * x).sum(-1)


def _kl(p_log: torch.Tensor, q_log: torch.Tensor) -> torch.Tensor:
    return (p_log.exp() * (p_log - q_log)).sum(-1)


def _gp(x: torch.Tensor) -> torch.Tensor:
    # loss_fn(x) = sum(x^3): gradient 3x^2, penalty (||3x^2|| - 1)^2
    return ((3 * x.pow(2)).pow(2).sum().sqrt() - 1.0).pow(2)


def _orth(x: torch.Tensor, mode: str) -> torch.Tensor:
    m = x / x.norm(dim=1, keepdim=True)
    g = m @ m.T
    off = g - torch.diag(torch.diag(g))
    if mode == "soft":
        return (off**2).sum()
    if mode == "hard":
        return ((g - torch.eye(g.shape[0], dtype=g.dtype)) ** 2).sum()
    return (torch.trace(g) - g.shape[0]) ** 2 + (off**2).sum()


CASES = [
    ("l1 sum", L1(), lambda x: x.abs().sum()),
    (
        "l1 mean probs",
        L1(target="probs", reduction="mean", lambda_=0.3),
        lambda x: 0.3 * x.exp().abs().mean(),
    ),
    ("l2", L2(lambda_=0.5), lambda x: 0.5 * (x**2).sum()),
    (
        "l2 center clip",
        L2(center="mean", clip=0.5),
        lambda x: ((x - x.mean()).clamp(-0.5, 0.5) ** 2).sum(),
    ),
    ("l2 center value", L2(center=-1.0, reduction="mean"), lambda x: ((x + 1.0) ** 2).mean()),
    (
        "elastic net",
        ElasticNet(l1_ratio=0.6, lambda_=2.0),
        lambda x: 2.0 * (0.6 * x.abs().sum() + 0.4 * (x**2).sum()),
    ),
    ("entropy minimize", Entropy(), lambda x: _entropy(x).mean()),
    ("entropy maximize", Entropy(mode="maximize"), lambda x: -_entropy(x).mean()),
    (
        "entropy T=0.5 normalized",
        Entropy(temperature=0.5, normalize=True, reduction="sum"),
        lambda x: (_entropy(torch.log_softmax(x / 0.5, -1)) / math.log(6)).sum(),
    ),
    ("kl forward", KLDivergence(reference_logprobs=REF), lambda x: _kl(x, REF).mean()),
    (
        "kl reverse field",
        KLDivergence(reference_field="reference_logprobs", direction="reverse"),
        lambda x: _kl(REF32, x).mean(),
    ),
    (
        "kl symmetric computed",
        KLDivergence(compute_reference=lambda data: REF, symmetric=True, reduction="sum"),
        lambda x: ((_kl(x, REF) + _kl(REF, x)) / 2).sum(),
    ),
    ("consistency mse", Consistency(), lambda x: ((x - ORIG32) ** 2).mean()),
    (
        "consistency l1",
        Consistency(metric="l1", reduction="sum"),
        lambda x: (x - ORIG32).abs().sum(),
    ),
    (
        "consistency cosine",
        Consistency(metric="cosine"),
        lambda x: 1 - (x.flatten() @ ORIG32.flatten()) / (x.norm() * ORIG32.norm()),
    ),
    (
        "consistency kl",
        Consistency(metric="kl"),
        lambda x: ((_kl(x, ORIG32) + _kl(ORIG32, x)) / 2).mean(),
    ),
    ("gradient penalty", GradientPenalty(loss_fn=lambda x: (x**3).sum()), _gp),
    (
        "gradient penalty interpolated",
        GradientPenalty(loss_fn=lambda x: (x**3).sum(), mode="interpolated", seed=7),
        lambda x: _gp(_EPS * x + (1 - _EPS) * REF32),
    ),
    ("orthogonality soft", Orthogonality(), lambda x: _orth(x, "soft")),
    ("orthogonality hard", Orthogonality(mode="hard"), lambda x: _orth(x, "hard")),
    ("orthogonality spectral", Orthogonality(mode="spectral"), lambda x: _orth(x, "spectral")),
    (
        "orthogonality vocabulary",
        Orthogonality(axis="vocabulary"),
        lambda x: _orth(x.T.contiguous(), "soft"),
    ),
]
_EPS = float(torch.rand((), generator=torch.Generator().manual_seed(7)))


@pytest.mark.parametrize(("label", "reg", "direct"), CASES, ids=[c[0] for c in CASES])
def test_builtin_value_and_gradient_match_direct_torch(label: str, reg: Any, direct: Any) -> None:
    value, grad = _value_and_grad(lambda x: reg(DATA, x), LP)
    want_value, want_grad = _value_and_grad(direct, LP)
    assert value == pytest.approx(want_value, rel=1e-6, abs=1e-9)
    torch.testing.assert_close(grad, want_grad, rtol=1e-5, atol=1e-8)
    assert grad.abs().sum() > 0  # a real gradient, never a constant stand-in


def test_metrics_keys_follow_tinkex() -> None:
    keys = {
        L1(): {"l1_raw", "l1_mean"},
        L2(): {"l2_raw", "l2_mean", "center"},
        ElasticNet(): {"elastic_net", "l1_ratio"},
        Entropy(): {"entropy", "mode", "temperature"},
        KLDivergence(reference_logprobs=REF): {
            "kl_divergence",
            "kl_direction",
            "kl_symmetric",
            "kl_max",
            "kl_min",
        },
        Consistency(): {"consistency_metric"},
        Orthogonality(): {"orthogonality"},
    }
    for reg, want in keys.items():
        _, metrics = reg(DATA, LP)
        assert want <= set(metrics), reg
    _, m = L2()(DATA, LP)
    assert m["center"] == "none" and m["l2_mean"] == pytest.approx(float((LP**2).mean()))
    _, m = KLDivergence(reference_logprobs=REF)(DATA, LP)
    assert m["kl_max"] == pytest.approx(float(_kl(LP, REF).max()))


def test_per_datum_lists_keep_rows_and_orthogonality_compares_data() -> None:
    a = torch.tensor([-0.1, -2.0, -0.5], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([-1.0, -0.2], dtype=torch.float64, requires_grad=True)
    loss, _m = Entropy(mode="maximize")(None, [a, b])
    want = -(_entropy(a.detach()) + _entropy(b.detach())) / 2  # one row per 1-D datum
    assert float(loss.detach()) == pytest.approx(float(want))
    loss, _ = Orthogonality()(None, [a, b])
    x = torch.stack([a.detach(), torch.cat([b.detach(), torch.zeros(1, dtype=b.dtype)])])
    assert float(loss.detach()) == pytest.approx(float(_orth(x, "soft")))
    assert float(loss.detach()) > 0  # Tinkex's 1 x n reshape gives 0 for per-datum vectors
    loss.backward()
    assert a.grad is not None and a.grad.abs().sum() > 0


def test_options_are_checked() -> None:
    with pytest.raises(TypeError, match="unknown option"):
        L1(lamda=1.0)
    with pytest.raises(ValueError, match="reduction"):
        L2(reduction="max")
    with pytest.raises(ValueError, match="l1_ratio"):
        ElasticNet(l1_ratio=1.5)
    with pytest.raises(ValueError, match="reference_logprobs"):
        KLDivergence()(DATA, LP)
    with pytest.raises(ValueError, match="loss_fn"):
        GradientPenalty()(DATA, LP)
    with pytest.raises(ValueError, match="Shape mismatch in KL"):
        KLDivergence(reference_logprobs=REF[:2])(DATA, LP)
    with pytest.raises(ValueError, match="no loss_fn_inputs"):
        Consistency(pair_field="missing")(DATA, LP)


# ----------------------------------------------------------------------------- spec / dispatch
def _sum_reg(data: Any, lp: Any) -> Any:
    return lp.sum(), {"s": lp.sum()}


def test_spec_validation() -> None:
    with pytest.raises(TypeError, match="fn must be"):
        RegularizerSpec(fn=3, weight=1.0, name="x")
    with pytest.raises(TypeError, match="positional"):
        RegularizerSpec(fn=lambda x: x, weight=1.0, name="x")
    with pytest.raises(ValueError, match=">= 0"):
        RegularizerSpec(fn=_sum_reg, weight=-1, name="x")
    with pytest.raises(TypeError, match="weight must be a number"):
        RegularizerSpec(fn=_sum_reg, weight=True, name="x")
    with pytest.raises(ValueError, match="non-empty"):
        RegularizerSpec(fn=_sum_reg, weight=1, name="")
    with pytest.raises(TypeError, match="async_"):
        RegularizerSpec(fn=_sum_reg, weight=1, name="x", async_=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Duplicate regularizer names"):
        Pipeline.compute(
            None,
            LP,
            lambda d, lp: lp.sum(),
            regularizers=[RegularizerSpec(_sum_reg, 1, "a"), RegularizerSpec(_sum_reg, 1, "a")],
        )
    with pytest.raises(TypeError, match="base_loss_fn"):
        Pipeline.compute(None, LP, "nll")  # type: ignore[arg-type]


class SquareModule:
    """A module-like regularizer: compute(data, logprobs, opts)."""

    def compute(self, data: Any, logprobs: Any, opts: dict[str, Any]) -> Any:
        return opts.get("scale", 1.0) * (logprobs**2).sum(), {}


def test_modules_three_argument_functions_and_classes_dispatch() -> None:
    def three(data: Any, lp: Any, opts: dict[str, Any]) -> Any:
        return opts["k"] * lp.sum(), {}

    assert float(execute(three, None, LP, {"k": 2.0})[0]) == pytest.approx(2 * float(LP.sum()))
    assert float(execute(SquareModule(), None, LP, {"scale": 3.0})[0]) == pytest.approx(
        3 * float((LP**2).sum())
    )
    assert float(execute(SquareModule, None, LP)[0]) == pytest.approx(float((LP**2).sum()))
    # a built-in class with its options in the spec
    out = Pipeline.compute(
        DATA,
        LP,
        lambda d, lp: lp.sum() * 0,
        regularizers=[
            RegularizerSpec(L1, 1.0, "l1", opts={"reduction": "mean"}),
            RegularizerSpec(three, 0.5, "three", opts={"k": 4.0}),
            RegularizerSpec(SquareModule(), 1.0, "mod"),
        ],
    )
    assert out.regularizers["l1"].value == pytest.approx(float(LP.abs().mean()))
    assert out.regularizers["three"].contribution == pytest.approx(0.5 * 4 * float(LP.sum()))
    assert out.regularizers["mod"].value == pytest.approx(float((LP**2).sum()))


SPECS = [
    RegularizerSpec(L1(), 0.01, "l1"),
    RegularizerSpec(L2(center="mean"), 0.02, "l2"),
    RegularizerSpec(ElasticNet(l1_ratio=0.6), 0.03, "en"),
    RegularizerSpec(Entropy(mode="maximize"), 0.1, "entropy"),
    RegularizerSpec(KLDivergence(reference_field="reference_logprobs", symmetric=True), 0.5, "kl"),
    RegularizerSpec(Consistency(metric="kl"), 0.2, "consistency"),
    RegularizerSpec(GradientPenalty(loss_fn=lambda x: (x**2).sum()), 0.001, "gp"),
    RegularizerSpec(Orthogonality(mode="hard"), 0.05, "orth"),
]


def _nll(data: Any, lp: Any) -> Any:
    return -lp.sum(), {"nll": -lp.sum()}


def test_pipeline_totals_grad_norms_and_parallel_equals_sequential() -> None:
    x_par = LP.clone().requires_grad_(True)
    x_seq = LP.clone().requires_grad_(True)
    par = Pipeline.compute(DATA, x_par, _nll, regularizers=SPECS, track_grad_norms=True)
    seq = Pipeline.compute(
        DATA, x_seq, _nll, regularizers=SPECS, track_grad_norms=True, parallel=False
    )
    assert par.to_dict() == seq.to_dict()
    assert list(par.regularizers) == [s.name for s in SPECS]
    par.loss.backward()
    seq.loss.backward()
    torch.testing.assert_close(x_par.grad, x_seq.grad, rtol=0, atol=0)

    # totals
    base = float(-LP.sum())
    contributions = [s.weight * par.regularizers[s.name].value for s in SPECS]
    assert par.base_loss["value"] == pytest.approx(base)
    assert par.base_loss["custom"] == {"nll": pytest.approx(base)}
    assert par.regularizer_total == pytest.approx(sum(contributions))
    assert par.loss_total == pytest.approx(base + sum(contributions))
    assert float(par.loss.detach()) == pytest.approx(par.loss_total)
    # grad norms, each against its own autograd gradient
    for s in SPECS:
        want = GradientTracker.grad_norm_for_regularizer(s, DATA, LP)
        r = par.regularizers[s.name]
        assert r.grad_norm == pytest.approx(want, rel=1e-6) and want > 0
        assert r.grad_norm_weighted == pytest.approx(s.weight * want)
    assert par.base_loss["grad_norm"] == pytest.approx(math.sqrt(LP.numel()))
    assert par.total_grad_norm == pytest.approx(
        GradientTracker.total_grad_norm(_nll, SPECS, DATA, LP), rel=1e-6
    )
    assert par.total_grad_norm == pytest.approx(float(x_par.grad.norm()), rel=1e-6)
    d = par.to_dict()
    assert set(d["regularizers"]["kl"]) == {
        "value",
        "weight",
        "contribution",
        "grad_norm",
        "grad_norm_weighted",
        "custom",
    }
    # without tracking: the grad keys stay (None) and no total norm is reported
    plain = Pipeline.compute(DATA, LP, _nll, regularizers=SPECS[:2])
    assert plain.regularizers["l1"].grad_norm is None and plain.total_grad_norm is None
    assert "total_grad_norm" not in plain.to_dict()


def test_gradient_tracker_norm_of_sum_is_sqrt_n() -> None:
    x = torch.tensor([-0.5, -1.2, -0.8, -2.1, -0.3, -1.5, -0.9, -1.8, -0.6, -1.1])
    assert GradientTracker.compute_grad_norm(lambda lp: lp.sum(), x) == pytest.approx(math.sqrt(10))


def test_async_regularizers_give_values_and_gradients() -> None:
    async def coro_reg(data: Any, lp: Any) -> Any:
        await asyncio.sleep(0)
        return (lp**2).sum(), {}

    spec = RegularizerSpec(coro_reg, 2.0, "async_sq", async_=True)
    x = LP.clone().requires_grad_(True)
    out = Pipeline.compute(None, x, lambda d, lp: lp.sum() * 0, regularizers=[spec])
    assert out.regularizers["async_sq"].value == pytest.approx(float((LP**2).sum()))
    out.loss.backward()
    torch.testing.assert_close(x.grad, 4 * LP)
    assert GradientTracker.grad_norm_for_regularizer(spec, None, LP) == pytest.approx(
        float((2 * LP).norm())
    )
    with pytest.raises(RegularizerError, match="async_=True"):
        Pipeline.compute(
            None, LP, _nll, regularizers=[RegularizerSpec(coro_reg, 1.0, "undeclared")]
        )


def test_errors_name_the_regularizer_and_parallel_reports_the_first_in_order() -> None:
    def boom(data: Any, lp: Any) -> Any:
        raise RuntimeError("kaboom")

    def bad_return(data: Any, lp: Any) -> Any:
        return "nope"

    specs = [
        RegularizerSpec(L1(), 1.0, "ok"),
        RegularizerSpec(bad_return, 1.0, "bad"),
        RegularizerSpec(boom, 1.0, "boom"),
    ]
    for parallel in (True, False):
        with pytest.raises(RegularizerError, match="'bad'") as info:
            Executor.execute_all(specs, None, LP, parallel=parallel)
        assert info.value.name == "bad"


def test_a_regularizer_past_its_timeout_raises_a_timeout() -> None:
    release = threading.Event()

    async def stuck(data: Any, lp: Any) -> Any:
        await asyncio.get_running_loop().run_in_executor(None, release.wait)
        return lp.sum(), {}

    spec = RegularizerSpec(stuck, 1.0, "stuck", async_=True)
    try:
        with pytest.raises(RegularizerTimeoutError, match="'stuck'"):
            Pipeline.compute(None, LP, _nll, regularizers=[spec], timeout=0.05)
    finally:
        release.set()


def test_regularized_loss_fn_wraps_a_per_datum_loss() -> None:
    lps = [LP[0].clone().requires_grad_(True), LP[1, :4].clone().requires_grad_(True)]

    def nll(data: Any, logprobs: list[Any]) -> Any:
        loss = sum((-lp).sum() for lp in logprobs)
        return loss, {"nll": float(loss.detach())}

    fn = regularized_loss_fn(
        nll, [RegularizerSpec(Entropy(mode="maximize"), 0.5, "entropy")], track_grad_norms=True
    )
    loss, metrics = fn(None, lps)
    h = (_entropy(LP[0]) + _entropy(LP[1, :4])) / 2
    base = float(-(LP[0].sum() + LP[1, :4].sum()))
    assert float(loss.detach()) == pytest.approx(base - 0.5 * float(h))
    assert metrics["nll"] == pytest.approx(base)
    assert metrics["loss_total"] == pytest.approx(float(loss.detach()))
    assert metrics["regularizer/entropy/entropy"] == pytest.approx(float(h))
    assert metrics["regularizer/entropy/grad_norm"] > 0
    loss.backward()
    assert all(lp.grad is not None for lp in lps)
    with pytest.raises(TypeError, match="RegularizerSpec"):
        regularized_loss_fn(nll, [L1()])  # type: ignore[list-item]
