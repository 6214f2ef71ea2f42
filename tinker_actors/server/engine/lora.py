"""LoRA over a shared frozen base: adapters are plain tensors, chosen per thread at call time.

The base `nn.Linear` layers are `LoraLinear`s that add ``scale * B(A(x))`` for the adapter
active *in the calling thread* (a ``threading.local``), so one base module serves many
training models and samplers at once without copying weights and without a global lock: the
server may run one model's step and another sampler's batch in two threads.

Samplers are immutable snapshots, so their adapter can be merged once into copies of the
affected base weights (``merge_adapter``): a merged entry is a plain weight tensor that replaces
the base weight for that module, which turns the two extra small matmuls, the scale and the add
per LoRA layer and token into nothing (they dominated a small model's per-token cost).

Alpha: fixed ``LORA_ALPHA = 32`` (scale = 32 / rank), like Tinker's cookbook ("lora_alpha 32,
effective scaling = alpha / rank"), so a good learning rate does not depend on the rank.
Init as PEFT: A ~ kaiming-uniform(a=sqrt(5)) i.e. U(-1/sqrt(in), 1/sqrt(in)), B = 0, from a
torch.Generator seeded with LoraSpec.seed (None -> 0), walking modules in a fixed order.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

LORA_ALPHA = 32.0
ATTN_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_TARGETS = ("gate_proj", "up_proj", "down_proj")
UNEMBED_TARGETS = ("lm_head",)

_active = threading.local()


def lora_target_names(attn: bool, mlp: bool, unembed: bool) -> tuple[str, ...]:
    return (
        (ATTN_TARGETS if attn else ())
        + (MLP_TARGETS if mlp else ())
        + (UNEMBED_TARGETS if unembed else ())
    )


@dataclass(slots=True)
class LoraPair:
    a: torch.Tensor  # [r, in]
    b: torch.Tensor  # [out, r]
    scale: float


# What ``use_adapter`` activates: LoRA pairs, or merged weights (``merge_adapter``) that replace
# the base weight of their module.
AdapterWeights = Mapping[str, "LoraPair | torch.Tensor"]


class LoraLinear(nn.Linear):
    """nn.Linear plus the calling thread's adapter for ``lora_key`` (its module path): a
    ``LoraPair`` adds ``scale * B(A(x))``, a tensor (a merged weight) replaces the weight."""

    lora_key: str = ""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        adapter: AdapterWeights | None = getattr(_active, "pairs", None)
        if adapter:
            pair = adapter.get(self.lora_key)
            if type(pair) is torch.Tensor:
                return F.linear(x, pair, self.bias)
            if isinstance(pair, LoraPair):
                y = F.linear(x, self.weight, self.bias)
                return y + F.linear(F.linear(x, pair.a), pair.b) * pair.scale
        return F.linear(x, self.weight, self.bias)


def merge_adapter(module: nn.Module, pairs: dict[str, LoraPair]) -> dict[str, torch.Tensor]:
    """``W + scale * B @ A`` for every adapted LoraLinear of ``module`` (new tensors; the base
    is untouched). For immutable adapters only: a later change to ``pairs`` is not seen."""
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, m in module.named_modules():
            pair = pairs.get(name) if isinstance(m, LoraLinear) else None
            if pair is not None:
                w = m.weight.detach()
                out[name] = torch.addmm(w, pair.b.to(w.dtype), pair.a.to(w.dtype), alpha=pair.scale)
    return out


def merged_nbytes(module: nn.Module, pairs: dict[str, LoraPair]) -> int:
    """Bytes ``merge_adapter`` would allocate."""
    return sum(
        m.weight.numel() * m.weight.element_size()
        for name, m in module.named_modules()
        if isinstance(m, LoraLinear) and name in pairs
    )


def assign_lora_keys(module: nn.Module) -> None:
    for name, m in module.named_modules():
        if isinstance(m, LoraLinear):
            m.lora_key = name


@contextmanager
def use_adapter(pairs: AdapterWeights | None) -> Iterator[None]:
    """Makes ``pairs`` the adapter of every LoraLinear for this thread, for the block."""
    previous = getattr(_active, "pairs", None)
    _active.pairs = pairs
    try:
        yield
    finally:
        _active.pairs = previous


class Adapter:
    """One training model's LoRA weights (leaf tensors with grad) keyed by module path."""

    def __init__(self, pairs: dict[str, LoraPair], rank: int, alpha: float) -> None:
        self.pairs = pairs
        self.rank = rank
        self.alpha = alpha

    @classmethod
    def init(
        cls,
        targets: dict[str, tuple[int, int]],
        rank: int,
        seed: int | None,
        attn: bool,
        mlp: bool,
        unembed: bool,
        device: torch.device,
        alpha: float = LORA_ALPHA,
    ) -> Adapter:
        wanted = lora_target_names(attn, mlp, unembed)
        g = torch.Generator().manual_seed(0 if seed is None else int(seed))
        pairs: dict[str, LoraPair] = {}
        for key in sorted(targets):
            if key.rsplit(".", 1)[-1] not in wanted:
                continue
            fan_in, fan_out = targets[key]
            bound = 1.0 / math.sqrt(fan_in)
            a = (torch.rand((rank, fan_in), generator=g) * 2 - 1) * bound
            b = torch.zeros((fan_out, rank))
            pairs[key] = LoraPair(
                a.to(device).requires_grad_(True), b.to(device).requires_grad_(True), alpha / rank
            )
        return cls(pairs, rank, alpha)

    def parameters(self) -> list[torch.Tensor]:
        out: list[torch.Tensor] = []
        for key in sorted(self.pairs):
            out += [self.pairs[key].a, self.pairs[key].b]
        return out

    def named_tensors(self) -> dict[str, torch.Tensor]:
        """PEFT key names -> tensors (``base_model.model.<path>.lora_A.weight``)."""
        out: dict[str, torch.Tensor] = {}
        for key in sorted(self.pairs):
            out[peft_key(key, "A")] = self.pairs[key].a
            out[peft_key(key, "B")] = self.pairs[key].b
        return out

    def frozen_copy(self) -> dict[str, LoraPair]:
        """An immutable snapshot (detached clones) for a sampler."""
        return {
            k: LoraPair(p.a.detach().clone(), p.b.detach().clone(), p.scale)
            for k, p in self.pairs.items()
        }

    def target_modules(self) -> list[str]:
        return sorted({k.rsplit(".", 1)[-1] for k in self.pairs})


def peft_key(module_path: str, which: str) -> str:
    return f"base_model.model.{module_path}.lora_{which}.weight"


def parse_peft_key(key: str) -> tuple[str, str] | None:
    """``base_model.model.X.lora_A.weight`` -> (X, "A"); None for other keys."""
    prefix = "base_model.model."
    for which in ("A", "B"):
        suffix = f".lora_{which}.weight"
        if key.endswith(suffix):
            path = key[: -len(suffix)]
            if path.startswith(prefix):
                path = path[len(prefix) :]
            return path, which
    return None
