"""Pure helpers for chunked forward_backward: byte estimates, chunking, metric combine.

These follow the official SDK's semantics (protocol.md 6 and 9.4) so a
client built on them splits and recombines exactly like ``tinker`` does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from .datum import Datum
from .model_input import (
    DmelChunk,
    ImageAssetPointerChunk,
    ImageChunk,
    ModelInput,
    ModelInputChunk,
)
from .tensor import TensorData
from .training import ForwardBackwardOutput

logger = logging.getLogger(__name__)

DEFAULT_MAX_CHUNK_LEN = 1024
DEFAULT_MAX_CHUNK_BYTES = 5_000_000
PROTO_BYTES_PER_TOKEN = 4
SAMPLE_BYTES_PER_TOKEN = 10
SPARSE_INDEX_BYTES = 8


def estimate_chunk_bytes(
    chunk: ModelInputChunk, bytes_per_token: int = PROTO_BYTES_PER_TOKEN
) -> int:
    """Estimated wire bytes of one model-input chunk."""
    if isinstance(chunk, DmelChunk):
        return len(chunk.dmel)
    if isinstance(chunk, ImageChunk):
        return len(chunk.data)
    if isinstance(chunk, ImageAssetPointerChunk):
        return len(chunk.location)
    return chunk.length * bytes_per_token


def estimate_tensor_bytes(td: TensorData) -> int:
    """Values in their dtype plus 8 bytes per CSR index."""
    return td.nbytes


def estimate_datum_bytes(datum: Datum) -> int:
    """The proto fwd/bwd estimate: 4 B/token + tensor bytes + CSR indices + image/dmel bytes."""
    return sum(estimate_chunk_bytes(c) for c in datum.model_input.chunks) + sum(
        td.nbytes for td in datum.loss_fn_inputs.values()
    )


def estimate_model_input_bytes(model_input: ModelInput) -> int:
    """The sampling dispatch estimate: 10 B/token, image/dmel bytes, pointer location length."""
    return sum(estimate_chunk_bytes(c, SAMPLE_BYTES_PER_TOKEN) for c in model_input.chunks)


def chunk_data(
    data: Sequence[Datum],
    max_chunk_len: int = DEFAULT_MAX_CHUNK_LEN,
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
    estimate: Callable[[Datum], int] = estimate_datum_bytes,
) -> list[tuple[list[Datum], int]]:
    """Split data into (chunk, estimated_bytes) pairs, in order.

    A new chunk starts when adding a datum would exceed ``max_chunk_bytes`` or
    the chunk already holds ``max_chunk_len`` datums. A single oversized datum
    still gets its own chunk; no chunk is ever empty.
    """
    if max_chunk_len < 1:
        raise ValueError("max_chunk_len must be >= 1")
    chunks: list[tuple[list[Datum], int]] = []
    current: list[Datum] = []
    current_bytes = 0
    for datum in data:
        n = estimate(datum)
        if current and (current_bytes + n > max_chunk_bytes or len(current) >= max_chunk_len):
            chunks.append((current, current_bytes))
            current, current_bytes = [], 0
        current.append(datum)
        current_bytes += n
    if current:
        chunks.append((current, current_bytes))
    return chunks


# -- metric reductions ---------------------------------------------------------------------
def _hash2(xs: Sequence[float]) -> int:
    mask = 0xFFFF_FFFF_FFFF_FFFF
    return sum(int(v) & mask for v in xs) & mask


REDUCTIONS = ("mean", "sum", "min", "max", "slack", "hash2", "unique")


def combine_metrics(
    metrics: Sequence[dict[str, float]], weights: Sequence[float] | None = None
) -> dict[str, float]:
    """Combine per-chunk ``name:reduction`` metrics (mean/slack weighted by ``weights``).

    Keys come from the first chunk; a key missing from any chunk is dropped,
    an unknown reduction is dropped, and a key without exactly one ``:``
    raises ValueError (as the official client does).
    """
    if not metrics:
        return {}
    w = None if weights is None else np.asarray(weights, dtype=np.float64)
    if w is not None and w.sum() == 0:
        w = None
    out: dict[str, float] = {}
    for key in metrics[0]:
        name, reduction = key.split(":")  # ValueError unless exactly one colon
        if reduction not in REDUCTIONS:
            logger.debug("dropping metric %s with unknown reduction %s", name, reduction)
            continue
        if not all(key in m for m in metrics):
            continue
        values = [m[key] for m in metrics]
        arr = np.asarray(values, dtype=np.float64)
        if reduction == "mean":
            out[key] = float(np.average(arr, weights=w))
        elif reduction == "sum":
            out[key] = float(arr.sum())
        elif reduction == "min":
            out[key] = float(arr.min())
        elif reduction == "max":
            out[key] = float(arr.max())
        elif reduction == "slack":
            out[key] = float(arr.max() - np.average(arr, weights=w))
        elif reduction == "hash2":
            out[key] = _hash2(values)
        else:  # unique
            out[key] = values[0]
            for i, v in enumerate(values[1:]):
                out[f"{key}_{i + 1}"] = v
    return out


def combine_fwd_bwd_output_results(
    results: Iterable[ForwardBackwardOutput],
) -> ForwardBackwardOutput:
    """Combine chunk results: outputs concatenated in order, metrics reduced, type from the first."""
    results = list(results)
    if not results:
        return ForwardBackwardOutput(loss_fn_output_type="", loss_fn_outputs=[], metrics={})
    weights = [len(r.loss_fn_outputs) for r in results]
    return ForwardBackwardOutput(
        loss_fn_output_type=results[0].loss_fn_output_type,
        loss_fn_outputs=[o for r in results for o in r.loss_fn_outputs],
        metrics=combine_metrics([r.metrics for r in results], weights),
    )
