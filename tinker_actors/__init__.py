"""tinker_actors: a drop-in, actor-based client for the Tinker API, with an embedded server.

``import tinker_actors as tinker`` runs code written for the official ``tinker==0.38.0``.
"""

from __future__ import annotations

from typing import Any as _Any
from typing import TypedDict as _TypedDict

from . import auth, types
from .actors.training import SequenceBrokenError
from .clients.admin import AdminClient
from .clients.backcompat import BackcompatSamplingClientFuture, BackcompatTrainingClientFuture
from .clients.custom_loss import LossHandle, PerDatumLossFn
from .clients.rest import RestClient
from .clients.service import ServiceClient
from .clients.training import TrainingClient
from .compat import ExperimentalWarning, Timeout
from .config import RecoveryPolicy, RestartPolicy, RetryConfig
from .dropin import install, installed, uninstall
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
    InvalidInputError,
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


class RequestOptions(_TypedDict, total=False):
    """Per-request options of the official SDK's low-level client (a plain dict)."""

    headers: dict[str, str]
    max_retries: int
    timeout: float | Timeout | None
    params: dict[str, _Any]
    extra_json: dict[str, _Any]
    idempotency_key: str
    follow_redirects: bool


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
    "SequenceBrokenError",
    "InvalidInputError",
    "install",
    "installed",
    "uninstall",
]

# The official module paths (tinker_actors.types.tensor_data, tinker_actors.lib.public_interfaces,
# ...): one alias table, see _layout.
from . import _layout  # noqa: E402

_layout.register()
