"""Base models: a compact Llama-style decoder in plain torch, and Hugging Face models on disk.

Why our own module rather than ``LlamaForCausalLM``: on a 1M-parameter model the per-call
Python overhead of the transformers forward (mask builders, cache objects, output classes)
costs more than the arithmetic, and we want a batched KV cache whose rows we can drop
(finished sequences) and repeat (num_samples) cheaply. Parameter names match
``LlamaForCausalLM`` exactly (``model.layers.0.self_attn.q_proj.weight``...), so the weights
load into transformers and PEFT adapter keys are the real Llama ones; a test holds the logits
equal to transformers' on the same weights.

Both kinds are wrapped in a small `Backend` interface: `logits` for training (right padding,
plain causal attention) and `new_cache` / `step` / `select` for sampling (left padding, a key
mask, per-row positions).
"""

from __future__ import annotations

import inspect
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from .base import EngineUserError, ModelSpec
from .lora import AdapterWeights, LoraLinear, LoraPair, assign_lora_keys, lora_target_names
from .tokenizer import BOS_ID, EOS_ID, PAD_ID, VOCAB_SIZE

if TYPE_CHECKING:
    from transformers import DynamicCache, LlamaConfig


@dataclass(frozen=True, slots=True)
class ModelConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    max_context_length: int = 1024
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    # None: 1/sqrt(hidden_size). Larger than GPT's 0.02 so the random base has features a LoRA
    # can use: the 1M model then learns a small dataset in a few dozen steps.
    init_std: float | None = None

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def to_hf_config(self) -> LlamaConfig:
        """The equivalent transformers LlamaConfig (for export and the equivalence test)."""
        from transformers import LlamaConfig

        return LlamaConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads,
            max_position_embeddings=self.max_context_length,
            rms_norm_eps=self.rms_norm_eps,
            rope_parameters={"rope_type": "default", "rope_theta": self.rope_theta},
            tie_word_embeddings=False,
            bos_token_id=BOS_ID,
            eos_token_id=EOS_ID,
            pad_token_id=PAD_ID,
        )


BUILTIN_MODELS: dict[str, ModelConfig] = {
    # about 1.07M parameters
    "tinker-actors/byte-1m": ModelConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=128,
        intermediate_size=352,
        num_layers=5,
        num_heads=4,
        num_kv_heads=4,
    ),
    # about 19.6M parameters
    "tinker-actors/byte-20m": ModelConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=512,
        intermediate_size=1408,
        num_layers=6,
        num_heads=8,
        num_kv_heads=8,
    ),
}


def count_parameters(cfg: ModelConfig) -> int:
    d, f, v, hd = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.head_dim
    attn = d * cfg.num_heads * hd * 2 + d * cfg.num_kv_heads * hd * 2
    layer = attn + 3 * d * f + 2 * d
    return cfg.num_layers * layer + 2 * v * d + d


# --------------------------------------------------------------------------------------------
# the compact Llama module


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class KVCache:
    """Preallocated keys/values [layers][B, H, L, D]; every row writes at the same index."""

    def __init__(
        self, cfg: ModelConfig, batch: int, max_len: int, device: torch.device, dtype: torch.dtype
    ) -> None:
        shape = (batch, cfg.num_kv_heads, max_len, cfg.head_dim)
        self.k = [torch.empty(shape, device=device, dtype=dtype) for _ in range(cfg.num_layers)]
        self.v = [torch.empty(shape, device=device, dtype=dtype) for _ in range(cfg.num_layers)]
        self.length = 0

    def select(self, rows: torch.Tensor) -> None:
        self.k = [k.index_select(0, rows) for k in self.k]
        self.v = [v.index_select(0, rows) for v in self.v]


class RowCache:
    """Keys/values [layers][rows, H, L, D] for continuous batching (``forward_rows``): a row is
    a slot that one sequence holds from its prefill to its last token, its keys at positions
    0..len-1 of the slot, so rows of any length decode side by side and join or leave at any
    step."""

    def __init__(
        self, cfg: ModelConfig, rows: int, max_len: int, device: torch.device, dtype: torch.dtype
    ) -> None:
        self._heads, self._hd = cfg.num_kv_heads, cfg.head_dim
        self.device, self.dtype, self.layers = device, dtype, cfg.num_layers
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []
        self.rows = self.max_len = 0
        self.grow(rows, max_len)

    def grow(self, rows: int, max_len: int) -> None:
        """At least ``rows`` x ``max_len`` (copies what is there). Zeros, not garbage: a
        masked key still multiplies its value by 0, and garbage may be NaN."""
        rows, max_len = max(rows, self.rows), max(max_len, self.max_len)
        if rows == self.rows and max_len == self.max_len:
            return
        shape = (rows, self._heads, max_len, self._hd)
        for kv in (self.k, self.v):
            for i in range(self.layers):
                t = torch.zeros(shape, device=self.device, dtype=self.dtype)
                if len(kv) > i:
                    t[: self.rows, :, : self.max_len] = kv[i]
                    kv[i] = t
                else:
                    kv.append(t)
        self.rows, self.max_len = rows, max_len

    def move(self, src: torch.Tensor, dst: torch.Tensor, keys: int) -> None:
        """Copies rows ``src`` to rows ``dst`` (their first ``keys`` positions)."""
        for kv in (self.k, self.v):
            for t in kv:
                t[dst, :, :keys] = t[src, :, :keys]


# A linear layer as the continuous batch calls it: the weight in force (the base weight or a
# merged one) and the LoRA pair added to it, if any (``LoraLinear.forward``'s arithmetic).
_Linear = tuple[torch.Tensor, LoraPair | None]


def _linear(x: torch.Tensor, lin: _Linear) -> torch.Tensor:
    w, pair = lin
    y = F.linear(x, w)
    if pair is not None:
        y = y + F.linear(F.linear(x, pair.a), pair.b) * pair.scale
    return y


def _rms(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))  # RMSNorm.forward


# A second attention block costs about as much as reading this many more (row, key) pairs.
ROW_SPLIT_MIN_KEYS = 512


def _row_groups(lens: list[int], keys: int) -> list[tuple[int, int, int]]:
    """The decode rows' attention as (first row, end row, keys) blocks: the whole batch over
    ``keys``, or two blocks of rows, each over the keys its longest row needs, when that
    reads at least a sixth fewer cached keys (and ``ROW_SPLIT_MIN_KEYS``). Attention reads every row's cache up to the
    longest row's length (it is memory-bound at these sizes), and in a continuous batch rows
    of very different ages sit side by side: a compaction or a burst leaves the older, longer
    rows below the new ones, which a split finds. Masked keys weigh exactly 0, so a shorter
    block changes a row's result by rounding at most (as any other batch height would)."""
    b = len(lens)
    if b * (keys - 1 - min(lens)) * 6 < b * keys:  # no split could save enough (lock-step)
        return [(0, b, keys)]
    best, split = b * keys, 0
    suffix = [0] * (b + 1)
    for r in range(b - 1, 0, -1):
        suffix[r] = max(suffix[r + 1], lens[r] + 1)
    head = 0
    for r in range(1, b):
        head = max(head, lens[r - 1] + 1)
        cost = r * head + (b - r) * suffix[r]
        if cost < best:
            best, split = cost, r
    saved = b * keys - best
    if not split or saved * 6 < b * keys or saved < ROW_SPLIT_MIN_KEYS:
        return [(0, b, keys)]
    return [(0, split, max(lens[:split]) + 1), (split, b, max(lens[split:]) + 1)]


@dataclass(frozen=True, slots=True)
class _LayerPlan:
    ln1: torch.Tensor
    qkv: tuple[_Linear, ...]  # one fused [q; k; v] weight, or q, k, v when a LoRA pair is in
    o: _Linear
    ln2: torch.Tensor
    gate_up: tuple[_Linear, ...]  # one fused [gate; up] weight, or gate, up
    down: _Linear


@dataclass(frozen=True, slots=True)
class RowsPlan:
    """A ``LlamaLM`` with one adapter in force, as plain tensors for ``forward_rows``: no
    module calls, no per-call adapter lookup, q/k/v and gate/up as one matmul each where no
    LoRA pair is added (the concatenated weight gives the same products). Built once per
    running batch, whose adapter does not change."""

    embed: torch.Tensor
    layers: tuple[_LayerPlan, ...]
    norm: torch.Tensor
    lm_head: _Linear
    eps: float
    inv_freq: torch.Tensor
    nh: int
    nkv: int
    hd: int


def rows_plan(module: LlamaLM, weights: AdapterWeights | None) -> RowsPlan:
    """``module``'s weights as ``weights`` (``use_adapter``'s) make them, for ``forward_rows``."""

    def lin(m: LoraLinear) -> _Linear:
        entry = weights.get(m.lora_key) if weights else None
        if isinstance(entry, torch.Tensor):
            return entry, None
        return m.weight, entry

    def fused(*ms: LoraLinear) -> tuple[_Linear, ...]:
        parts = [lin(m) for m in ms]
        if any(pair is not None for _, pair in parts):
            return tuple(parts)
        return ((torch.cat([w for w, _ in parts]), None),)

    layers = []
    for layer in module.model.decoder_layers:
        a, mlp = layer.self_attn, layer.mlp
        layers.append(
            _LayerPlan(
                layer.input_layernorm.weight,
                fused(a.q_proj, a.k_proj, a.v_proj),
                lin(a.o_proj),
                layer.post_attention_layernorm.weight,
                fused(mlp.gate_proj, mlp.up_proj),
                lin(mlp.down_proj),
            )
        )
    attn0 = module.model.decoder_layers[0].self_attn
    return RowsPlan(
        module.model.embed_tokens.weight,
        tuple(layers),
        module.model.norm.weight,
        lin(module.lm_head),
        module.model.norm.eps,
        module.inv_freq,
        attn0.nh,
        attn0.nkv,
        attn0.hd,
    )


def forward_rows(
    plan: RowsPlan,
    cache: RowCache,
    tok: torch.Tensor,
    positions: torch.Tensor,
    key_mask: torch.Tensor,
    ids: torch.Tensor | None,
    slots: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One forward of a continuous batch: one token ``tok`` [B] for each of rows 0..B-1 at
    its own ``positions`` [B] (``key_mask`` [B, keys] says which keys each sees, its own
    included), and the prefill of right-padded prompts ``ids`` [n, T] into rows ``slots``
    (positions 0..T-1, causal within the block, so no real token sees the padding after it).

    Both kinds share every linear layer (the tokens are flattened into one matrix: a prefill
    costs its extra rows, not a forward of its own); only attention is per kind. The cache
    writes of the decode rows come before those of the prefill (a row just admitted may sit
    in the batch as a hole whose dummy token writes position 0). Same layers and arithmetic
    as ``LlamaLM.forward``, on ``plan``'s tensors (rotary applied to q and k in one go).
    Returns logits [B, V] and [n, T, V] (None without a prefill).
    """
    b = tok.shape[0]
    n, t = (0, 0) if ids is None else ids.shape
    nh, nkv, hd, eps = plan.nh, plan.nkv, plan.hd, plan.eps
    dev = tok.device
    flat_ids, flat_pos = tok, positions
    if ids is not None and n:
        prefill_pos = torch.arange(t, device=dev).repeat(n)
        flat_ids = torch.cat((tok, ids.reshape(-1)))
        flat_pos = torch.cat((positions, prefill_pos))
    freqs = flat_pos.to(torch.float32)[:, None] * plan.inv_freq.to(dev)
    emb = torch.cat((freqs, freqs), dim=-1)[:, None]  # [N, 1, D]
    cos, sin = emb.cos(), emb.sin()
    x = F.embedding(flat_ids, plan.embed)  # [N, d]
    # where each decode row's new key goes in a layer's cache viewed as [rows * H * L, D]
    heads = torch.arange(nkv, device=dev)[None] * cache.max_len
    flat = (torch.arange(b, device=dev) * (nkv * cache.max_len))[:, None] + heads
    flat = (flat + positions[:, None]).reshape(-1)
    # additive, made once for all layers (SDPA would convert a bool mask in every layer)
    mask = torch.zeros(key_mask.shape, device=dev, dtype=cos.dtype)
    mask = mask.masked_fill_(~key_mask, float("-inf"))[:, None, None, :]
    keys = key_mask.shape[1]
    groups = _row_groups(positions.tolist(), keys) if b else []
    gqa = nh != nkv
    scale = hd**-0.5
    qk_heads = nh + nkv
    for i, lp in enumerate(plan.layers):
        h = _rms(x, lp.ln1, eps)
        if len(lp.qkv) == 1:
            y = _linear(h, lp.qkv[0])
        else:
            y = torch.cat([_linear(h, lin) for lin in lp.qkv], dim=-1)
        y = y.view(-1, qk_heads + nkv, hd)
        qk = y[:, :qk_heads]
        qk = qk * cos + _rotate_half(qk) * sin
        q, k, v = qk[:, :nh], qk[:, nh:], y[:, qk_heads:]
        outs = []
        if b:
            kc, vc = cache.k[i], cache.v[i]
            kc.view(-1, hd).index_copy_(0, flat, k[:b].reshape(-1, hd))
            vc.view(-1, hd).index_copy_(0, flat, v[:b].reshape(-1, hd))
            parts = []
            for lo, hi, kk in groups:
                if gqa:
                    o = F.scaled_dot_product_attention(
                        q[lo:hi, :, None],
                        kc[lo:hi, :, :kk],
                        vc[lo:hi, :, :kk],
                        attn_mask=mask[lo:hi, :, :, :kk],
                        enable_gqa=gqa,
                    )
                else:  # one query per row: two batched matmuls beat SDPA's kernel here
                    scores = torch.matmul(q[lo:hi, :, None], kc[lo:hi, :, :kk].transpose(-1, -2))
                    scores = scores.mul_(scale).add_(mask[lo:hi, :, :, :kk])
                    o = torch.matmul(torch.softmax(scores, dim=-1), vc[lo:hi, :, :kk])
                parts.append(o)
            o = parts[0] if len(parts) == 1 else torch.cat(parts)
            outs.append(o.reshape(b, nh * hd))
        if n:
            qp = q[b:].reshape(n, t, nh, hd).transpose(1, 2)
            kp = k[b:].reshape(n, t, nkv, hd).transpose(1, 2)
            vp = v[b:].reshape(n, t, nkv, hd).transpose(1, 2)
            cache.k[i][slots, :, :t] = kp
            cache.v[i][slots, :, :t] = vp
            o = F.scaled_dot_product_attention(qp, kp, vp, is_causal=True, enable_gqa=gqa)
            outs.append(o.transpose(1, 2).reshape(n * t, nh * hd))
        x = x + _linear(outs[0] if len(outs) == 1 else torch.cat(outs), lp.o)
        h = _rms(x, lp.ln2, eps)
        if len(lp.gate_up) == 1:
            gate, up = _linear(h, lp.gate_up[0]).chunk(2, dim=-1)
        else:
            gate, up = (_linear(h, lin) for lin in lp.gate_up)
        x = x + _linear(F.silu(gate) * up, lp.down)
    logits = _linear(_rms(x, plan.norm, eps), plan.lm_head)
    return logits[:b], (logits[b:].view(n, t, -1) if n else None)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        hd = cfg.head_dim
        self.nh, self.nkv, self.hd = cfg.num_heads, cfg.num_kv_heads, hd
        self.q_proj = LoraLinear(cfg.hidden_size, cfg.num_heads * hd, bias=False)
        self.k_proj = LoraLinear(cfg.hidden_size, cfg.num_kv_heads * hd, bias=False)
        self.v_proj = LoraLinear(cfg.hidden_size, cfg.num_kv_heads * hd, bias=False)
        self.o_proj = LoraLinear(cfg.num_heads * hd, cfg.hidden_size, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        layer: int,
        cache: KVCache | None,
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.nh, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.nkv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.nkv, self.hd).transpose(1, 2)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        if cache is not None:
            start = cache.length
            cache.k[layer][:, :, start : start + t] = k
            cache.v[layer][:, :, start : start + t] = v
            k = cache.k[layer][:, :, : start + t]
            v = cache.v[layer][:, :, : start + t]
        gqa = self.nh != self.nkv
        if mask is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        y: torch.Tensor = self.o_proj(out.transpose(1, 2).reshape(b, t, self.nh * self.hd))
        return y


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gate_proj = LoraLinear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = LoraLinear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = LoraLinear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        return y


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        layer: int,
        cache: KVCache | None,
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, layer, cache, mask)
        y: torch.Tensor = x + self.mlp(self.post_attention_layernorm(x))
        return y


class Body(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    @property
    def decoder_layers(self) -> Sequence[DecoderLayer]:
        """``layers`` as what they are (``nn.ModuleList`` is not generic)."""
        return cast("Sequence[DecoderLayer]", self.layers)


class LlamaLM(nn.Module):
    """Decoder-only Llama: RMSNorm, rotary (rotate-half), SwiGLU, SDPA; untied unembedding."""

    inv_freq: torch.Tensor  # a non-persistent buffer

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = Body(cfg)
        self.lm_head = LoraLinear(cfg.hidden_size, cfg.vocab_size, bias=False)
        inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2).float() / cfg.head_dim))
        self.register_buffer("inv_freq", inv, persistent=False)

    def rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = positions.to(torch.float32)[..., None] * self.inv_freq.to(positions.device)
        emb = torch.cat((freqs, freqs), dim=-1)[:, None]  # [B, 1, T, D]
        return emb.cos(), emb.sin()

    def forward(
        self,
        ids: torch.Tensor,
        positions: torch.Tensor | None = None,
        cache: KVCache | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if positions is None:
            positions = torch.arange(ids.shape[1], device=ids.device)[None].expand_as(ids)
        cos, sin = self.rope(positions)
        x = self.model.embed_tokens(ids)
        for i, layer in enumerate(self.model.decoder_layers):
            x = layer(x, cos, sin, i, cache, mask)
        if cache is not None:
            cache.length += ids.shape[1]
        logits: torch.Tensor = self.lm_head(self.model.norm(x))
        return logits

    @torch.no_grad()
    def init_weights(self, seed: int) -> None:
        """Deterministic init (same weights in every process), without the global RNG."""
        g = torch.Generator().manual_seed(seed)
        std = self.cfg.init_std or self.cfg.hidden_size**-0.5
        for name, p in self.named_parameters():
            if name.endswith("layernorm.weight") or name == "model.norm.weight":
                p.fill_(1.0)
            else:
                scale = std
                if name.endswith(("o_proj.weight", "down_proj.weight")):
                    scale = std / math.sqrt(2 * self.cfg.num_layers)
                p.copy_(torch.randn(p.shape, generator=g) * scale)


def build_builtin(name: str, device: torch.device) -> LlamaLM:
    cfg = BUILTIN_MODELS[name]
    with torch.device("meta"):
        module = LlamaLM(cfg)
    module = module.to_empty(device="cpu")
    module.inv_freq = 1.0 / (
        cfg.rope_theta ** (torch.arange(0, cfg.head_dim, 2).float() / cfg.head_dim)
    )
    module.init_weights(seed=zlib.crc32(name.encode()))
    module.requires_grad_(False)
    assign_lora_keys(module)
    return module.to(device).eval()


# --------------------------------------------------------------------------------------------
# backends: the interface the engine uses


class Backend:
    """A frozen base model plus what the engine needs to know about it."""

    name: str
    spec: ModelSpec
    vocab_size: int
    max_context_length: int
    pad_id: int
    eos_id: int | None
    tokenizer_dir: str
    module: nn.Module
    device: torch.device

    def lora_targets(self) -> dict[str, tuple[int, int]]:
        """PEFT module path -> (in_features, out_features) of every LoRA-able Linear."""
        return {
            n: (m.in_features, m.out_features)
            for n, m in self.module.named_modules()
            if isinstance(m, LoraLinear)
        }

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # The cache is the backend's own (a KVCache, a transformers DynamicCache): Any, since
    # each subclass takes back only what its new_cache made.
    def new_cache(self, batch: int, max_len: int) -> Any:
        raise NotImplementedError

    def step(
        self, ids: torch.Tensor, positions: torch.Tensor, key_mask: torch.Tensor, cache: Any
    ) -> torch.Tensor:
        """Logits for ``ids`` [B, T] appended to ``cache``; key_mask [B, cache_len + T] bool."""
        raise NotImplementedError

    def select(self, cache: Any, rows: torch.Tensor) -> Any:
        raise NotImplementedError

    # continuous batching (engine/sampling.py); a backend without it samples batch by batch
    def new_row_cache(self, rows: int, max_len: int) -> RowCache | None:
        return None

    def rows_plan(self, weights: AdapterWeights | None) -> Any:
        """What ``forward_rows`` runs with ``weights`` in force (made once per batch)."""
        raise NotImplementedError

    def forward_rows(
        self,
        plan: Any,
        cache: RowCache,
        tok: torch.Tensor,
        positions: torch.Tensor,
        key_mask: torch.Tensor,
        ids: torch.Tensor | None,
        slots: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """See ``forward_rows``."""
        raise NotImplementedError


class NativeBackend(Backend):
    module: LlamaLM

    def __init__(self, name: str, device: torch.device, tokenizer_dir: str) -> None:
        cfg = BUILTIN_MODELS[name]
        self.name = name
        self.cfg = cfg
        self.module = build_builtin(name, device)
        self.device = device
        self.vocab_size = cfg.vocab_size
        self.max_context_length = cfg.max_context_length
        self.pad_id, self.eos_id = PAD_ID, EOS_ID
        self.tokenizer_dir = tokenizer_dir
        self.spec = builtin_spec(name)

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.module(ids)
        return logits

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        return KVCache(self.cfg, batch, max_len, self.device, torch.float32)

    def step(
        self, ids: torch.Tensor, positions: torch.Tensor, key_mask: torch.Tensor, cache: KVCache
    ) -> torch.Tensor:
        t = ids.shape[1]
        past = cache.length
        if t == 1:
            mask = key_mask[:, None, None, :]
        else:
            # causal over the new block, plus each query's own key so that left-padding
            # queries never see an all-masked row (SDPA would return NaN there).
            q_idx = torch.arange(past, past + t, device=ids.device)
            k_idx = torch.arange(past + t, device=ids.device)
            causal = k_idx[None, :] <= q_idx[:, None]
            own = k_idx[None, :] == q_idx[:, None]
            mask = (causal[None] & key_mask[:, None, :]) | own[None]
            mask = mask[:, None]
        logits: torch.Tensor = self.module(ids, positions, cache, mask)
        return logits

    def select(self, cache: KVCache, rows: torch.Tensor) -> KVCache:
        cache.select(rows)
        return cache

    def new_row_cache(self, rows: int, max_len: int) -> RowCache:
        return RowCache(self.cfg, rows, max_len, self.device, torch.float32)

    def rows_plan(self, weights: AdapterWeights | None) -> RowsPlan:
        return rows_plan(self.module, weights)

    def forward_rows(
        self,
        plan: RowsPlan,
        cache: RowCache,
        tok: torch.Tensor,
        positions: torch.Tensor,
        key_mask: torch.Tensor,
        ids: torch.Tensor | None,
        slots: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        return forward_rows(plan, cache, tok, positions, key_mask, ids, slots)


class HFBackend(Backend):
    """A transformers causal LM from a local directory (local files only, float32)."""

    def __init__(self, path: str, device: torch.device) -> None:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        try:
            config = AutoConfig.from_pretrained(path, local_files_only=True)
            hf_module = AutoModelForCausalLM.from_pretrained(
                path, local_files_only=True, dtype=torch.float32
            )
            tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except Exception as e:  # a directory we cannot serve is the user's problem
            raise EngineUserError(f"cannot load Hugging Face model from {path!r}: {e}") from e
        module: nn.Module = hf_module  # its .to is typed (wrongly) by a transformers decorator
        module.requires_grad_(False)
        module.to(device).eval()
        for n, m in module.named_modules():
            if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in lora_target_names(
                True, True, True
            ):
                m.__class__ = LoraLinear
                m.lora_key = n
        self.name = path
        self.module = module
        self.device = device
        unembed = hf_module.get_output_embeddings()  # type: ignore[no-untyped-call]  # transformers: unannotated
        self.vocab_size = int(unembed.weight.shape[0])
        self.max_context_length = int(getattr(config, "max_position_embeddings", 2048) or 2048)
        eos = tok.eos_token_id if tok.eos_token_id is not None else config.eos_token_id
        if isinstance(eos, list):
            eos = eos[0] if eos else None
        self.eos_id = eos
        pad = tok.pad_token_id if tok.pad_token_id is not None else eos
        self.pad_id = int(pad) if pad is not None else 0
        self.tokenizer_dir = str(Path(path).resolve())
        # transformers 5.x renamed past_key_values to cache; accept both generations
        params = inspect.signature(module.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self.spec = ModelSpec(
            model_name=path,
            max_context_length=self.max_context_length,
            arch=str(getattr(config, "model_type", "llama")),
            num_parameters=sum(p.numel() for p in module.parameters()),
        )

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.module(input_ids=ids, use_cache=False).logits
        return logits

    def new_cache(self, batch: int, max_len: int) -> DynamicCache:
        from transformers import DynamicCache

        return DynamicCache()

    def step(
        self,
        ids: torch.Tensor,
        positions: torch.Tensor,
        key_mask: torch.Tensor,
        cache: DynamicCache,
    ) -> torch.Tensor:
        out = self.module(
            input_ids=ids,
            attention_mask=key_mask.long(),
            position_ids=positions,
            use_cache=True,
            **{self._cache_kw: cache},
        )
        logits: torch.Tensor = out.logits
        return logits

    def select(self, cache: DynamicCache, rows: torch.Tensor) -> DynamicCache:
        cache.batch_select_indices(rows)
        return cache


def builtin_spec(name: str) -> ModelSpec:
    cfg = BUILTIN_MODELS[name]
    return ModelSpec(
        model_name=name,
        max_context_length=cfg.max_context_length,
        arch="llama",
        num_parameters=count_parameters(cfg),
    )


def is_hf_dir(base_model: str) -> bool:
    p = Path(base_model)
    return p.is_dir() and (p / "config.json").is_file()
