"""Client config, sessions, heartbeats, telemetry and small service replies."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

from ._base import NullableStruct, WireStruct, always
from ._bounds import Count64


class ClientConfigRequest(WireStruct):
    sdk_version: str


class ClientConfigResponse(WireStruct):
    """Server-negotiated client flags; every field has a default, so ``{}`` is valid."""

    pjwt_auth_enabled: bool = False
    credential_default_source: str = "api_key"
    sample_dispatch_bytes_semaphore_size: int = 10 * 1024 * 1024
    inflight_response_bytes_semaphore_size: int = 50 * 1024 * 1024
    parallel_fwdbwd_chunks: bool = True
    proto_compress_fwdbwd: bool = False
    fwdbwd_max_chunk_len: int = 1024
    fwdbwd_max_chunk_bytes_count: int = 5_000_000
    fwdbwd_dispatch_bytes_semaphore_size: int = 50 * 1000 * 1000
    billing_exception_max_pause_duration_sec: int = 60 * 60
    sample_no_retries: bool = False
    sample_enable_stuck_detection: bool = True
    sample_max_concurrent_requests: int = 2000
    use_pyqwest_transport: bool = True
    sample_use_retrieve_futures: bool = False
    custom_loss_server_side: bool = False
    sample_join_sampling_session: bool = False


class ClientDynamicConfigResponse(WireStruct):
    refresh_interval_sec: int = 300
    sample_cancel_enabled: bool = False
    sample_cancel_max_batch_size: int = 64


class AuthTokenRequest(WireStruct):
    """The empty ``{}`` body of ``/auth/token``."""


class AuthTokenResponse(WireStruct):
    jwt: str


class WhoamiResponse(WireStruct):
    user_urn: str
    org_urn: str
    email: str | None = None


class CreateSessionRequest(WireStruct, tag_field="type", tag="create_session"):
    tags: list[str] = always([])
    user_metadata: dict[str, Any] | None = always({})
    sdk_version: str = always("unknown")  # every SDK sends it; older/plain clients may not
    project_id: str | None = None
    display_name: str | None = None


class CreateSessionResponse(WireStruct, tag_field="type", tag="create_session"):
    session_id: str
    info_message: str | None = None
    warning_message: str | None = None
    error_message: str | None = None


class SessionHeartbeatRequest(WireStruct, tag_field="type", tag="session_heartbeat"):
    session_id: str


class SessionHeartbeatResponse(WireStruct, tag_field="type", tag="session_heartbeat"):
    pass


class ClientSessionFinishSuccess(WireStruct, tag_field="type", tag="success"):
    pass


class ClientSessionFinishErrored(WireStruct, tag_field="type", tag="errored"):
    pass


class ClientSessionFinishInterrupted(WireStruct, tag_field="type", tag="interrupted"):
    pass


ClientSessionFinishReason = (
    ClientSessionFinishSuccess | ClientSessionFinishErrored | ClientSessionFinishInterrupted
)


class SessionFinishRequest(NullableStruct):
    """``POST /sessions/{id}/finish``; ``detail`` is sent as null when absent."""

    reason: ClientSessionFinishReason = msgspec.field(default_factory=ClientSessionFinishSuccess)
    detail: str | None = None


class HealthResponse(WireStruct):
    status: Literal["ok"] = always("ok")


class SupportedModel(WireStruct):
    model_name: str | None = None
    max_context_length: int | None = None
    trainable: bool | None = None
    sampleable: bool | None = None


class GetServerCapabilitiesResponse(WireStruct):
    supported_models: list[SupportedModel]


# -- telemetry -------------------------------------------------------------------------------
Severity = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
EventType = Literal["SESSION_START", "SESSION_END", "UNHANDLED_EXCEPTION", "GENERIC_EVENT"]


class SessionStartEvent(WireStruct, tag_field="event", tag="SESSION_START"):
    event_id: str
    event_session_index: Count64
    severity: Severity
    timestamp: datetime


class SessionEndEvent(WireStruct, tag_field="event", tag="SESSION_END"):
    duration: str
    event_id: str
    event_session_index: Count64
    severity: Severity
    timestamp: datetime


class UnhandledExceptionEvent(WireStruct, tag_field="event", tag="UNHANDLED_EXCEPTION"):
    error_message: str
    error_type: str
    event_id: str
    event_session_index: Count64
    severity: Severity
    timestamp: datetime
    traceback: str | None = None


class GenericEvent(WireStruct, tag_field="event", tag="GENERIC_EVENT"):
    event_id: str
    event_name: str
    event_session_index: Count64
    severity: Severity
    timestamp: datetime
    event_data: dict[str, Any] = always({})


TelemetryEvent = SessionStartEvent | SessionEndEvent | UnhandledExceptionEvent | GenericEvent


class TelemetrySendRequest(WireStruct):
    events: list[TelemetryEvent]
    platform: str
    sdk_version: str
    session_id: str
    process_uuid: str


class TelemetryBatch(TelemetrySendRequest):
    """Same shape as TelemetrySendRequest (the SDK's internal batch)."""


class TelemetryResponse(WireStruct):
    status: Literal["accepted"] = always("accepted")
