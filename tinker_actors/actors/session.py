"""The session context shared by every client of one ServiceClient, and the heartbeat actor.

Start-up is lazy (nothing is sent at construction): the first operation that needs a session
calls ``ensure_started``, which sends ``/client/config``, ``/auth/token`` (JWT mode only),
``/client/dynamic_config`` (404 means defaults) and ``/create_session``, then starts the
heartbeat, dynamic-config refresh and telemetry actors under the ServiceClient's supervisor.
Counters for ``model_seq_id`` and ``sampling_session_seq_id`` are taken synchronously, in the
caller's thread. Start-up requests are background traffic: they carry no ``x-sdk-method``.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

from .. import errors, types
from ..auth import MISSING_API_KEY_MESSAGE, Credential, check_key_shape, settings_from_env
from ..config import SDK_VERSION, Restart, RestartPolicy, Settings
from ..embedded import embedded_endpoint
from ..runtime import Runtime
from ..telemetry import get_logger
from ..transport import NO_RETRY, Transport, without_sdk_method
from .actor import Actor
from .admission import BytesBudget
from .supervisor import ChildSpec, Supervisor
from .telemetry import TelemetryActor

__all__ = ["DynamicConfigActor", "HeartbeatActor", "Session"]

log = get_logger(__name__)

HEARTBEAT_INTERVAL = 10.0
HEARTBEAT_WARN_AFTER = 120.0
MIN_DYNAMIC_CONFIG_INTERVAL = 10.0


class HeartbeatActor(Actor):
    """``POST /session_heartbeat`` every 10 s; warns after 120 s of failures; stops on 410."""


    def __init__(
        self,
        transport: Transport,
        session_id: str,
        *,
        interval: float = HEARTBEAT_INTERVAL,
        warn_after: float = HEARTBEAT_WARN_AFTER,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ):
        super().__init__(name=f"heartbeat-{session_id}")
        self.transport = transport
        self.session_id = session_id
        self.interval = interval
        self.warn_after = warn_after
        self.clock = clock
        self._sleep = sleep
        self.beats = 0
        self.failing_since: float | None = None
        self.warnings = 0

    async def main(self) -> None:
        body = types.SessionHeartbeatRequest(session_id=self.session_id)
        while True:
            await self._sleep(self.interval)
            try:
                await self.transport.call("session_heartbeat", body, timeout=10.0, retry=NO_RETRY)
            except errors.APIStatusError as exc:
                if exc.status_code == 410:
                    log.info(
                        "session finished on the server; heartbeat stopped",
                        session_id=self.session_id,
                    )
                    return
                self._failed(exc)
            except errors.APIError as exc:
                self._failed(exc)
            else:
                self.beats += 1
                self.failing_since = None

    def _failed(self, exc: BaseException) -> None:
        now = self.clock()
        if self.failing_since is None:
            self.failing_since = now
        elif now - self.failing_since > self.warn_after:
            self.warnings += 1
            log.warning(
                "session heartbeats have been failing; the server may end this session",
                session_id=self.session_id,
                seconds=round(now - self.failing_since),
                error=repr(exc),
            )


class DynamicConfigActor(Actor):
    """Refreshes the server's dynamic config every ``max(refresh_interval_sec, 10)`` s.

    A failed refresh keeps the config in force (and is retried at the next tick); it never
    ends the loop, since the knobs it carries (sample cancel) only tune behaviour.
    """


    def __init__(
        self,
        session: Session,
        *,
        sleep: Callable[[float], Any] = asyncio.sleep,
    ):
        super().__init__(name=f"dynamic-config-{session.session_id or 'rest'}")
        self.session = session
        self._sleep = sleep
        self.refreshes = 0
        self.failures = 0

    def interval(self) -> float:
        return max(
            float(self.session.dynamic_config.refresh_interval_sec), MIN_DYNAMIC_CONFIG_INTERVAL
        )

    async def main(self) -> None:
        transport = self.session.transport
        assert transport is not None
        body = types.ClientConfigRequest(sdk_version=SDK_VERSION)
        while True:
            await self._sleep(self.interval())
            try:
                cfg = await transport.call(
                    "client_dynamic_config", body, timeout=10.0, retry=NO_RETRY
                )
            except errors.NotFoundError:
                cfg = types.ClientDynamicConfigResponse()
            except errors.APIError as exc:
                self.failures += 1
                log.debug("dynamic config refresh failed", error=repr(exc))
                continue
            self.session.dynamic_config = cfg
            self.refreshes += 1


CLOSE_TIMEOUT = 2.0


class Session:
    """What every client of one ServiceClient shares: transport, config, ids, supervisor."""

    def __init__(
        self,
        settings: Settings,
        *,
        runtime: Runtime,
        user_metadata: dict[str, Any] | None = None,
        display_name: str | None = None,
        restart_policy: RestartPolicy | None = None,
        rest_only: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.settings = settings
        self.runtime = runtime
        self.user_metadata = user_metadata
        self.display_name = display_name
        self.rest_only = rest_only
        self.supervisor = Supervisor(restart_policy, clock=clock, name="service")
        self.transport: Transport | None = None
        self.client_config = types.ClientConfigResponse()
        self.dynamic_config = types.ClientDynamicConfigResponse()
        self.session_id: str | None = None
        self.telemetry: TelemetryActor | None = None
        self.heartbeat: HeartbeatActor | None = None
        self._model_seq = itertools.count()
        self._sampling_seq = itertools.count()
        self._ids_lock = threading.Lock()
        self._start_lock: asyncio.Lock | None = None
        self._started = False
        self._closed = False
        self._close_done = asyncio.Event()
        self.dynamic_refresh: DynamicConfigActor | None = None
        self.fwdbwd_bytes: BytesBudget | None = None
        self._handle_clients = 0
        self.for_handles = False
        #: Set when a handle session gave its transport back (no sampler of it running).
        self.transport_released = asyncio.Event()
        #: Upper bound of ``close()`` in seconds, whatever the server does.
        self.close_timeout = CLOSE_TIMEOUT

    @classmethod
    def for_handle(
        cls,
        *,
        base_url: str | None,
        session_id: str | None,
        client_config: types.ClientConfigResponse,
        dynamic_config: types.ClientDynamicConfigResponse,
        api_key: str | None = None,
        default_headers: dict[str, str] | None = None,
        runtime: Runtime,
    ) -> Session:
        """A session for sampling clients rebuilt from a handle or a pickle in this process.

        It reuses the sender's negotiated config and session id, creates no server session
        and starts no background actors; credentials come from this process. It owns its
        transport: when the last client using it is done (``release_handle_client``) it
        closes and gives the runtime's HTTP session back.
        """
        settings = settings_from_env(
            base_url=base_url, api_key=api_key, default_headers=default_headers
        )
        session = cls(settings, runtime=runtime, rest_only=True)
        session.client_config = client_config
        session.dynamic_config = dynamic_config
        session.session_id = session_id
        session.for_handles = True
        return session

    def add_handle_client(self) -> None:
        self._handle_clients += 1

    def release_handle_client(self) -> None:
        """A handle client's actor stopped (on the runtime loop). With none left running, the
        transport goes back (the runtime's HTTP session with it); the next call reopens it."""
        self._handle_clients -= 1
        if self._handle_clients <= 0 and self.transport is not None:
            transport, self.transport = self.transport, None
            self.runtime.spawn(self._release_transport(transport))

    async def _release_transport(self, transport: Transport) -> None:
        await transport.aclose()
        await self.runtime.release()
        self.transport_released.set()

    # ------------------------------------------------------------------ counters
    def next_model_seq_id(self) -> int:
        with self._ids_lock:
            return next(self._model_seq)

    def next_sampling_session_seq_id(self) -> int:
        with self._ids_lock:
            return next(self._sampling_seq)

    @property
    def started(self) -> bool:
        return self._started

    @property
    def closed(self) -> bool:
        return self._closed

    async def wait_closed(self) -> None:
        """Returns once close() has finished releasing everything (for owners and tests)."""
        await self._close_done.wait()

    def require_session_id(self) -> str:
        if self.session_id is None:
            raise RuntimeError("session not started")
        return self.session_id

    # ------------------------------------------------------------------ start-up
    async def ensure_started(self) -> None:
        """Idempotent; must run on the runtime loop."""
        if self._started:
            return
        if self._closed:
            raise RuntimeError("ServiceClient is closed")
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._started:
                return
            await self._start()
            self._started = True

    def credential(self) -> Credential:
        s = self.settings
        return Credential(static=s.api_key, cmd=s.credential_cmd, source=s.credential_source)

    async def ensure_transport(self) -> Transport:
        if self.transport is None:
            settings = self.settings
            if settings.base_url is None:
                url, key = await asyncio.to_thread(embedded_endpoint)
                settings = self.settings = settings.with_endpoint(url, key)
            cmd_key = None
            if settings.api_key is None:
                if settings.credential_cmd is None:
                    raise errors.TinkerError(MISSING_API_KEY_MESSAGE)
                cmd_key = await self.credential().fetch()
            else:
                check_key_shape(settings.api_key)
            if self.transport is None:  # another caller may have finished first
                self.transport = Transport(self.runtime, settings)
                if cmd_key is not None:
                    self.transport.set_api_key(cmd_key)
                self.runtime.acquire()
        return self.transport

    async def _start(self) -> None:
        with without_sdk_method():
            await self._start_inner()

    async def _start_inner(self) -> None:
        t = await self.ensure_transport()
        body = types.ClientConfigRequest(sdk_version=SDK_VERSION)
        self.client_config = await t.call("client_config", body)
        if self.client_config.pjwt_auth_enabled and t.jwt is None:
            await t.enable_jwt(self.credential()).token()
        try:
            self.dynamic_config = await t.call("client_dynamic_config", body, timeout=10.0)
        except errors.NotFoundError:
            self.dynamic_config = types.ClientDynamicConfigResponse()
        self.fwdbwd_bytes = BytesBudget(
            max(1, self.client_config.fwdbwd_dispatch_bytes_semaphore_size)
        )

        async def start_refresh(prev: Actor | None) -> Actor:
            a = DynamicConfigActor(self)
            await a.start()
            self.dynamic_refresh = a
            return a

        if self.rest_only:
            return
        req = types.CreateSessionRequest(
            tags=list(self.settings.tags),
            user_metadata=dict(self.user_metadata or {}),
            sdk_version=SDK_VERSION,
            project_id=self.settings.project_id,
            display_name=self.display_name,
        )
        created = await t.call("create_session", req)
        self.session_id = created.session_id
        for level, msg in (
            ("info", created.info_message),
            ("warning", created.warning_message),
            ("error", created.error_message),
        ):
            if msg:
                getattr(log, level)(msg, session_id=self.session_id)
        sid = created.session_id
        if self.settings.telemetry_enabled:

            async def start_telemetry(prev: Actor | None) -> Actor:
                a = TelemetryActor(t, sid, emit_session_events=prev is None)
                await a.start()
                self.telemetry = a
                return a

            await self.supervisor.start_child(
                ChildSpec("telemetry", start_telemetry, restart=Restart.PERMANENT)
            )

        async def start_heartbeat(prev: Actor | None) -> Actor:
            a = HeartbeatActor(t, sid)
            await a.start()
            self.heartbeat = a
            return a

        await self.supervisor.start_child(
            ChildSpec("heartbeat", start_heartbeat, restart=Restart.TRANSIENT)
        )
        await self.supervisor.start_child(
            ChildSpec("dynamic-config", start_refresh, restart=Restart.PERMANENT)
        )
        log.info("session started", session_id=sid)

    # ------------------------------------------------------------------ events
    def log_event(self, name: str, data: dict[str, Any] | None = None) -> None:
        if self.telemetry is not None:
            self.telemetry.log_generic(name, data)

    def log_exception(self, exc: BaseException) -> None:
        if self.telemetry is not None:
            self.telemetry.log_exception_sync(exc)

    # ------------------------------------------------------------------ shutdown
    async def close(
        self,
        status: Literal["success", "errored", "interrupted"] = "success",
        detail: str | None = None,
    ) -> None:
        """Finishes the session on the server, stops actors (reverse order), releases HTTP.

        Bounded by ``close_timeout`` (``CLOSE_TIMEOUT``, 2 s) whatever the server does: the
        finish request gets what is left of it, and a server that does not answer in time
        only costs a warning. Actors are stopped and HTTP released in any case.
        """
        if self._closed:
            return
        self._closed = True
        deadline = asyncio.get_running_loop().time() + self.close_timeout
        try:
            if self.session_id is not None and self.transport is not None:
                reason: (
                    types.ClientSessionFinishSuccess
                    | types.ClientSessionFinishErrored
                    | types.ClientSessionFinishInterrupted
                )
                if status == "success":
                    reason = types.ClientSessionFinishSuccess()
                elif status == "errored":
                    reason = types.ClientSessionFinishErrored()
                else:
                    reason = types.ClientSessionFinishInterrupted()
                try:
                    with without_sdk_method():
                        async with asyncio.timeout_at(deadline):
                            await self.transport.call(
                                "session_finish",
                                types.SessionFinishRequest(reason=reason, detail=detail),
                                path_params={"session_id": self.session_id},
                            )
                except (errors.APIError, TimeoutError) as exc:
                    log.warning(
                        "could not finish session", session_id=self.session_id, error=repr(exc)
                    )
        finally:
            try:
                # what is left of the budget, but never less than a moment for a clean stop
                left = max(0.25, deadline - asyncio.get_running_loop().time())
                async with asyncio.timeout(left):
                    await self.supervisor.stop()
            except TimeoutError:
                log.warning("actors did not stop within the close timeout; abandoned them")
            if self.transport is not None:
                await self.transport.aclose()
                await self.runtime.release()
            self._close_done.set()
