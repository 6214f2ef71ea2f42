"""All wire types (msgspec Structs), named as in the official SDK's ``tinker.types``.

Import from here: ``from tinker_actors import types`` then ``types.Datum(...)``.
"""

from __future__ import annotations

from ._base import NullableStruct as NullableStruct
from ._base import WireStruct as WireStruct
from ._base import always as always
from ._base import as_dataclass as _as_dataclass
from ._base import dec_hook as dec_hook
from ._base import enc_hook as enc_hook
from ._base import schema_hook as schema_hook
from .datum import (
    KEY_TO_DTYPE as KEY_TO_DTYPE,
)
from .datum import (
    Datum as Datum,
)
from .datum import (
    LossFnInputs as LossFnInputs,
)
from .datum import (
    LossFnOutput as LossFnOutput,
)
from .datum import (
    PromptProvenanceSpan as PromptProvenanceSpan,
)
from .datum import (
    ProvenanceSpan as ProvenanceSpan,
)
from .datum import (
    ProvenanceSpans as ProvenanceSpans,
)
from .datum import (
    SampledProvenanceSpan as SampledProvenanceSpan,
)
from .datum import to_tensor_data as to_tensor_data
from .future_retrieve_response import FutureRetrieveResponse as FutureRetrieveResponse
from .futures import (
    CancelFutureRequest as CancelFutureRequest,
)
from .futures import (
    FutureCompletion as FutureCompletion,
)
from .futures import (
    FutureFailed as FutureFailed,
)
from .futures import (
    FutureFinished as FutureFinished,
)
from .futures import (
    FutureMetadataOnlyResponse as FutureMetadataOnlyResponse,
)
from .futures import (
    FutureRetrieveRequest as FutureRetrieveRequest,
)
from .futures import (
    FuturesRetrieveRequest as FuturesRetrieveRequest,
)
from .futures import (
    FuturesRetrieveResponse as FuturesRetrieveResponse,
)
from .futures import (
    RequestErrorCategory as RequestErrorCategory,
)
from .futures import (
    RequestFailedResponse as RequestFailedResponse,
)
from .futures import (
    RequestID as RequestID,
)
from .futures import (
    SamplingSessionFuturesTarget as SamplingSessionFuturesTarget,
)
from .futures import (
    TryAgainResponse as TryAgainResponse,
)
from .futures import (
    UntypedAPIFuture as UntypedAPIFuture,
)
from .fwdbwd import (
    DEFAULT_MAX_CHUNK_BYTES as DEFAULT_MAX_CHUNK_BYTES,
)
from .fwdbwd import (
    DEFAULT_MAX_CHUNK_LEN as DEFAULT_MAX_CHUNK_LEN,
)
from .fwdbwd import (
    REDUCTIONS as REDUCTIONS,
)
from .fwdbwd import chunk_data as chunk_data
from .fwdbwd import combine_fwd_bwd_output_results as combine_fwd_bwd_output_results
from .fwdbwd import combine_metrics as combine_metrics
from .fwdbwd import estimate_chunk_bytes as estimate_chunk_bytes
from .fwdbwd import estimate_datum_bytes as estimate_datum_bytes
from .fwdbwd import estimate_model_input_bytes as estimate_model_input_bytes
from .fwdbwd import estimate_tensor_bytes as estimate_tensor_bytes
from .model_input import (
    DmelChunk as DmelChunk,
)
from .model_input import (
    EncodedTextChunk as EncodedTextChunk,
)
from .model_input import (
    ImageAssetPointerChunk as ImageAssetPointerChunk,
)
from .model_input import (
    ImageChunk as ImageChunk,
)
from .model_input import (
    ImageFormat as ImageFormat,
)
from .model_input import (
    ModelInput as ModelInput,
)
from .model_input import (
    ModelInputChunk as ModelInputChunk,
)
from .model_input import tensor_container_shape as tensor_container_shape
from .optimizer import OptimizerConfigBase as OptimizerConfigBase
from .optimizer import OptimParamsBase as OptimParamsBase
from .rest import (
    AccessibleSearchOwner as AccessibleSearchOwner,
)
from .rest import (
    ActiveSessionStatusQuery as ActiveSessionStatusQuery,
)
from .rest import (
    ApiKeyDetails as ApiKeyDetails,
)
from .rest import (
    ApiKeyInfoResponse as ApiKeyInfoResponse,
)
from .rest import (
    ApiKeyOrgDetails as ApiKeyOrgDetails,
)
from .rest import (
    ApiKeyUserDetails as ApiKeyUserDetails,
)
from .rest import (
    AssignSessionProjectRequest as AssignSessionProjectRequest,
)
from .rest import (
    AuditLogEntry as AuditLogEntry,
)
from .rest import (
    AuditLogResponse as AuditLogResponse,
)
from .rest import (
    BillingEventInfo as BillingEventInfo,
)
from .rest import (
    BillingUsageEvent as BillingUsageEvent,
)
from .rest import (
    BillingUsageResponse as BillingUsageResponse,
)
from .rest import (
    BillingUsageSession as BillingUsageSession,
)
from .rest import (
    CancelledSessionStatusQuery as CancelledSessionStatusQuery,
)
from .rest import (
    Checkpoint as Checkpoint,
)
from .rest import (
    CheckpointArchiveUrlResponse as CheckpointArchiveUrlResponse,
)
from .rest import (
    CheckpointBillingEvent as CheckpointBillingEvent,
)
from .rest import (
    CheckpointsListResponse as CheckpointsListResponse,
)
from .rest import (
    CheckpointType as CheckpointType,
)
from .rest import (
    ClientFinishedSessionStatusQuery as ClientFinishedSessionStatusQuery,
)
from .rest import (
    ClientSessionFinished as ClientSessionFinished,
)
from .rest import (
    ClientSessionFinishReasonType as ClientSessionFinishReasonType,
)
from .rest import (
    CurrentCheckpointStorageUsageItem as CurrentCheckpointStorageUsageItem,
)
from .rest import (
    CurrentCheckpointStorageUsageResponse as CurrentCheckpointStorageUsageResponse,
)
from .rest import (
    Cursor as Cursor,
)
from .rest import (
    ExternalWeightsUrlsResponse as ExternalWeightsUrlsResponse,
)
from .rest import (
    FailedSessionStatusQuery as FailedSessionStatusQuery,
)
from .rest import (
    GetBillingUsageRequest as GetBillingUsageRequest,
)
from .rest import (
    GetCurrentCheckpointStorageUsageRequest as GetCurrentCheckpointStorageUsageRequest,
)
from .rest import (
    GetSessionResponse as GetSessionResponse,
)
from .rest import (
    ListSessionsResponse as ListSessionsResponse,
)
from .rest import (
    OwnSearchOwner as OwnSearchOwner,
)
from .rest import (
    ParsedCheckpointTinkerPath as ParsedCheckpointTinkerPath,
)
from .rest import (
    SamplingPrefillBillingEvent as SamplingPrefillBillingEvent,
)
from .rest import (
    SamplingSampleBillingEvent as SamplingSampleBillingEvent,
)
from .rest import (
    SearchOwner as SearchOwner,
)
from .rest import (
    SessionActive as SessionActive,
)
from .rest import (
    SessionCancelled as SessionCancelled,
)
from .rest import (
    SessionFailed as SessionFailed,
)
from .rest import (
    SessionFailedReason as SessionFailedReason,
)
from .rest import (
    SessionFailedRequestReason as SessionFailedRequestReason,
)
from .rest import (
    SessionFailedSamplingSessionReason as SessionFailedSamplingSessionReason,
)
from .rest import (
    SessionFailedTrainingRunReason as SessionFailedTrainingRunReason,
)
from .rest import (
    SessionSearchCursor as SessionSearchCursor,
)
from .rest import (
    SessionSearchRequest as SessionSearchRequest,
)
from .rest import (
    SessionSearchResponse as SessionSearchResponse,
)
from .rest import (
    SessionStatus as SessionStatus,
)
from .rest import (
    SessionStatusQuery as SessionStatusQuery,
)
from .rest import (
    SessionSummary as SessionSummary,
)
from .rest import (
    SetCheckpointTtlRequest as SetCheckpointTtlRequest,
)
from .rest import (
    StorageBillingEvent as StorageBillingEvent,
)
from .rest import (
    TraceExportResponse as TraceExportResponse,
)
from .rest import (
    TrainingBillingEvent as TrainingBillingEvent,
)
from .rest import (
    TrainingRun as TrainingRun,
)
from .rest import (
    TrainingRunsResponse as TrainingRunsResponse,
)
from .rest import (
    UserSearchOwner as UserSearchOwner,
)
from .sampling import (
    MASK_LOGPROB as MASK_LOGPROB,
)
from .sampling import (
    CreateSamplingSessionRequest as CreateSamplingSessionRequest,
)
from .sampling import (
    CreateSamplingSessionResponse as CreateSamplingSessionResponse,
)
from .sampling import (
    GetSamplerResponse as GetSamplerResponse,
)
from .sampling import (
    JoinSamplingSessionRequest as JoinSamplingSessionRequest,
)
from .sampling import (
    JoinSamplingSessionResponse as JoinSamplingSessionResponse,
)
from .sampling import (
    PromptAltTokens as PromptAltTokens,
)
from .sampling import (
    SampledSequence as SampledSequence,
)
from .sampling import (
    SampleRequest as SampleRequest,
)
from .sampling import (
    SampleResponse as SampleResponse,
)
from .sampling import (
    SamplingParams as SamplingParams,
)
from .sampling import (
    StopReason as StopReason,
)
from .sampling import (
    TopkEntries as TopkEntries,
)
from .session import (
    AuthTokenRequest as AuthTokenRequest,
)
from .session import (
    AuthTokenResponse as AuthTokenResponse,
)
from .session import (
    ClientConfigRequest as ClientConfigRequest,
)
from .session import (
    ClientConfigResponse as ClientConfigResponse,
)
from .session import (
    ClientDynamicConfigResponse as ClientDynamicConfigResponse,
)
from .session import (
    ClientSessionFinishErrored as ClientSessionFinishErrored,
)
from .session import (
    ClientSessionFinishInterrupted as ClientSessionFinishInterrupted,
)
from .session import (
    ClientSessionFinishReason as ClientSessionFinishReason,
)
from .session import (
    ClientSessionFinishSuccess as ClientSessionFinishSuccess,
)
from .session import (
    CreateSessionRequest as CreateSessionRequest,
)
from .session import (
    CreateSessionResponse as CreateSessionResponse,
)
from .session import (
    EventType as EventType,
)
from .session import (
    GenericEvent as GenericEvent,
)
from .session import (
    GetServerCapabilitiesResponse as GetServerCapabilitiesResponse,
)
from .session import (
    HealthResponse as HealthResponse,
)
from .session import (
    SessionEndEvent as SessionEndEvent,
)
from .session import (
    SessionFinishRequest as SessionFinishRequest,
)
from .session import (
    SessionHeartbeatRequest as SessionHeartbeatRequest,
)
from .session import (
    SessionHeartbeatResponse as SessionHeartbeatResponse,
)
from .session import (
    SessionStartEvent as SessionStartEvent,
)
from .session import (
    Severity as Severity,
)
from .session import (
    SupportedModel as SupportedModel,
)
from .session import (
    TelemetryBatch as TelemetryBatch,
)
from .session import (
    TelemetryEvent as TelemetryEvent,
)
from .session import (
    TelemetryResponse as TelemetryResponse,
)
from .session import (
    TelemetrySendRequest as TelemetrySendRequest,
)
from .session import (
    UnhandledExceptionEvent as UnhandledExceptionEvent,
)
from .session import (
    WhoamiResponse as WhoamiResponse,
)
from .tensor import (
    TensorData as TensorData,
)
from .tensor import (
    TensorDtype as TensorDtype,
)
from .tensor import numpy_dtype as numpy_dtype
from .tensor import tensor_dtype_of as tensor_dtype_of
from .topk_logprobs import TopkLogprobs as TopkLogprobs
from .topk_logprobs import topk_to_lists as topk_to_lists
from .training import (
    AdamOptimizerConfig as AdamOptimizerConfig,
)
from .training import (
    AdamParams as AdamParams,
)
from .training import (
    CopyWeightsRequest as CopyWeightsRequest,
)
from .training import (
    CopyWeightsResponse as CopyWeightsResponse,
)
from .training import (
    CreateCustomLossRequest as CreateCustomLossRequest,
)
from .training import (
    CreateCustomLossResponse as CreateCustomLossResponse,
)
from .training import (
    CreateModelRequest as CreateModelRequest,
)
from .training import (
    CreateModelResponse as CreateModelResponse,
)
from .training import (
    CustomLossGraph as CustomLossGraph,
)
from .training import (
    CustomLossInput as CustomLossInput,
)
from .training import (
    CustomLossInputRank as CustomLossInputRank,
)
from .training import (
    CustomLossNode as CustomLossNode,
)
from .training import (
    CustomLossNodeOp as CustomLossNodeOp,
)
from .training import (
    DimuonOptimizerConfig as DimuonOptimizerConfig,
)
from .training import (
    DimuonParams as DimuonParams,
)
from .training import (
    ForwardBackwardInput as ForwardBackwardInput,
)
from .training import (
    ForwardBackwardOutput as ForwardBackwardOutput,
)
from .training import (
    ForwardBackwardProtoRequest as ForwardBackwardProtoRequest,
)
from .training import (
    ForwardBackwardRequest as ForwardBackwardRequest,
)
from .training import (
    ForwardRequest as ForwardRequest,
)
from .training import (
    GetInfoRequest as GetInfoRequest,
)
from .training import (
    GetInfoResponse as GetInfoResponse,
)
from .training import (
    LoadWeightsRequest as LoadWeightsRequest,
)
from .training import (
    LoadWeightsResponse as LoadWeightsResponse,
)
from .training import (
    LoraConfig as LoraConfig,
)
from .training import (
    LossFnType as LossFnType,
)
from .training import (
    ModelData as ModelData,
)
from .training import (
    ModelID as ModelID,
)
from .training import (
    OptimizerConfig as OptimizerConfig,
)
from .training import (
    OptimParams as OptimParams,
)
from .training import (
    OptimStepRequest as OptimStepRequest,
)
from .training import (
    OptimStepResponse as OptimStepResponse,
)
from .training import (
    SamplingClientKind as SamplingClientKind,
)
from .training import (
    SaveWeightsExternalRequest as SaveWeightsExternalRequest,
)
from .training import (
    SaveWeightsExternalResponse as SaveWeightsExternalResponse,
)
from .training import (
    SaveWeightsExternalResponseInternal as SaveWeightsExternalResponseInternal,
)
from .training import (
    SaveWeightsForSamplerRequest as SaveWeightsForSamplerRequest,
)
from .training import (
    SaveWeightsForSamplerResponse as SaveWeightsForSamplerResponse,
)
from .training import (
    SaveWeightsForSamplerResponseInternal as SaveWeightsForSamplerResponseInternal,
)
from .training import (
    SaveWeightsRequest as SaveWeightsRequest,
)
from .training import (
    SaveWeightsResponse as SaveWeightsResponse,
)
from .training import (
    UnloadModelRequest as UnloadModelRequest,
)
from .training import (
    UnloadModelResponse as UnloadModelResponse,
)
from .training import (
    WeightsInfoRequest as WeightsInfoRequest,
)
from .training import (
    WeightsInfoResponse as WeightsInfoResponse,
)

__all__ = [
    "DEFAULT_MAX_CHUNK_BYTES",
    "DEFAULT_MAX_CHUNK_LEN",
    "KEY_TO_DTYPE",
    "MASK_LOGPROB",
    "REDUCTIONS",
    "AccessibleSearchOwner",
    "ActiveSessionStatusQuery",
    "AdamOptimizerConfig",
    "AdamParams",
    "ApiKeyDetails",
    "ApiKeyInfoResponse",
    "ApiKeyOrgDetails",
    "ApiKeyUserDetails",
    "AssignSessionProjectRequest",
    "AuditLogEntry",
    "AuditLogResponse",
    "AuthTokenRequest",
    "AuthTokenResponse",
    "BillingEventInfo",
    "BillingUsageEvent",
    "BillingUsageResponse",
    "BillingUsageSession",
    "CancelFutureRequest",
    "CancelledSessionStatusQuery",
    "Checkpoint",
    "CheckpointArchiveUrlResponse",
    "CheckpointBillingEvent",
    "CheckpointType",
    "CheckpointsListResponse",
    "ClientConfigRequest",
    "ClientConfigResponse",
    "ClientDynamicConfigResponse",
    "ClientFinishedSessionStatusQuery",
    "ClientSessionFinishErrored",
    "ClientSessionFinishInterrupted",
    "ClientSessionFinishReason",
    "ClientSessionFinishReasonType",
    "ClientSessionFinishSuccess",
    "ClientSessionFinished",
    "CopyWeightsRequest",
    "CopyWeightsResponse",
    "CreateCustomLossRequest",
    "CreateCustomLossResponse",
    "CreateModelRequest",
    "CreateModelResponse",
    "CreateSamplingSessionRequest",
    "CreateSamplingSessionResponse",
    "CreateSessionRequest",
    "CreateSessionResponse",
    "CurrentCheckpointStorageUsageItem",
    "CurrentCheckpointStorageUsageResponse",
    "Cursor",
    "CustomLossGraph",
    "CustomLossInput",
    "CustomLossInputRank",
    "CustomLossNode",
    "CustomLossNodeOp",
    "Datum",
    "DimuonOptimizerConfig",
    "DimuonParams",
    "DmelChunk",
    "EncodedTextChunk",
    "EventType",
    "ExternalWeightsUrlsResponse",
    "FailedSessionStatusQuery",
    "ForwardBackwardInput",
    "ForwardBackwardOutput",
    "ForwardBackwardProtoRequest",
    "ForwardBackwardRequest",
    "ForwardRequest",
    "FutureCompletion",
    "FutureFailed",
    "FutureFinished",
    "FutureMetadataOnlyResponse",
    "FutureRetrieveRequest",
    "FutureRetrieveResponse",
    "FuturesRetrieveRequest",
    "FuturesRetrieveResponse",
    "GenericEvent",
    "GetBillingUsageRequest",
    "GetCurrentCheckpointStorageUsageRequest",
    "GetInfoRequest",
    "GetInfoResponse",
    "GetSamplerResponse",
    "GetServerCapabilitiesResponse",
    "GetSessionResponse",
    "HealthResponse",
    "ImageAssetPointerChunk",
    "ImageChunk",
    "ImageFormat",
    "JoinSamplingSessionRequest",
    "JoinSamplingSessionResponse",
    "ListSessionsResponse",
    "LoadWeightsRequest",
    "LoadWeightsResponse",
    "LoraConfig",
    "LossFnInputs",
    "LossFnOutput",
    "LossFnType",
    "ModelData",
    "ModelID",
    "ModelInput",
    "ModelInputChunk",
    "NullableStruct",
    "OptimParams",
    "OptimParamsBase",
    "OptimStepRequest",
    "OptimStepResponse",
    "OptimizerConfig",
    "OptimizerConfigBase",
    "OwnSearchOwner",
    "ParsedCheckpointTinkerPath",
    "PromptAltTokens",
    "PromptProvenanceSpan",
    "ProvenanceSpan",
    "ProvenanceSpans",
    "RequestErrorCategory",
    "RequestFailedResponse",
    "RequestID",
    "SampleRequest",
    "SampleResponse",
    "SampledProvenanceSpan",
    "SampledSequence",
    "SamplingClientKind",
    "SamplingParams",
    "SamplingPrefillBillingEvent",
    "SamplingSampleBillingEvent",
    "SamplingSessionFuturesTarget",
    "SaveWeightsExternalRequest",
    "SaveWeightsExternalResponse",
    "SaveWeightsExternalResponseInternal",
    "SaveWeightsForSamplerRequest",
    "SaveWeightsForSamplerResponse",
    "SaveWeightsForSamplerResponseInternal",
    "SaveWeightsRequest",
    "SaveWeightsResponse",
    "SearchOwner",
    "SessionActive",
    "SessionCancelled",
    "SessionEndEvent",
    "SessionFailed",
    "SessionFailedReason",
    "SessionFailedRequestReason",
    "SessionFailedSamplingSessionReason",
    "SessionFailedTrainingRunReason",
    "SessionFinishRequest",
    "SessionHeartbeatRequest",
    "SessionHeartbeatResponse",
    "SessionSearchCursor",
    "SessionSearchRequest",
    "SessionSearchResponse",
    "SessionStartEvent",
    "SessionStatus",
    "SessionStatusQuery",
    "SessionSummary",
    "SetCheckpointTtlRequest",
    "Severity",
    "StopReason",
    "StorageBillingEvent",
    "SupportedModel",
    "TelemetryBatch",
    "TelemetryEvent",
    "TelemetryResponse",
    "TelemetrySendRequest",
    "TensorData",
    "TensorDtype",
    "TopkEntries",
    "TopkLogprobs",
    "TraceExportResponse",
    "TrainingBillingEvent",
    "TrainingRun",
    "TrainingRunsResponse",
    "TryAgainResponse",
    "UnhandledExceptionEvent",
    "UnloadModelRequest",
    "UnloadModelResponse",
    "UntypedAPIFuture",
    "UserSearchOwner",
    "WeightsInfoRequest",
    "WeightsInfoResponse",
    "WhoamiResponse",
    "WireStruct",
    "always",
    "chunk_data",
    "combine_fwd_bwd_output_results",
    "combine_metrics",
    "dec_hook",
    "enc_hook",
    "estimate_chunk_bytes",
    "estimate_datum_bytes",
    "estimate_model_input_bytes",
    "estimate_tensor_bytes",
    "numpy_dtype",
    "schema_hook",
    "tensor_container_shape",
    "tensor_dtype_of",
    "to_tensor_data",
    "topk_to_lists",
]

# The official SDK declares these as frozen dataclasses; user code calls
# dataclasses.replace / fields / asdict on them (see _base.as_dataclass). TensorData is left
# out: msgspec would then encode it as a dataclass instead of through its hooks.
for _cls in (
    Datum,
    ForwardBackwardInput,
    ForwardBackwardOutput,
    ForwardBackwardRequest,
    ForwardRequest,
    PromptAltTokens,
    PromptProvenanceSpan,
    SampledProvenanceSpan,
    SampledSequence,
    SampleResponse,
):
    _as_dataclass(_cls)
del _cls
