"""Regularizers for client-side custom losses (torch), after Tinkex's pipeline.

``Pipeline.compute(data, logprobs, base_loss_fn, regularizers=[RegularizerSpec(...)])``
returns a ``CustomLossOutput`` whose ``loss`` is the differentiable total;
``TrainingClient.forward_backward_custom(data, loss_fn, regularizers=[...])`` trains on it.
See ``docs/extras.md``.
"""

from __future__ import annotations

from .builtins import (
    L1,
    L2,
    Consistency,
    ElasticNet,
    Entropy,
    GradientPenalty,
    KLDivergence,
    Orthogonality,
    Regularizer,
)
from .core import (
    CustomLossOutput,
    Executor,
    GradientTracker,
    Pipeline,
    RegularizerError,
    RegularizerOutput,
    RegularizerSpec,
    RegularizerTimeoutError,
    execute,
)
from .custom_loss import regularized_loss_fn

__all__ = [
    "L1",
    "L2",
    "Consistency",
    "CustomLossOutput",
    "ElasticNet",
    "Entropy",
    "Executor",
    "GradientPenalty",
    "GradientTracker",
    "KLDivergence",
    "Orthogonality",
    "Pipeline",
    "Regularizer",
    "RegularizerError",
    "RegularizerOutput",
    "RegularizerSpec",
    "RegularizerTimeoutError",
    "execute",
    "regularized_loss_fn",
]
