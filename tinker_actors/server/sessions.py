"""Sessions: create, heartbeat, finish, expiry after missed heartbeats, and the REST views."""

from __future__ import annotations

import time
import uuid
from typing import Any

from tinker_actors import types
from tinker_actors.server.context import IMPLICIT_SESSION, Context, iso, string_metadata
from tinker_actors.server.errors import gone
from tinker_actors.server.store import SessionRow
from tinker_actors.server.users import caller, require

BENCHMARK_NOTE = "this local server runs the null BENCHMARK engine: results are not real"


class Sessions:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.store = ctx.store
        # Last sign of life per session (heartbeats, and requests on its models and samplers,
        # so older SDKs that never heartbeat are not expired while they work). In memory: a
        # dict write per request, not a store write.
        self._seen: dict[str, float] = {}
        self._started = time.time()

    def create(self, req: types.CreateSessionRequest) -> dict[str, Any]:
        session_id = "sess-" + uuid.uuid4().hex[:16]
        self.store.add_session(
            SessionRow(
                session_id,
                time.time(),
                [str(t) for t in req.tags],
                dict(req.user_metadata or {}),
                req.sdk_version,
                req.project_id,
                req.display_name,
                "active",
                None,
                None,
                None,
                owner=caller(),
            )
        )
        out: dict[str, Any] = {"session_id": session_id, "type": "create_session"}
        if self.ctx.benchmark:
            out["info_message"] = BENCHMARK_NOTE
        return out

    def get(self, session_id: str) -> SessionRow:
        """The caller's session (another user's is as missing as an unknown one)."""
        row = self.store.get_session(session_id)
        require(row.owner if row is not None else None, f"session {session_id!r}")
        assert row is not None
        return row

    def check_active(self, session_id: str) -> SessionRow:
        row = self.get(session_id)
        if row.status == "expired":
            raise gone(f"session {session_id} expired: {row.finish_detail}")
        if row.status != "active":
            raise gone(f"session {session_id} is finished")
        return row

    def touch(self, session_id: str) -> None:
        self._seen[session_id] = time.time()

    def heartbeat(self, session_id: str) -> dict[str, Any]:
        self.check_active(session_id)
        now = time.time()
        self._seen[session_id] = now
        self.store.heartbeat(session_id, now)
        return {"type": "session_heartbeat"}

    def finish(self, session_id: str, reason: str, detail: str | None) -> bool:
        """Marks it finished; False when it already was (the first reason wins)."""
        self.get(session_id)
        self._seen.pop(session_id, None)
        return self.store.finish_session(session_id, reason, detail)

    def expire_idle(self, now: float) -> list[str]:
        """Marks active sessions silent for ``session_timeout_s`` expired; returns their ids."""
        timeout = self.ctx.config.session_timeout_s
        if timeout <= 0:
            return []
        expired = []
        for row in self.store.all_sessions():
            if row.status != "active" or row.session_id.startswith(IMPLICIT_SESSION):
                continue
            last = max(
                row.created_at,
                row.last_heartbeat or 0.0,
                self._seen.get(row.session_id, 0.0),
                self._started,  # a restart does not count against a session
            )
            if now - last < timeout:
                continue
            detail = (
                f"no heartbeat for {timeout:g} s; its models and samplers were released "
                "(records and checkpoints are kept)"
            )
            if self.store.expire_session(row.session_id, detail):
                self._seen.pop(row.session_id, None)
                expired.append(row.session_id)
        return expired

    def assign_project(self, session_id: str, req: types.AssignSessionProjectRequest) -> None:
        self.get(session_id)
        self.store.set_session_project(session_id, req.project_id)

    # REST ---------------------------------------------------------------------------------
    def list_ids(self, limit: int, offset: int) -> dict[str, Any]:
        rows = self.store.list_sessions(limit, offset, caller())
        return {"sessions": [r.session_id for r in rows]}

    def session_json(self, session_id: str) -> dict[str, Any]:
        row = self.get(session_id)
        return {
            "training_run_ids": self.store.session_models(session_id),
            "sampler_ids": self.store.session_samplers(session_id),
            "user_metadata": string_metadata(row.user_metadata),
            "display_name": row.display_name,
        }

    @staticmethod
    def status_json(row: SessionRow) -> dict[str, Any]:
        if row.status == "active":
            return {"type": "active"}
        if row.status == "expired":
            return {"type": "cancelled", "detail": row.finish_detail}
        return {
            "type": "client_finished",
            "reason": {"type": row.finish_reason or "success"},
            "detail": row.finish_detail,
        }

    def summary(self, row: SessionRow) -> dict[str, Any]:
        checkpoints = 0
        size = 0
        for model_id in self.store.session_models(row.session_id):
            for ck in self.store.run_checkpoints(model_id):
                checkpoints += 1
                size += ck.size_bytes or 0
        return {
            "session_id": row.session_id,
            "created_at": iso(row.created_at),
            "owner": row.owner,
            "project_id": row.project_id or "local",
            "status": self.status_json(row),
            "checkpoints_count": checkpoints,
            "display_name": row.display_name,
            "user_metadata": string_metadata(row.user_metadata),
            "checkpoint_storage_bytes": size,
        }

    def search(self, req: types.SessionSearchRequest) -> dict[str, Any]:
        out = []
        past_cursor = req.cursor is None
        wanted = {type(s).__struct_config__.tag for s in req.statuses or ()}
        user = caller()
        for row in self.store.all_sessions():
            if row.owner != user:
                continue
            if not past_cursor:
                if req.cursor is not None and row.session_id == req.cursor.last_session_id:
                    past_cursor = True
                continue
            if req.session_id and row.session_id != req.session_id:
                continue
            if req.display_name and row.display_name != req.display_name:
                continue
            if req.project_ids and (row.project_id or "local") not in req.project_ids:
                continue
            meta = string_metadata(row.user_metadata) or {}
            if any(meta.get(k) != v for k, v in req.user_metadata.items()):
                continue
            if wanted and self.status_json(row)["type"] not in wanted:
                continue
            out.append(self.summary(row))
            if len(out) == req.limit:
                break
        next_cursor = None
        if len(out) == req.limit:
            last = out[-1]
            next_cursor = {
                "last_created_at": last["created_at"],
                "last_session_id": last["session_id"],
            }
        return {"sessions": out, "next_cursor": next_cursor}
