"""SamplingClient: the official ``tinker.SamplingClient`` surface over one SamplingActor.

The façade only validates arguments and hands a frozen ``SampleCall`` to the actor, which
runs it as one task on the runtime loop; everything about admission, retries and
cancellation lives in ``actors/sampling.py``. Pickling and ``get_sampler_handle`` carry the
sampler's identity and the negotiated config, never credentials: the receiving process
authenticates with its own environment.
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
import time
import uuid
import warnings
import weakref
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from .. import errors, types
from ..actors.actor import Actor
from ..actors.admission import estimate_model_input_bytes
from ..actors.sampling import SampleCall, SamplingActor
from ..actors.session import Session
from ..actors.supervisor import ChildSpec
from ..config import Restart, RetryConfig
from ..errors import InvalidInputError
from ..futures import APIFuture, QueueState, _default_reason
from ..runtime import get_runtime
from ..telemetry import get_logger
from .twins import async_twin, awaited_twin

__all__ = ["SamplingClient"]

log = get_logger(__name__)

QUEUE_STATE_LOG_INTERVAL = 60.0
_client_ids = itertools.count(1)


def _prompt_logprobs(response: types.SampleResponse) -> list[float | None]:
    return response.prompt_logprobs  # type: ignore[return-value]


def _identity(response: types.SampleResponse) -> types.SampleResponse:
    return response


class _WeakObserver:
    """Queue-state observer that does not keep the client alive (the actor outlives it)."""

    __slots__ = ("_ref",)

    def __init__(self, client: SamplingClient) -> None:
        self._ref = weakref.ref(client)

    def on_queue_state_change(
        self, queue_state: QueueState, queue_state_reason: str | None
    ) -> None:
        client = self._ref()
        if client is not None:
            client.on_queue_state_change(queue_state, queue_state_reason)


class SamplingClient:
    """Generates tokens and scores prompts on one sampler (base model or saved weights).

    Same methods, arguments, defaults and return types as ``tinker.SamplingClient`` 0.38.
    ``sample`` returns an ``APIFuture`` at once; thousands may be in flight on one client.
    Picklable: the copy reconnects with the receiving process's credentials.
    """

    def __init__(
        self,
        session: Session,
        *,
        sampling_session_id: str,
        base_model: str,
        retry_config: RetryConfig | None = None,
        record_stability_info: bool = False,
        shadow: bool = False,
        tokenizer_id: str | None = None,
    ) -> None:
        self._session = session
        self._tokenizer_id = tokenizer_id
        self._sampling_session_id = sampling_session_id
        self._base_model = base_model
        self._record_stability_info = record_stability_info
        self._retry_config = retry_config
        self._last_queue_state_logged = float("-inf")
        self._clock = time.monotonic
        if shadow:
            cloned: int | None = (
                None
                if session.client_config.sample_join_sampling_session
                else int(uuid.uuid4()) % 1_000_000_000 + 1
            )
        else:
            cloned = 0
        self._box: list[SamplingActor] = [
            SamplingActor(
                session,
                sampling_session_id=sampling_session_id,
                retry_config=retry_config,
                cloned_sampler_id=cloned,
                record_stability_info=record_stability_info,
                observer=_WeakObserver(self),
                name=f"sampler:{sampling_session_id}:{next(_client_ids)}",
            )
        ]
        # The first call of an unpickled copy starts its actor, as does a call after the
        # actor stopped while idle (SamplingActor.idle_after).
        self._activating = False
        self._actor.book.activate = self._activate_soon

    @property
    def _actor(self) -> SamplingActor:
        return self._box[0]

    # ------------------------------------------------------------------ construction
    @classmethod
    async def _create(
        cls,
        session: Session,
        *,
        sampling_session_id: str | None,
        base_model: str | None,
        model_path: str | None,
        retry_config: RetryConfig | None,
        record_stability_info: bool = False,
        tokenizer_id: str | None = None,
    ) -> SamplingClient:
        """Builds a started client on the session's loop (the core's construction seam).

        ``tokenizer_id`` (a training model's get_info) saves a request; otherwise a built-in
        ``tinker-actors/*`` model learns its local tokenizer directory from the server.
        """
        await session.ensure_started()
        transport = session.transport
        assert transport is not None
        if sampling_session_id is None:
            if model_path is None and base_model is None:
                raise ValueError("Either model_path or base_model must be provided")
            req = types.CreateSamplingSessionRequest(
                session_id=session.require_session_id(),
                sampling_session_seq_id=session.next_sampling_session_seq_id(),
                base_model=base_model,
                model_path=model_path,
            )
            created = await transport.call("create_sampling_session", req)
            sampling_session_id = created.sampling_session_id
        if base_model is None or (tokenizer_id is None and _is_builtin(base_model)):
            info = await _fetch_sampler(session, sampling_session_id)
            base_model = base_model or info.base_model
            tokenizer_id = tokenizer_id or info.tokenizer_id
        client = cls(
            session,
            sampling_session_id=sampling_session_id,
            base_model=base_model,
            retry_config=retry_config,
            record_stability_info=record_stability_info,
            tokenizer_id=tokenizer_id,
        )
        await client._start_supervised()
        return client

    @staticmethod
    def create(
        session: Any,
        *,
        model_path: str | None = None,
        base_model: str | None = None,
        sampling_session_id: str | None = None,
        retry_config: RetryConfig | None = None,
        record_stability_info: bool = False,
    ) -> APIFuture[SamplingClient]:
        """Creates a client on ``session`` (a ServiceClient or its session); returns a future."""
        session = getattr(session, "_session", session)
        coro = SamplingClient._create(
            session,
            sampling_session_id=sampling_session_id,
            base_model=base_model,
            model_path=model_path,
            retry_config=retry_config,
            record_stability_info=record_stability_info,
        )
        return APIFuture.from_coro(session.runtime, coro)

    def _activate_soon(self) -> None:
        """(On the loop) starts an actor for this sampler unless one runs or is starting."""
        if self._actor.book.active or self._activating:
            return
        self._activating = True
        self._session.runtime.spawn(self._activate())

    async def _activate(self) -> None:
        try:
            await self._start_supervised()
        except Exception as exc:  # every call waiting in the mailbox was failed with it
            log.warning("could not start the sampling actor", error=repr(exc))

    async def _start_supervised(self) -> None:
        """Starts an actor on the sampler's mailbox under the session's supervisor.

        Runs at creation, and again after the actor stopped while idle (or, for an
        unpickled copy, at its first call). Calls made meanwhile wait in the mailbox.
        """
        session = self._session
        box = self._box
        book = box[0].book
        if book.active:
            return
        self._activating = True
        handle_session = session.for_handles
        try:
            if session.closed or (session.supervisor.failed is not None):
                raise errors.TinkerError("SamplingClient was closed")
            if handle_session:
                session.add_handle_client()
            await session.ensure_transport()

            async def start(previous: Any) -> SamplingActor:
                # Captures the box and plain values, never the client.
                prev = previous or box[0]
                if prev.state.value == "new":  # the client's first actor, never started
                    new = prev
                else:
                    new = SamplingActor(
                        session,
                        sampling_session_id=prev.sampling_session_id,
                        retry_config=prev.user_retry_config,
                        record_stability_info=prev.record_stability_info,
                        observer=prev.observer,
                        previous=prev,
                        name=prev.name,
                    )
                await new.start()
                box[0] = new
                if handle_session:
                    new.link(lambda actor, reason: _released(session, reason, actor))
                return new

            await session.supervisor.start_child(
                ChildSpec(
                    name=box[0].name,
                    start=start,
                    restart=Restart.TRANSIENT,
                    on_give_up=lambda exc: box[0].fail_all(exc),
                )
            )
        except BaseException as exc:
            if handle_session and not book.active:
                session.release_handle_client()
            box[0].fail_all(exc if isinstance(exc, Exception) else errors.TinkerError(repr(exc)))
            raise
        finally:
            self._activating = False

    # ------------------------------------------------------------------ sampling
    def sample(
        self,
        prompt: types.ModelInput,
        num_samples: int,
        sampling_params: types.SamplingParams,
        include_prompt_logprobs: bool = False,
        topk_prompt_logprobs: int = 0,
        topk_sample_logprobs: int = 0,
        target_prompt_logprobs: types.TensorData | None = None,
        prompt_alt_tokens_k: int = 0,
        prompt_logprobs_last_n: int | None = None,
    ) -> APIFuture[types.SampleResponse]:
        """Samples ``num_samples`` continuations of ``prompt``; returns an awaitable future."""
        if not isinstance(prompt, types.ModelInput):
            raise InvalidInputError(
                f"prompt must be a tinker.types.ModelInput, got {type(prompt).__name__}; "
                "use ModelInput.from_ints(tokens) for token ids"
            )
        if target_prompt_logprobs is not None:
            _check_target_prompt_logprobs(target_prompt_logprobs)
        if prompt_alt_tokens_k < 0:
            raise ValueError(f"prompt_alt_tokens_k must be 0 or greater, got {prompt_alt_tokens_k}")
        _check_last_n(prompt_logprobs_last_n, include_prompt_logprobs)
        call = SampleCall(
            prompt=prompt,
            num_samples=num_samples,
            sampling_params=sampling_params,
            include_prompt_logprobs=include_prompt_logprobs,
            topk_prompt_logprobs=topk_prompt_logprobs,
            topk_sample_logprobs=topk_sample_logprobs,
            target_prompt_logprobs=target_prompt_logprobs,
            prompt_alt_tokens_k=prompt_alt_tokens_k,
            prompt_logprobs_last_n=prompt_logprobs_last_n,
            sdk_method="SamplingClient.sample",
            estimated_bytes=estimate_model_input_bytes(prompt),
        )
        return self._actor.submit(call, _identity)

    sample_async = awaited_twin(sample)

    def compute_logprobs(
        self, prompt: types.ModelInput, prompt_logprobs_last_n: int | None = None
    ) -> APIFuture[list[float | None]]:
        """Logprob of every prompt token (None where not computed, always position 0)."""
        _check_last_n(prompt_logprobs_last_n, True)
        # The official recipe: one sample of one token, with the prompt's logprobs.
        call = SampleCall(
            prompt=prompt,
            num_samples=1,
            sampling_params=types.SamplingParams(max_tokens=1),
            include_prompt_logprobs=True,
            prompt_logprobs_last_n=prompt_logprobs_last_n,
            sdk_method="SamplingClient.compute_logprobs",
            estimated_bytes=estimate_model_input_bytes(prompt),
        )
        return self._actor.submit(call, _prompt_logprobs)

    compute_logprobs_async = awaited_twin(compute_logprobs)

    def sample_stream(
        self,
        prompt: types.ModelInput,
        sampling_params: types.SamplingParams,
        num_samples: int = 1,
    ) -> AsyncIterator[Any]:
        """Tinkex's streamed sampling (beyond the official SDK): an async iterator of
        ``SampleStreamChunk`` (token, token_id, index, logprob, finish_reason) as the server
        decodes them. See ``tinker_actors.streaming``."""
        from ..streaming import sample_stream

        return sample_stream(
            self._session, self._sampling_session_id, prompt, sampling_params, num_samples
        )

    # ------------------------------------------------------------------ metadata
    def get_tokenizer(self) -> Any:
        """The tokenizer of this sampler's base model.

        A tokenizer directory reported by the server loads from local files only; other
        models load by name with ``AutoTokenizer``, as the official SDK does.
        """
        from ..tokenizers import get_tokenizer

        if self._tokenizer_id is not None:
            return get_tokenizer(self._base_model or self._tokenizer_id, self._tokenizer_id)
        if _is_builtin(self._base_model):
            raise RuntimeError(
                f"the server did not report a tokenizer for {self._base_model!r} "
                "(GET /samplers/{id} has no tokenizer_id)"
            )
        return get_tokenizer(self._base_model)

    def get_base_model(self) -> str:
        """The base model name; known since creation, so no request."""
        return self._base_model

    get_base_model_async = async_twin(get_base_model)

    def get_telemetry(self) -> Any:
        return self._session.telemetry

    def _get_sampler_submit(self) -> APIFuture[types.GetSamplerResponse]:
        """The server's record of this sampler (including the model_path it came from)."""
        return APIFuture.from_coro(
            self._session.runtime, _fetch_sampler(self._session, self._sampling_session_id)
        )

    # ------------------------------------------------------------------ queue state
    def on_queue_state_change(
        self, queue_state: QueueState, queue_state_reason: str | None
    ) -> None:
        """Warns at once when sampling pauses, at most once a minute."""
        if queue_state == QueueState.ACTIVE:
            return
        now = self._clock()
        if now - self._last_queue_state_logged < QUEUE_STATE_LOG_INTERVAL:
            return
        self._last_queue_state_logged = now
        reason = queue_state_reason or _default_reason(queue_state, training=False)
        log.warning(f"Sampling is paused for sampler {self._sampling_session_id}. Reason: {reason}")

    # ------------------------------------------------------------------ multi-process
    def _pickle_state(self, *, with_credentials: bool) -> dict[str, Any]:
        s = self._session
        settings = s.settings
        return {
            "session_id": s.session_id or "",
            "sampling_session_id": self._sampling_session_id,
            "holder": {
                "base_url": settings.base_url or "",
                "default_headers_overrides": dict(settings.default_headers),
                "client_config": msgspec.to_builtins(s.client_config),
                "client_dynamic_config": msgspec.to_builtins(s.dynamic_config),
                "api_key": settings.api_key if with_credentials else None,
            },
            "base_model": self._base_model,
            "record_stability_info": self._record_stability_info,
            "tokenizer_id": self._tokenizer_id,
        }

    def __reduce__(self) -> tuple[Any, tuple[dict[str, Any]]]:
        # No credentials travel: the receiving process resolves its own (TINKER_API_KEY).
        return (_unpickle_sampling_client, (self._pickle_state(with_credentials=False),))

    def get_sampler_handle(self) -> str:
        """A credential-free string naming this sampler, for other processes."""
        payload = json.dumps(self._pickle_state(with_credentials=False), separators=(",", ":"))
        return base64.urlsafe_b64encode(payload.encode()).decode()

    @staticmethod
    def from_sampler_handle(handle: str, *, api_key: str | None = None) -> SamplingClient:
        """A new client for the sampler behind ``handle``, with this process's credentials."""
        state = json.loads(base64.urlsafe_b64decode(handle))
        state["holder"]["api_key"] = api_key
        return _unpickle_sampling_client(state)

    def __repr__(self) -> str:
        return f"<SamplingClient sampler={self._sampling_session_id!r} base_model={self._base_model!r}>"


# ============================================================================ helpers
def _deprecated(name: str, instead: str) -> None:
    warnings.warn(
        f"DEPRECATED: SamplingClient.{name}() is deprecated and will be removed in a future "
        f"tinker SDK version. Use `{instead}` instead.",
        FutureWarning,
        stacklevel=3,
    )


def _check_target_prompt_logprobs(target: types.TensorData) -> None:
    if target.dtype != "int64":
        raise ValueError(
            f"target_prompt_logprobs must be an int64 tensor of token ids, got {target.dtype}"
        )
    if target.shape is None or len(target.shape) != 2:
        raise ValueError(
            f"target_prompt_logprobs must be 2-D, [len(prompt) - 1, K], got shape {target.shape}"
        )


def _check_last_n(last_n: int | None, include_prompt_logprobs: bool) -> None:
    if last_n is None:
        return
    if last_n < 1:
        raise ValueError(f"prompt_logprobs_last_n must be 1 or greater, got {last_n}")
    if not include_prompt_logprobs:
        raise ValueError(
            "prompt_logprobs_last_n applies to prompt logprobs; set include_prompt_logprobs"
        )


async def _fetch_sampler(session: Session, sampling_session_id: str) -> types.GetSamplerResponse:
    transport = await session.ensure_transport()
    info: types.GetSamplerResponse = await transport.call(
        "get_sampler", path_params={"sampling_session_id": sampling_session_id}
    )
    return info


def _released(session: Session, reason: BaseException | None, actor: Actor) -> None:
    """An actor of a handle session stopped for good or while idle: one user fewer (a crash
    is followed by a restart, which keeps using the session)."""
    if reason is None:
        session.release_handle_client()


def _is_builtin(base_model: str) -> bool:
    return base_model.startswith("tinker-actors/")


# Shadow sessions (unpickled clients) are shared per (session, config) in a process.
_shadow_lock = threading.Lock()
_shadows: weakref.WeakValueDictionary[str, Session] = weakref.WeakValueDictionary()


def _shadow_session(session_id: str, holder: dict[str, Any]) -> Session:
    key = json.dumps([session_id, holder], sort_keys=True)
    with _shadow_lock:
        session = _shadows.get(key)
        if session is not None and not session.closed:
            return session
        session = Session.for_handle(
            base_url=holder.get("base_url") or None,
            session_id=session_id or None,
            client_config=msgspec.convert(
                holder.get("client_config") or {}, types.ClientConfigResponse
            ),
            dynamic_config=msgspec.convert(
                holder.get("client_dynamic_config") or {}, types.ClientDynamicConfigResponse
            ),
            api_key=holder.get("api_key"),
            default_headers=holder.get("default_headers_overrides") or None,
            runtime=get_runtime(),
        )
        _shadows[key] = session
        return session


def _unpickle_sampling_client(state: dict[str, Any]) -> SamplingClient:
    session = _shadow_session(state.get("session_id", ""), state["holder"])
    client = SamplingClient(
        session,
        sampling_session_id=state["sampling_session_id"],
        base_model=state["base_model"],
        record_stability_info=bool(state.get("record_stability_info", False)),
        shadow=True,
        tokenizer_id=state.get("tokenizer_id"),
    )
    # Keep the shared session alive as long as a client uses it.
    client.__dict__["_shadow_session"] = session
    return client
