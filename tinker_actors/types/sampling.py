"""Sampling requests and results."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np

from ..errors import InvalidInputError
from . import _validate as _v
from ._base import WireStruct, always, force_set
from ._bounds import (
    MaxTokens,
    NumSamples,
    PositiveCount32,
    Seed,
    SeqId,
    TokenId,
    TopK,
    TopKLogprobs,
)
from .model_input import ModelInput
from .tensor import TensorData

if TYPE_CHECKING:
    from .topk_logprobs import TopkLogprobs

StopReason = Literal["length", "stop"]
TopkEntries = list[list[tuple[int, float]] | None]
MASK_LOGPROB = -99999.0


class SamplingParams(WireStruct):
    """max_tokens/seed/stop are omitted when None; temperature/top_k/top_p always sent.

    ``stop=None`` keeps implicit EOS stopping; ``[]`` disables every stop token.
    """

    max_tokens: MaxTokens | None = None
    seed: Seed | None = None
    stop: str | list[str | TokenId] | None = None
    temperature: float = always(1.0)
    top_k: TopK = always(-1)
    top_p: float = always(1.0)

    def __post_init__(self) -> None:
        # Types only (as pydantic checks them in the official SDK); ranges are the server's.
        o = "SamplingParams"
        if self.max_tokens is not None and type(self.max_tokens) is not int:
            force_set(self, "max_tokens", _v.as_int(o, "max_tokens", self.max_tokens))
        if self.seed is not None and type(self.seed) is not int:
            force_set(self, "seed", _v.as_int(o, "seed", self.seed))
        if type(self.temperature) is not float:
            force_set(self, "temperature", _v.as_float(o, "temperature", self.temperature))
        if type(self.top_k) is not int:
            force_set(self, "top_k", _v.as_int(o, "top_k", self.top_k))
        if type(self.top_p) is not float:
            force_set(self, "top_p", _v.as_float(o, "top_p", self.top_p))
        stop = self.stop
        if stop is not None and not isinstance(stop, str):
            if not isinstance(stop, list | tuple):
                raise InvalidInputError(
                    "SamplingParams.stop must be a string, a list of strings or a list of "
                    f"token ids, got {type(stop).__name__} {stop!r}"
                )
            if not (
                all(isinstance(x, str) for x in stop)
                or all(isinstance(x, int | np.integer) and not isinstance(x, bool) for x in stop)
            ):
                raise InvalidInputError(
                    "SamplingParams.stop must be all strings or all token ids (ints), "
                    f"got {stop!r:.200}"
                )
            if type(stop) is list:
                force_set(self, "stop", stop.copy())  # not the caller's list (pydantic copies)


class SampleRequest(WireStruct, tag_field="type", tag="sample", kw_only=True):
    num_samples: NumSamples = always(1)
    prompt: ModelInput
    sampling_params: SamplingParams
    base_model: str | None = None
    model_path: str | None = None
    sampling_session_id: str | None = None
    seq_id: SeqId | None = None
    prompt_logprobs: bool | None = None
    topk_prompt_logprobs: TopKLogprobs = always(0)
    topk_sample_logprobs: TopKLogprobs = always(0)
    target_prompt_logprobs: TensorData | None = None
    prompt_alt_tokens_k: TopKLogprobs = always(0)
    prompt_logprobs_last_n: PositiveCount32 | None = None
    record_stability_info: bool | None = None


class PromptAltTokens(WireStruct):
    """Alternative prompt tokens ([len-1, k] int64) and their logprobs (float32)."""

    tokens: TensorData
    logprobs: TensorData


class SampledSequence(WireStruct):
    """One sampled continuation; ``sequence_id`` comes from the submit response."""

    stop_reason: StopReason
    tokens: list[int] = always([])  # optional, as 0.38's tokens_np is
    logprobs: list[float] | None = None
    topk_logprobs: TopkEntries | None = None
    sequence_id: str | None = None

    @property
    def tokens_np(self) -> np.ndarray:
        return np.asarray(self.tokens, dtype=np.int32)  # int32, as in 0.38

    @property
    def logprobs_np(self) -> np.ndarray | None:
        return None if self.logprobs is None else np.asarray(self.logprobs, dtype=np.float32)

    @property
    def topk_logprobs_np(self) -> TopkLogprobs | None:
        """``topk_logprobs`` as the official dense matrices (None when not requested)."""
        from .topk_logprobs import topk_from_lists

        return None if self.topk_logprobs is None else topk_from_lists(self.topk_logprobs)


class SampleResponse(WireStruct, tag_field="type", tag="sample"):
    """All sequences of one sample call, plus the optional prompt logprobs."""

    sequences: list[SampledSequence]
    prompt_logprobs: list[float | None] | None = None
    topk_prompt_logprobs: TopkEntries | None = None
    target_prompt_logprobs: TensorData | None = None
    prompt_cache_hit_tokens: int = 0
    prompt_alt_tokens: PromptAltTokens | None = None

    @property
    def prompt_logprobs_np(self) -> np.ndarray | None:
        """Prompt logprobs as float32 with NaN where the value is None."""
        if self.prompt_logprobs is None:
            return None
        return np.array(
            [np.nan if v is None else v for v in self.prompt_logprobs], dtype=np.float32
        )

    @property
    def topk_prompt_logprobs_np(self) -> TopkLogprobs | None:
        """``topk_prompt_logprobs`` as the official dense matrices (None when not requested)."""
        from .topk_logprobs import topk_from_lists

        if self.topk_prompt_logprobs is None:
            return None
        return topk_from_lists(self.topk_prompt_logprobs)


class CreateSamplingSessionRequest(WireStruct, tag_field="type", tag="create_sampling_session"):
    session_id: str
    sampling_session_seq_id: SeqId
    base_model: str | None = None
    model_path: str | None = None


class CreateSamplingSessionResponse(WireStruct, tag_field="type", tag="create_sampling_session"):
    sampling_session_id: str


class JoinSamplingSessionRequest(WireStruct, tag_field="type", tag="join_sampling_session"):
    sampling_session_id: str


class JoinSamplingSessionResponse(WireStruct, tag_field="type", tag="join_sampling_session"):
    client_counter: int


class GetSamplerResponse(WireStruct):
    sampler_id: str
    base_model: str
    model_path: str | None = None
    # tinker_actors extension: a local tokenizer directory for the base model, when the
    # server has one (the official SDK ignores unknown fields)
    tokenizer_id: str | None = None
