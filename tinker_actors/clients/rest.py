"""RestClient: metadata about training runs, checkpoints and sessions (no session needed).

Every method returns an ``APIFuture`` (await it or call ``.result()``); each has an
``_async`` twin that returns the value.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from .. import types
from ..actors.session import Session
from ..auth import settings_from_env
from ..futures import APIFuture
from ..runtime import get_runtime
from ..tinker_path import parse_tinker_path
from .twins import awaited_twin

if TYPE_CHECKING:
    from ..transport import Transport

T = TypeVar("T")

__all__ = ["RestClient"]

Scope = Literal["owned", "accessible"]


class RestBase:
    """Plumbing shared by RestClient and AdminClient: a session-less holder and route calls."""

    def __init__(
        self,
        _session: Session | None = None,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
    ):
        if _session is not None and (base_url or api_key):
            raise ValueError("_session cannot be combined with base_url or api_key")
        if _session is None:
            _session = Session(
                settings_from_env(base_url=base_url, api_key=api_key),
                runtime=get_runtime(),
                rest_only=True,
            )
            # As in 0.38, construction fetches the client config (blocking), so a wrong key
            # or URL raises here. On the runtime's own loop (caller mode) it cannot block;
            # the first call starts it instead.
            if not _session.runtime.on_loop():
                _session.runtime.submit(_session.ensure_started()).result()
        self._session = _session

    # ------------------------------------------------------------------ plumbing
    async def _transport(self) -> Transport:
        s = self._session
        await s.ensure_transport()
        if s.rest_only and not s.started:
            await s.ensure_started()
        assert s.transport is not None
        return s.transport

    def _run(self, coro: Coroutine[Any, Any, T]) -> APIFuture[T]:
        return APIFuture.from_coro(self._session.runtime, coro)

    _sdk_class = "RestClient"

    async def _call(
        self,
        route: str,
        method: str,
        body: Any = None,
        *,
        query: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        raw: bool = False,
        raise_for_status: bool = True,
        **path_params: Any,
    ) -> Any:
        """One manifest route, attributed to ``{class}.{method}`` (x-sdk-method)."""
        t = await self._transport()
        return await t.call(
            route,
            body,
            path_params=path_params or None,
            query=query,
            headers=headers,
            raw=raw,
            raise_for_status=raise_for_status,
            sdk_method=f"{self._sdk_class}.{method}",
        )

    def get_telemetry(self) -> Any:
        return self._session.telemetry


class RestClient(RestBase):
    """REST metadata operations. ``RestClient()`` needs no ServiceClient and no session."""

    # ------------------------------------------------------------------ identity
    def whoami(self) -> APIFuture[types.WhoamiResponse]:
        """Who the credential belongs to, from the claims of the JWT in use (no request).

        Raises RuntimeError when the server has JWT auth off and the key is not a JWT.
        """

        async def go() -> types.WhoamiResponse:
            from ..auth import decode_jwt_claims

            t = await self._transport()
            if t.jwt is not None:
                jwt: str | None = await t.jwt.token()
            else:
                key = self._session.settings.api_key
                jwt = key if key and key.startswith("eyJ") else None
            if jwt is None:
                raise RuntimeError(
                    "whoami requires JWT auth, but the server has it disabled and the "
                    "credential is a plain API key."
                )
            claims = decode_jwt_claims(jwt)
            org = claims.get("org_id")
            return types.WhoamiResponse(
                user_urn=str(claims.get("sub", "")),
                org_urn=f"tml:organization:{org}" if org is not None else "",
                email=claims.get("email"),
            )

        return self._run(go())

    whoami_async = awaited_twin(whoami)

    # ------------------------------------------------------------------ capabilities
    async def _capabilities(self) -> types.GetServerCapabilitiesResponse:
        caps: types.GetServerCapabilitiesResponse = await self._call(
            "get_server_capabilities", "get_server_capabilities"
        )
        return caps

    def get_server_capabilities(self) -> APIFuture[types.GetServerCapabilitiesResponse]:
        return self._run(self._capabilities())

    get_server_capabilities_async = awaited_twin(get_server_capabilities)

    # ------------------------------------------------------------------ training runs
    async def _training_run(
        self, run_id: str, scope: Scope, method: str = "get_training_run"
    ) -> types.TrainingRun:
        run: types.TrainingRun = await self._call(
            "get_training_run", method, query={"access_scope": scope}, run_id=run_id
        )
        return run

    def get_training_run(
        self, training_run_id: str, access_scope: Scope = "owned"
    ) -> APIFuture[types.TrainingRun]:
        return self._run(self._training_run(training_run_id, access_scope))

    get_training_run_async = awaited_twin(get_training_run)

    def get_training_run_by_tinker_path(
        self, tinker_path: str, access_scope: Scope = "owned"
    ) -> APIFuture[types.TrainingRun]:
        run_id = parse_tinker_path(tinker_path).training_run_id
        return self._run(
            self._training_run(run_id, access_scope, "get_training_run_by_tinker_path")
        )

    get_training_run_by_tinker_path_async = awaited_twin(get_training_run_by_tinker_path)

    async def _weights_info(self, tinker_path: str) -> types.WeightsInfoResponse:
        info: types.WeightsInfoResponse = await self._call(
            "weights_info",
            "get_weights_info_by_tinker_path",
            types.WeightsInfoRequest(tinker_path=tinker_path),
        )
        return info

    def get_weights_info_by_tinker_path(
        self, tinker_path: str
    ) -> APIFuture[types.WeightsInfoResponse]:
        return self._run(self._weights_info(tinker_path))

    get_weights_info_by_tinker_path_async = awaited_twin(get_weights_info_by_tinker_path)

    def list_training_runs(
        self,
        limit: int = 20,
        offset: int = 0,
        access_scope: Scope = "owned",
        project_id: str | None = None,
    ) -> APIFuture[types.TrainingRunsResponse]:
        params = {
            "limit": limit,
            "offset": offset,
            "access_scope": access_scope,
            "project_id": project_id,
        }
        return self._run(self._call("list_training_runs", "list_training_runs", query=params))

    list_training_runs_async = awaited_twin(list_training_runs)

    # ------------------------------------------------------------------ checkpoints
    def list_checkpoints(self, training_run_id: str) -> APIFuture[types.CheckpointsListResponse]:
        return self._run(self._call("list_checkpoints", "list_checkpoints", run_id=training_run_id))

    list_checkpoints_async = awaited_twin(list_checkpoints)

    def list_user_checkpoints(
        self, limit: int = 100, offset: int = 0
    ) -> APIFuture[types.CheckpointsListResponse]:
        return self._run(
            self._call(
                "list_user_checkpoints",
                "list_user_checkpoints",
                query={"limit": limit, "offset": offset},
            )
        )

    list_user_checkpoints_async = awaited_twin(list_user_checkpoints)

    def delete_checkpoint(self, training_run_id: str, checkpoint_id: str) -> APIFuture[None]:
        return self._run(
            self._call(
                "delete_checkpoint",
                "delete_checkpoint",
                run_id=training_run_id,
                checkpoint_id=checkpoint_id,
            )
        )

    delete_checkpoint_async = awaited_twin(delete_checkpoint)

    def delete_checkpoint_from_tinker_path(self, tinker_path: str) -> APIFuture[None]:
        p = parse_tinker_path(tinker_path)
        return self._run(
            self._call(
                "delete_checkpoint",
                "delete_checkpoint_from_tinker_path",
                run_id=p.training_run_id,
                checkpoint_id=p.checkpoint_id,
            )
        )

    delete_checkpoint_from_tinker_path_async = awaited_twin(delete_checkpoint_from_tinker_path)

    def publish_checkpoint_from_tinker_path(self, tinker_path: str) -> APIFuture[None]:
        p = parse_tinker_path(tinker_path)
        return self._run(
            self._call(
                "publish_checkpoint",
                "publish_checkpoint_from_tinker_path",
                run_id=p.training_run_id,
                checkpoint_id=p.checkpoint_id,
            )
        )

    publish_checkpoint_from_tinker_path_async = awaited_twin(publish_checkpoint_from_tinker_path)

    def unpublish_checkpoint_from_tinker_path(self, tinker_path: str) -> APIFuture[None]:
        p = parse_tinker_path(tinker_path)
        return self._run(
            self._call(
                "unpublish_checkpoint",
                "unpublish_checkpoint_from_tinker_path",
                run_id=p.training_run_id,
                checkpoint_id=p.checkpoint_id,
            )
        )

    unpublish_checkpoint_from_tinker_path_async = awaited_twin(
        unpublish_checkpoint_from_tinker_path
    )

    def set_checkpoint_ttl_from_tinker_path(
        self, tinker_path: str, ttl_seconds: int | None
    ) -> APIFuture[None]:
        p = parse_tinker_path(tinker_path)
        return self._run(
            self._call(
                "set_checkpoint_ttl",
                "set_checkpoint_ttl_from_tinker_path",
                types.SetCheckpointTtlRequest(ttl_seconds=ttl_seconds),
                run_id=p.training_run_id,
                checkpoint_id=p.checkpoint_id,
            )
        )

    set_checkpoint_ttl_from_tinker_path_async = awaited_twin(set_checkpoint_ttl_from_tinker_path)

    async def _archive_url(
        self, run_id: str, checkpoint_id: str, method: str = "get_checkpoint_archive_url"
    ) -> types.CheckpointArchiveUrlResponse:
        from .. import codec

        r = await self._call(
            "checkpoint_archive",
            method,
            raw=True,
            raise_for_status=False,
            run_id=run_id,
            checkpoint_id=checkpoint_id,
        )
        if r.status in (301, 302, 303, 307, 308) and "location" in r.headers:
            expires = r.headers.get("expires")
            when = None
            if expires:
                import email.utils

                try:
                    when = email.utils.parsedate_to_datetime(expires)
                except (TypeError, ValueError):
                    when = None
            return types.CheckpointArchiveUrlResponse(url=r.headers["location"], expires=when)
        if r.status >= 400:
            from ..transport import status_error

            raise status_error(r.status, r.body, r.headers)
        return codec.json_decode(r.body, types.CheckpointArchiveUrlResponse)

    def get_checkpoint_archive_url(
        self, training_run_id: str, checkpoint_id: str
    ) -> APIFuture[types.CheckpointArchiveUrlResponse]:
        return self._run(self._archive_url(training_run_id, checkpoint_id))

    get_checkpoint_archive_url_async = awaited_twin(get_checkpoint_archive_url)

    def get_checkpoint_archive_url_from_tinker_path(
        self, tinker_path: str
    ) -> APIFuture[types.CheckpointArchiveUrlResponse]:
        p = parse_tinker_path(tinker_path)
        return self._run(
            self._archive_url(
                p.training_run_id, p.checkpoint_id, "get_checkpoint_archive_url_from_tinker_path"
            )
        )

    get_checkpoint_archive_url_from_tinker_path_async = awaited_twin(
        get_checkpoint_archive_url_from_tinker_path
    )

    def get_external_weights_urls(
        self, tinker_path: str
    ) -> APIFuture[types.ExternalWeightsUrlsResponse]:
        p = parse_tinker_path(tinker_path)
        name = p.checkpoint_id.split("/", 1)[-1]
        return self._run(
            self._call(
                "get_external_weights_urls",
                "get_external_weights_urls",
                run_id=p.training_run_id,
                name=name,
            )
        )

    get_external_weights_urls_async = awaited_twin(get_external_weights_urls)

    async def _copy(
        self,
        path: str,
        destination_project_id: str | None,
        ttl_seconds: int | None,
        weights_access_token: str | None,
    ) -> str:
        body = types.CopyWeightsRequest(
            source_path=path, destination_project_id=destination_project_id, ttl_seconds=ttl_seconds
        )
        import uuid

        headers = {"X-Idempotency-Key": str(uuid.uuid4())}
        if weights_access_token:
            headers["X-Tinker-Weights-Access-Token"] = weights_access_token
        reply = await self._call("copy_weights", "copy_weights", body, headers=headers)
        return str(reply.tinker_path)

    def copy_weights(
        self,
        path: str,
        destination_project_id: str | None = None,
        *,
        ttl_seconds: int | None = None,
        weights_access_token: str | None = None,
    ) -> APIFuture[str]:
        return self._run(
            self._copy(path, destination_project_id, ttl_seconds, weights_access_token)
        )

    copy_weights_async = awaited_twin(copy_weights)

    # ------------------------------------------------------------------ sessions, samplers
    def get_session(
        self, session_id: str, access_scope: Scope = "owned"
    ) -> APIFuture[types.GetSessionResponse]:
        return self._run(
            self._call(
                "get_session",
                "get_session",
                query={"access_scope": access_scope},
                session_id=session_id,
            )
        )

    get_session_async = awaited_twin(get_session)

    def list_sessions(
        self, limit: int = 20, offset: int = 0, access_scope: Scope = "owned"
    ) -> APIFuture[types.ListSessionsResponse]:
        return self._run(
            self._call(
                "list_sessions",
                "list_sessions",
                query={"limit": limit, "offset": offset, "access_scope": access_scope},
            )
        )

    list_sessions_async = awaited_twin(list_sessions)

    def assign_session_project(self, session_id: str, project_id: str) -> APIFuture[None]:
        return self._run(
            self._call(
                "assign_session_project",
                "assign_session_project",
                types.AssignSessionProjectRequest(project_id=project_id),
                session_id=session_id,
            )
        )

    assign_session_project_async = awaited_twin(assign_session_project)

    def get_sampler(self, sampler_id: str) -> APIFuture[types.GetSamplerResponse]:
        return self._run(self._call("get_sampler", "get_sampler", sampling_session_id=sampler_id))

    get_sampler_async = awaited_twin(get_sampler)

    async def _trace(self, session_id: str) -> str:
        import asyncio

        while True:
            res = await self._call(
                "export_session_trace", "export_session_trace", session_id=session_id
            )
            if res.status == "ready" and res.url:
                url: str = res.url
                return url
            if res.status == "failed":
                raise RuntimeError(f"trace export failed: {getattr(res, 'error', None)}")
            await asyncio.sleep(5.0)

    def export_session_trace(self, session_id: str) -> APIFuture[str]:
        return self._run(self._trace(session_id))

    export_session_trace_async = awaited_twin(export_session_trace)

    def search_sessions(self, request: Any) -> APIFuture[Any]:
        return self._run(self._call("search_sessions", "search_sessions", request))

    # ------------------------------------------------------------------ deprecated admin reads
    # 0.38 moved these to AdminClient and keeps them here with a FutureWarning each; they
    # run on an AdminClient sharing this client's session.
    def _admin(self, method: str) -> Any:
        import warnings

        from .admin import AdminClient

        warnings.warn(
            f"RestClient.{method}() is deprecated and will go away in a later tinker SDK "
            f"release; call AdminClient.{method.removesuffix('_async')}() instead (AdminClient "
            "takes the same arguments as RestClient).",
            FutureWarning,
            stacklevel=3,
        )
        return AdminClient(_session=self._session)

    def get_audit_log(
        self, event_type: str = "all", day: Any = None
    ) -> APIFuture[types.AuditLogResponse]:
        """Deprecated: ``AdminClient.get_audit_log``."""
        return self._admin("get_audit_log").get_audit_log(event_type, day)  # type: ignore[no-any-return]

    async def get_audit_log_async(
        self, event_type: str = "all", day: Any = None
    ) -> types.AuditLogResponse:
        """Deprecated: ``await AdminClient.get_audit_log(...)``."""
        return await self._admin("get_audit_log_async").get_audit_log(event_type, day)  # type: ignore[no-any-return]

    def get_billing_usage(
        self, starting_on: Any, ending_before: Any
    ) -> APIFuture[types.BillingUsageResponse]:
        """Deprecated: ``AdminClient.get_billing_usage``."""
        admin = self._admin("get_billing_usage")
        return admin.get_billing_usage(starting_on, ending_before)  # type: ignore[no-any-return]

    async def get_billing_usage_async(
        self, starting_on: Any, ending_before: Any
    ) -> types.BillingUsageResponse:
        """Deprecated: ``await AdminClient.get_billing_usage(...)``."""
        admin = self._admin("get_billing_usage_async")
        return await admin.get_billing_usage(starting_on, ending_before)  # type: ignore[no-any-return]

    def get_current_checkpoint_storage_usage(
        self, project_id: str | None = None
    ) -> APIFuture[types.CurrentCheckpointStorageUsageResponse]:
        """Deprecated: ``AdminClient.get_current_checkpoint_storage_usage``."""
        admin = self._admin("get_current_checkpoint_storage_usage")
        return admin.get_current_checkpoint_storage_usage(project_id)  # type: ignore[no-any-return]

    async def get_current_checkpoint_storage_usage_async(
        self, project_id: str | None = None
    ) -> types.CurrentCheckpointStorageUsageResponse:
        """Deprecated: ``await AdminClient.get_current_checkpoint_storage_usage(...)``."""
        admin = self._admin("get_current_checkpoint_storage_usage_async")
        return await admin.get_current_checkpoint_storage_usage(project_id)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"<RestClient {self._session.settings.base_url or 'embedded'}>"
