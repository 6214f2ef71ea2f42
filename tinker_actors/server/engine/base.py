"""The seam between the local server's HTTP/scheduling layer and its compute engines.

The server layer (routes, store, per-model seq_id ordering, futures) speaks wire types; an
engine speaks plain numpy arrays and these small dataclasses, so the torch engine and the
`null` benchmark engine are interchangeable and testable without HTTP.

Threading contract: the server calls every engine method from ONE worker thread at a time per
model (the scheduler serialises a model's requests in seq_id order and runs them off the event
loop). `sample` may be called concurrently with training calls of *other* models, and with
`sample` calls for other samplers; engines guard their own shared state.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np


class EngineUserError(ValueError):
    """Bad input from the user (unknown loss, missing input, bad shapes, unknown model).

    The server turns it into a failed future with category ``user`` and this message.
    """


class RequestRefused(Exception):
    """A request the server will not run for a reason of its own (not the user's input, not
    a crash): its future fails with category ``server`` and this message, no traceback."""


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A base model the engine can train and sample (listed by get_server_capabilities)."""

    model_name: str
    max_context_length: int
    arch: str = "llama"
    trainable: bool = True
    sampleable: bool = True
    num_parameters: int = 0


@dataclass(frozen=True, slots=True)
class LoraSpec:
    rank: int = 32
    seed: int | None = None
    train_attn: bool = True
    train_mlp: bool = True
    train_unembed: bool = True


@dataclass(frozen=True, slots=True)
class AdamSpec:
    learning_rate: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-12
    weight_decay: float = 0.0
    grad_clip_norm: float = 0.0  # 0 means no clipping


@dataclass(slots=True)
class DatumArrays:
    """One training datum: the flattened model-input tokens and its loss_fn_inputs.

    ``tokens`` is int64 of shape (N,). Each ``inputs`` array is aligned with ``tokens``
    (position i predicts target i); its first dimension is N (2-D inputs are allowed for
    custom/alternative layouts, e.g. (N, K)). dtypes: integer inputs arrive as int64, float
    inputs as float32.
    """

    tokens: np.ndarray
    inputs: dict[str, np.ndarray]


@dataclass(slots=True)
class ForwardBackwardResult:
    """Per-datum outputs (request order) and metrics keyed ``name:reduction``.

    Each output dict holds at least ``logprobs`` (float32, shaped like ``target_tokens``).
    Metrics must include ``loss:sum``.
    """

    outputs: list[dict[str, np.ndarray]]
    metrics: dict[str, float]
    loss_fn_output_type: str = "TensorData"


@dataclass(frozen=True, slots=True)
class SampleJob:
    """One sample request (num_samples sequences from one prompt)."""

    prompt: np.ndarray  # int64 (P,)
    num_samples: int = 1
    max_tokens: int | None = None  # None: engine default (e.g. up to the context limit, capped)
    temperature: float = 1.0  # 0 = greedy
    top_k: int = -1  # -1 = no limit
    top_p: float = 1.0
    seed: int | None = None  # same seed, same tokens
    stop_strings: tuple[str, ...] = ()
    stop_tokens: tuple[int, ...] = ()
    # stop=None on the wire keeps EOS stopping; stop=[] disables every stop including EOS.
    stop_at_eos: bool = True
    prompt_logprobs: bool = False
    topk_prompt_logprobs: int = 0
    # Streaming (/stream_sample): called from the decode loop with (sample index, step,
    # token id, logprob) as each token is chosen; returning False stops that sequence.
    on_token: Callable[[int, int, int, float], bool] | None = field(
        default=None, compare=False, repr=False
    )


@dataclass(slots=True)
class SampledSeq:
    tokens: np.ndarray  # int32 (T,), includes the stop token / string tokens that ended it
    logprobs: np.ndarray  # float32 (T,)
    stop_reason: Literal["stop", "length"]


@dataclass(slots=True)
class SampleOutcome:
    sequences: list[SampledSeq]
    # float32 (P,), NaN at position 0 (nothing predicts the first token); None unless asked.
    prompt_logprobs: np.ndarray | None = None
    # (token_ids int32 (P, k), logprobs float32 (P, k)); row 0 filled with the sentinel
    # (0, -99999.0); None unless asked.
    topk_prompt_logprobs: tuple[np.ndarray, np.ndarray] | None = None
    prompt_cache_hit_tokens: int = 0


@dataclass(frozen=True, slots=True)
class ModelDetails:
    """What get_info and weights_info report about a training model."""

    model_id: str
    base_model: str
    lora: LoraSpec
    tokenizer_dir: str
    arch: str = "llama"


@dataclass(slots=True)
class EngineStats:
    extra: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class Engine(Protocol):
    """What the server needs from a compute engine.

    Paths are directories the server owns (under its data dir); the engine writes/reads files
    inside them. Sizes returned are total bytes written.
    """

    name: str  # "torch" or "null"

    def models(self) -> list[ModelSpec]: ...

    def tokenizer_dir(self, base_model: str) -> str:
        """A local Hugging Face tokenizer directory for ``base_model`` (no download needed)."""
        ...

    def eos_token_id(self, base_model: str) -> int | None: ...

    # training models -------------------------------------------------------------------
    def create_model(self, model_id: str, base_model: str, lora: LoraSpec) -> ModelDetails: ...

    def unload_model(self, model_id: str) -> None: ...

    def forward_backward(
        self,
        model_id: str,
        data: list[DatumArrays],
        loss_fn: str,
        loss_fn_config: dict[str, float | str],
        forward_only: bool,
    ) -> ForwardBackwardResult:
        """Accumulates gradients (unless forward_only); the next optim_step applies them."""
        ...

    def optim_step(self, model_id: str, adam: AdamSpec) -> dict[str, float]:
        """Applies and clears accumulated gradients; returns metrics like ``grad_norm:mean``."""
        ...

    def save_state(self, model_id: str, directory: Path) -> int:
        """Training state: adapter weights + optimizer state + LoraSpec/base model metadata."""
        ...

    def load_state(
        self, model_id: str, directory: Path, *, with_optimizer: bool, base_model: str | None
    ) -> ModelDetails:
        """Creates (or replaces) ``model_id`` from a save_state directory."""
        ...

    def save_sampler_weights(self, model_id: str, directory: Path) -> int:
        """PEFT adapter layout: adapter_config.json + adapter_model.safetensors."""
        ...

    # accumulated gradients (the live state a clean stop keeps) ---------------------------
    def save_gradients(self, model_id: str, directory: Path) -> int:
        """Writes the gradients accumulated since the last optim_step (none: writes nothing,
        returns 0), so a restart resumes between forward_backward and optim_step."""
        ...

    def load_gradients(self, model_id: str, directory: Path) -> None:
        """Restores what ``save_gradients`` wrote (a directory without gradients: no-op)."""
        ...

    def discard_gradients(self, model_id: str) -> None:
        """Drops the accumulated gradients (their step cannot be applied whole)."""
        ...

    def counters(self, model_id: str) -> dict[str, int]:
        """``optimizer_steps`` applied (with gradients) and ``pending_gradients`` (the
        forward_backward calls accumulated since the last step; 0 or more for torch)."""
        ...

    # sampling ----------------------------------------------------------------------------
    def create_sampler(self, sampler_id: str, base_model: str, weights_dir: Path | None) -> None:
        """An immutable snapshot: base model plus, optionally, sampler weights from disk."""
        ...

    def sample(self, sampler_id: str, jobs: list[SampleJob]) -> list[SampleOutcome]:
        """Runs a batch of jobs for one sampler; results in job order."""
        ...

    def close_sampler(self, sampler_id: str) -> None: ...
