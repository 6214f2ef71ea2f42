"""Regularizers inside ``forward_backward_custom``: one function the client or actor calls.

``regularized_loss_fn(loss_fn, regularizers)`` returns a loss function of the same shape as
the user's, ``(data, logprobs_list) -> (loss, metrics)``: its loss is base + Σ weight·term
(a torch graph over the per-datum logprobs, so the backward weights carry every term's
gradient) and its metrics are the user's plus the pipeline's (``loss_total``,
``regularizer_total``, ``regularizer/<name>/value|contribution|grad_norm|<metric>``, ...).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .core import Pipeline, RegularizerSpec

__all__ = ["regularized_loss_fn"]


def regularized_loss_fn(
    loss_fn: Callable[[Any, Any], Any],
    regularizers: Sequence[RegularizerSpec],
    *,
    track_grad_norms: bool = False,
    parallel: bool = True,
    timeout: float | None = 30.0,
) -> Callable[[Any, Any], tuple[Any, dict[str, Any]]]:
    """Validates the specs now (at call time) and wraps ``loss_fn`` with them."""
    specs = list(regularizers)
    for s in specs:
        if not isinstance(s, RegularizerSpec):
            raise TypeError(
                f"regularizers must be a list of RegularizerSpec, got {type(s).__name__}"
            )
    names = [s.name for s in specs]
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise ValueError(f"Duplicate regularizer names: {dups}")
    if not isinstance(track_grad_norms, bool):
        raise TypeError("track_grad_norms must be a bool")

    def wrapped(data: Any, logprobs: Any) -> tuple[Any, dict[str, Any]]:
        out = Pipeline.compute(
            data,
            logprobs,
            loss_fn,
            regularizers=specs,
            track_grad_norms=track_grad_norms,
            parallel=parallel,
            timeout=timeout,
        )
        metrics: dict[str, Any] = {
            k: v
            for k, v in out.base_loss["custom"].items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        metrics.update(out.metrics())
        return out.loss, metrics

    wrapped.__name__ = getattr(loss_fn, "__name__", "loss_fn")
    return wrapped
