"""The ``null`` BENCHMARK engine: answers every request at once with correctly shaped results.

It does no compute and learns nothing. It exists so client overhead (HTTP, futures, ordering,
batching) can be measured apart from model compute; everything it reports names it as a
benchmark engine. Any base model name is accepted.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np

from tinker_actors.server.engine.base import (
    AdamSpec,
    DatumArrays,
    EngineUserError,
    ForwardBackwardResult,
    LoraSpec,
    ModelDetails,
    ModelSpec,
    SampledSeq,
    SampleJob,
    SampleOutcome,
)

BENCHMARK_NOTE = "null benchmark engine: no compute, results are shaped but meaningless"
KNOWN_LOSSES = frozenset(
    {"cross_entropy", "importance_sampling", "ppo", "cispo", "dro", "gspo", "stable_reinforce"}
)
REQUIRED_INPUTS = {
    "cross_entropy": ("target_tokens",),
    "importance_sampling": ("target_tokens", "logprobs", "advantages"),
    "ppo": ("target_tokens", "logprobs", "advantages"),
    "cispo": ("target_tokens", "logprobs", "advantages"),
    "dro": ("target_tokens", "logprobs", "advantages"),
    "gspo": ("target_tokens", "logprobs", "advantages"),
    "stable_reinforce": ("target_tokens",),
}
VOCAB = 256  # byte-level, like the torch engine's built-in models


class NullEngine:
    """Benchmark engine (see module docstring). Thread-safe: a lock guards its small dicts."""

    name = "null"
    benchmark = True
    note = BENCHMARK_NOTE

    def __init__(self, cache_dir: Path | None = None) -> None:
        self._lock = threading.Lock()
        self._models: dict[str, ModelDetails] = {}
        self._samplers: dict[str, str] = {}
        # per model: [optimizer steps applied, forward_backward calls pending]
        self._counts: dict[str, list[int]] = {}
        self._cache_dir = cache_dir
        self._tokenizer: str | None = None

    def models(self) -> list[ModelSpec]:
        return [
            ModelSpec("tinker-actors/byte-1m", 512, num_parameters=0),
            ModelSpec("tinker-actors/byte-20m", 1024, num_parameters=0),
            ModelSpec("null/benchmark", 4096, num_parameters=0),
        ]

    def tokenizer_dir(self, base_model: str) -> str:
        # The torch engine's byte-level tokenizer (no download), when `tokenizers` is there.
        if self._tokenizer is None:
            try:
                from tinker_actors.server.engine.tokenizer import byte_tokenizer_dir

                self._tokenizer = str(byte_tokenizer_dir(self._cache_dir))
            except Exception:
                self._tokenizer = "null-benchmark-engine/no-tokenizer"
        return self._tokenizer

    def eos_token_id(self, base_model: str) -> int | None:
        return None

    def create_model(self, model_id: str, base_model: str, lora: LoraSpec) -> ModelDetails:
        details = ModelDetails(model_id, base_model, lora, self.tokenizer_dir(base_model))
        with self._lock:
            self._models[model_id] = details
            self._counts[model_id] = [0, 0]
        return details

    def _details(self, model_id: str) -> ModelDetails:
        with self._lock:
            details = self._models.get(model_id)
        if details is None:
            raise EngineUserError(f"unknown model {model_id!r}")
        return details

    def unload_model(self, model_id: str) -> None:
        with self._lock:
            self._models.pop(model_id, None)
            self._counts.pop(model_id, None)

    def _count(self, model_id: str) -> list[int]:
        self._details(model_id)
        with self._lock:
            return self._counts.setdefault(model_id, [0, 0])

    def forward_backward(
        self,
        model_id: str,
        data: list[DatumArrays],
        loss_fn: str,
        loss_fn_config: dict[str, float | str],
        forward_only: bool,
    ) -> ForwardBackwardResult:
        self._details(model_id)
        if loss_fn not in KNOWN_LOSSES:
            raise EngineUserError(
                f"unknown loss_fn {loss_fn!r}; expected one of {sorted(KNOWN_LOSSES)}"
            )
        outputs = []
        for i, datum in enumerate(data):
            for key in REQUIRED_INPUTS[loss_fn]:
                if key not in datum.inputs:
                    raise EngineUserError(f"datum {i}: loss {loss_fn!r} needs input {key!r}")
            target = datum.inputs["target_tokens"]
            outputs.append({"logprobs": np.zeros(target.shape, dtype=np.float32)})
        if not forward_only:
            self._count(model_id)[1] += 1
        return ForwardBackwardResult(outputs=outputs, metrics={"loss:sum": 0.0})

    def optim_step(self, model_id: str, adam: AdamSpec) -> dict[str, float]:
        # Like the torch engine: a step without accumulated gradients changes nothing.
        count = self._count(model_id)
        if count[1]:
            count[0] += 1
        count[1] = 0
        return {"grad_norm:mean": 0.0, "learning_rate:mean": float(adam.learning_rate)}

    def _write(self, directory: Path, payload: dict[str, object]) -> int:
        directory.mkdir(parents=True, exist_ok=True)
        data = json.dumps({"engine": "null", "note": BENCHMARK_NOTE, **payload}).encode()
        (directory / "null_engine_state.json").write_bytes(data)
        return len(data)

    def save_state(self, model_id: str, directory: Path) -> int:
        d = self._details(model_id)
        return self._write(
            directory,
            {
                "base_model": d.base_model,
                "rank": d.lora.rank,
                "seed": d.lora.seed,
                "train_attn": d.lora.train_attn,
                "train_mlp": d.lora.train_mlp,
                "train_unembed": d.lora.train_unembed,
                "optimizer_steps": self._count(model_id)[0],
            },
        )

    def load_state(
        self, model_id: str, directory: Path, *, with_optimizer: bool, base_model: str | None
    ) -> ModelDetails:
        path = directory / "null_engine_state.json"
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise EngineUserError(f"no loadable null-engine state in {directory}") from exc
        lora = LoraSpec(
            rank=int(meta.get("rank", 32)),
            seed=meta.get("seed"),
            train_attn=bool(meta.get("train_attn", True)),
            train_mlp=bool(meta.get("train_mlp", True)),
            train_unembed=bool(meta.get("train_unembed", True)),
        )
        details = self.create_model(model_id, base_model or str(meta.get("base_model")), lora)
        if with_optimizer:
            self._count(model_id)[0] = int(meta.get("optimizer_steps", 0))
        return details

    def save_sampler_weights(self, model_id: str, directory: Path) -> int:
        d = self._details(model_id)
        directory.mkdir(parents=True, exist_ok=True)
        config = json.dumps(
            {
                "peft_type": "LORA",
                "r": d.lora.rank,
                "lora_alpha": 32,
                "base_model_name_or_path": d.base_model,
                "note": BENCHMARK_NOTE,
            }
        )
        (directory / "adapter_config.json").write_text(config)
        # An empty but valid safetensors file: 8-byte header length + "{}" header padded.
        header = b"{}      "
        blob = len(header).to_bytes(8, "little") + header
        (directory / "adapter_model.safetensors").write_bytes(blob)
        return len(config) + len(blob)

    def save_gradients(self, model_id: str, directory: Path) -> int:
        pending = self._count(model_id)[1]
        if not pending:
            return 0
        directory.mkdir(parents=True, exist_ok=True)
        data = json.dumps({"pending": pending}).encode()
        (directory / "null_engine_gradients.json").write_bytes(data)
        return len(data)

    def load_gradients(self, model_id: str, directory: Path) -> None:
        path = directory / "null_engine_gradients.json"
        pending = int(json.loads(path.read_text())["pending"]) if path.is_file() else 0
        self._count(model_id)[1] = pending

    def discard_gradients(self, model_id: str) -> None:
        self._count(model_id)[1] = 0

    def counters(self, model_id: str) -> dict[str, int]:
        steps, pending = self._count(model_id)
        return {"optimizer_steps": steps, "pending_gradients": pending}

    def context_length(self, base_model: str) -> int:
        """A listed model's context; any other name gets the largest listed one."""
        specs = self.models()
        for spec in specs:
            if spec.model_name == base_model:
                return spec.max_context_length
        return max(spec.max_context_length for spec in specs)

    def create_sampler(self, sampler_id: str, base_model: str, weights_dir: Path | None) -> None:
        with self._lock:
            self._samplers[sampler_id] = base_model

    def sample(self, sampler_id: str, jobs: list[SampleJob]) -> list[SampleOutcome]:
        with self._lock:
            base_model = self._samplers.get(sampler_id)
        if base_model is None:
            raise EngineUserError(f"unknown sampler {sampler_id!r}")
        limit = self.context_length(base_model)
        outcomes = []
        for job in jobs:
            n = job.max_tokens if job.max_tokens is not None else 16
            if not 1 <= n <= limit or len(job.prompt) > limit:
                raise EngineUserError(
                    f"max_tokens {n} with a {len(job.prompt)}-token prompt does not fit the "
                    f"context length {limit} of {base_model!r}"
                )
            seqs = [
                SampledSeq(
                    tokens=np.full(n, 32, dtype=np.int32),  # spaces, in byte-level terms
                    logprobs=np.zeros(n, dtype=np.float32),
                    stop_reason="length",
                )
                for _ in range(job.num_samples)
            ]
            plp = None
            if job.prompt_logprobs:
                plp = np.zeros(len(job.prompt), dtype=np.float32)
                if len(plp):
                    plp[0] = np.nan
            topk = None
            if job.topk_prompt_logprobs > 0:
                k, p = job.topk_prompt_logprobs, len(job.prompt)
                ids = np.zeros((p, k), dtype=np.int32)
                lps = np.full((p, k), -5.0, dtype=np.float32)
                if p:
                    lps[0, :] = -99999.0
                topk = (ids, lps)
            outcomes.append(SampleOutcome(seqs, prompt_logprobs=plp, topk_prompt_logprobs=topk))
        return outcomes

    def close_sampler(self, sampler_id: str) -> None:
        with self._lock:
            self._samplers.pop(sampler_id, None)
