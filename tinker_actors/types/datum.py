"""Datum (one training example), provenance spans and loss_fn_inputs conversion."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Self, TypeAlias

import numpy as np

from ..errors import InvalidInputError
from ._base import WireStruct, always, force_set
from ._bounds import Count32
from .model_input import ModelInput
from .tensor import TensorData

if TYPE_CHECKING:
    import torch

LossFnInputs = dict[str, TensorData]
LossFnOutput = dict[str, TensorData]
# What ``Datum(loss_fn_inputs=...)`` takes per key (``to_tensor_data`` converts it): the
# official SDK converts these too, but types the argument as TensorData only.
LossFnInputLike: TypeAlias = (
    "TensorData | np.ndarray | torch.Tensor | Sequence[float] | Sequence[Sequence[float]]"
    " | Mapping[str, Any]"
)

# Wire dtype for plain Python lists, by loss_fn_inputs key (protocol.md 5.3).
KEY_TO_DTYPE: dict[str, str] = {
    "target_tokens": "int64",
    "weights": "float32",
    "advantages": "float32",
    "logprobs": "float32",
    "clip_low_threshold": "float32",
    "clip_high_threshold": "float32",
    "sequence_ratio_mask": "float32",
}
_SPARSE_ELIGIBLE_KEYS = frozenset({"target_tokens", "weights"})


class _SpanBase(WireStruct, kw_only=True):
    sequence_id: str
    offset: Count32 = 0
    length: Count32

    def __post_init__(self) -> None:
        name = type(self).__name__
        if self.length < 0:
            raise ValueError(f"{name}.length must be >= 0, got {self.length}")
        if not self.sequence_id:
            raise ValueError(f"{name}.sequence_id must be non-empty")
        if self.offset < 0:
            raise ValueError(f"{name}.offset must be >= 0, got {self.offset}")


class PromptProvenanceSpan(_SpanBase, tag_field="type", tag="prompt_tokens"):
    """A run of prompt tokens of a recorded sampled sequence."""


class SampledProvenanceSpan(_SpanBase, tag_field="type", tag="sampled_tokens"):
    """A run of sampled tokens of a recorded sampled sequence."""


ProvenanceSpan = PromptProvenanceSpan | SampledProvenanceSpan
ProvenanceSpans = list[ProvenanceSpan]


def to_tensor_data(key: str, value: Any) -> TensorData:
    """Convert a loss_fn_inputs value (list, numpy, torch, TensorData) with the official dtypes."""
    if isinstance(value, TensorData):
        return value
    if isinstance(value, np.ndarray):
        return TensorData.from_numpy(value)
    if isinstance(value, dict):
        return TensorData.from_json_dict(value)
    if type(value).__module__.startswith("torch"):
        if key in _SPARSE_ELIGIBLE_KEYS and value.ndim == 2:
            return TensorData.from_torch_sparse(value)
        return TensorData.from_torch(value)
    if isinstance(value, list | tuple):
        dtype = KEY_TO_DTYPE.get(key)
        try:
            arr = np.asarray(value)
        except ValueError as exc:
            raise ValueError(
                f"{key} must be a rectangular numeric array; ragged nested lists are not supported"
            ) from exc
        if arr.dtype.kind not in "fiub" and arr.size:
            raise InvalidInputError(
                f"loss_fn_inputs[{key!r}] must be numeric; numpy reads it as {arr.dtype} "
                "(None, strings or integers beyond int64 in the list?)"
            )
        if dtype is None:
            dtype = "float32" if arr.dtype.kind == "f" else "int64"
        return TensorData(data=arr, dtype=dtype, shape=list(arr.shape))  # type: ignore[arg-type]
    raise TypeError(f"Unsupported loss_fn_inputs value for {key!r}: {type(value).__name__}")


class Datum(WireStruct):
    """One example: the model input and the loss inputs aligned with it."""

    model_input: ModelInput
    loss_fn_inputs: LossFnInputs = always({})
    model_input_spans: ProvenanceSpans | None = None
    loss_fn_input_spans: ProvenanceSpans | None = None

    if TYPE_CHECKING:
        # The constructor takes what __post_init__ converts; the fields hold the converted.
        def __init__(
            self,
            model_input: ModelInput,
            loss_fn_inputs: Mapping[str, LossFnInputLike] = ...,
            model_input_spans: ProvenanceSpans | None = None,
            loss_fn_input_spans: ProvenanceSpans | None = None,
        ) -> None: ...

    def __post_init__(self) -> None:
        mi = self.model_input
        if not isinstance(mi, ModelInput):
            if isinstance(mi, dict):
                force_set(self, "model_input", ModelInput.model_validate(mi))
            else:
                raise InvalidInputError(
                    f"Datum.model_input must be a ModelInput, got {type(mi).__name__}; "
                    "use ModelInput.from_ints(tokens) for token ids"
                )
        inputs = self.loss_fn_inputs
        if not isinstance(inputs, dict):
            raise InvalidInputError(
                "Datum.loss_fn_inputs must be a dict of name -> TensorData/array/list, "
                f"got {type(inputs).__name__}"
            )
        if any(not isinstance(k, str) for k in inputs):
            raise InvalidInputError(
                f"Datum.loss_fn_inputs keys must be strings, got {list(inputs)!r:.200}"
            )
        # Always a new dict, never the caller's (as in the official SDK).
        if any(not isinstance(v, TensorData) for v in inputs.values()):
            force_set(self, "loss_fn_inputs", {k: to_tensor_data(k, v) for k, v in inputs.items()})
        else:
            force_set(self, "loss_fn_inputs", dict(inputs))
        if (self.model_input_spans is None) != (self.loss_fn_input_spans is None):
            raise ValueError("provenance comes as a pair: set both span lists or neither")

    def with_provenance(
        self, model_input: ProvenanceSpans, loss_fn_inputs: ProvenanceSpans
    ) -> Self:
        """A copy carrying provenance; each span list must tile its field exactly."""
        _check_tiling("model_input", model_input, self.model_input.length)
        tt = self.loss_fn_inputs.get("target_tokens")
        if tt is not None and tt.shape is not None and len(tt.shape) == 1:
            _check_tiling("loss_fn_inputs", loss_fn_inputs, tt.shape[0])
        return self.model_copy(
            update={
                "model_input_spans": list(model_input),
                "loss_fn_input_spans": list(loss_fn_inputs),
            }
        )

    # -- fast accessors for the server ----------------------------------------------------
    def tokens_np(self, dtype: Any = np.int64) -> np.ndarray:
        """Model-input tokens as a numpy array (text chunks only)."""
        return self.model_input.to_numpy(dtype)

    def loss_fn_inputs_np(self, pad_value: int = 0) -> dict[str, np.ndarray]:
        """Each loss_fn_input as a dense numpy array."""
        return {k: v.to_numpy(pad_value) for k, v in self.loss_fn_inputs.items()}


def _check_tiling(kwarg: str, spans: ProvenanceSpans, expected: int) -> None:
    total = sum(s.length for s in spans)
    if total != expected:
        raise ValueError(
            f"with_provenance {kwarg} spans cover {total} positions but the field has "
            f"{expected}; the runs must tile it exactly"
        )
