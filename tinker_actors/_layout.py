"""The official SDK's module layout, served from one alias table.

``tinker`` 0.38 spreads its public names over about 110 modules
(``tinker.types.tensor_data``, ``tinker.lib.public_interfaces.api_future``, ...) and user
code imports from those paths. Each path exists here as ``tinker_actors.<same path>``: a
module built on first import from :data:`TABLE`, whose attributes are the very objects of
``tinker_actors`` (``is``-identical), looked up lazily on first access. Real modules of the
package win: the finder is consulted after the normal path finder, so only paths with no
file here are aliased (``types/datum.py``, ``types/model_input.py`` ... are real).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["PACKAGES", "TABLE", "register", "resolve"]

PACKAGE = "tinker_actors"
_TYPES = "tinker_actors.types"

# tinker.types.<module> -> the names it defines, all served from tinker_actors.types.
# Modules that are real files under tinker_actors/types/ are not listed.
_TYPES_MODULES: dict[str, str] = {
    "audit_log_entry": "AuditLogEntry",
    "audit_log_response": "AuditLogResponse",
    "auth_token_response": "AuthTokenResponse",
    "billing_usage_request": "GetBillingUsageRequest",
    "billing_usage_response": (
        "BillingEventInfo BillingUsageEvent BillingUsageResponse BillingUsageSession "
        "CheckpointBillingEvent SamplingPrefillBillingEvent SamplingSampleBillingEvent "
        "StorageBillingEvent TrainingBillingEvent"
    ),
    "checkpoint": "Checkpoint CheckpointType ParsedCheckpointTinkerPath",
    "checkpoints_list_response": "CheckpointsListResponse",
    "client_config_request": "ClientConfigRequest",
    "client_config_response": "ClientConfigResponse",
    "client_dynamic_config_response": "ClientDynamicConfigResponse",
    "copy_weights_request": "CopyWeightsRequest",
    "copy_weights_response": "CopyWeightsResponse",
    "create_custom_loss_request": "CreateCustomLossRequest",
    "create_custom_loss_response": "CreateCustomLossResponse",
    "create_model_request": "CreateModelRequest",
    "create_model_response": "CreateModelResponse",
    "create_sampling_session_request": "CreateSamplingSessionRequest",
    "create_sampling_session_response": "CreateSamplingSessionResponse",
    "create_session_request": "CreateSessionRequest",
    "create_session_response": "CreateSessionResponse",
    "current_checkpoint_storage_usage_request": "GetCurrentCheckpointStorageUsageRequest",
    "current_checkpoint_storage_usage_response": (
        "CurrentCheckpointStorageUsageItem CurrentCheckpointStorageUsageResponse"
    ),
    "cursor": "Cursor",
    "custom_loss_graph": "CustomLossGraph CustomLossNode CustomLossNodeOp",
    "custom_loss_input": "CustomLossInput CustomLossInputRank",
    "dmel_chunk": "DmelChunk",
    "encoded_text_chunk": "EncodedTextChunk",
    "event_type": "EventType",
    "external_weights_urls_response": "ExternalWeightsUrlsResponse",
    "forward_backward_input": "ForwardBackwardInput",
    "forward_backward_output": "ForwardBackwardOutput",
    "forward_backward_request": "ForwardBackwardRequest",
    "forward_request": "ForwardRequest",
    "future_completion": "FutureCompletion FutureFailed FutureFinished",
    "future_retrieve_request": "FutureRetrieveRequest",
    "futures_retrieve_request": "FuturesRetrieveRequest SamplingSessionFuturesTarget",
    "futures_retrieve_response": "FuturesRetrieveResponse",
    "generic_event": "GenericEvent",
    "get_info_request": "GetInfoRequest",
    "get_info_response": "GetInfoResponse ModelData",
    "get_sampler_response": "GetSamplerResponse",
    "get_server_capabilities_response": "GetServerCapabilitiesResponse SupportedModel",
    "get_session_response": "GetSessionResponse",
    "health_response": "HealthResponse",
    "image_asset_pointer_chunk": "ImageAssetPointerChunk",
    "image_chunk": "ImageChunk",
    "join_sampling_session_request": "JoinSamplingSessionRequest",
    "join_sampling_session_response": "JoinSamplingSessionResponse",
    "list_sessions_response": "ListSessionsResponse",
    "load_weights_request": "LoadWeightsRequest",
    "load_weights_response": "LoadWeightsResponse",
    "lora_config": "LoraConfig",
    "loss_fn_inputs": "LossFnInputs",
    "loss_fn_output": "LossFnOutput",
    "loss_fn_type": "LossFnType",
    "model_id": "ModelID",
    "model_input_chunk": "ModelInputChunk",
    "optim_step_request": "AdamParams OptimStepRequest",
    "optim_step_response": "OptimStepResponse",
    "prompt_alt_tokens": "PromptAltTokens",
    "provenance_spans": "PromptProvenanceSpan ProvenanceSpans SampledProvenanceSpan",
    "request_error_category": "RequestErrorCategory",
    "request_failed_response": "RequestFailedResponse",
    "request_id": "RequestID",
    "sample_request": "SampleRequest",
    "sample_response": "SampleResponse",
    "sampled_sequence": "SampledSequence",
    "sampling_client_kind": "SamplingClientKind",
    "sampling_params": "SamplingParams",
    "save_weights_external_request": "SaveWeightsExternalRequest",
    "save_weights_external_response": (
        "SaveWeightsExternalResponse SaveWeightsExternalResponseInternal"
    ),
    "save_weights_for_sampler_request": "SaveWeightsForSamplerRequest",
    "save_weights_for_sampler_response": (
        "SaveWeightsForSamplerResponse SaveWeightsForSamplerResponseInternal"
    ),
    "save_weights_request": "SaveWeightsRequest",
    "save_weights_response": "SaveWeightsResponse",
    "search_owner": "AccessibleSearchOwner OwnSearchOwner SearchOwner UserSearchOwner",
    "session_end_event": "SessionEndEvent",
    "session_heartbeat_request": "SessionHeartbeatRequest",
    "session_heartbeat_response": "SessionHeartbeatResponse",
    "session_search_cursor": "SessionSearchCursor",
    "session_search_request": "SessionSearchRequest",
    "session_search_response": "SessionSearchResponse",
    "session_start_event": "SessionStartEvent",
    "session_status": (
        "ClientSessionFinishErrored ClientSessionFinishInterrupted "
        "ClientSessionFinishReason ClientSessionFinishSuccess ClientSessionFinished "
        "SessionActive SessionCancelled SessionFailed SessionFailedReason "
        "SessionFailedRequestReason SessionFailedSamplingSessionReason "
        "SessionFailedTrainingRunReason SessionStatus"
    ),
    "session_status_query": (
        "ActiveSessionStatusQuery CancelledSessionStatusQuery "
        "ClientFinishedSessionStatusQuery ClientSessionFinishReasonType "
        "FailedSessionStatusQuery SessionStatusQuery"
    ),
    "session_summary": "SessionSummary",
    "severity": "Severity",
    "stop_reason": "StopReason",
    "telemetry_batch": "TelemetryBatch",
    "telemetry_event": "TelemetryEvent",
    "telemetry_response": "TelemetryResponse",
    "telemetry_send_request": "TelemetrySendRequest",
    "tensor_data": "TensorData",
    "tensor_dtype": "TensorDtype",
    "training_run": "TrainingRun",
    "training_runs_response": "TrainingRunsResponse",
    "try_again_response": "TryAgainResponse",
    "unhandled_exception_event": "UnhandledExceptionEvent",
    "unload_model_request": "UnloadModelRequest",
    "unload_model_response": "UnloadModelResponse",
    "weights_info_response": "WeightsInfoResponse",
    "whoami_response": "WhoamiResponse",
    "shared": "UntypedAPIFuture",
    "shared.untyped_api_future": "UntypedAPIFuture",
}

_PI = "tinker_actors.lib.public_interfaces"
_CLIENTS = {
    "ServiceClient": "tinker_actors:ServiceClient",
    "TrainingClient": "tinker_actors:TrainingClient",
    "SamplingClient": "tinker_actors:SamplingClient",
    "RestClient": "tinker_actors:RestClient",
    "AdminClient": "tinker_actors:AdminClient",
    "BackcompatTrainingClientFuture": "tinker_actors:BackcompatTrainingClientFuture",
    "BackcompatSamplingClientFuture": "tinker_actors:BackcompatSamplingClientFuture",
    "APIFuture": "tinker_actors.futures:APIFuture",
    "AwaitableConcurrentFuture": "tinker_actors.futures:AwaitableConcurrentFuture",
    "LossHandle": "tinker_actors.clients.custom_loss:LossHandle",
    "PerDatumLossFn": "tinker_actors.clients.custom_loss:PerDatumLossFn",
}


def _pick(source: dict[str, str], names: str) -> dict[str, str]:
    return {n: source[n] for n in names.split()}


# Every other official module path -> {name: "module:attribute" in tinker_actors}.
_OTHER_MODULES: dict[str, dict[str, str]] = {
    "lib": {},
    "lib.public_interfaces": dict(_CLIENTS),
    "lib.public_interfaces.admin_client": _pick(_CLIENTS, "AdminClient"),
    "lib.public_interfaces.api_future": _pick(_CLIENTS, "APIFuture AwaitableConcurrentFuture"),
    "lib.public_interfaces.backcompat_client_future": {
        "BackcompatClientFuture": "tinker_actors.clients.backcompat:BackcompatClientFuture",
    },
    "lib.public_interfaces.backcompat_sampling_client_future": _pick(
        _CLIENTS, "BackcompatSamplingClientFuture"
    ),
    "lib.public_interfaces.backcompat_training_client_future": _pick(
        _CLIENTS, "BackcompatTrainingClientFuture"
    ),
    "lib.public_interfaces.custom_loss": _pick(_CLIENTS, "LossHandle PerDatumLossFn"),
    "lib.public_interfaces.rest_client": _pick(_CLIENTS, "RestClient"),
    "lib.public_interfaces.sampling_client": _pick(_CLIENTS, "SamplingClient"),
    "lib.public_interfaces.service_client": _pick(_CLIENTS, "ServiceClient"),
    "lib.public_interfaces.training_client": {
        **_pick(_CLIENTS, "TrainingClient"),
        "CustomLossFnV1": "tinker_actors.compat:CustomLossFnV1",
    },
    "lib.api_future_impl": {
        "QueueState": "tinker_actors.futures:QueueState",
        "QueueStateObserver": "tinker_actors.futures:QueueStateObserver",
    },
    "lib.queue_state_logger": {
        "QueueStateLogger": "tinker_actors.futures:QueueStateLogger",
        "PAUSE_GRACE_PERIOD": "tinker_actors.futures:PAUSE_GRACE_PERIOD",
        "QueueState": "tinker_actors.futures:QueueState",
        "QueueStateObserver": "tinker_actors.futures:QueueStateObserver",
    },
    "lib.retry_handler": {
        "RetryConfig": "tinker_actors.config:RetryConfig",
        "RetryHandler": "tinker_actors.compat:RetryHandler",
        "RetryableException": "tinker_actors.errors:RetryableException",
        "is_retryable_status_code": "tinker_actors.compat:is_retryable_status_code",
    },
    "lib.retryable_exception": {"RetryableException": "tinker_actors.errors:RetryableException"},
    "lib.telemetry": {
        "Telemetry": "tinker_actors.actors.telemetry:Telemetry",
        "TelemetryProvider": "tinker_actors.compat:TelemetryProvider",
        "capture_exceptions": "tinker_actors.compat:capture_exceptions",
        "is_user_error": "tinker_actors.actors.telemetry:is_user_error",
        "get_process_uuid": "tinker_actors.actors.telemetry:process_uuid",
        "MAX_BATCH_SIZE": "tinker_actors.actors.telemetry:MAX_BATCH",
        "MAX_QUEUE_SIZE": "tinker_actors.actors.telemetry:MAX_QUEUE",
        "FLUSH_INTERVAL": "tinker_actors.actors.telemetry:FLUSH_INTERVAL",
    },
    "lib.telemetry_provider": {"TelemetryProvider": "tinker_actors.compat:TelemetryProvider"},
    "lib.experimental": {
        "ExperimentalWarning": "tinker_actors:ExperimentalWarning",
        "experimental": "tinker_actors.compat:experimental",
    },
    "lib.chunked_fwdbwd_helpers": {
        "combine_fwd_bwd_output_results": f"{_TYPES}:combine_fwd_bwd_output_results",
        "Metrics": "tinker_actors.compat:Metrics",
    },
}

# Official modules that are real files of a lower layer here, with official names that need
# a higher one: ``tinker.auth`` is the credentials module (layer 1), but its
# ``raise_if_tinker_not_accessible`` opens a ServiceClient (layer 5). Those names are added to
# the real module as it is imported (a module ``__getattr__``, resolved on first use, the same
# objects), so the lower module never imports upward.
ADDED: dict[str, dict[str, str]] = {
    "auth": {
        "raise_if_tinker_not_accessible": (
            "tinker_actors.clients.access:raise_if_tinker_not_accessible"
        ),
    },
}

# Official module paths that are packages (they get a ``__path__``).
PACKAGES = frozenset({"lib", "lib.public_interfaces", "types.shared"})


def _build_table() -> dict[str, dict[str, str]]:
    table: dict[str, dict[str, str]] = {}
    for module, names in _TYPES_MODULES.items():
        table[f"types.{module}"] = {n: f"{_TYPES}:{n}" for n in names.split()}
    table.update(_OTHER_MODULES)
    return table


# Official module path (relative to the package) -> {public name: "module:attribute"}.
TABLE: dict[str, dict[str, str]] = _build_table()


def resolve(target: str) -> Any:
    """The object a table entry (``"module:attribute"``) names."""
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _module_getattr(fullname: str, mapping: dict[str, str]) -> Callable[[str], Any]:
    def __getattr__(name: str) -> Any:
        target = mapping.get(name)
        if target is None:
            raise AttributeError(f"module {fullname!r} has no attribute {name!r}")
        try:
            value = resolve(target)
        except AttributeError:
            raise AttributeError(
                f"{fullname}.{name} is part of the official tinker layout but "
                f"{target.replace(':', '.')} is not available in this tinker_actors"
            ) from None
        setattr(sys.modules[fullname], name, value)  # later lookups skip this function
        return value

    return __getattr__


class _AliasLoader(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds and builds the table's modules (after the path finder, so real files win)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(PACKAGE + "."):
            return None
        rel = fullname[len(PACKAGE) + 1 :]
        if rel not in TABLE:
            return None
        return importlib.util.spec_from_loader(fullname, self, is_package=rel in PACKAGES)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None  # the default module object

    def exec_module(self, module: types.ModuleType) -> None:
        rel = module.__name__[len(PACKAGE) + 1 :]
        mapping = TABLE[rel]
        module.__doc__ = f"The official ``tinker.{rel}`` path, served from tinker_actors."
        module.__all__ = list(mapping)  # type: ignore[attr-defined]
        module.__getattr__ = _module_getattr(module.__name__, mapping)  # type: ignore[method-assign]
        module.__dir__ = lambda: sorted({*mapping, *vars(module)})  # type: ignore[method-assign]


def _add_names(module: types.ModuleType, mapping: dict[str, str]) -> None:
    """Give a real module the official names of ``mapping`` (resolved on first access)."""
    own = getattr(module, "__getattr__", None)
    served = _module_getattr(module.__name__, mapping)

    def __getattr__(name: str) -> Any:
        if name in mapping or own is None:
            return served(name)
        return own(name)

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    names = list(getattr(module, "__all__", ()))
    module.__all__ = [*names, *(n for n in mapping if n not in names)]  # type: ignore[attr-defined]


class _AddingLoader(importlib.machinery.SourceFileLoader):
    """The normal loader of a real module, which then adds the module's ADDED names."""

    def exec_module(self, module: types.ModuleType) -> None:
        super().exec_module(module)
        _add_names(module, ADDED[module.__name__[len(PACKAGE) + 1 :]])


class _AddingFinder(importlib.abc.MetaPathFinder):
    """First on ``sys.meta_path``, for the modules in ADDED only: the path finder's spec,
    loaded by :class:`_AddingLoader`."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(PACKAGE + ".") or fullname[len(PACKAGE) + 1 :] not in ADDED:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            return spec
        spec.loader = _AddingLoader(spec.loader.name, spec.loader.path)
        return spec


_LOADER = _AliasLoader()
_ADDING = _AddingFinder()


def install_finder() -> None:
    """Add the alias finders (once): ``import tinker_actors.types.tensor_data`` works, and
    ``tinker_actors.auth`` has the official names of ADDED."""
    if _LOADER not in sys.meta_path:
        sys.meta_path.append(_LOADER)
    if _ADDING not in sys.meta_path:
        sys.meta_path.insert(0, _ADDING)
        for rel, mapping in ADDED.items():  # a module imported before the finder was in
            module = sys.modules.get(f"{PACKAGE}.{rel}")
            if module is not None:
                _add_names(module, mapping)


_registered = False


def register() -> None:
    """Import every alias module (once), as ``import tinker`` imports its type modules.

    The official package imports all of its type modules up front, so attribute access
    such as ``tinker.types.tensor_data`` works without an import statement. The package
    calls this with its first public name (not at ``import tinker_actors``, which stays
    cheap for the command line); the alias modules resolve their attributes on first use.
    """
    global _registered
    if _registered:
        return
    _registered = True  # first, so imports below that reach the package do not recurse
    install_finder()
    for rel in sorted(TABLE):  # parents sort before their children
        importlib.import_module(f"{PACKAGE}.{rel}")
