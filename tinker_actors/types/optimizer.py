"""The official ``types.optimizer`` module: optimizer configs and per-step parameters.

The official SDK gives both families a pydantic base that also carries unknown families;
here they are abstract bases that the concrete Structs are registered with, so
``isinstance(cfg, OptimizerConfigBase)`` holds as it does there.
"""

from __future__ import annotations

import abc

from .training import (
    AdamOptimizerConfig,
    AdamParams,
    DimuonOptimizerConfig,
    DimuonParams,
    OptimizerConfig,
    OptimParams,
)

__all__ = [
    "AdamOptimizerConfig",
    "AdamParams",
    "DimuonOptimizerConfig",
    "DimuonParams",
    "OptimParams",
    "OptimParamsBase",
    "OptimizerConfig",
    "OptimizerConfigBase",
]


class OptimizerConfigBase(abc.ABC):  # noqa: B024 (a marker base, as in the official SDK)
    """Any optimizer family chosen at model creation (identified by ``type``)."""


class OptimParamsBase(abc.ABC):  # noqa: B024
    """Per-step hyper-parameters of a non-Adam optimizer family (identified by ``type``)."""


OptimizerConfigBase.register(AdamOptimizerConfig)
OptimizerConfigBase.register(DimuonOptimizerConfig)
OptimParamsBase.register(DimuonParams)
