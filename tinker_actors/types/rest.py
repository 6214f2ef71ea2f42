"""REST and admin objects: training runs, checkpoints, sessions, billing, audit."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from ._base import NullableStruct, WireStruct, always
from ._bounds import SearchLimit, TtlSeconds
from .session import ClientSessionFinishReason

CheckpointType = Literal["training", "sampler", "external"]


class Cursor(WireStruct):
    offset: int
    limit: int
    total_count: int


class Checkpoint(WireStruct):
    checkpoint_id: str
    checkpoint_type: CheckpointType
    time: datetime
    tinker_path: str
    size_bytes: int | None = None
    public: bool = always(False)
    user_metadata: dict[str, str] | None = None
    expires_at: datetime | None = None


class ParsedCheckpointTinkerPath(WireStruct):
    """``tinker://{training_run_id}/{weights|sampler_weights|external_weights}/{name}``."""

    tinker_path: str
    training_run_id: str
    checkpoint_type: CheckpointType
    checkpoint_id: str

    @classmethod
    def from_tinker_path(cls, tinker_path: str) -> ParsedCheckpointTinkerPath:
        from ..tinker_path import parse_tinker_path

        return parse_tinker_path(tinker_path)


class CheckpointsListResponse(WireStruct):
    checkpoints: list[Checkpoint]
    cursor: Cursor | None = None


class CheckpointArchiveUrlResponse(WireStruct):
    """The older ``/archive`` route's JSON reply (a signed download URL)."""

    url: str
    expires: datetime | None = None


class ExternalWeightsUrlsResponse(WireStruct):
    urls: dict[str, str]
    expires: datetime


class TrainingRun(WireStruct, kw_only=True):
    training_run_id: str
    base_model: str
    model_owner: str
    is_lora: bool
    corrupted: bool = always(False)
    lora_rank: int | None = None
    last_request_time: datetime
    last_checkpoint: Checkpoint | None = None
    last_sampler_checkpoint: Checkpoint | None = None
    user_metadata: dict[str, str] | None = None


class TrainingRunsResponse(WireStruct):
    training_runs: list[TrainingRun]
    cursor: Cursor


class SetCheckpointTtlRequest(NullableStruct):
    """``PUT .../ttl``: ``null`` removes the expiry."""

    ttl_seconds: TtlSeconds | None = None


class GetSessionResponse(WireStruct):
    training_run_ids: list[str]
    sampler_ids: list[str]
    user_metadata: dict[str, str] | None = None
    display_name: str | None = None


class ListSessionsResponse(WireStruct):
    sessions: list[str]


class AssignSessionProjectRequest(WireStruct):
    project_id: str


class TraceExportResponse(WireStruct):
    status: Literal["pending", "ready", "failed"]
    url: str | None = None
    error: str | None = None


# -- session search -------------------------------------------------------------------------
class OwnSearchOwner(WireStruct, tag_field="type", tag="own"):
    pass


class AccessibleSearchOwner(WireStruct, tag_field="type", tag="accessible"):
    pass


class UserSearchOwner(WireStruct, tag_field="type", tag="user"):
    owner_urns: list[str]


SearchOwner = OwnSearchOwner | AccessibleSearchOwner | UserSearchOwner
ClientSessionFinishReasonType = Literal["success", "errored", "interrupted"]


class ActiveSessionStatusQuery(WireStruct, tag_field="type", tag="active"):
    pass


class CancelledSessionStatusQuery(WireStruct, tag_field="type", tag="cancelled"):
    pass


class FailedSessionStatusQuery(WireStruct, tag_field="type", tag="failed"):
    pass


class ClientFinishedSessionStatusQuery(WireStruct, tag_field="type", tag="client_finished"):
    reasons: list[ClientSessionFinishReasonType] | None = None


SessionStatusQuery = (
    ActiveSessionStatusQuery
    | CancelledSessionStatusQuery
    | FailedSessionStatusQuery
    | ClientFinishedSessionStatusQuery
)


class SessionSearchCursor(WireStruct):
    last_created_at: datetime
    last_session_id: str


class SessionSearchRequest(WireStruct):
    session_id: str | None = None
    project_ids: list[str] | None = None
    user_metadata: dict[str, str] = always({})
    display_name: str | None = None
    owner: SearchOwner = always(OwnSearchOwner())
    statuses: list[SessionStatusQuery] | None = None
    limit: SearchLimit = always(50)
    cursor: SessionSearchCursor | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= 200:
            raise ValueError("limit must be in 1..200")


class SessionFailedRequestReason(WireStruct, tag_field="type", tag="request"):
    request_id: str
    request_type: str


class SessionFailedTrainingRunReason(WireStruct, tag_field="type", tag="training_run"):
    training_run_id: str


class SessionFailedSamplingSessionReason(WireStruct, tag_field="type", tag="sampling_session"):
    sampling_session_id: str


SessionFailedReason = (
    SessionFailedRequestReason | SessionFailedTrainingRunReason | SessionFailedSamplingSessionReason
)


class SessionFailed(WireStruct, tag_field="type", tag="failed"):
    category: Literal["user", "internal"]
    reason: SessionFailedReason
    message: str


class SessionCancelled(WireStruct, tag_field="type", tag="cancelled"):
    detail: str | None = None


class ClientSessionFinished(WireStruct, tag_field="type", tag="client_finished"):
    reason: ClientSessionFinishReason
    detail: str | None = None


class SessionActive(WireStruct, tag_field="type", tag="active"):
    pass


SessionStatus = SessionFailed | SessionCancelled | ClientSessionFinished | SessionActive


class SessionSummary(WireStruct, kw_only=True):
    session_id: str
    created_at: datetime
    owner: str
    project_id: str
    status: SessionStatus | None = None
    checkpoints_count: int
    display_name: str | None = None
    user_metadata: dict[str, str] | None = None
    checkpoint_storage_bytes: int | None = None


class SessionSearchResponse(WireStruct):
    sessions: list[SessionSummary]
    next_cursor: SessionSearchCursor | None = None


# -- billing / storage / audit ----------------------------------------------------------------
class GetBillingUsageRequest(WireStruct):
    starting_on: datetime
    ending_before: datetime


class TrainingBillingEvent(WireStruct, tag_field="type", tag="training"):
    token_count: int


class SamplingPrefillBillingEvent(WireStruct, tag_field="type", tag="sampling_prefill"):
    cached: bool
    token_count: int


class SamplingSampleBillingEvent(WireStruct, tag_field="type", tag="sampling_sample"):
    token_count: int


class CheckpointBillingEvent(WireStruct, tag_field="type", tag="checkpoint"):
    count: int


class StorageBillingEvent(WireStruct, tag_field="type", tag="storage", kw_only=True):
    free: bool = always(False)
    gigabyte_hours: float


BillingEventInfo = (
    TrainingBillingEvent
    | SamplingPrefillBillingEvent
    | SamplingSampleBillingEvent
    | CheckpointBillingEvent
    | StorageBillingEvent
)


class BillingUsageEvent(WireStruct, kw_only=True):
    bucket_start: datetime
    bucket_end: datetime
    base_model: str | None = None
    user_id: str | None = None
    user_name: str | None = None
    session_id: str | None = None
    project_id: str | None = None
    estimated_cost_usd: float | None = None
    effective_rate_usd_per_million_tokens: float | None = None
    effective_rate_usd_per_gigabyte_month: float | None = None
    event_info: BillingEventInfo


class BillingUsageSession(WireStruct):
    user_metadata: dict[str, str] | None = None


class BillingUsageResponse(WireStruct):
    data: list[BillingUsageEvent]
    sessions: dict[str, BillingUsageSession] = always({})
    cost_data_through: datetime | None = None


class GetCurrentCheckpointStorageUsageRequest(WireStruct):
    project_id: str | None = None


class CurrentCheckpointStorageUsageItem(WireStruct, kw_only=True):
    project_id: str | None = None
    org_user_urn: str | None = None
    user_email: str | None = None
    user_name: str | None = None
    checkpoint_count: int
    size_bytes: int
    size_gigabytes: float
    estimated_monthly_cost_usd: float | None = None


class CurrentCheckpointStorageUsageResponse(WireStruct, kw_only=True):
    effective_rate_usd_per_gigabyte_month: float | None = None
    data: list[CurrentCheckpointStorageUsageItem]


class AuditLogEntry(WireStruct):
    timestamp: datetime
    event: str
    event_details: dict[str, Any] = always({})
    model_id: str | None = None
    tinker_path: str | None = None
    purpose: str | None = None


class AuditLogResponse(WireStruct):
    entries: list[AuditLogEntry]


class ApiKeyOrgDetails(WireStruct):
    name: str | None = None


class ApiKeyUserDetails(WireStruct):
    email: str | None = None


class ApiKeyDetails(WireStruct):
    org_details: ApiKeyOrgDetails | None = None
    user_details: ApiKeyUserDetails | None = None


class ApiKeyInfoResponse(WireStruct):
    """``GET /auth/apikey/me``."""

    key_id: int
    name: str | None = None
    note: str | None = None
    details: ApiKeyDetails | None = None
