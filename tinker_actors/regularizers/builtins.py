"""The eight built-in regularizers (Tinkex names, options and metrics keys), in torch.

Each is a class: ``L1(reduction="mean")`` is a ``(data, logprobs) -> (loss, metrics)``
callable and also offers ``compute(data, logprobs, opts)`` (``opts`` override the
constructor's options), so an instance, or the class itself with ``RegularizerSpec.opts``,
goes straight into a ``RegularizerSpec``.

``logprobs`` is one tensor or a list of per-datum tensors (what ``forward_backward_custom``
passes). Element-wise penalties see the list as one flat vector; row-wise ones (entropy, KL,
the ``kl`` consistency) treat every row of every datum as a row, and each 1-D datum as one
row. Unlike Tinkex, every term is differentiated for real: KL and Consistency are never
replaced by a constant, and Orthogonality on per-datum vectors compares the data with one
another (Tinkex's 1 x n reshape is always 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch
    from torch import Tensor  # for annotations inside functions, where ``torch`` is _torch()

__all__ = [
    "L1",
    "L2",
    "Consistency",
    "ElasticNet",
    "Entropy",
    "GradientPenalty",
    "KLDivergence",
    "Orthogonality",
    "Regularizer",
]

_MISSING = object()


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("regularizers need PyTorch: pip install 'tinker-actors[local]'") from exc
    return torch


class Regularizer:
    """Base class: option validation, ``__call__`` and ``compute``."""

    name: ClassVar[str] = "regularizer"
    defaults: ClassVar[dict[str, Any]] = {}
    required: ClassVar[tuple[tuple[str, ...], ...]] = ()  # at least one name of each group

    def __init__(self, **options: Any):
        if "lambda_" in options:
            options["lambda"] = options.pop("lambda_")
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            raise TypeError(
                f"{type(self).__name__}: unknown option(s) {unknown}; "
                f"known: {sorted(self.defaults)}"
            )
        self.options = {**self.defaults, **options}
        self._check(self.options, complete=False)

    def __repr__(self) -> str:
        given = {k: v for k, v in self.options.items() if self.defaults.get(k, _MISSING) != v}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in given.items())})"

    def __call__(self, data: Any, logprobs: Any) -> tuple[torch.Tensor, dict[str, Any]]:
        return self.compute(data, logprobs, None)

    def compute(
        self, data: Any, logprobs: Any, opts: Mapping[str, Any] | None = None
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        o = dict(self.options)
        if opts:
            extra = dict(opts)
            if "lambda_" in extra:
                extra["lambda"] = extra.pop("lambda_")
            unknown = sorted(set(extra) - set(self.defaults))
            if unknown:
                raise TypeError(f"{type(self).__name__}: unknown option(s) {unknown}")
            o.update(extra)
        self._check(o, complete=True)
        return self._compute(data, logprobs, o)

    # subclasses
    def _check(self, o: dict[str, Any], complete: bool) -> None:
        if "lambda" in o:
            _number(self, "lambda", o["lambda"])
        if "reduction" in o:
            _choice(self, "reduction", o["reduction"], self._reductions)
        if complete:
            for group in self.required:
                if all(o.get(k) is None for k in group):
                    raise ValueError(
                        f"{type(self).__name__} needs the option "
                        + " or ".join(repr(k) for k in group)
                    )

    _reductions: ClassVar[tuple[str, ...]] = ("sum", "mean")

    def _compute(
        self, data: Any, logprobs: Any, o: dict[str, Any]
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        raise NotImplementedError


# ----------------------------------------------------------------------------- helpers
def _number(reg: Regularizer, key: str, v: Any, *, minimum: float | None = None) -> None:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise ValueError(f"{type(reg).__name__}: {key} must be a finite number, got {v!r}")
    if minimum is not None and v < minimum:
        raise ValueError(f"{type(reg).__name__}: {key} must be >= {minimum}, got {v!r}")


def _choice(reg: Regularizer, key: str, v: Any, allowed: Sequence[str]) -> None:
    if v not in allowed:
        raise ValueError(f"{type(reg).__name__}: {key} must be one of {list(allowed)}, got {v!r}")


def _is_list(x: Any) -> bool:
    torch = _torch()
    return not isinstance(x, torch.Tensor)


def _as_tensor(x: Any, like: Any = None) -> torch.Tensor:
    torch = _torch()
    t: Tensor
    if isinstance(x, torch.Tensor):
        t = x
    elif hasattr(x, "to_numpy"):  # TensorData
        t = torch.as_tensor(x.to_numpy())
    else:
        t = torch.as_tensor(x)
    if not t.is_floating_point():
        t = t.to(torch.float32)
    if like is not None and isinstance(like, torch.Tensor):
        t = t.to(like.dtype)
    return t


def _field(data: Any, key: str, i: int) -> Any:
    try:
        datum = data[i]
    except (IndexError, TypeError, KeyError) as exc:
        raise ValueError(f"field {key!r}: no datum {i} in the data") from exc
    inputs = getattr(datum, "loss_fn_inputs", None)
    if inputs is None and isinstance(datum, Mapping):
        inputs = datum.get("loss_fn_inputs", datum)
    if inputs is None or key not in inputs:
        raise ValueError(f"datum {i} has no loss_fn_inputs[{key!r}]")
    return inputs[key]


def _field_like(data: Any, key: str, logprobs: Any) -> Any:
    """``loss_fn_inputs[key]`` shaped like ``logprobs``: per datum for a list, else datum 0."""
    if _is_list(logprobs):
        return [_as_tensor(_field(data, key, i), lp) for i, lp in enumerate(logprobs)]
    return _as_tensor(_field(data, key, 0), logprobs)


def _target(data: Any, logprobs: Any, target: Any) -> Any:
    if target == "logprobs":
        return logprobs
    if target == "probs":
        return _map(logprobs, lambda t: t.exp())
    if isinstance(target, tuple) and len(target) == 2 and target[0] == "field":
        return _field_like(data, str(target[1]), logprobs)
    raise ValueError(f"target must be 'logprobs', 'probs' or ('field', key), got {target!r}")


def _check_target(reg: Regularizer, v: Any) -> None:
    if v in ("logprobs", "probs"):
        return
    if isinstance(v, tuple) and len(v) == 2 and v[0] == "field" and isinstance(v[1], str):
        return
    raise ValueError(
        f"{type(reg).__name__}: target must be 'logprobs', 'probs' or ('field', key), got {v!r}"
    )


def _map(x: Any, f: Callable[[Any], Any]) -> Any:
    return [f(t) for t in x] if _is_list(x) else f(x)


def _flat(x: Any) -> torch.Tensor:
    torch = _torch()
    out: Tensor
    if _is_list(x):
        out = torch.cat([t.reshape(-1) for t in x]) if len(x) else torch.zeros(0)
    else:
        out = x.reshape(-1)
    return out


def _rowwise(f: Callable[..., torch.Tensor], *xs: Any) -> torch.Tensor:
    """``f`` reduces the last axis; a list gives the rows of every datum, concatenated."""
    torch = _torch()
    if _is_list(xs[0]):
        for x in xs[1:]:
            if len(x) != len(xs[0]):
                raise ValueError(f"got {len(x)} reference tensors for {len(xs[0])} data")
        out: Tensor = torch.cat([f(*ts).reshape(-1) for ts in zip(*xs, strict=True)])
        return out
    return f(*xs).reshape(-1)


def _reduce(v: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "sum":
        return v.sum()
    if reduction == "mean":
        return v.mean() if v.numel() else v.sum()
    return v


def _shape_check(a: Any, b: Any, what: str) -> None:
    pairs = zip(a, b, strict=True) if _is_list(a) else [(a, b)]
    if _is_list(a) and len(a) != len(b):
        raise ValueError(f"Shape mismatch in {what}: {len(a)} tensors vs {len(b)}")
    for x, y in pairs:
        if tuple(x.shape) != tuple(y.shape):
            raise ValueError(f"Shape mismatch in {what}: {tuple(x.shape)} vs {tuple(y.shape)}")


def _f(t: torch.Tensor) -> float:
    return float(t.detach().item())


# ----------------------------------------------------------------------------- L1 / L2 / EN
class L1(Regularizer):
    """λ·Σ|x| (or λ·mean|x|) of the target."""

    name = "l1_sparsity"
    defaults: ClassVar[dict[str, Any]] = {"target": "logprobs", "reduction": "sum", "lambda": 1.0}

    def _check(self, o: dict[str, Any], complete: bool) -> None:
        super()._check(o, complete)
        _check_target(self, o["target"])

    def _compute(self, data: Any, logprobs: Any, o: dict[str, Any]) -> Any:
        x = _flat(_target(data, logprobs, o["target"]))
        penalty = o["lambda"] * _reduce(x.abs(), o["reduction"])
        return penalty, {"l1_raw": _f(penalty), "l1_mean": _f(x.abs().mean())}


class L2(Regularizer):
    """λ·Σ clip(x - c)² (or the mean); c = mean(x), a number, or nothing."""

    name = "l2_weight_decay"
    defaults: ClassVar[dict[str, Any]] = {
        "target": "logprobs",
        "reduction": "sum",
        "lambda": 1.0,
        "clip": None,
        "center": None,
    }

    def _check(self, o: dict[str, Any], complete: bool) -> None:
        super()._check(o, complete)
        _check_target(self, o["target"])
        if o["clip"] is not None:
            _number(self, "clip", o["clip"], minimum=0.0)
        if o["center"] is not None and o["center"] != "mean":
            _number(self, "center", o["center"])

    def _compute(self, data: Any, logprobs: Any, o: dict[str, Any]) -> Any:
        x = _flat(_target(data, logprobs, o["target"]))
        center = o["center"]
        y = x
        if center == "mean":
            y = x - x.mean()
        elif center is not None:
            y = x - float(center)
        if o["clip"] is not None:
            y = y.clamp(-float(o["clip"]), float(o["clip"]))
        penalty = o["lambda"] * _reduce(y.pow(2), o["reduction"])
        return penalty, {
            "l2_raw": _f(penalty),
            "l2_mean": _f(x.pow(2).mean()),
            "center": "none" if center is None else center,
        }


class ElasticNet(Regularizer):
    """λ·(a·Σ|x| + (1-a)·Σx²), a = ``l1_ratio``."""

    name = "elastic_net"
    defaults: ClassVar[dict[str, Any]] = {
        "target": "logprobs",
        "reduction": "sum",
        "lambda": 1.0,
        "l1_ratio": 0.5,
    }

    def _check(self, o: dict[str, Any], complete: bool) -> None:
        super()._check(o, complete)
        _check_target(self, o["target"])
        _number(self, "l1_ratio", o["l1_ratio"], minimum=0.0)
        if o["l1_ratio"] > 1:
            raise ValueError(f"ElasticNet: l1_ratio must be in [0, 1], got {o['l1_ratio']}")

    def _compute(self, data: Any, logprobs: Any, o: dict[str, Any]) -> Any:
        x = _flat(_target(data, logprobs, o["target"]))
        a = float(o["l1_ratio"])
        r = o["reduction"]
        penalty = o["lambda"] * (a * _reduce(x.abs(), r) + (1 - a) * _reduce(x.pow(2), r))
        return penalty, {"elastic_net": _f(penalty), "l1_ratio": a}


# ----------------------------------------------------------------------------- entropy
def _entropy_rows(lp: torch.Tensor, temperature: float, normalize: bool) -> torch.Tensor:
    torch = _torch()
    if temperature != 1.0:
        lp = torch.log_softmax(lp / temperature, dim=-1)
    p = lp.exp()
    terms = torch.where(lp > -50.0, p * lp, torch.zeros_like(lp))
    h: Tensor = -terms.sum(dim=-1)
    if normalize and lp.shape[-1] > 1:
        h = h / math.log(lp.shape[-1])
    return h


class Entropy(Regularizer):
    """Row entropy H = -Σ p·log p of the logprobs (terms with log p ≤ -50 dropped).

    ``mode="minimize"`` returns +H and ``"maximize"`` returns -H, so minimizing the total
    loss moves the entropy in the direction the mode names.
    """

    name = "entropy"
    defaults: ClassVar[dict[str, Any]] = {
        "mode": "minimize",
        "reduction": "mean",
        "normalize": False,
        "temperature": 1.0,
    }

    def _check(self, o: dict[str, Any], complete: bool) -> None:
        super()._check(o, complete)
        _choice(self, "mode", o["mode"], ("minimize", "maximize"))
        _number(self, "temperature", o["temperature"])
        if o["temperature"] <= 0:
            raise ValueError(f"Entropy: temperature must be > 0, got {o['temperature']}")
        if not isinstance(o["normalize"], bool):
            raise ValueError("Entropy: normalize must be a bool")

    def _compute(self, data: Any, logprobs: Any, o: dict[str, Any]) -> Any:
        t, norm = float(o["temperature"]), o["normalize"]
        h = _reduce(_rowwise(lambda lp: _entropy_rows(lp, t, norm), logprobs), o["reduction"])
        loss = h if o["mode"] == "minimize" else -h
        return loss, {"entropy": _f(h), "mode": o["mode"], "temperature": t}


# ----------------------------------------------------------------------------- KL
def _kl_rows(lp: torch.Tensor, lq: torch.Tensor) -> torch.Tensor:
    torch = _torch()
    p = lp.exp()
    d = (lp - lq).clamp(-100.0, 100.0)
    kl: Tensor = torch.where(p > 1e-10, p * d, torch.zeros_like(p)).sum(dim=-1)
    return kl


class KLDivergence(Regularizer):
    """KL between the model's logprobs and a reference, per row, then reduced.

    ``direction="forward"`` is KL(model ‖ reference), ``"reverse"`` KL(reference ‖ model);
    ``symmetric=True`` averages both. The reference is ``reference_logprobs`` (a tensor or
    list), ``reference_field`` (a ``loss_fn_inputs`` key) or ``compute_reference(data)``.
    """

    name = "kl_divergence"
    defaults: ClassVar[dict[str, Any]] = {
        "reference_logprobs": None,
        "reference_field": None,
        "compute_reference": None,
        "reduction": "mean",
        "direction": "forward",
        "symmetric": False,
    }
    required = (("reference_logprobs", "reference_field", "compute_reference"),)

    def _check(self, o: dict[str, Any], complete: bool) -> None:
        super()._check(o, complete)
        _choice(self, "direction", o["direction"], ("forward", "reverse"))
        if not isinstance(o["symmetric"], bool):
            raise ValueError("KLDivergence: symmetric must be a bool")
        if o["compute_reference"] is not None and not callable(o["compute_reference"]):
            raise ValueError("KLDivergence: compute_reference must be a function of data")

    def _reference(self, data: Any, logprobs: Any, o: dict[str, Any]) -> Any:
        if o["reference_logprobs"] is not None:
            ref = o["reference_logprobs"]
        elif o["reference_field"] is not None:
            return _field_like(data, str(o["reference_field"]), logprobs)
        else:
            ref = o["compute_reference"](data)
        if _is_list(logprobs):
            if _is_list(ref) is False:
                raise ValueError("KLDivergence: a list of logprobs needs a list of references")
            return [_as_tensor(r, lp).detach() for r, lp in zip(ref, logprobs, strict=False)]
        return _as_tensor(ref, logprobs).detach()

    def _compute(self, data: Any, logprobs: Any, o: dict[str, Any]) -> Any:
        ref = self._reference(data, logprobs, o)
        _shape_check(logprobs, ref, "KL divergence")
        fwd = _rowwise(_kl_rows, logprobs, ref)
        rev = _rowwise(_kl_rows, ref, logprobs)
        if o["symmetric"]:
            rows = (fwd + rev) / 2
        else:
            rows = fwd if o["direction"] == "forward" else rev
        loss = _reduce(rows, o["reduction"])
        return loss, {
            "kl_divergence": _f(loss),
            "kl_direction": o["direction"],
            "kl_symmetric": o["symmetric"],
            "kl_max": _f(rows.max()) if rows.numel() else 0.0,
            "kl_min": _f(rows.min()) if rows.numel() else 0.0,
        }


# ----------------------------------------------------------------------------- consistency
class Consistency(Regularizer):
    """Distance between the logprobs and a paired set (``pair_field`` of the data)."""

    name = "consistency"
    defaults: ClassVar[dict[str, Any]] = {
        "pair_field": "original_logprobs",
        "metric": "mse",
        "reduction": "mean",
    }

    def _check(self, o: dict[str, Any], complete: bool) -> None:
        super()._check(o, complete)
        _choice(self, "metric", o["metric"], ("mse", "l1", "cosine", "kl"))
        if not isinstance(o["pair_field"], str) or not o["pair_field"]:
            raise ValueError("Consistency: pair_field must be a non-empty string")

    def _compute(self, data: Any, logprobs: Any, o: dict[str, Any]) -> Any:
        pair = _map(_field_like(data, o["pair_field"], logprobs), lambda t: t.detach())
        _shape_check(logprobs, pair, "consistency")
        metric, r = o["metric"], o["reduction"]
        if metric in ("mse", "l1"):
            d = _flat(logprobs) - _flat(pair)
            loss = _reduce(d.pow(2) if metric == "mse" else d.abs(), r)
        elif metric == "cosine":
            a, b = _flat(logprobs), _flat(pair)
            denom = a.norm().clamp_min(1e-8) * b.norm().clamp_min(1e-8)
            loss = 1.0 - (a * b).sum() / denom
        else:

            def sym(x: Any, y: Any) -> Any:
                return ((x.exp() * (x - y)).sum(-1) + (y.exp() * (y - x)).sum(-1)) / 2

            loss = _reduce(_rowwise(sym, logprobs, pair), r)
        return loss, {"consistency_metric": metric}


# ----------------------------------------------------------------------------- gradient penalty
class GradientPenalty(Regularizer):
    """(‖∇ loss_fn(x)‖₂ - target_norm)², differentiated for real (double backward).

    ``mode="interpolated"`` (WGAN-GP) evaluates it at x̂ = ε·x + (1-ε)·reference with
    ε ~ U(0, 1); pass ``seed`` for a reproducible ε (Tinkex draws it unseeded).
    """

    name = "gradient_penalty"
    defaults: ClassVar[dict[str, Any]] = {
        "loss_fn": None,
        "mode": "output",
        "target_norm": 1.0,
        "reference_field": "reference_logprobs",
        "seed": None,
    }
    required = (("loss_fn",),)

    def _check(self, o: dict[str, Any], complete: bool) -> None:
        super()._check(o, complete)
        _choice(self, "mode", o["mode"], ("output", "interpolated"))
        _number(self, "target_norm", o["target_norm"])
        if o["loss_fn"] is not None and not callable(o["loss_fn"]):
            raise ValueError("GradientPenalty: loss_fn must be a function of the logprobs")

    def _compute(self, data: Any, logprobs: Any, o: dict[str, Any]) -> Any:
        torch = _torch()
        x = logprobs
        if o["mode"] == "interpolated":
            ref = _map(_field_like(data, str(o["reference_field"]), logprobs), lambda t: t.detach())
            _shape_check(logprobs, ref, "gradient penalty")
            gen = torch.Generator()
            if o["seed"] is None:
                gen.seed()
            else:
                gen.manual_seed(int(o["seed"]))
            eps = float(torch.rand((), generator=gen))
            if _is_list(x):
                x = [eps * a + (1 - eps) * b for a, b in zip(x, ref, strict=True)]
            else:
                x = eps * x + (1 - eps) * ref
        xs = list(x) if _is_list(x) else [x]
        if not all(t.requires_grad for t in xs):
            # Values only (no graph to differentiate through): use leaf copies.
            xs = [t.detach().requires_grad_(True) for t in xs]
            x = xs if _is_list(x) else xs[0]
        inner = o["loss_fn"](x)
        if isinstance(inner, tuple):
            inner = inner[0]
        inner = inner.sum()
        grads = torch.autograd.grad(inner, xs, create_graph=True, allow_unused=True)
        sq = sum((g.pow(2).sum() for g in grads if g is not None), torch.zeros(()))
        norm = (sq + 1e-12).sqrt()
        loss = (norm - float(o["target_norm"])).pow(2)
        return loss, {"gradient_norm": _f(norm)}


# ----------------------------------------------------------------------------- orthogonality
def _matrix_for_axis(x: torch.Tensor, axis: str) -> torch.Tensor:
    if x.ndim == 0:
        return x.reshape(1, 1)
    if x.ndim == 1:
        return x.reshape(1, -1)
    if x.ndim == 2:
        return x.t() if axis == "vocabulary" else x
    if x.ndim == 3 and axis == "sequence":
        b, s, v = x.shape
        return x.transpose(0, 1).reshape(s, b * v)
    if x.ndim == 3 and axis == "vocabulary":
        return x.reshape(-1, x.shape[-1]).t()
    return x.reshape(-1, x.shape[-1])


class Orthogonality(Regularizer):
    """Off-diagonal energy of the Gram matrix of the (L2-normalised) rows.

    ``soft`` = Σ_{i≠j} G_ij², ``hard`` = ‖G - I‖²_F, ``spectral`` = (tr G - n)² + soft.
    A list of per-datum vectors becomes one row per datum (zero-padded to the longest), so
    the data are decorrelated from one another.
    """

    name = "orthogonality"
    defaults: ClassVar[dict[str, Any]] = {"mode": "soft", "normalize": True, "axis": "rows"}
    _reductions = ()

    def _check(self, o: dict[str, Any], complete: bool) -> None:
        super()._check(o, complete)
        _choice(self, "mode", o["mode"], ("soft", "hard", "spectral"))
        _choice(self, "axis", o["axis"], ("rows", "sequence", "vocabulary"))
        if not isinstance(o["normalize"], bool):
            raise ValueError("Orthogonality: normalize must be a bool")

    def _compute(self, data: Any, logprobs: Any, o: dict[str, Any]) -> Any:
        torch = _torch()
        if _is_list(logprobs):
            rows = [t.reshape(-1) for t in logprobs]
            width = max((r.numel() for r in rows), default=0)
            m = torch.stack([torch.nn.functional.pad(r, (0, width - r.numel())) for r in rows])
        else:
            m = _matrix_for_axis(logprobs, o["axis"])
        if o["normalize"]:
            m = m / m.norm(dim=1, keepdim=True).clamp_min(1e-8)
        gram = m @ m.t()
        n = gram.shape[0]
        eye = torch.eye(n, dtype=gram.dtype)
        off = (gram * (1 - eye)).pow(2).sum()
        if o["mode"] == "soft":
            loss = off
        elif o["mode"] == "hard":
            loss = (gram - eye).pow(2).sum()
        else:
            loss = (gram.diagonal().sum() - n).pow(2) + off
        return loss, {"orthogonality": _f(loss)}
