"""ServiceClient: the entry point. Owns the session, its supervisor and the embedded default.

Start-up follows 0.38 request for request: nothing is sent at construction; the first call
that needs the session (creating a training or sampling client, a custom loss, ``holder``)
fetches ``client/config`` and ``client/dynamic_config`` and creates the session *before it
returns*, so a wrong key or URL raises from that call, not later from ``.result()``. REST calls
use a second, session-less holder, started the same way on first use. With no ``base_url`` and
no ``TINKER_BASE_URL`` the first start-up starts the embedded local server (one per process).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Coroutine, Mapping
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

from .. import types
from ..actors.session import Session
from ..actors.supervisor import ChildSpec
from ..actors.telemetry import report_failures, telemetry_enabled
from ..actors.training import (
    TrainingActor,
    TrainingHandle,
    TrainingState,
    create_model,
    create_via_load,
    get_info,
)
from ..auth import settings_from_env
from ..config import RecoveryPolicy, Restart, RestartPolicy, RetryConfig
from ..errors import InvalidTinkerPathError
from ..futures import APIFuture, AwaitableConcurrentFuture
from ..runtime import get_runtime
from ..telemetry import get_logger
from ..transport import sdk_method_scope
from .backcompat import BackcompatSamplingClientFuture, BackcompatTrainingClientFuture
from .custom_loss import LossHandle, PerDatumLossFn
from .rest import RestClient
from .training import TrainingClient
from .twins import awaited_twin

T = TypeVar("T")

__all__ = ["ServiceClient"]

log = get_logger(__name__)

Status = Literal["success", "errored", "interrupted"]


class ServiceClient:
    """Creates training and sampling clients; mirrors ``tinker.ServiceClient`` (0.38).

    Extra keyword-only knobs (not in the official SDK): ``telemetry`` (True/False overrides
    ``TINKER_TELEMETRY``), ``restart_policy`` (how often the
    supervisor restarts a crashed actor) and ``recovery_policy`` (opt-in: how a restarted
    training actor rebuilds its model from the last ``save_state`` checkpoint; without one
    nothing is kept for replay and a failed submit breaks that TrainingClient loudly).
    """

    def __init__(
        self,
        user_metadata: dict[str, str] | None = None,
        project_id: str | None = None,
        *,
        display_name: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        default_headers_overrides: Mapping[str, str] | None = None,
        restart_policy: RestartPolicy | None = None,
        recovery_policy: RecoveryPolicy | None = None,
        telemetry: bool | None = None,
        **kwargs: Any,
    ):
        if kwargs:
            warnings.warn(
                f"ServiceClient ignores unsupported arguments: {', '.join(sorted(kwargs))}.",
                FutureWarning,
                stacklevel=2,
            )
        settings = settings_from_env(
            base_url=base_url,
            api_key=api_key,
            project_id=project_id,
            default_headers=dict(default_headers_overrides or {}),
        )
        if telemetry is not None:  # Tinkex's precedence: this option, then TINKER_TELEMETRY
            settings = dataclasses.replace(settings, telemetry_enabled=telemetry_enabled(telemetry))
        self._runtime = get_runtime()
        self._session = Session(
            settings,
            runtime=self._runtime,
            user_metadata=user_metadata,
            display_name=display_name,
            restart_policy=restart_policy,
        )
        self._settings = settings
        self._rest_session: Session | None = None
        self._recovery = recovery_policy
        self._closed = False

    # ------------------------------------------------------------------ plumbing
    @property
    def holder(self) -> Session:
        """The started session (started here, blocking, if it was not yet: as in 0.38)."""
        self._start_now(self._session)
        return self._session

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("ServiceClient is closed")

    def _start_now(self, session: Session) -> None:
        """Starts ``session`` before returning, so start-up errors raise from the caller's
        call. Blocks, like 0.38's holder construction; in ``caller`` loop mode on the
        runtime's own loop it cannot block, and the operation starts it instead."""
        self._check_open()
        if session.started or self._runtime.on_loop():
            return
        self._runtime.submit(session.ensure_started()).result()

    async def _start_async(self, session: Session) -> None:
        """The ``_async`` twins start the session without blocking the caller's loop."""
        self._check_open()
        if not session.started:
            await APIFuture.from_coro(self._runtime, session.ensure_started())

    async def _start_async_session(self) -> None:
        await self._start_async(self._session)

    def _submit(self, coro: Coroutine[Any, Any, T], method: str) -> APIFuture[T]:
        """Runs ``coro`` on the runtime; its requests carry ``x-sdk-method: ServiceClient.<method>``."""
        if self._closed:
            coro.close()
            raise RuntimeError("ServiceClient is closed")
        with sdk_method_scope(f"ServiceClient.{method}"):
            fut = APIFuture.from_coro(self._runtime, coro)
        # 0.38 reports these failures as capture_exceptions does (fatal but for custom losses)
        report_failures(self.get_telemetry, fut.future(), fatal=method != "create_custom_loss")
        return fut

    async def _started(self) -> Session:
        await self._session.ensure_started()
        return self._session

    def get_console_url(self) -> str:
        return f"{self._session.settings.base_url or ''}/sessions/{self._session.session_id or ''}"

    def get_telemetry(self) -> Any:
        return self._session.telemetry

    # ------------------------------------------------------------------ capabilities
    def _rest_holder(self) -> Session:
        """The session-less holder REST calls use (0.38 keeps one apart from the session)."""
        self._check_open()
        if self._rest_session is None:
            self._rest_session = Session(self._settings, runtime=self._runtime, rest_only=True)
        self._start_now(self._rest_session)
        return self._rest_session

    def _rest_client(self) -> RestClient:
        return RestClient(self._rest_holder())

    def get_server_capabilities(self) -> types.GetServerCapabilitiesResponse:
        """Deprecated in 0.38: ``tinker.RestClient().get_server_capabilities()``."""
        _moved("get_server_capabilities", "tinker.RestClient().get_server_capabilities()")
        with sdk_method_scope("ServiceClient.get_server_capabilities"):
            fut = self._rest_client().get_server_capabilities()
        return fut.result()

    async def get_server_capabilities_async(self) -> types.GetServerCapabilitiesResponse:
        """Deprecated in 0.38: ``await tinker.RestClient().get_server_capabilities()``."""
        _moved(
            "get_server_capabilities_async", "await tinker.RestClient().get_server_capabilities()"
        )
        with sdk_method_scope("ServiceClient.get_server_capabilities_async"):
            fut = self._rest_client().get_server_capabilities()
        return await fut

    def create_rest_client(self) -> RestClient:
        """Deprecated in 0.38: construct ``tinker.RestClient()`` (it needs no ServiceClient)."""
        _moved("create_rest_client", "tinker.RestClient(base_url=..., api_key=...)")
        return self._rest_client()

    def copy_weights(
        self, path: str, *, ttl_seconds: int | None = None, weights_access_token: str | None = None
    ) -> APIFuture[str]:
        with sdk_method_scope("ServiceClient.copy_weights"):
            return self._rest_client().copy_weights(
                path,
                destination_project_id=self._session.settings.project_id,
                ttl_seconds=ttl_seconds,
                weights_access_token=weights_access_token,
            )

    # ------------------------------------------------------------------ training clients
    async def _training_client(
        self,
        model_id: str,
        create: dict[str, Any],
        checkpoint: tuple[str, bool] | None,
        recovery: RecoveryPolicy | None,
        info: types.GetInfoResponse | None = None,
    ) -> TrainingClient:
        s = self._session
        info = info or await get_info(s, model_id)
        state = TrainingState(
            s,
            model_id=model_id,
            info=info,
            create=create,
            recovery=recovery if recovery is not None else self._recovery,
            checkpoint=checkpoint,
        )

        async def start(prev: Any) -> TrainingActor:
            actor = TrainingActor(state, recovering=prev is not None)
            await actor.start()
            return actor

        await s.supervisor.start_child(
            ChildSpec(
                f"training-{model_id}", start, restart=Restart.TRANSIENT, on_give_up=state.fail_all
            )
        )
        log.info("TrainingClient initialized", model_id=model_id)
        return TrainingClient(TrainingHandle(state), service=self)

    def create_lora_training_client(
        self,
        base_model: str,
        rank: int = 32,
        seed: int | None = None,
        train_mlp: bool = True,
        train_attn: bool = True,
        train_unembed: bool = True,
        user_metadata: dict[str, str] | None = None,
        optimizer: Any = None,
        *,
        recovery_policy: RecoveryPolicy | None = None,
    ) -> BackcompatTrainingClientFuture:
        """A new LoRA model. ``recovery_policy`` (extension) overrides the ServiceClient's."""
        if not any([train_mlp, train_attn, train_unembed]):
            raise AssertionError(
                "At least one of train_mlp, train_attn, or train_unembed must be True"
            )
        lora = types.LoraConfig(
            rank=rank,
            seed=seed,
            train_mlp=train_mlp,
            train_attn=train_attn,
            train_unembed=train_unembed,
        )
        create = {
            "base_model": base_model,
            "lora_config": lora,
            "user_metadata": user_metadata,
            "optimizer_config": optimizer,
        }

        self._start_now(self._session)

        async def go() -> TrainingClient:
            s = await self._started()
            model_id = await create_model(s, **create)
            return await self._training_client(model_id, create, None, recovery_policy)

        return BackcompatTrainingClientFuture(
            self._submit(go(), "create_lora_training_client").future(), self._runtime
        )

    create_lora_training_client_async = awaited_twin(
        create_lora_training_client, before=_start_async_session, sdk_method="ServiceClient"
    )

    def _from_state(
        self,
        path: str,
        optimizer: bool,
        base_model: str | None,
        user_metadata: dict[str, str] | None,
        weights_access_token: str | None,
        optimizer_config: Any,
        method: str,
        recovery: RecoveryPolicy | None = None,
    ) -> BackcompatTrainingClientFuture:
        self._start_now(self._session)

        async def go() -> TrainingClient:
            s = await self._started()
            model_id = await create_via_load(
                s,
                path=path,
                optimizer=optimizer,
                base_model=base_model,
                user_metadata=user_metadata,
                optimizer_config=optimizer_config,
                weights_access_token=weights_access_token,
            )
            info = await get_info(s, model_id)
            md = info.model_data
            create = {
                "base_model": md.model_name or base_model or "",
                "lora_config": types.LoraConfig(rank=info.lora_rank or 32),
                "user_metadata": user_metadata,
                "optimizer_config": optimizer_config,
            }
            return await self._training_client(model_id, create, (path, optimizer), recovery, info)

        return BackcompatTrainingClientFuture(self._submit(go(), method).future(), self._runtime)

    def create_training_client_from_state(
        self,
        path: str,
        base_model: str | None = None,
        user_metadata: dict[str, str] | None = None,
        weights_access_token: str | None = None,
        optimizer: Any = None,
        *,
        recovery_policy: RecoveryPolicy | None = None,
    ) -> BackcompatTrainingClientFuture:
        return self._from_state(
            path,
            False,
            base_model,
            user_metadata,
            weights_access_token,
            optimizer,
            "create_training_client_from_state",
            recovery_policy,
        )

    create_training_client_from_state_async = awaited_twin(
        create_training_client_from_state, before=_start_async_session
    )

    def create_training_client_from_state_with_optimizer(
        self,
        path: str,
        base_model: str | None = None,
        user_metadata: dict[str, str] | None = None,
        weights_access_token: str | None = None,
        *,
        recovery_policy: RecoveryPolicy | None = None,
    ) -> BackcompatTrainingClientFuture:
        return self._from_state(
            path,
            True,
            base_model,
            user_metadata,
            weights_access_token,
            None,
            "create_training_client_from_state_with_optimizer",
            recovery_policy,
        )

    create_training_client_from_state_with_optimizer_async = awaited_twin(
        create_training_client_from_state_with_optimizer, before=_start_async_session
    )

    # ------------------------------------------------------------------ sampling clients
    def create_sampling_client(
        self,
        model_path: str | None = None,
        base_model: str | None = None,
        retry_config: RetryConfig | None = None,
        record_stability_info: bool = False,
    ) -> BackcompatSamplingClientFuture:
        if model_path is None and base_model is None:
            raise ValueError("Either model_path or base_model must be provided")
        if model_path is not None and (
            not isinstance(model_path, str) or not model_path.startswith("tinker://")
        ):
            # as the official SDK does, at call time
            raise InvalidTinkerPathError(
                f"model_path must start with 'tinker://', got {model_path!r}"
            )

        self._start_now(self._session)

        async def go() -> Any:
            from .sampling import SamplingClient

            s = await self._started()
            return await SamplingClient._create(
                s,
                sampling_session_id=None,
                base_model=base_model,
                model_path=model_path,
                retry_config=retry_config,
                record_stability_info=record_stability_info,
            )

        return BackcompatSamplingClientFuture(
            self._submit(go(), "create_sampling_client").future(), self._runtime
        )

    create_sampling_client_async = awaited_twin(create_sampling_client, before=_start_async_session)

    # ------------------------------------------------------------------ custom losses
    def create_custom_loss(
        self, fn: PerDatumLossFn, input_ranks: Mapping[str, types.CustomLossInputRank]
    ) -> APIFuture[LossHandle]:
        """Traces a per-datum loss into a ``LossHandle`` for ``forward_backward_custom``.

        The handle runs client-side (no upload): once per datum, summed.
        """
        from .custom_loss import trace_loss

        self._start_now(self._session)

        async def go() -> LossHandle:
            s = await self._started()
            return trace_loss(fn, input_ranks, s.require_session_id())

        return self._submit(go(), "create_custom_loss")

    # ------------------------------------------------------------------ lifecycle
    def close(
        self, status: Status = "success", detail: str | None = None
    ) -> AwaitableConcurrentFuture[None]:
        """Finishes the session (``POST /sessions/{id}/finish``) and stops every actor."""
        if self._closed:
            return AwaitableConcurrentFuture.completed(None)
        self._closed = True
        session, rest = self._session, self._rest_session

        async def close_all() -> None:
            try:
                await session.close(status, detail)
            finally:
                if rest is not None:
                    await rest.close()

        return AwaitableConcurrentFuture.from_coro(self._runtime, close_all())

    async def aclose(self, status: Status = "success", detail: str | None = None) -> None:
        await self.close(status, detail)

    def __enter__(self) -> Self:
        if self._closed:
            raise RuntimeError("ServiceClient is closed")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close(_status(exc_type)).result()

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close(_status(exc_type))


def _moved(name: str, instead: str) -> None:
    warnings.warn(
        f"ServiceClient.{name}() is deprecated, as in tinker 0.38: use {instead} instead",
        FutureWarning,
        stacklevel=3,
    )


def _status(exc_type: type[BaseException] | None) -> Status:
    if exc_type is None:
        return "success"
    return "errored" if issubclass(exc_type, Exception) else "interrupted"
