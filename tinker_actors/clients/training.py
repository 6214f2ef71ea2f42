"""TrainingClient: the official SDK's training surface over one TrainingActor.

Every method checks its arguments in the caller's thread, puts one typed message in the
training actor's mailbox (``actors.training``) and returns an ``APIFuture`` at once: the order
of the calls is the order of their seq ids. The client holds the actor's handle and nothing
mutable. ``_async`` twins keep the official signatures (they return the same APIFuture,
awaited).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from .. import types
from ..actors.telemetry import report_failures
from ..actors.training import (
    ForwardBackward,
    LoadState,
    OptimStep,
    SaveState,
    SaveWeightsExternal,
    SaveWeightsForSampler,
    TrainingHandle,
    TrainingMessage,
    custom_loss_message,
)
from ..config import RetryConfig
from ..errors import InvalidInputError
from ..futures import APIFuture
from ..tinker_path import parse_tinker_path
from ..transport import sdk_method_scope
from ..types import fwdbwd as _fb
from .twins import async_twin, awaited_twin

if TYPE_CHECKING:
    from .backcompat import BackcompatSamplingClientFuture
    from .sampling import SamplingClient

__all__ = ["TrainingClient"]


class TrainingClient:
    """A LoRA model being trained; methods mirror ``tinker.TrainingClient`` (0.38)."""

    def __init__(self, handle: TrainingHandle, *, service: Any = None):
        self._handle = handle
        self._service = service

    @property
    def model_id(self) -> str:
        return self._handle.model_id

    @property
    def holder(self) -> Any:
        return self._handle.session

    @property
    def _runtime(self) -> Any:
        return self._handle.runtime

    def __repr__(self) -> str:
        return f"<TrainingClient model_id={self.model_id!r}>"

    def get_console_url(self) -> str:
        return f"{self._handle.session.settings.base_url or ''}/training-runs/{self.model_id}"

    # ------------------------------------------------------------------ plumbing
    def _tell(self, msg: TrainingMessage, method: str) -> APIFuture[Any]:
        cf = self._handle.tell(msg, f"TrainingClient.{method}")
        report_failures(self._telemetry, cf)  # as 0.38's capture_exceptions(fatal=True)
        return APIFuture(cf, self._runtime)

    def _telemetry(self) -> Any:
        return self._handle.session.telemetry

    def _chunks(self, data: list[types.Datum]) -> list[list[types.Datum]]:
        if not data:
            raise ValueError("No data provided")
        # One isinstance per datum (not per token): the tokens and tensors were checked
        # when each Datum was built.
        for i, d in enumerate(data):
            if not isinstance(d, types.Datum):
                raise InvalidInputError(
                    f"data[{i}] must be a tinker.types.Datum, got {type(d).__name__}"
                )
        cfg = self._handle.session.client_config
        return [
            c
            for c, _ in _fb.chunk_data(
                data, cfg.fwdbwd_max_chunk_len, cfg.fwdbwd_max_chunk_bytes_count
            )
        ]

    def _fwdbwd(
        self,
        data: list[types.Datum],
        loss_fn: str,
        loss_fn_config: Mapping[str, float | str] | None,
        forward_only: bool,
        method: str,
    ) -> APIFuture[types.ForwardBackwardOutput]:
        _check_data_list(data)
        if not isinstance(loss_fn, str):
            raise InvalidInputError(
                f"loss_fn must be a loss name such as 'cross_entropy', got {type(loss_fn).__name__}"
                " (use forward_backward_custom for a callable)"
            )
        chunks = tuple(tuple(c) for c in self._chunks(list(data)))
        config = dict(loss_fn_config) if loss_fn_config else None
        return self._tell(ForwardBackward(chunks, loss_fn, config, forward_only), method)

    # ------------------------------------------------------------------ forward / backward
    def forward(
        self,
        data: list[types.Datum],
        loss_fn: types.LossFnType,
        loss_fn_config: Mapping[str, float | str] | None = None,
    ) -> APIFuture[types.ForwardBackwardOutput]:
        return self._fwdbwd(data, loss_fn, loss_fn_config, True, "forward")

    forward_async = async_twin(forward)

    def forward_backward(
        self,
        data: list[types.Datum],
        loss_fn: types.LossFnType,
        loss_fn_config: Mapping[str, float | str] | None = None,
    ) -> APIFuture[types.ForwardBackwardOutput]:
        return self._fwdbwd(data, loss_fn, loss_fn_config, False, "forward_backward")

    forward_backward_async = async_twin(forward_backward)

    def forward_backward_custom(
        self,
        data: list[types.Datum],
        loss_fn: Callable[..., Any],
        *,
        loss_type_input: Literal["logprobs"] | None = None,
        regularizers: list[Any] | None = None,
        track_grad_norms: bool = False,
    ) -> APIFuture[types.ForwardBackwardOutput]:
        """Client-side custom loss (protocol.md 6.1): a forward pass, the loss and its gradient
        here, then a cross_entropy backward with ``weights = -dLoss/dlogprobs``.
        ``regularizers`` (``tinker_actors.regularizers.RegularizerSpec``) are added to it."""
        if loss_type_input not in (None, "logprobs"):
            raise ValueError(f"unsupported loss_type_input {loss_type_input!r}")
        from .custom_loss import LossHandle, run_loss_handle

        if isinstance(loss_fn, LossHandle):
            handle = loss_fn

            def loss_fn(data: list[Any], logprobs: list[Any]) -> Any:
                return run_loss_handle(handle, data, logprobs)

        _check_data_list(data)
        msg = custom_loss_message(
            list(data),
            loss_fn,
            self._chunks,
            regularizers=regularizers,
            track_grad_norms=track_grad_norms,
        )
        return self._tell(msg, "forward_backward_custom")

    forward_backward_custom_async = async_twin(forward_backward_custom)

    # ------------------------------------------------------------------ optimizer
    def optim_step(
        self, optim_params: Any = None, *, adam_params: types.AdamParams | None = None
    ) -> APIFuture[types.OptimStepResponse]:
        if optim_params is not None and adam_params is not None:
            raise ValueError("Specify optim_params or legacy adam_params, not both")
        params = optim_params if optim_params is not None else adam_params
        if not isinstance(params, (types.AdamParams, types.DimuonParams)):
            raise TypeError("Expected AdamParams or OptimParamsBase")
        return self._tell(OptimStep(params), "optim_step")

    optim_step_async = async_twin(optim_step)

    # ------------------------------------------------------------------ weights
    def save_state(
        self,
        name: str,
        ttl_seconds: int | None = None,
        overwrite: bool = False,
        user_metadata: dict[str, str] | None = None,
    ) -> APIFuture[types.SaveWeightsResponse]:
        _check_checkpoint_name(name)
        return self._tell(
            SaveState(name, ttl_seconds, bool(overwrite), user_metadata), "save_state"
        )

    save_state_async = async_twin(save_state)

    def _load(
        self, path: str, optimizer: bool, token: str | None, method: str
    ) -> APIFuture[types.LoadWeightsResponse]:
        # A path the server rejects would break this client's request sequence (the seq id
        # is already taken), so a malformed one is refused here, before a token is reserved.
        parse_tinker_path(path)
        return self._tell(LoadState(path, optimizer, token), method)

    def load_state(
        self, path: str, weights_access_token: str | None = None
    ) -> APIFuture[types.LoadWeightsResponse]:
        """Deprecated in 0.38, which will drop it: create a new client from the checkpoint
        (``ServiceClient.create_training_client_from_state*``) instead."""
        _load_deprecated()
        return self._load(path, False, weights_access_token, "load_state")

    load_state_async = async_twin(load_state)

    def load_state_with_optimizer(
        self, path: str, weights_access_token: str | None = None
    ) -> APIFuture[types.LoadWeightsResponse]:
        """Deprecated in 0.38, as ``load_state``."""
        _load_deprecated()
        return self._load(path, True, weights_access_token, "load_state_with_optimizer")

    load_state_with_optimizer_async = async_twin(load_state_with_optimizer)

    def save_weights_for_sampler(
        self, name: str, ttl_seconds: int | None = None, user_metadata: dict[str, str] | None = None
    ) -> APIFuture[types.SaveWeightsForSamplerResponse]:
        _check_checkpoint_name(name)
        return self._tell(
            SaveWeightsForSampler(name, ttl_seconds, user_metadata), "save_weights_for_sampler"
        )

    save_weights_for_sampler_async = async_twin(save_weights_for_sampler)

    def save_weights_external(
        self,
        name: str,
        ttl_seconds: int | None = None,
        age_encryption_recipients: list[str] | None = None,
    ) -> APIFuture[types.SaveWeightsExternalResponse]:
        return self._tell(
            SaveWeightsExternal(name, ttl_seconds, age_encryption_recipients),
            "save_weights_external",
        )

    save_weights_external_async = async_twin(save_weights_external)

    # ------------------------------------------------------------------ info
    def get_info(self) -> types.GetInfoResponse:
        return self._handle.info

    get_info_async = async_twin(get_info)

    def get_tokenizer(self) -> Any:
        """The tokenizer of get_info's tokenizer_id, else of the model name (0.38's rules, one
        load per process: ``tinker_actors.tokenizers``); a local directory loads offline."""
        from ..tokenizers import get_tokenizer

        md = self._handle.info.model_data
        name = md.model_name or md.tokenizer_id
        if name is None:
            raise ValueError("the server did not report a tokenizer for this model")
        return get_tokenizer(name, md.tokenizer_id)

    @property
    def _tokenizer_id(self) -> str | None:
        return self._handle.info.model_data.tokenizer_id

    # ------------------------------------------------------------------ sampling
    def _sampling_client_future(self, coro: Any, method: str) -> BackcompatSamplingClientFuture:
        from .backcompat import BackcompatSamplingClientFuture

        with sdk_method_scope(f"TrainingClient.{method}"):
            return BackcompatSamplingClientFuture(self._runtime.submit(coro), self._runtime)

    def create_sampling_client(
        self,
        model_path: str,
        retry_config: RetryConfig | None = None,
        record_stability_info: bool = False,
    ) -> BackcompatSamplingClientFuture:
        from .sampling import SamplingClient

        session = self._handle.session
        return self._sampling_client_future(
            SamplingClient._create(
                session,
                sampling_session_id=None,
                base_model=None,
                model_path=model_path,
                retry_config=retry_config,
                record_stability_info=record_stability_info,
                tokenizer_id=self._tokenizer_id,
            ),
            "create_sampling_client",
        )

    create_sampling_client_async = awaited_twin(create_sampling_client)

    def save_weights_and_get_sampling_client(
        self,
        name: str | None = None,
        retry_config: RetryConfig | None = None,
        record_stability_info: bool = False,
        kind: types.SamplingClientKind = "snapshot",
    ) -> BackcompatSamplingClientFuture:
        from .sampling import SamplingClient

        if name is not None:
            warnings.warn(
                "The 'name' parameter of save_weights_and_get_sampling_client() is deprecated "
                "and has no effect: checkpoints are always ephemeral.",
                DeprecationWarning,
                stacklevel=2,
            )
        fut = self._tell(
            SaveWeightsForSampler(None, kind=kind), "save_weights_and_get_sampling_client"
        )
        session = self._handle.session
        base_model = self._handle.info.model_data.model_name
        tokenizer_id = self._tokenizer_id

        async def create() -> SamplingClient:
            sid = await fut.result_async()
            return await SamplingClient._create(
                session,
                sampling_session_id=sid,
                base_model=base_model,
                model_path=None,
                retry_config=retry_config,
                record_stability_info=record_stability_info,
                tokenizer_id=tokenizer_id,
            )

        return self._sampling_client_future(create(), "save_weights_and_get_sampling_client")

    save_weights_and_get_sampling_client_async = awaited_twin(save_weights_and_get_sampling_client)

    def get_telemetry(self) -> Any:
        return self._handle.session.telemetry


def load_tokenizer(name: str) -> Any:
    """The tokenizer of ``name`` by the official rules (``tinker_actors.tokenizers``)."""
    from ..tokenizers import get_tokenizer

    return get_tokenizer(name)


def _load_deprecated() -> None:
    warnings.warn(
        "TrainingClient.load_state*() is deprecated, as in tinker 0.38, and future versions "
        "drop it: create a new TrainingClient from the checkpoint with "
        "ServiceClient.create_training_client_from_state() or "
        "create_training_client_from_state_with_optimizer() instead",
        FutureWarning,
        stacklevel=3,
    )


def _check_data_list(data: Any) -> None:
    if isinstance(data, types.Datum):
        raise InvalidInputError(
            "data must be a list of Datum, got a single Datum; wrap it: [datum]"
        )
    if isinstance(data, str | bytes | dict) or not hasattr(data, "__iter__"):
        raise InvalidInputError(f"data must be a list of Datum, got {type(data).__name__}")


def _check_checkpoint_name(name: Any) -> None:
    """Names that can never form a valid ``tinker://run/kind/name`` path are refused at call
    time: the server's 400 would come after the seq id was taken and break the sequence."""
    if name is None:
        return
    if not isinstance(name, str):
        raise InvalidInputError(f"checkpoint name must be a string, got {type(name).__name__}")
    if "/" in name or name in (".", "..") or "\x00" in name:
        raise InvalidInputError(
            f"invalid checkpoint name {name!r}: it must not contain '/' (it becomes the last "
            "part of a tinker://<run>/<kind>/<name> path) or be '.' / '..'"
        )
