"""Top-k logprobs as two dense ``(length, k)`` matrices (the official ``TopkLogprobs``).

On the wire and in our Structs top-k entries are lists (``TopkEntries``); the official
0.38 API also exposes them as matrices (``SampledSequence.topk_logprobs_np``,
``SampleResponse.topk_prompt_logprobs_np``). Empty slots hold ``(0, MASK_LOGPROB)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .sampling import MASK_LOGPROB, TopkEntries

__all__ = ["MASK_LOGPROB", "TopkLogprobs", "topk_from_lists", "topk_to_lists"]


@dataclass(frozen=True, slots=True)
class TopkLogprobs:
    """``token_ids`` (int32) and ``logprobs`` (float32), both of shape ``(length, k)``."""

    token_ids: np.ndarray
    logprobs: np.ndarray


def topk_to_lists(topk: TopkLogprobs) -> TopkEntries:
    """Per position, the ``(token_id, logprob)`` pairs up to the padding; None when empty."""
    n, k = topk.token_ids.shape
    if n == 0 or k == 0:
        return []
    ids = topk.token_ids.tolist()
    lps = topk.logprobs.tolist()
    out: TopkEntries = []
    for row_ids, row_lps in zip(ids, lps, strict=True):
        end = k
        while end and row_ids[end - 1] == 0 and row_lps[end - 1] == MASK_LOGPROB:
            end -= 1
        out.append(list(zip(row_ids[:end], row_lps[:end], strict=True)) if end else None)
    return out


def topk_from_lists(entries: TopkEntries) -> TopkLogprobs:
    """The matrices for list entries; ``k`` is the longest row, short rows are padded."""
    n = len(entries)
    k = max((len(e) for e in entries if e), default=0)
    ids = np.zeros((n, k), dtype=np.int32)
    lps = np.full((n, k), MASK_LOGPROB, dtype=np.float32)
    for i, row in enumerate(entries):
        if row:
            r_ids, r_lps = zip(*row, strict=True)
            ids[i, : len(row)] = r_ids
            lps[i, : len(row)] = r_lps
    return TopkLogprobs(token_ids=ids, logprobs=lps)
