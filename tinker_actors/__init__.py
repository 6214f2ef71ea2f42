"""tinker_actors: a drop-in, actor-based client for the Tinker API, with an embedded server.

``import tinker_actors as tinker`` runs code written for the official ``tinker==0.38.0``.
"""

from __future__ import annotations

import types as _pytypes
from dataclasses import dataclass as _dataclass
from typing import Any as _Any

from . import types
from .clients.rest import RestClient
from .clients.service import ServiceClient
from .clients.training import ClientFuture as _ClientFuture
from .clients.training import TrainingClient
from .config import RecoveryPolicy, RestartPolicy, RetryConfig
from .errors import (
    APIConnectionError,
    APIError,
    APIResponseValidationError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    BillingError,
    ConflictError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RequestFailedError,
    TinkerError,
    UnprocessableEntityError,
)
from .futures import APIFuture
from .types import (
    AdamOptimizerConfig,
    AdamParams,
    Checkpoint,
    CheckpointType,
    Datum,
    DimuonOptimizerConfig,
    DimuonParams,
    DmelChunk,
    EncodedTextChunk,
    ForwardBackwardOutput,
    LoraConfig,
    ModelID,
    ModelInput,
    ModelInputChunk,
    OptimParams,
    OptimStepRequest,
    OptimStepResponse,
    ParsedCheckpointTinkerPath,
    PromptProvenanceSpan,
    SampledProvenanceSpan,
    SampledSequence,
    SampleRequest,
    SampleResponse,
    SamplingParams,
    StopReason,
    TensorData,
    TensorDtype,
    TrainingRun,
)

__title__ = "tinker"
__version__ = "0.38.0"

# 0.38 returns futures of clients that can also (deprecated) be used as the client.
BackcompatTrainingClientFuture = _ClientFuture
BackcompatSamplingClientFuture = _ClientFuture


class AdminClient(RestClient):
    """Organization-admin operations (billing, audit log); the local server serves none."""


class ExperimentalWarning(UserWarning):
    """An experimental API was used."""


@_dataclass(frozen=True)
class Timeout:
    """Accepted for signature compatibility; per-call timeouts are chosen by the runtime."""

    timeout: float | None = 60.0
    connect: float | None = 5.0


RequestOptions = dict[str, _Any]
LossHandle = _Any  # server-side traced custom losses are not supported yet
PerDatumLossFn = _Any

auth = _pytypes.ModuleType("tinker_actors.auth", "Credentials: TINKER_API_KEY or the local key.")


def __getattr__(name: str) -> _Any:
    if name == "SamplingClient":
        from .clients.sampling import SamplingClient

        return SamplingClient
    raise AttributeError(name)


__all__ = [  # noqa: RUF022
    "TrainingClient",
    "BackcompatTrainingClientFuture",
    "ServiceClient",
    "SamplingClient",
    "BackcompatSamplingClientFuture",
    "RestClient",
    "AdminClient",
    "APIFuture",
    "LossHandle",
    "PerDatumLossFn",
    "auth",
    "AdamOptimizerConfig",
    "AdamParams",
    "DimuonOptimizerConfig",
    "DimuonParams",
    "OptimParams",
    "Checkpoint",
    "CheckpointType",
    "Datum",
    "DmelChunk",
    "EncodedTextChunk",
    "ForwardBackwardOutput",
    "SampledProvenanceSpan",
    "LoraConfig",
    "ModelID",
    "ModelInput",
    "ModelInputChunk",
    "OptimStepRequest",
    "OptimStepResponse",
    "ParsedCheckpointTinkerPath",
    "PromptProvenanceSpan",
    "SampledSequence",
    "SampleRequest",
    "SampleResponse",
    "SamplingParams",
    "StopReason",
    "TensorData",
    "TensorDtype",
    "TrainingRun",
    "Timeout",
    "RequestOptions",
    "TinkerError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "APIConnectionError",
    "APIResponseValidationError",
    "RequestFailedError",
    "BadRequestError",
    "AuthenticationError",
    "BillingError",
    "PermissionDeniedError",
    "NotFoundError",
    "ConflictError",
    "UnprocessableEntityError",
    "RateLimitError",
    "InternalServerError",
    "ExperimentalWarning",
    "types",
    "__version__",
    "__title__",
    # tinker_actors additions (not in the official __all__)
    "RecoveryPolicy",
    "RestartPolicy",
    "RetryConfig",
]
