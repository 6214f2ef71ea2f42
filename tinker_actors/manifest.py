"""The endpoint manifest: one record per HTTP route, the single source of truth.

The client's calls, the server's router, the CLI's REST commands and the OpenAPI
export are all derived from :data:`ROUTES`. Numbers follow protocol.md 2.1; the
older routes (``/forward``, ``/unload_model``, checkpoint ``/archive``) have no
number. A ``{checkpoint_id}`` parameter matches a multi-segment tail such as
``weights/step-1``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

from . import types as t

Encoding = Literal["json", "protobuf", "none"]
API_PREFIX = "/api/v1"
MULTI_SEGMENT_PARAMS = frozenset({"checkpoint_id"})
# A checkpoint id is "{weights|sampler_weights|external_weights}/{name}": two segments.
CHECKPOINT_ID_PATTERN = "[^/]+/[^/]+"
_PARAM_RE = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Route:
    """One HTTP route of the Tinker API."""

    name: str
    method: str
    path: str
    request_type: Any = None
    response_type: Any = None
    is_future: bool = False
    result_type: Any = None
    request_encoding: Encoding = "json"
    result_encoding: Encoding = "json"
    request_type_header: str | None = None
    query_params: tuple[str, ...] = ()
    number: int | None = None
    legacy: bool = False
    summary: str = ""
    response_alternatives: tuple[Any, ...] = field(default=())
    # Beyond the 0.38 protocol (Tinkex's extensions): answered as server-sent events.
    event_stream: bool = False

    @property
    def path_params(self) -> tuple[str, ...]:
        return tuple(_PARAM_RE.findall(self.path))

    def format_path(self, **params: Any) -> str:
        """Fill the template; ids are percent-encoded, a checkpoint_id keeps its ``/``."""
        missing = set(self.path_params) - set(params)
        if missing:
            raise KeyError(f"{self.name}: missing path parameters {sorted(missing)}")

        def sub(m: re.Match[str]) -> str:
            name = m.group(1)
            safe = "/:" if name in MULTI_SEGMENT_PARAMS else ":"
            return quote(str(params[name]), safe=safe)

        return _PARAM_RE.sub(sub, self.path)

    @property
    def aiohttp_path(self) -> str:
        """The template in aiohttp syntax (``{checkpoint_id:[^/]+/[^/]+}``)."""
        return _PARAM_RE.sub(
            lambda m: (
                "{" + m.group(1) + ":" + CHECKPOINT_ID_PATTERN + "}"
                if m.group(1) in MULTI_SEGMENT_PARAMS
                else m.group(0)
            ),
            self.path,
        )

    def match(self, method: str, path: str) -> dict[str, str] | None:
        """Path parameters if ``method path`` is this route, else None."""
        if method.upper() != self.method:
            return None
        m = _route_regex(self.path).fullmatch(path.split("?", 1)[0])
        return m.groupdict() if m else None


def _route_regex(path: str) -> re.Pattern[str]:
    out, pos = [], 0
    for m in _PARAM_RE.finditer(path):
        out.append(re.escape(path[pos : m.start()]))
        name = m.group(1)
        out.append(
            f"(?P<{name}>{CHECKPOINT_ID_PATTERN})"
            if name in MULTI_SEGMENT_PARAMS
            else f"(?P<{name}>[^/]+)"
        )
        pos = m.end()
    out.append(re.escape(path[pos:]))
    return re.compile("".join(out))


def _r(number: int | None, name: str, method: str, path: str, **kw: Any) -> Route:
    return Route(name=name, method=method, path=API_PREFIX + path, number=number, **kw)


_FUT = t.UntypedAPIFuture
_RETRIEVE_REPLIES = (t.TryAgainResponse, t.FutureMetadataOnlyResponse, t.RequestFailedResponse)

ROUTE_LIST: tuple[Route, ...] = (
    _r(
        1,
        "client_config",
        "POST",
        "/client/config",
        request_type=t.ClientConfigRequest,
        response_type=t.ClientConfigResponse,
    ),
    _r(
        2,
        "client_dynamic_config",
        "POST",
        "/client/dynamic_config",
        request_type=t.ClientConfigRequest,
        response_type=t.ClientDynamicConfigResponse,
    ),
    _r(
        3,
        "auth_token",
        "POST",
        "/auth/token",
        request_type=t.AuthTokenRequest,
        response_type=t.AuthTokenResponse,
    ),
    _r(
        4,
        "create_session",
        "POST",
        "/create_session",
        request_type=t.CreateSessionRequest,
        response_type=t.CreateSessionResponse,
    ),
    _r(
        5,
        "session_heartbeat",
        "POST",
        "/session_heartbeat",
        request_type=t.SessionHeartbeatRequest,
        response_type=t.SessionHeartbeatResponse,
    ),
    _r(
        6,
        "session_finish",
        "POST",
        "/sessions/{session_id}/finish",
        request_type=t.SessionFinishRequest,
    ),
    _r(
        7,
        "telemetry",
        "POST",
        "/telemetry",
        request_type=t.TelemetrySendRequest,
        response_type=t.TelemetryResponse,
    ),
    _r(8, "healthz", "GET", "/healthz", response_type=t.HealthResponse, request_encoding="none"),
    _r(
        9,
        "get_server_capabilities",
        "GET",
        "/get_server_capabilities",
        response_type=t.GetServerCapabilitiesResponse,
        request_encoding="none",
    ),
    _r(
        10,
        "create_model",
        "POST",
        "/create_model",
        request_type=t.CreateModelRequest,
        response_type=_FUT,
        is_future=True,
        result_type=t.CreateModelResponse,
        request_type_header="CreateModel",
    ),
    _r(
        11,
        "get_info",
        "POST",
        "/get_info",
        request_type=t.GetInfoRequest,
        response_type=t.GetInfoResponse,
    ),
    _r(
        12,
        "forward_backward",
        "POST",
        "/forward_backward",
        request_type=t.ForwardBackwardProtoRequest,
        response_type=_FUT,
        is_future=True,
        result_type=t.ForwardBackwardOutput,
        request_encoding="protobuf",
        result_encoding="protobuf",
        request_type_header="ForwardBackward",
        summary="forward-only requests set forward_only and use the request type header 'Forward'",
    ),
    _r(
        13,
        "optim_step",
        "POST",
        "/optim_step",
        request_type=t.OptimStepRequest,
        response_type=_FUT,
        is_future=True,
        result_type=t.OptimStepResponse,
        request_type_header="OptimStep",
    ),
    _r(
        14,
        "save_weights",
        "POST",
        "/save_weights",
        request_type=t.SaveWeightsRequest,
        response_type=_FUT,
        is_future=True,
        result_type=t.SaveWeightsResponse,
        request_type_header="SaveWeights",
    ),
    _r(
        15,
        "save_weights_for_sampler",
        "POST",
        "/save_weights_for_sampler",
        request_type=t.SaveWeightsForSamplerRequest,
        response_type=_FUT,
        is_future=True,
        result_type=t.SaveWeightsForSamplerResponseInternal,
        request_type_header="SaveWeightsForSampler",
    ),
    _r(
        16,
        "save_weights_external",
        "POST",
        "/save_weights_external",
        request_type=t.SaveWeightsExternalRequest,
        response_type=_FUT,
        is_future=True,
        result_type=t.SaveWeightsExternalResponseInternal,
        request_type_header="SaveWeightsExternal",
    ),
    _r(
        17,
        "load_weights",
        "POST",
        "/load_weights",
        request_type=t.LoadWeightsRequest,
        response_type=_FUT,
        is_future=True,
        result_type=t.LoadWeightsResponse,
        request_type_header="LoadWeights",
    ),
    _r(
        18,
        "create_sampling_session",
        "POST",
        "/create_sampling_session",
        request_type=t.CreateSamplingSessionRequest,
        response_type=t.CreateSamplingSessionResponse,
    ),
    _r(
        19,
        "join_sampling_session",
        "POST",
        "/join_sampling_session",
        request_type=t.JoinSamplingSessionRequest,
        response_type=t.JoinSamplingSessionResponse,
    ),
    _r(
        20,
        "get_sampler",
        "GET",
        "/samplers/{sampling_session_id}",
        response_type=t.GetSamplerResponse,
        request_encoding="none",
    ),
    _r(
        21,
        "asample",
        "POST",
        "/asample",
        request_type=t.SampleRequest,
        response_type=_FUT,
        is_future=True,
        result_type=t.SampleResponse,
        result_encoding="protobuf",
        request_type_header="Sample",
        summary="the future must carry sample_sequence_ids",
    ),
    _r(
        None,
        "stream_sample",
        "POST",
        "/stream_sample",
        request_type=t.SampleRequest,
        event_stream=True,
        summary="Tinkex's streamed sampling: token events (server-sent) as they are decoded",
    ),
    _r(
        22,
        "retrieve_future",
        "POST",
        "/retrieve_future",
        request_type=t.FutureRetrieveRequest,
        response_type=t.TryAgainResponse,
        response_alternatives=_RETRIEVE_REPLIES,
        summary="the result, try_again, complete_metadata or a failure (protocol.md 3)",
    ),
    _r(
        23,
        "retrieve_futures",
        "POST",
        "/retrieve_futures",
        request_type=t.FuturesRetrieveRequest,
        response_type=t.FuturesRetrieveResponse,
    ),
    _r(24, "cancel_future", "POST", "/cancel_future", request_type=t.CancelFutureRequest),
    _r(
        25,
        "create_custom_loss",
        "POST",
        "/create_custom_loss",
        request_type=t.CreateCustomLossRequest,
        response_type=_FUT,
        is_future=True,
        result_type=t.CreateCustomLossResponse,
        request_type_header="CreateCustomLoss",
    ),
    _r(
        26,
        "copy_weights",
        "POST",
        "/copy_weights",
        request_type=t.CopyWeightsRequest,
        response_type=t.CopyWeightsResponse,
    ),
    _r(
        27,
        "weights_info",
        "POST",
        "/weights_info",
        request_type=t.WeightsInfoRequest,
        response_type=t.WeightsInfoResponse,
    ),
    _r(
        28,
        "list_training_runs",
        "GET",
        "/training_runs",
        response_type=t.TrainingRunsResponse,
        request_encoding="none",
        query_params=("limit", "offset", "access_scope", "project_id"),
    ),
    _r(
        29,
        "get_training_run",
        "GET",
        "/training_runs/{run_id}",
        response_type=t.TrainingRun,
        request_encoding="none",
        query_params=("access_scope",),
    ),
    _r(
        30,
        "list_checkpoints",
        "GET",
        "/training_runs/{run_id}/checkpoints",
        response_type=t.CheckpointsListResponse,
        request_encoding="none",
    ),
    _r(
        31,
        "delete_checkpoint",
        "DELETE",
        "/training_runs/{run_id}/checkpoints/{checkpoint_id}",
        request_encoding="none",
    ),
    _r(
        32,
        "publish_checkpoint",
        "POST",
        "/training_runs/{run_id}/checkpoints/{checkpoint_id}/publish",
        request_encoding="none",
    ),
    _r(
        33,
        "unpublish_checkpoint",
        "DELETE",
        "/training_runs/{run_id}/checkpoints/{checkpoint_id}/publish",
        request_encoding="none",
    ),
    _r(
        34,
        "set_checkpoint_ttl",
        "PUT",
        "/training_runs/{run_id}/checkpoints/{checkpoint_id}/ttl",
        request_type=t.SetCheckpointTtlRequest,
    ),
    _r(
        35,
        "get_external_weights_urls",
        "GET",
        "/training_runs/{run_id}/checkpoints/external_weights/{name}/external_weights_urls",
        response_type=t.ExternalWeightsUrlsResponse,
        request_encoding="none",
    ),
    _r(
        36,
        "list_user_checkpoints",
        "GET",
        "/checkpoints",
        response_type=t.CheckpointsListResponse,
        request_encoding="none",
        query_params=("limit", "offset"),
    ),
    _r(
        37,
        "list_sessions",
        "GET",
        "/sessions",
        response_type=t.ListSessionsResponse,
        request_encoding="none",
        query_params=("limit", "offset", "access_scope"),
    ),
    _r(
        38,
        "get_session",
        "GET",
        "/sessions/{session_id}",
        response_type=t.GetSessionResponse,
        request_encoding="none",
        query_params=("access_scope",),
    ),
    _r(
        39,
        "assign_session_project",
        "PUT",
        "/sessions/{session_id}/project",
        request_type=t.AssignSessionProjectRequest,
    ),
    _r(
        40,
        "export_session_trace",
        "GET",
        "/sessions/{session_id}/trace_export",
        response_type=t.TraceExportResponse,
        request_encoding="none",
    ),
    _r(
        41,
        "search_sessions",
        "POST",
        "/sessions/search",
        request_type=t.SessionSearchRequest,
        response_type=t.SessionSearchResponse,
    ),
    _r(
        42,
        "get_billing_usage",
        "GET",
        "/billing/usage/events",
        response_type=t.BillingUsageResponse,
        request_encoding="none",
        query_params=("starting_on", "ending_before"),
    ),
    _r(
        43,
        "get_current_checkpoint_storage_usage",
        "GET",
        "/billing/usage/checkpoints/current",
        response_type=t.CurrentCheckpointStorageUsageResponse,
        request_encoding="none",
        query_params=("project_id",),
    ),
    _r(
        44,
        "get_audit_log",
        "GET",
        "/audit",
        response_type=t.AuditLogResponse,
        request_encoding="none",
        query_params=("event_type", "day"),
    ),
    _r(
        45,
        "get_api_key_me",
        "GET",
        "/auth/apikey/me",
        response_type=t.ApiKeyInfoResponse,
        request_encoding="none",
    ),
    _r(46, "delete_api_key_me", "DELETE", "/auth/apikey/me", request_encoding="none"),
    # Older routes (served for SDKs up to 0.25).
    _r(
        None,
        "forward",
        "POST",
        "/forward",
        request_type=t.ForwardRequest,
        response_type=_FUT,
        is_future=True,
        result_type=t.ForwardBackwardOutput,
        request_type_header="Forward",
        legacy=True,
    ),
    _r(
        None,
        "unload_model",
        "POST",
        "/unload_model",
        request_type=t.UnloadModelRequest,
        response_type=_FUT,
        is_future=True,
        result_type=t.UnloadModelResponse,
        request_type_header="UnloadModel",
        legacy=True,
    ),
    _r(
        None,
        "checkpoint_archive",
        "GET",
        "/training_runs/{run_id}/checkpoints/{checkpoint_id}/archive",
        response_type=t.CheckpointArchiveUrlResponse,
        request_encoding="none",
        legacy=True,
        summary="302 to a signed URL (Location, Expires) or 200 JSON {url, expires}; 503 means retry",
    ),
)

ROUTES: dict[str, Route] = {r.name: r for r in ROUTE_LIST}
assert len(ROUTES) == len(ROUTE_LIST), "duplicate route names"

# X-Tinker-Request-Type for a forward-only forward_backward call.
FORWARD_REQUEST_TYPE_HEADER = "Forward"


def route(name: str) -> Route:
    """The route called ``name``; KeyError with the known names otherwise."""
    try:
        return ROUTES[name]
    except KeyError:
        raise KeyError(f"unknown route {name!r}; known: {', '.join(sorted(ROUTES))}") from None


def format_path(name: str, **params: Any) -> str:
    """Shortcut for ``route(name).format_path(**params)``."""
    return route(name).format_path(**params)


def find_route(method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    """The route serving ``method path`` and its path parameters (fixed segments win)."""
    best: tuple[Route, dict[str, str]] | None = None
    best_literal = -1
    for r in ROUTE_LIST:
        params = r.match(method, path)
        literal = len(_PARAM_RE.sub("", r.path))
        if params is not None and literal > best_literal:
            best, best_literal = (r, params), literal
    return best


def result_type_for_header(request_type_header: str) -> Any:
    """Expected future result type for an ``X-Tinker-Request-Type`` value."""
    if request_type_header == FORWARD_REQUEST_TYPE_HEADER:
        return t.ForwardBackwardOutput
    for r in ROUTE_LIST:
        if r.request_type_header == request_type_header:
            return r.result_type
    raise KeyError(f"unknown request type {request_type_header!r}")
