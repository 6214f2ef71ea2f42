"""The built-in loss functions with the official Tinker semantics.

Per token t with lp = logprob of the target under the current policy, q = the sampler's
logprob (input ``logprobs``), A = advantage, r = exp(lp - q), sg = stop-gradient:

    cross_entropy        objective = w * lp                       (w = ``weights``, any real)
    importance_sampling  objective = r * A
    ppo                  objective = min(r * A, clip(r, lo, hi) * A)   lo/hi 0.8 / 1.2
    cispo                objective = sg(clip(r, lo, hi)) * lp * A      lo/hi 0.0 / 4.0
    dro                  objective = lp * A - beta/2 * (lp - q)^2      beta 0.05
    gspo                 s = exp(mean_t m_t (sg(lp) - q)) per datum; s_t = sg(s) * exp(lp - sg(lp))
                         objective = min(s_t * A, clip(s_t, lo, hi) * A)  lo/hi 1-3e-4 / 1+4e-4

loss = -sum over every token of every datum (no normalisation: "we sum the token-level
losses"); ``loss:sum`` reports it. Assumptions (the official docs leave them open): a missing
``weights`` for cross_entropy means all ones; dro's default beta is the docs' example 0.05;
gspo reads the ppo key names with the GSPO paper's defaults, and ``sequence_ratio_mask``
(the tokens whose log-ratio enters the sequence ratio) defaults to all ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .base import DatumArrays, EngineUserError

RL_INPUTS = ("target_tokens", "logprobs", "advantages")


@dataclass(frozen=True, slots=True)
class LossSpec:
    required: tuple[str, ...]
    optional: dict[str, float]  # name -> fill value when absent
    config: dict[str, float]  # loss_fn_config key -> default


LOSSES: dict[str, LossSpec] = {
    "cross_entropy": LossSpec(("target_tokens",), {"weights": 1.0}, {}),
    "importance_sampling": LossSpec(RL_INPUTS, {}, {}),
    "ppo": LossSpec(RL_INPUTS, {}, {"clip_low_threshold": 0.8, "clip_high_threshold": 1.2}),
    "cispo": LossSpec(RL_INPUTS, {}, {"clip_low_threshold": 0.0, "clip_high_threshold": 4.0}),
    "dro": LossSpec(RL_INPUTS, {}, {"beta": 0.05}),
    "gspo": LossSpec(
        RL_INPUTS,
        {"sequence_ratio_mask": 1.0},
        {"clip_low_threshold": 1.0 - 3e-4, "clip_high_threshold": 1.0 + 4e-4},
    ),
}


@dataclass(slots=True)
class Batch:
    """Right-padded batch: tokens [B, T], float/int inputs [B, T], mask [B, T] (1 = real)."""

    tokens: torch.Tensor
    targets: torch.Tensor
    inputs: dict[str, torch.Tensor]
    mask: torch.Tensor
    lengths: list[int]


def resolve_config(loss_fn: str, loss_fn_config: dict[str, Any] | None) -> dict[str, float]:
    spec = LOSSES.get(loss_fn)
    if spec is None:
        known = ", ".join(sorted(LOSSES))
        raise EngineUserError(
            f"unsupported loss_fn {loss_fn!r} for the local torch engine (supported: {known})"
        )
    cfg = dict(spec.config)
    for key, value in (loss_fn_config or {}).items():
        if key not in spec.config:
            continue  # unknown keys are ignored, as extra config is harmless
        try:
            cfg[key] = float(value)
        except (TypeError, ValueError):
            raise EngineUserError(
                f"loss_fn_config[{key!r}] for {loss_fn!r} must be a number, got {value!r}"
            ) from None
    return cfg


def build_batch(
    loss_fn: str,
    data: list[DatumArrays],
    vocab_size: int,
    max_len: int,
    pad_id: int,
    device: torch.device,
) -> Batch:
    """Validates every datum and pads them into one batch."""
    spec = LOSSES[loss_fn]
    if not data:
        raise EngineUserError("forward_backward needs at least one datum")
    lengths: list[int] = []
    for i, d in enumerate(data):
        tokens = np.asarray(d.tokens)
        if tokens.ndim != 1 or tokens.shape[0] == 0:
            raise EngineUserError(f"datum {i}: model_input must be a non-empty token sequence")
        if tokens.shape[0] > max_len:
            raise EngineUserError(
                f"datum {i}: {tokens.shape[0]} tokens exceed the model's context of {max_len}"
            )
        _check_ids(tokens, vocab_size, f"datum {i}: model_input")
        n = tokens.shape[0]
        for name in spec.required:
            if name not in d.inputs:
                raise EngineUserError(
                    f"datum {i}: loss_fn {loss_fn!r} requires loss_fn_inputs "
                    f"{list(spec.required)}; {name!r} is missing"
                )
        for name in (*spec.required, *spec.optional):
            if name in d.inputs and np.shape(d.inputs[name]) != (n,):
                raise EngineUserError(
                    f"datum {i}: loss_fn_inputs[{name!r}] has shape "
                    f"{tuple(np.shape(d.inputs[name]))}, expected ({n},) like model_input"
                )
        _check_ids(np.asarray(d.inputs["target_tokens"]), vocab_size, f"datum {i}: target_tokens")
        lengths.append(n)

    b, t = len(data), max(lengths)
    tokens = np.full((b, t), pad_id, dtype=np.int64)
    targets = np.zeros((b, t), dtype=np.int64)
    mask = np.zeros((b, t), dtype=np.float32)
    names = [n for n in (*spec.required, *spec.optional) if n != "target_tokens"]
    floats = {n: np.zeros((b, t), dtype=np.float32) for n in names}
    for i, (d, n) in enumerate(zip(data, lengths, strict=True)):
        tokens[i, :n] = d.tokens
        targets[i, :n] = d.inputs["target_tokens"]
        mask[i, :n] = 1.0
        for name in names:
            value = d.inputs.get(name)
            floats[name][i, :n] = spec.optional[name] if value is None else value

    def to(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x).to(device)

    return Batch(to(tokens), to(targets), {k: to(v) for k, v in floats.items()}, to(mask), lengths)


def _check_ids(x: np.ndarray, vocab_size: int, what: str) -> None:
    if x.size == 0:
        return
    if not np.issubdtype(x.dtype, np.integer):
        if not np.all(np.equal(np.mod(x, 1), 0)):
            raise EngineUserError(f"{what} must hold integer token ids")
    lo, hi = x.min(), x.max()
    if lo < 0 or hi >= vocab_size:
        raise EngineUserError(f"{what} has token ids outside [0, {vocab_size}): {lo}..{hi}")


def target_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[target] without materialising the full log-softmax."""
    logits = logits.float()
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def objective(loss_fn: str, cfg: dict[str, float], lp: torch.Tensor, batch: Batch) -> torch.Tensor:
    """Per-token objective [B, T] (padding not yet masked)."""
    x = batch.inputs
    if loss_fn == "cross_entropy":
        return x["weights"] * lp
    q, adv = x["logprobs"], x["advantages"]
    if loss_fn == "importance_sampling":
        return torch.exp(lp - q) * adv
    if loss_fn == "ppo":
        r = torch.exp(lp - q)
        clipped = r.clamp(cfg["clip_low_threshold"], cfg["clip_high_threshold"])
        return torch.minimum(r * adv, clipped * adv)
    if loss_fn == "cispo":
        r = torch.exp(lp - q).clamp(cfg["clip_low_threshold"], cfg["clip_high_threshold"])
        return r.detach() * lp * adv
    if loss_fn == "dro":
        return lp * adv - 0.5 * cfg["beta"] * (lp - q) ** 2
    if loss_fn == "gspo":
        m = x["sequence_ratio_mask"] * batch.mask
        lp_sg = lp.detach()
        log_s = ((lp_sg - q) * m).sum(-1) / m.sum(-1).clamp(min=1.0)
        s_t = torch.exp(log_s)[:, None] * torch.exp(lp - lp_sg)
        clipped = s_t.clamp(cfg["clip_low_threshold"], cfg["clip_high_threshold"])
        return torch.minimum(s_t * adv, clipped * adv)
    raise EngineUserError(f"unsupported loss_fn {loss_fn!r}")


def compute_loss(
    loss_fn: str, cfg: dict[str, float], lp: torch.Tensor, batch: Batch
) -> torch.Tensor:
    """The scalar loss: minus the token-summed objective over real (unpadded) tokens."""
    obj = objective(loss_fn, cfg, lp, batch)
    # where() rather than multiply, so inf/NaN at padded positions cannot leak into the sum
    return -torch.where(batch.mask > 0, obj, torch.zeros_like(obj)).sum()
