"""RestClient: metadata about training runs, checkpoints and sessions (no session needed).

Every method returns an ``APIFuture`` (await it or call ``.result()``); each has an
``_async`` twin that returns the value.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import quote

from .. import types
from ..actors.session import Session
from ..config import Settings
from ..futures import APIFuture
from ..runtime import get_runtime
from ..tinker_path import parse_tinker_path

if TYPE_CHECKING:
    from ..transport import Transport

T = TypeVar("T")

__all__ = ["RestClient"]

Scope = Literal["owned", "accessible"]


def _q(s: str) -> str:
    return quote(s, safe="")


def _ckpt(s: str) -> str:
    return quote(s, safe="/")


class RestClient:
    """REST metadata operations. ``RestClient()`` needs no ServiceClient and no session."""

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
                Settings.from_env(base_url=base_url, api_key=api_key),
                runtime=get_runtime(),
                rest_only=True,
            )
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

    async def _get(
        self, path: str, typ: Any, method: str, params: dict[str, Any] | None = None
    ) -> Any:
        from .. import codec

        t = await self._transport()
        r = await t.request("GET", path, params=params, sdk_method=f"RestClient.{method}")
        return codec.json_decode(r.body, typ) if typ is not None else None

    async def _send(self, verb: str, path: str, method: str, body: Any = None) -> None:
        t = await self._transport()
        await t.request(verb, path, json=body, sdk_method=f"RestClient.{method}")

    def get_telemetry(self) -> Any:
        return self._session.telemetry

    # ------------------------------------------------------------------ capabilities
    async def _capabilities(self) -> types.GetServerCapabilitiesResponse:
        return await self._get(
            "/api/v1/get_server_capabilities",
            types.GetServerCapabilitiesResponse,
            "get_server_capabilities",
        )

    def get_server_capabilities(self) -> APIFuture[types.GetServerCapabilitiesResponse]:
        return self._run(self._capabilities())

    async def get_server_capabilities_async(self) -> types.GetServerCapabilitiesResponse:
        return await self.get_server_capabilities()

    # ------------------------------------------------------------------ training runs
    async def _training_run(self, run_id: str, scope: Scope) -> types.TrainingRun:
        return await self._get(
            f"/api/v1/training_runs/{_q(run_id)}",
            types.TrainingRun,
            "get_training_run",
            {"access_scope": scope},
        )

    def get_training_run(
        self, training_run_id: str, access_scope: Scope = "owned"
    ) -> APIFuture[types.TrainingRun]:
        return self._run(self._training_run(training_run_id, access_scope))

    async def get_training_run_async(
        self, training_run_id: str, access_scope: Scope = "owned"
    ) -> types.TrainingRun:
        return await self.get_training_run(training_run_id, access_scope)

    def get_training_run_by_tinker_path(
        self, tinker_path: str, access_scope: Scope = "owned"
    ) -> APIFuture[types.TrainingRun]:
        run_id = parse_tinker_path(tinker_path).training_run_id
        return self._run(self._training_run(run_id, access_scope))

    async def get_training_run_by_tinker_path_async(
        self, tinker_path: str, access_scope: Scope = "owned"
    ) -> types.TrainingRun:
        return await self.get_training_run_by_tinker_path(tinker_path, access_scope)

    async def _weights_info(self, tinker_path: str) -> types.WeightsInfoResponse:
        from .. import codec

        t = await self._transport()
        r = await t.request(
            "POST",
            "/api/v1/weights_info",
            json=types.WeightsInfoRequest(tinker_path=tinker_path),
            sdk_method="RestClient.get_weights_info_by_tinker_path",
        )
        return codec.json_decode(r.body, types.WeightsInfoResponse)

    def get_weights_info_by_tinker_path(
        self, tinker_path: str
    ) -> APIFuture[types.WeightsInfoResponse]:
        return self._run(self._weights_info(tinker_path))

    async def get_weights_info_by_tinker_path_async(
        self, tinker_path: str
    ) -> types.WeightsInfoResponse:
        return await self.get_weights_info_by_tinker_path(tinker_path)

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
        return self._run(
            self._get(
                "/api/v1/training_runs", types.TrainingRunsResponse, "list_training_runs", params
            )
        )

    async def list_training_runs_async(
        self,
        limit: int = 20,
        offset: int = 0,
        access_scope: Scope = "owned",
        project_id: str | None = None,
    ) -> types.TrainingRunsResponse:
        return await self.list_training_runs(limit, offset, access_scope, project_id)

    # ------------------------------------------------------------------ checkpoints
    def list_checkpoints(self, training_run_id: str) -> APIFuture[types.CheckpointsListResponse]:
        return self._run(
            self._get(
                f"/api/v1/training_runs/{_q(training_run_id)}/checkpoints",
                types.CheckpointsListResponse,
                "list_checkpoints",
            )
        )

    async def list_checkpoints_async(self, training_run_id: str) -> types.CheckpointsListResponse:
        return await self.list_checkpoints(training_run_id)

    def list_user_checkpoints(
        self, limit: int = 100, offset: int = 0
    ) -> APIFuture[types.CheckpointsListResponse]:
        return self._run(
            self._get(
                "/api/v1/checkpoints",
                types.CheckpointsListResponse,
                "list_user_checkpoints",
                {"limit": limit, "offset": offset},
            )
        )

    async def list_user_checkpoints_async(
        self, limit: int = 100, offset: int = 0
    ) -> types.CheckpointsListResponse:
        return await self.list_user_checkpoints(limit, offset)

    def _ckpt_path(self, run_id: str, checkpoint_id: str) -> str:
        return f"/api/v1/training_runs/{_q(run_id)}/checkpoints/{_ckpt(checkpoint_id)}"

    def delete_checkpoint(self, training_run_id: str, checkpoint_id: str) -> APIFuture[None]:
        return self._run(
            self._send(
                "DELETE", self._ckpt_path(training_run_id, checkpoint_id), "delete_checkpoint"
            )
        )

    async def delete_checkpoint_async(self, training_run_id: str, checkpoint_id: str) -> None:
        return await self.delete_checkpoint(training_run_id, checkpoint_id)

    def delete_checkpoint_from_tinker_path(self, tinker_path: str) -> APIFuture[None]:
        p = parse_tinker_path(tinker_path)
        return self._run(
            self._send(
                "DELETE",
                self._ckpt_path(p.training_run_id, p.checkpoint_id),
                "delete_checkpoint_from_tinker_path",
            )
        )

    async def delete_checkpoint_from_tinker_path_async(self, tinker_path: str) -> None:
        return await self.delete_checkpoint_from_tinker_path(tinker_path)

    def publish_checkpoint_from_tinker_path(self, tinker_path: str) -> APIFuture[None]:
        p = parse_tinker_path(tinker_path)
        return self._run(
            self._send(
                "POST",
                self._ckpt_path(p.training_run_id, p.checkpoint_id) + "/publish",
                "publish_checkpoint_from_tinker_path",
            )
        )

    async def publish_checkpoint_from_tinker_path_async(self, tinker_path: str) -> None:
        return await self.publish_checkpoint_from_tinker_path(tinker_path)

    def unpublish_checkpoint_from_tinker_path(self, tinker_path: str) -> APIFuture[None]:
        p = parse_tinker_path(tinker_path)
        return self._run(
            self._send(
                "DELETE",
                self._ckpt_path(p.training_run_id, p.checkpoint_id) + "/publish",
                "unpublish_checkpoint_from_tinker_path",
            )
        )

    async def unpublish_checkpoint_from_tinker_path_async(self, tinker_path: str) -> None:
        return await self.unpublish_checkpoint_from_tinker_path(tinker_path)

    def set_checkpoint_ttl_from_tinker_path(
        self, tinker_path: str, ttl_seconds: int | None
    ) -> APIFuture[None]:
        p = parse_tinker_path(tinker_path)
        return self._run(
            self._send(
                "PUT",
                self._ckpt_path(p.training_run_id, p.checkpoint_id) + "/ttl",
                "set_checkpoint_ttl_from_tinker_path",
                {"ttl_seconds": ttl_seconds},
            )
        )

    async def set_checkpoint_ttl_from_tinker_path_async(
        self, tinker_path: str, ttl_seconds: int | None
    ) -> None:
        return await self.set_checkpoint_ttl_from_tinker_path(tinker_path, ttl_seconds)

    async def _archive_url(
        self, run_id: str, checkpoint_id: str
    ) -> types.CheckpointArchiveUrlResponse:
        from .. import codec

        t = await self._transport()
        r = await t.request(
            "GET",
            self._ckpt_path(run_id, checkpoint_id) + "/archive",
            sdk_method="RestClient.get_checkpoint_archive_url",
            raise_for_status=False,
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

    async def get_checkpoint_archive_url_async(
        self, training_run_id: str, checkpoint_id: str
    ) -> types.CheckpointArchiveUrlResponse:
        return await self.get_checkpoint_archive_url(training_run_id, checkpoint_id)

    def get_checkpoint_archive_url_from_tinker_path(
        self, tinker_path: str
    ) -> APIFuture[types.CheckpointArchiveUrlResponse]:
        p = parse_tinker_path(tinker_path)
        return self._run(self._archive_url(p.training_run_id, p.checkpoint_id))

    async def get_checkpoint_archive_url_from_tinker_path_async(
        self, tinker_path: str
    ) -> types.CheckpointArchiveUrlResponse:
        return await self.get_checkpoint_archive_url_from_tinker_path(tinker_path)

    def get_external_weights_urls(
        self, tinker_path: str
    ) -> APIFuture[types.ExternalWeightsUrlsResponse]:
        p = parse_tinker_path(tinker_path)
        name = p.checkpoint_id.split("/", 1)[-1]
        path = f"/api/v1/training_runs/{_q(p.training_run_id)}/checkpoints/external_weights/{_q(name)}/external_weights_urls"
        return self._run(
            self._get(path, types.ExternalWeightsUrlsResponse, "get_external_weights_urls")
        )

    async def get_external_weights_urls_async(
        self, tinker_path: str
    ) -> types.ExternalWeightsUrlsResponse:
        return await self.get_external_weights_urls(tinker_path)

    async def _copy(
        self,
        path: str,
        destination_project_id: str | None,
        ttl_seconds: int | None,
        weights_access_token: str | None,
    ) -> str:
        t = await self._transport()
        body = types.CopyWeightsRequest(
            source_path=path, destination_project_id=destination_project_id, ttl_seconds=ttl_seconds
        )
        import uuid

        headers = {"X-Idempotency-Key": str(uuid.uuid4())}
        if weights_access_token:
            headers["X-Tinker-Weights-Access-Token"] = weights_access_token
        r = await t.request(
            "POST",
            "/api/v1/copy_weights",
            json=body,
            headers=headers,
            sdk_method="RestClient.copy_weights",
        )
        return str(r.json()["tinker_path"])

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

    async def copy_weights_async(
        self,
        path: str,
        destination_project_id: str | None = None,
        *,
        ttl_seconds: int | None = None,
        weights_access_token: str | None = None,
    ) -> str:
        return await self.copy_weights(
            path,
            destination_project_id,
            ttl_seconds=ttl_seconds,
            weights_access_token=weights_access_token,
        )

    # ------------------------------------------------------------------ sessions, samplers
    def get_session(
        self, session_id: str, access_scope: Scope = "owned"
    ) -> APIFuture[types.GetSessionResponse]:
        return self._run(
            self._get(
                f"/api/v1/sessions/{_q(session_id)}",
                types.GetSessionResponse,
                "get_session",
                {"access_scope": access_scope},
            )
        )

    async def get_session_async(
        self, session_id: str, access_scope: Scope = "owned"
    ) -> types.GetSessionResponse:
        return await self.get_session(session_id, access_scope)

    def list_sessions(
        self, limit: int = 20, offset: int = 0, access_scope: Scope = "owned"
    ) -> APIFuture[types.ListSessionsResponse]:
        return self._run(
            self._get(
                "/api/v1/sessions",
                types.ListSessionsResponse,
                "list_sessions",
                {"limit": limit, "offset": offset, "access_scope": access_scope},
            )
        )

    async def list_sessions_async(
        self, limit: int = 20, offset: int = 0, access_scope: Scope = "owned"
    ) -> types.ListSessionsResponse:
        return await self.list_sessions(limit, offset, access_scope)

    def assign_session_project(self, session_id: str, project_id: str) -> APIFuture[None]:
        return self._run(
            self._send(
                "PUT",
                f"/api/v1/sessions/{_q(session_id)}/project",
                "assign_session_project",
                {"project_id": project_id},
            )
        )

    async def assign_session_project_async(self, session_id: str, project_id: str) -> None:
        return await self.assign_session_project(session_id, project_id)

    def get_sampler(self, sampler_id: str) -> APIFuture[types.GetSamplerResponse]:
        return self._run(
            self._get(f"/api/v1/samplers/{_q(sampler_id)}", types.GetSamplerResponse, "get_sampler")
        )

    async def get_sampler_async(self, sampler_id: str) -> types.GetSamplerResponse:
        return await self.get_sampler(sampler_id)

    async def _trace(self, session_id: str) -> str:
        import asyncio

        from .. import codec

        while True:
            res = await self._get(
                f"/api/v1/sessions/{_q(session_id)}/trace_export",
                types.TraceExportResponse,
                "export_session_trace",
            )
            if res.status == "ready" and res.url:
                return res.url
            if res.status == "failed":
                raise RuntimeError(f"trace export failed: {getattr(res, 'error', None)}")
            await asyncio.sleep(5.0)
        _ = codec

    def export_session_trace(self, session_id: str) -> APIFuture[str]:
        return self._run(self._trace(session_id))

    async def export_session_trace_async(self, session_id: str) -> str:
        return await self.export_session_trace(session_id)

    def search_sessions(self, request: Any) -> APIFuture[Any]:
        async def go() -> Any:
            from .. import codec

            t = await self._transport()
            r = await t.request(
                "POST",
                "/api/v1/sessions/search",
                json=request,
                sdk_method="RestClient.search_sessions",
            )
            return codec.json_decode(r.body, types.SessionSearchResponse)

        return self._run(go())

    def __repr__(self) -> str:
        return f"<RestClient {self._session.settings.base_url or 'embedded'}>"


_ = dt  # datetime kept for the date/datetime parameters of admin methods (not supported locally)
