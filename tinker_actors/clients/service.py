"""ServiceClient: the entry point. Owns the session, its supervisor and the embedded default.

Nothing is sent at construction. With no ``base_url`` and no ``TINKER_BASE_URL`` the first
operation starts the embedded local server (one per process) and uses it.
"""

from __future__ import annotations

import warnings
from collections.abc import Coroutine, Mapping
from types import TracebackType
from typing import Any, Literal, Self, TypeVar

from .. import types
from ..actors.session import Session
from ..actors.supervisor import ChildSpec
from ..actors.training import TrainingActor, TrainingState, create_model, create_via_load, get_info
from ..config import RecoveryPolicy, Restart, RestartPolicy, RetryConfig, Settings
from ..errors import InvalidTinkerPathError
from ..futures import APIFuture
from ..runtime import get_runtime
from ..telemetry import get_logger
from ..transport import sdk_method_scope
from .rest import RestClient
from .training import ClientFuture, TrainingClient

T = TypeVar("T")

__all__ = ["ServiceClient"]

log = get_logger(__name__)

Status = Literal["success", "errored", "interrupted"]


class ServiceClient:
    """Creates training and sampling clients; mirrors ``tinker.ServiceClient`` (0.38).

    Extra keyword-only knobs (not in the official SDK): ``restart_policy`` (how often the
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
        **kwargs: Any,
    ):
        if kwargs:
            warnings.warn(
                f"ServiceClient ignores unsupported arguments: {', '.join(sorted(kwargs))}.",
                FutureWarning,
                stacklevel=2,
            )
        settings = Settings.from_env(
            base_url=base_url,
            api_key=api_key,
            project_id=project_id,
            default_headers=dict(default_headers_overrides or {}),
        )
        self._runtime = get_runtime()
        self._session = Session(
            settings,
            runtime=self._runtime,
            user_metadata=user_metadata,
            display_name=display_name,
            restart_policy=restart_policy,
        )
        self._recovery = recovery_policy
        self._closed = False

    # ------------------------------------------------------------------ plumbing
    @property
    def holder(self) -> Session:
        return self._session

    def _submit(self, coro: Coroutine[Any, Any, T], method: str) -> APIFuture[T]:
        """Runs ``coro`` on the runtime; its requests carry ``x-sdk-method: ServiceClient.<method>``."""
        if self._closed:
            coro.close()
            raise RuntimeError("ServiceClient is closed")
        with sdk_method_scope(f"ServiceClient.{method}"):
            return APIFuture.from_coro(self._runtime, coro)

    async def _started(self) -> Session:
        await self._session.ensure_started()
        return self._session

    def get_console_url(self) -> str:
        return f"{self._session.settings.base_url or ''}/sessions/{self._session.session_id or ''}"

    def get_telemetry(self) -> Any:
        return self._session.telemetry

    # ------------------------------------------------------------------ capabilities
    def _rest_client(self) -> RestClient:
        return RestClient(self._session)

    def get_server_capabilities(self) -> types.GetServerCapabilitiesResponse:
        with sdk_method_scope("ServiceClient.get_server_capabilities"):
            fut = self._rest_client().get_server_capabilities()
        return fut.result()

    async def get_server_capabilities_async(self) -> types.GetServerCapabilitiesResponse:
        with sdk_method_scope("ServiceClient.get_server_capabilities_async"):
            fut = self._rest_client().get_server_capabilities()
        return await fut

    def create_rest_client(self) -> RestClient:
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
        return TrainingClient(state, service=self)

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
    ) -> ClientFuture:
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

        async def go() -> TrainingClient:
            s = await self._started()
            model_id = await create_model(s, **create)
            return await self._training_client(model_id, create, None, recovery_policy)

        return ClientFuture(
            self._submit(go(), "create_lora_training_client").future(), self._runtime
        )

    async def create_lora_training_client_async(
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
    ) -> TrainingClient:
        with sdk_method_scope("ServiceClient.create_lora_training_client_async"):
            fut = self.create_lora_training_client(
                base_model,
                rank,
                seed,
                train_mlp,
                train_attn,
                train_unembed,
                user_metadata,
                optimizer,
                recovery_policy=recovery_policy,
            )
        return await fut

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
    ) -> ClientFuture:
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

        return ClientFuture(self._submit(go(), method).future(), self._runtime)

    def create_training_client_from_state(
        self,
        path: str,
        base_model: str | None = None,
        user_metadata: dict[str, str] | None = None,
        weights_access_token: str | None = None,
        optimizer: Any = None,
        *,
        recovery_policy: RecoveryPolicy | None = None,
    ) -> ClientFuture:
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

    async def create_training_client_from_state_async(
        self,
        path: str,
        base_model: str | None = None,
        user_metadata: dict[str, str] | None = None,
        weights_access_token: str | None = None,
        optimizer: Any = None,
    ) -> TrainingClient:
        return await self.create_training_client_from_state(
            path, base_model, user_metadata, weights_access_token, optimizer
        )

    def create_training_client_from_state_with_optimizer(
        self,
        path: str,
        base_model: str | None = None,
        user_metadata: dict[str, str] | None = None,
        weights_access_token: str | None = None,
        *,
        recovery_policy: RecoveryPolicy | None = None,
    ) -> ClientFuture:
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

    async def create_training_client_from_state_with_optimizer_async(
        self,
        path: str,
        base_model: str | None = None,
        user_metadata: dict[str, str] | None = None,
        weights_access_token: str | None = None,
    ) -> TrainingClient:
        return await self.create_training_client_from_state_with_optimizer(
            path, base_model, user_metadata, weights_access_token
        )

    # ------------------------------------------------------------------ sampling clients
    def create_sampling_client(
        self,
        model_path: str | None = None,
        base_model: str | None = None,
        retry_config: RetryConfig | None = None,
        record_stability_info: bool = False,
    ) -> ClientFuture:
        if model_path is None and base_model is None:
            raise ValueError("Either model_path or base_model must be provided")
        if model_path is not None and (
            not isinstance(model_path, str) or not model_path.startswith("tinker://")
        ):
            # as the official SDK does, at call time
            raise InvalidTinkerPathError(
                f"model_path must start with 'tinker://', got {model_path!r}"
            )

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

        return ClientFuture(self._submit(go(), "create_sampling_client").future(), self._runtime)

    async def create_sampling_client_async(
        self,
        model_path: str | None = None,
        base_model: str | None = None,
        retry_config: RetryConfig | None = None,
        record_stability_info: bool = False,
    ) -> Any:
        return await self.create_sampling_client(
            model_path, base_model, retry_config, record_stability_info
        )

    # ------------------------------------------------------------------ custom losses
    def create_custom_loss(
        self, fn: Any, input_ranks: Mapping[str, types.CustomLossInputRank]
    ) -> APIFuture[Any]:
        """Traces a per-datum loss into a ``LossHandle`` for ``forward_backward_custom``.

        The handle runs client-side (no upload): once per datum, summed.
        """
        from .custom_loss import trace_loss

        async def go() -> Any:
            s = await self._started()
            return trace_loss(fn, input_ranks, s.require_session_id())

        return self._submit(go(), "create_custom_loss")

    # ------------------------------------------------------------------ lifecycle
    def close(self, status: Status = "success", detail: str | None = None) -> APIFuture[None]:
        """Finishes the session (``POST /sessions/{id}/finish``) and stops every actor."""
        if self._closed:
            return APIFuture.completed(None)
        self._closed = True
        return APIFuture.from_coro(self._runtime, self._session.close(status, detail))

    async def aclose(self, status: Status = "success", detail: str | None = None) -> None:
        await self.close(status, detail)

    def __enter__(self) -> Self:
        if self._closed:
            raise RuntimeError("ServiceClient is closed")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
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


def _status(exc_type: type[BaseException] | None) -> Status:
    if exc_type is None:
        return "success"
    return "errored" if issubclass(exc_type, Exception) else "interrupted"
