"""tinker_actors: a drop-in, actor-based client for the Tinker API, with an embedded server.

``import tinker_actors as tinker`` runs code written for the official ``tinker==0.38.0``.

The public names load on first use (PEP 562), so ``import tinker_actors`` and the command
line cost almost nothing until a client or a type is touched; type checkers and editors see
them all through the ``TYPE_CHECKING`` imports below.

This package root is also the composition root (the top layer, see docs/internals.md): it
provides the embedded local server to the client side, which cannot import it.
"""

from __future__ import annotations

import importlib as _importlib
from typing import TYPE_CHECKING
from typing import Any as _Any
from typing import TypedDict as _TypedDict

from . import _layout
from . import embedded as _embedded

if TYPE_CHECKING:
    from . import auth, types
    from .clients.admin import AdminClient
    from .clients.backcompat import BackcompatSamplingClientFuture, BackcompatTrainingClientFuture
    from .clients.custom_loss import LossHandle, PerDatumLossFn
    from .clients.rest import RestClient
    from .clients.sampling import SamplingClient
    from .clients.service import ServiceClient
    from .clients.training import TrainingClient
    from .compat import Timeout
    from .config import RecoveryPolicy, RestartPolicy, RetryConfig
    from .dropin import install, installed, uninstall
    from .errors import (
        ActorDeadError,
        ActorKilled,
        APIConnectionError,
        APIError,
        APIResponseValidationError,
        APIStatusError,
        APITimeoutError,
        AuthenticationError,
        BadRequestError,
        BillingError,
        BlockingOnLoopError,
        CliError,
        ConflictError,
        DecodeError,
        DecompressedTooLarge,
        DriverError,
        EncodeError,
        ExperimentalWarning,
        InternalServerError,
        InvalidInputError,
        InvalidTinkerPathError,
        MailboxFullError,
        NotFoundError,
        PermissionDeniedError,
        PromiseExpiredError,
        ProtocolError,
        RateLimitError,
        RegularizerError,
        RegularizerTimeoutError,
        RequestFailedError,
        RestartLimitExceeded,
        RetryableException,
        RunCorruptedError,
        SequenceBrokenError,
        TinkerAlreadyImportedError,
        TinkerError,
        TokenizerError,
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

# public name -> the module (relative to this package) it comes from; None: a subpackage
_LAZY: dict[str, str | None] = {
    "SamplingClient": "clients.sampling",
    "auth": None,
    "types": None,
    "AdminClient": "clients.admin",
    "BackcompatSamplingClientFuture": "clients.backcompat",
    "BackcompatTrainingClientFuture": "clients.backcompat",
    "LossHandle": "clients.custom_loss",
    "PerDatumLossFn": "clients.custom_loss",
    "RestClient": "clients.rest",
    "ServiceClient": "clients.service",
    "TrainingClient": "clients.training",
    "Timeout": "compat",
    "RecoveryPolicy": "config",
    "RestartPolicy": "config",
    "RetryConfig": "config",
    "install": "dropin",
    "installed": "dropin",
    "uninstall": "dropin",
    "APIConnectionError": "errors",
    "APIError": "errors",
    "APIResponseValidationError": "errors",
    "APIStatusError": "errors",
    "APITimeoutError": "errors",
    "ActorDeadError": "errors",
    "ActorKilled": "errors",
    "AuthenticationError": "errors",
    "BadRequestError": "errors",
    "BillingError": "errors",
    "BlockingOnLoopError": "errors",
    "CliError": "errors",
    "ConflictError": "errors",
    "DecodeError": "errors",
    "DecompressedTooLarge": "errors",
    "DriverError": "errors",
    "EncodeError": "errors",
    "ExperimentalWarning": "errors",
    "InternalServerError": "errors",
    "InvalidInputError": "errors",
    "InvalidTinkerPathError": "errors",
    "MailboxFullError": "errors",
    "NotFoundError": "errors",
    "PermissionDeniedError": "errors",
    "PromiseExpiredError": "errors",
    "ProtocolError": "errors",
    "RateLimitError": "errors",
    "RegularizerError": "errors",
    "RegularizerTimeoutError": "errors",
    "RequestFailedError": "errors",
    "RestartLimitExceeded": "errors",
    "RetryableException": "errors",
    "RunCorruptedError": "errors",
    "SequenceBrokenError": "errors",
    "TinkerAlreadyImportedError": "errors",
    "TinkerError": "errors",
    "TokenizerError": "errors",
    "UnprocessableEntityError": "errors",
    "APIFuture": "futures",
    "AdamOptimizerConfig": "types",
    "AdamParams": "types",
    "Checkpoint": "types",
    "CheckpointType": "types",
    "Datum": "types",
    "DimuonOptimizerConfig": "types",
    "DimuonParams": "types",
    "DmelChunk": "types",
    "EncodedTextChunk": "types",
    "ForwardBackwardOutput": "types",
    "LoraConfig": "types",
    "ModelID": "types",
    "ModelInput": "types",
    "ModelInputChunk": "types",
    "OptimParams": "types",
    "OptimStepRequest": "types",
    "OptimStepResponse": "types",
    "ParsedCheckpointTinkerPath": "types",
    "PromptProvenanceSpan": "types",
    "SampledProvenanceSpan": "types",
    "SampledSequence": "types",
    "SampleRequest": "types",
    "SampleResponse": "types",
    "SamplingParams": "types",
    "StopReason": "types",
    "TensorData": "types",
    "TensorDtype": "types",
    "TrainingRun": "types",
}

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
    "InvalidInputError",
    # every other exception class of the package (tinker_actors.errors)
    "ActorDeadError",
    "ActorKilled",
    "BlockingOnLoopError",
    "CliError",
    "DecodeError",
    "DecompressedTooLarge",
    "DriverError",
    "EncodeError",
    "InvalidTinkerPathError",
    "MailboxFullError",
    "PromiseExpiredError",
    "ProtocolError",
    "RegularizerError",
    "RegularizerTimeoutError",
    "RestartLimitExceeded",
    "RetryableException",
    "RunCorruptedError",
    "SequenceBrokenError",
    "TinkerAlreadyImportedError",
    "TokenizerError",
    "install",
    "installed",
    "uninstall",
]


# The official module paths (tinker_actors.types.tensor_data, tinker_actors.lib...): one
# alias table (see _layout). Its finder is cheap and goes in now; the alias modules are
# imported with the first public name, as ``import tinker`` imports its type modules.
_layout.install_finder()


# This module is the composition root: it sees every layer and nothing imports it, and it
# always runs before any submodule. With no TINKER_BASE_URL a session starts the embedded
# local server, which the client layers may not import (it is an application, layer 6), so it
# is injected here; the server is imported only when one is started. See ``embedded``.
def _start_embedded_server() -> _embedded.EmbeddedServer:
    from .server import LocalServer

    return LocalServer(engine="torch").start_in_thread()


_embedded.provide(_start_embedded_server)


def __getattr__(name: str) -> _Any:
    if name.startswith("__"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    _layout.register()
    if name in _LAZY:
        module = _LAZY[name]
        if module is None:
            value = _importlib.import_module(f"{__name__}.{name}")
        else:
            value = getattr(_importlib.import_module(f"{__name__}.{module}"), name)
    else:
        # a submodule (tinker_actors.lib, .errors, ...), reachable as an attribute as when
        # the package imported everything up front
        try:
            value = _importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
