"""The service facade: builds the parts and owns what spans them.

The parts live in modules named for their jobs: :mod:`.sessions`, :mod:`.training` (models,
lanes, steps, save/load), :mod:`.sampling` (samplers, asample) and :mod:`.checkpoints`
(listings, TTLs, signed URLs). Handlers call the parts directly (``svc.training...``); this
facade keeps the lifecycle (start, periodic sweep, close), session finish and expiry (which
release models *and* samplers), and the few answers that look at every part.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from typing import Any

from tinker_actors import types
from tinker_actors.server.checkpoints import Checkpoints
from tinker_actors.server.config import ServerConfig
from tinker_actors.server.context import Context
from tinker_actors.server.engine.base import Engine
from tinker_actors.server.futures import FutureRecord
from tinker_actors.server.sampling import Sampling
from tinker_actors.server.sessions import Sessions
from tinker_actors.server.store import Store
from tinker_actors.server.training import Training
from tinker_actors.server.users import DEFAULT_USER, KeyTable, caller
from tinker_actors.telemetry import get_logger

log = get_logger("tinker_actors.server")


class Service:
    def __init__(self, config: ServerConfig, engine: Engine) -> None:
        config.data_dir.mkdir(parents=True, exist_ok=True)
        store = Store(config.data_dir / "server.sqlite3")
        failed, dormant = store.recover_after_restart()
        if failed or dormant:
            log.info("recovered", failed_futures=failed, dormant_models=dormant)
        keys = {config.api_key: DEFAULT_USER} if config.api_key else {}
        keys.update(config.api_keys or {})
        if not keys:
            raise ValueError("the local server needs an API key (api_key or api_keys)")
        self.keys = KeyTable(keys)
        # URLs handed out (archive redirects, signed downloads) start with this; LocalServer
        # sets the listening address once it is bound, unless public_base_url is configured.
        self.public_base_url = (config.public_base_url or "").rstrip("/")
        self.ctx = Context(config, engine, store, self.keys.secret)
        self.config = config
        self.engine = engine
        self.store = store
        self.registry = self.ctx.registry
        self.sessions = Sessions(self.ctx)
        self.checkpoints = Checkpoints(self.ctx)
        self.sampling = Sampling(self.ctx, self.sessions, self.checkpoints)
        self.training = Training(self.ctx, self.sessions, self.checkpoints, self.sampling)
        self.telemetry_events = 0
        # every telemetry batch received, decoded, when set to a list (tests compare SDKs)
        self.telemetry_log: list[Any] | None = None
        self.access_log = False
        # /client/config flags; every field has a client-side default
        self.client_config: dict[str, Any] = {
            "pjwt_auth_enabled": False,
            "proto_compress_fwdbwd": config.proto_compress_fwdbwd,
        }
        self._releases: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()
        self._sweeper: asyncio.Task[None] | None = None

    # lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_loop())

    @property
    def sweep_interval_s(self) -> float:
        timeout = self.config.session_timeout_s
        return min(60.0, timeout / 4) if timeout > 0 else 60.0

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval_s)
            try:
                self.sweep()
            except Exception:
                log.exception("sweep_failed")

    def sweep(self, now: float | None = None) -> list[str]:
        """Drops old futures, deletes expired checkpoints, expires silent sessions (whose
        ids it returns; their memory is released in the background)."""
        now = time.time() if now is None else now
        self.registry.sweep(now)
        self.checkpoints.sweep_expired(now)
        expired = self.sessions.expire_idle(now)
        for session_id in expired:
            log.info("session_expired", session_id=session_id)
            self._release_session(session_id, "expired", f"session {session_id} expired")
        return expired

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await self.wait_released(limit_s=5)
        await self.sampling.close()
        await self.training.close()
        self.ctx.cancel_background()
        self.store.close()

    # sessions -----------------------------------------------------------------------------
    async def finish_session(self, session_id: str, req: types.SessionFinishRequest) -> None:
        reason = req.reason.__struct_config__.tag
        if not self.sessions.finish(session_id, str(reason), req.detail):
            return  # the first reason wins
        self._release_session(session_id, "unloaded", f"session {session_id} finished")

    def _release_session(self, session_id: str, model_state: str, reason: str) -> None:
        """Frees the engine memory of a session's models and samplers (records stay), in the
        background: requests already received still run, and the caller answers at once."""
        models = self.store.session_models(session_id)
        samplers = self.store.session_samplers(session_id)

        async def release() -> None:
            try:
                await self.training.release(models, reason, model_state)
                await self.sampling.release(samplers, reason)
            except RuntimeError as exc:
                # A session finished as the interpreter exits (an embedded server): the
                # executors are shut down and the process frees the memory anyway.
                if "shutdown" not in str(exc):
                    raise

        self._releases.add(self.ctx.spawn(release()))

    async def wait_released(self, limit_s: float | None = None) -> None:
        """Waits for finished/expired sessions to finish unloading their models."""
        pending = [t for t in self._releases if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=limit_s)

    # futures ------------------------------------------------------------------------------
    def queue_reason(self, rec: FutureRecord) -> str:
        """A human hint for try_again: what this future waits for."""
        return self.training.queue_reason(rec) or self.sampling.queue_reason(rec) or "running"

    def cancel_future(self, request_id: str) -> None:
        rec = self.registry.get(request_id)
        if rec is not None and not rec.finished and rec.owner == caller():
            rec.cancelled = True

    # server info --------------------------------------------------------------------------
    def capabilities(self) -> dict[str, Any]:
        models = [
            {
                "model_name": m.model_name,
                "max_context_length": m.max_context_length,
                "trainable": m.trainable,
                "sampleable": m.sampleable,
            }
            for m in self.training.engine_models()
        ]
        engine: dict[str, Any] = {"name": self.engine.name, "benchmark": self.ctx.benchmark}
        if self.ctx.benchmark:
            engine["note"] = getattr(self.engine, "note", "benchmark engine: results are not real")
        return {"supported_models": models, "engine": engine}
