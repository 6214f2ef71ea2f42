"""The torch `Engine`: shared frozen base models, per-model LoRA adapters and AdamW, samplers
as immutable adapter snapshots.

Concurrency: the server calls one model's methods from one thread at a time, but different
models and samplers may run in parallel threads. Each call selects its adapter through a
thread-local (see lora.py), so compute needs no lock; ``_lock`` only guards the registries and
the lazy loading of base models.

Threads: on CPU the engine sets torch's (process-wide) intra-op pool to ONE thread unless
``num_threads`` or ``TINKER_ACTORS_TORCH_THREADS`` says otherwise. These models are small
enough that per-op overhead dominates, the server already runs different models and samplers
in parallel worker threads (each would otherwise start its own OpenMP team: oversubscription),
and OpenMP teams spinning on busy cores are pathological: on the 2-core CI box under load, a
1M-model step measured 7-10x slower with 2 threads than with 1 (benchmarks/bench_engine.py).

Sampler adapters are merged into copies of the base weights on first use (see lora.py): that
removes the LoRA cost from every decode step. The merged copies live in an LRU bounded by
``merged_budget_bytes`` (an RL loop makes a sampler per step; only the recent ones sample);
an evicted sampler re-merges on its next call, to the same values. A sampler whose merged copy
alone exceeds the budget always samples unmerged, so a given sampler always uses one form
and its seeded samples never depend on what else was sampled.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .base import (
    AdamSpec,
    DatumArrays,
    EngineStats,
    EngineUserError,
    ForwardBackwardResult,
    LoraSpec,
    ModelDetails,
    ModelSpec,
    SampleJob,
    SampleOutcome,
)
from .checkpoints import (
    load_adapter_into,
    load_gradients_into,
    load_optimizer_into,
    load_peft_adapter,
    lora_spec_from_meta,
    read_state_meta,
    save_gradients,
    save_peft_adapter,
    save_training_state,
)
from .lora import (
    Adapter,
    AdapterWeights,
    LoraPair,
    merge_adapter,
    merged_nbytes,
    use_adapter,
)
from .losses import build_batch, compute_loss, resolve_config, target_logprobs
from .model import BUILTIN_MODELS, Backend, HFBackend, NativeBackend, builtin_spec, is_hf_dir
from .sampling import ContinuousBatch, sample_batch
from .tokenizer import EOS_ID, byte_tokenizer_dir, load_fast_tokenizer


@dataclass(slots=True)
class _TrainModel:
    model_id: str
    base: Backend
    lora: LoraSpec
    adapter: Adapter
    optimizer: torch.optim.AdamW
    steps: int = 0
    pending: int = 0  # forward_backward calls accumulated since the last optim_step


# Default bound on the merged sampler weights kept at once.
MERGED_BUDGET_BYTES = 512 * 1024 * 1024


@dataclass(slots=True)
class _Sampler:
    base: Backend
    pairs: dict[str, LoraPair] | None
    merge: bool = False  # fixed at creation: whether this sampler samples with merged weights


class TorchEngine:
    """Real training and sampling of small decoder-only transformers with LoRA."""

    name = "torch"

    def __init__(
        self,
        *,
        device: str = "cpu",
        cache_dir: str | Path | None = None,
        num_threads: int | None = None,
        merged_budget_bytes: int = MERGED_BUDGET_BYTES,
    ) -> None:
        self.device = torch.device(device)
        self._merged_budget = merged_budget_bytes
        self._merged: OrderedDict[str, tuple[dict[str, torch.Tensor], int]] = OrderedDict()
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        threads = num_threads or int(os.environ.get("TINKER_ACTORS_TORCH_THREADS", "0") or 0)
        if threads <= 0 and self.device.type == "cpu":
            threads = 1
        if threads > 0 and torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        self._lock = threading.RLock()
        self._bases: dict[str, Backend] = {}
        self._models: dict[str, _TrainModel] = {}
        self._samplers: dict[str, _Sampler] = {}

    # base models ---------------------------------------------------------------------------
    def models(self) -> list[ModelSpec]:
        return [builtin_spec(n) for n in BUILTIN_MODELS]

    def _base(self, base_model: str) -> Backend:
        with self._lock:
            backend = self._bases.get(base_model)
            if backend is None:
                if base_model in BUILTIN_MODELS:
                    backend = NativeBackend(
                        base_model, self.device, str(byte_tokenizer_dir(self.cache_dir))
                    )
                elif is_hf_dir(base_model):
                    backend = HFBackend(base_model, self.device)
                else:
                    known = ", ".join(BUILTIN_MODELS)
                    raise EngineUserError(
                        f"unknown base model {base_model!r}: use one of {known} or a local "
                        "Hugging Face model directory"
                    )
                self._bases[base_model] = backend
            return backend

    def tokenizer_dir(self, base_model: str) -> str:
        if base_model in BUILTIN_MODELS:
            return str(byte_tokenizer_dir(self.cache_dir))
        return self._base(base_model).tokenizer_dir

    def eos_token_id(self, base_model: str) -> int | None:
        if base_model in BUILTIN_MODELS:
            return EOS_ID
        return self._base(base_model).eos_id

    # training models -----------------------------------------------------------------------
    def _new_model(self, model_id: str, base_model: str, lora: LoraSpec) -> _TrainModel:
        if lora.rank < 1:
            raise EngineUserError("LoRA rank must be >= 1")
        if not (lora.train_attn or lora.train_mlp or lora.train_unembed):
            raise EngineUserError("LoRA must train at least one of attn, mlp, unembed")
        base = self._base(base_model)
        adapter = Adapter.init(
            base.lora_targets(),
            lora.rank,
            lora.seed,
            lora.train_attn,
            lora.train_mlp,
            lora.train_unembed,
            base.device,
        )
        optimizer = torch.optim.AdamW(
            adapter.parameters(),
            lr=1e-4,
            betas=(0.9, 0.95),
            eps=1e-12,
            weight_decay=0.0,
            foreach=True,
        )
        return _TrainModel(model_id, base, lora, adapter, optimizer)

    def _details(self, m: _TrainModel) -> ModelDetails:
        return ModelDetails(
            model_id=m.model_id,
            base_model=m.base.name,
            lora=m.lora,
            tokenizer_dir=self.tokenizer_dir(m.base.name),
            arch=m.base.spec.arch,
        )

    def create_model(self, model_id: str, base_model: str, lora: LoraSpec) -> ModelDetails:
        m = self._new_model(model_id, base_model, lora)
        with self._lock:
            self._models[model_id] = m
        return self._details(m)

    def unload_model(self, model_id: str) -> None:
        with self._lock:
            self._models.pop(model_id, None)

    def _model(self, model_id: str) -> _TrainModel:
        with self._lock:
            m = self._models.get(model_id)
        if m is None:
            raise EngineUserError(f"unknown model {model_id!r}")
        return m

    def forward_backward(
        self,
        model_id: str,
        data: list[DatumArrays],
        loss_fn: str,
        loss_fn_config: dict[str, float | str],
        forward_only: bool,
    ) -> ForwardBackwardResult:
        m = self._model(model_id)
        cfg = resolve_config(loss_fn, loss_fn_config)
        base = m.base
        batch = build_batch(
            loss_fn, data, base.vocab_size, base.max_context_length, base.pad_id, base.device
        )
        grad = torch.no_grad() if forward_only else nullcontext()
        with use_adapter(m.adapter.pairs), grad:
            lp = target_logprobs(base.logits(batch.tokens), batch.targets)
            loss = compute_loss(loss_fn, cfg, lp, batch)
            if not forward_only:
                loss.backward()  # type: ignore[no-untyped-call]  # torch: Tensor.backward is unannotated
                m.pending += 1
        lp_np = lp.detach().cpu().numpy().astype(np.float32, copy=False)
        outputs = [{"logprobs": lp_np[i, :n].copy()} for i, n in enumerate(batch.lengths)]
        return ForwardBackwardResult(outputs=outputs, metrics={"loss:sum": float(loss.detach())})

    def optim_step(self, model_id: str, adam: AdamSpec) -> dict[str, float]:
        m = self._model(model_id)
        params = [p for p in m.adapter.parameters() if p.grad is not None]
        grad_norm = 0.0
        if params:
            if adam.grad_clip_norm > 0:
                norm = torch.nn.utils.clip_grad_norm_(params, adam.grad_clip_norm, foreach=True)
            else:
                norm = torch.nn.utils.get_total_norm(
                    [p.grad for p in params if p.grad is not None], foreach=True
                )
            grad_norm = float(norm)
            for group in m.optimizer.param_groups:
                group["lr"] = adam.learning_rate
                group["betas"] = (adam.beta1, adam.beta2)
                group["eps"] = adam.eps
                group["weight_decay"] = adam.weight_decay
            m.optimizer.step()
            m.optimizer.zero_grad(set_to_none=True)
            m.steps += 1
        m.pending = 0
        return {"grad_norm:mean": grad_norm, "learning_rate:mean": float(adam.learning_rate)}

    # checkpoints ---------------------------------------------------------------------------
    def save_state(self, model_id: str, directory: Path) -> int:
        m = self._model(model_id)
        return save_training_state(
            Path(directory), m.adapter, m.optimizer, m.lora, m.base.name, m.steps
        )

    def load_state(
        self, model_id: str, directory: Path, *, with_optimizer: bool, base_model: str | None
    ) -> ModelDetails:
        directory = Path(directory)
        meta = read_state_meta(directory)
        saved_base = meta["base_model"]
        if base_model is not None and base_model != saved_base:
            raise EngineUserError(f"checkpoint was trained on {saved_base!r}, not {base_model!r}")
        m = self._new_model(model_id, saved_base, lora_spec_from_meta(meta))
        load_adapter_into(m.adapter, directory)
        if with_optimizer:
            load_optimizer_into(m.optimizer, m.adapter, directory)
            m.steps = int(meta.get("optimizer_steps", 0))
        with self._lock:
            self._models[model_id] = m
        return self._details(m)

    def save_sampler_weights(self, model_id: str, directory: Path) -> int:
        m = self._model(model_id)
        return save_peft_adapter(Path(directory), m.adapter, m.base.name)

    # accumulated gradients -----------------------------------------------------------------
    def save_gradients(self, model_id: str, directory: Path) -> int:
        m = self._model(model_id)
        return save_gradients(Path(directory), m.adapter, m.pending)

    def load_gradients(self, model_id: str, directory: Path) -> None:
        m = self._model(model_id)
        m.pending = load_gradients_into(m.adapter, Path(directory))

    def discard_gradients(self, model_id: str) -> None:
        m = self._model(model_id)
        m.optimizer.zero_grad(set_to_none=True)
        m.pending = 0

    def counters(self, model_id: str) -> dict[str, int]:
        m = self._model(model_id)
        return {"optimizer_steps": m.steps, "pending_gradients": m.pending}

    def weights_finite(self, model_id: str) -> bool:
        """False once the adapter weights or the optimizer state hold a NaN or an infinity
        (e.g. after a huge learning rate): the server then marks the run ``corrupted``."""
        m = self._model(model_id)
        tensors = [p.detach() for p in m.adapter.parameters()]
        for state in m.optimizer.state.values():
            tensors += [v for v in state.values() if isinstance(v, torch.Tensor) and v.dim()]
        with torch.no_grad():
            return all(bool(torch.isfinite(t).all()) for t in tensors)

    # sampling ------------------------------------------------------------------------------
    def create_sampler(self, sampler_id: str, base_model: str, weights_dir: Path | None) -> None:
        base = self._base(base_model)
        pairs = None
        if weights_dir is not None:
            pairs = load_peft_adapter(Path(weights_dir), base.lora_targets(), base.device)
        self._add_sampler(sampler_id, base, pairs)

    def snapshot_sampler(self, sampler_id: str, model_id: str) -> None:
        """A sampler from a training model's current weights without touching disk."""
        m = self._model(model_id)
        self._add_sampler(sampler_id, m.base, m.adapter.frozen_copy())

    def _add_sampler(
        self, sampler_id: str, base: Backend, pairs: dict[str, LoraPair] | None
    ) -> None:
        merge = (
            pairs is not None
            and bool(pairs)
            and merged_nbytes(base.module, pairs) <= self._merged_budget
        )
        with self._lock:
            self._merged.pop(sampler_id, None)
            self._samplers[sampler_id] = _Sampler(base, pairs, merge)

    def _sampling_weights(self, sampler_id: str, s: _Sampler) -> AdapterWeights | None:
        """What ``use_adapter`` gets for this sampler: its merged weights (made on first use,
        kept in the LRU) or its pairs."""
        if not s.merge or not s.pairs:
            return s.pairs
        with self._lock:
            hit = self._merged.get(sampler_id)
            if hit is not None:
                self._merged.move_to_end(sampler_id)
                return hit[0]
        merged = merge_adapter(s.base.module, s.pairs)  # outside the lock: may take a while
        size = sum(t.numel() * t.element_size() for t in merged.values())
        with self._lock:
            if self._samplers.get(sampler_id) is s:  # not closed or replaced meanwhile
                self._merged[sampler_id] = (merged, size)
                total = sum(n for _, n in self._merged.values())
                while total > self._merged_budget and len(self._merged) > 1:
                    _, (_, n) = self._merged.popitem(last=False)
                    total -= n
        return merged

    def sample(self, sampler_id: str, jobs: list[SampleJob]) -> list[SampleOutcome]:
        with self._lock:
            s = self._samplers.get(sampler_id)
        if s is None:
            raise EngineUserError(f"unknown sampler {sampler_id!r}")
        tok = load_fast_tokenizer(s.base.tokenizer_dir)
        decode = None if tok is None else (lambda ids: tok.decode(ids, skip_special_tokens=True))
        weights = self._sampling_weights(sampler_id, s)
        with torch.inference_mode(), use_adapter(weights):
            return sample_batch(s.base, jobs, decode)

    def continuous_sampler(self, sampler_id: str) -> ContinuousBatch | None:
        """A running batch for this sampler's jobs (continuous batching; the server's lane
        drives it from one thread at a time), or None where the backend cannot (a Hugging
        Face model): then ``sample`` serves it batch by batch. It keeps the sampler's weights
        for its life, so all its rows use one form even if the LRU evicts the merged copy."""
        with self._lock:
            s = self._samplers.get(sampler_id)
        if s is None:
            raise EngineUserError(f"unknown sampler {sampler_id!r}")
        if type(s.base).new_row_cache is Backend.new_row_cache:
            return None
        tok = load_fast_tokenizer(s.base.tokenizer_dir)
        decode = None if tok is None else (lambda ids: tok.decode(ids, skip_special_tokens=True))
        return ContinuousBatch(s.base, self._sampling_weights(sampler_id, s), decode)

    def close_sampler(self, sampler_id: str) -> None:
        with self._lock:
            self._samplers.pop(sampler_id, None)
            self._merged.pop(sampler_id, None)

    def stats(self) -> EngineStats:
        with self._lock:
            return EngineStats(
                extra={
                    "training_models": float(len(self._models)),
                    "samplers": float(len(self._samplers)),
                    "base_models": float(len(self._bases)),
                    "merged_samplers": float(len(self._merged)),
                }
            )
