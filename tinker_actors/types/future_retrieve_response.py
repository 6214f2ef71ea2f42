"""``FutureRetrieveResponse``: what ``/retrieve_future`` may answer (the official alias)."""

from __future__ import annotations

from typing import Union

from .futures import RequestFailedResponse, TryAgainResponse
from .training import (
    CreateModelResponse,
    ForwardBackwardOutput,
    LoadWeightsResponse,
    OptimStepResponse,
    SaveWeightsExternalResponse,
    SaveWeightsForSamplerResponse,
    SaveWeightsResponse,
    UnloadModelResponse,
)

__all__ = ["FutureRetrieveResponse"]

FutureRetrieveResponse = Union[  # noqa: UP007 (a runtime alias, as in the official SDK)
    TryAgainResponse,
    ForwardBackwardOutput,
    OptimStepResponse,
    SaveWeightsResponse,
    LoadWeightsResponse,
    SaveWeightsForSamplerResponse,
    SaveWeightsExternalResponse,
    CreateModelResponse,
    UnloadModelResponse,
    RequestFailedResponse,
]
