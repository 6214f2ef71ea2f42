"""The training actor: one per TrainingClient; strict seq_id order, chunking, recovery.

A TrainingClient call becomes one typed message (``ForwardBackward``, ``OptimStep``,
``SaveState``, ...) in a ``Call`` envelope, put in the actor's mailbox at call time from any
thread. Mailbox order is seq-id order: the actor takes every queued call at once and gives
each its order tokens in that order (a forward_backward takes one per chunk, a custom loss
two per chunk). It sends the op holding token k only after every op < k was acknowledged by
the server; the chunks of one forward_backward go out together, first chunk last. Results are
polled in tasks of the actor's group, so many ops are queued server-side at once.

A custom loss (``ForwardBackwardCustom``) is orchestrated here too: its forward goes out,
the loss and its gradient are computed off the loop when the forward's result arrives, and
the backward comes back to the mailbox as a ``Backward`` message holding the tokens reserved
for it (the pipe-to-self pattern), so it survives a restart of the actor.

What must survive a restart lives in ``TrainingState`` (the mailbox included); the actor alone
reads and writes it, on the runtime loop. The facade holds a ``TrainingHandle``: it can put
messages and read the model id and info, nothing else.

Failure semantics: a caller's cancel drops only the result. Submissions retry 408/409/429,
5xx and connection errors for a time budget (``transport.TRAINING``, 10 min). A submission
that still fails breaks the sequence. Without a RecoveryPolicy the op's future fails and so
does every later call (``SequenceBrokenError``), never a hang. Under a RecoveryPolicy the
actor crashes, the supervisor restarts it, and the new actor rebuilds the model from the last
checkpoint (a fresh model if none), replays the ops issued after it and carries on.

Recovery guarantees (each op records what its caller was told in ``Op.outcome``):
- an op whose failure was reported is never sent again, so never applied afterwards;
- every op whose success was reported is replayed onto the rebuilt model, and a replay that
  fails crashes the actor again (the supervisor's restart intensity bounds this);
- a checkpoint becomes the recovery base only once every op before it is answered, so
  recovery never needs the result of an op it can no longer replay;
- an op lost with the server (its submit failed server-side: 410, 5xx, 429 or connection
  errors past the budget; or its result was lost: 410 or a "server" category failure) is
  carried to the rebuilt model once, then reported;
- ``next_to_send`` and ``pending`` agree across restarts: the op at the pointer is either in
  ``pending``, still to come back as a ``Backward``, or was failed and the pointer moved past
  it, so a restarted actor never waits on an entry that cannot come; give-up (``fail_all``)
  answers every future still owed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from .. import errors, events, types
from ..config import RecoveryPolicy
from ..errors import SequenceBrokenError
from ..futures import QueueStateLogger, poll_future, reject, resolve
from ..manifest import FORWARD_REQUEST_TYPE_HEADER, ROUTES, Route
from ..telemetry import get_logger
from ..transport import TRAINING, RetryPolicy
from ..types import fwdbwd as _fb
from .actor import Actor, Mailbox

if TYPE_CHECKING:
    from ..runtime import Runtime
    from ..transport import Transport
    from .session import Session

__all__ = [
    "Backward",
    "Call",
    "ForwardBackward",
    "ForwardBackwardCustom",
    "LoadState",
    "Op",
    "OptimStep",
    "SaveState",
    "SaveWeightsExternal",
    "SaveWeightsForSampler",
    "SequenceBrokenError",
    "TrainingActor",
    "TrainingHandle",
    "TrainingMessage",
    "TrainingState",
]

log = get_logger(__name__)

Chunks: TypeAlias = tuple[tuple[types.Datum, ...], ...]


# ============================================================================ messages
@dataclass(frozen=True, slots=True)
class ForwardBackward:
    """``forward`` / ``forward_backward``: one seq id per chunk."""

    chunks: Chunks
    loss_fn: str
    loss_fn_config: Mapping[str, float | str] | None
    forward_only: bool


@dataclass(frozen=True, slots=True)
class OptimStep:
    params: types.AdamParams | types.DimuonParams


@dataclass(frozen=True, slots=True)
class SaveState:
    name: str
    ttl_seconds: int | None = None
    overwrite: bool = False
    user_metadata: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class SaveWeightsForSampler:
    """A named sampler checkpoint, or (``name`` None) an ephemeral one for a sampling client."""

    name: str | None
    ttl_seconds: int | None = None
    user_metadata: dict[str, str] | None = None
    kind: types.SamplingClientKind = "snapshot"


@dataclass(frozen=True, slots=True)
class SaveWeightsExternal:
    name: str
    ttl_seconds: int | None = None
    age_encryption_recipients: list[str] | None = None


@dataclass(frozen=True, slots=True)
class LoadState:
    path: str
    optimizer: bool
    weights_access_token: str | None = None


@dataclass(frozen=True, slots=True)
class ForwardBackwardCustom:
    """A client-side loss: a forward (``forward``), then ``loss_fn`` here, then a backward
    with ``weights = -dLoss/dlogprobs`` on the same chunks (protocol.md 6.1)."""

    data: tuple[types.Datum, ...]
    forward: ForwardBackward
    loss_fn: Callable[..., Any]


@dataclass(frozen=True, slots=True)
class Backward:
    """A custom loss's backward, back from the loss computation with its reserved tokens.

    ``error`` set: the forward or the loss failed; the tokens are filled (with a zero-weight
    backward after a loss error, so the client keeps working; with a sequence break after a
    forward failure) and ``reply`` gets the error.
    """

    tokens: range
    chunks: Chunks
    reply: concurrent.futures.Future[Any]
    metrics: dict[str, float] = field(default_factory=dict)
    loss_sum: float = 0.0
    error: BaseException | None = None
    forward_failed: bool = False


TrainingMessage: TypeAlias = (
    ForwardBackward
    | OptimStep
    | SaveState
    | SaveWeightsForSampler
    | SaveWeightsExternal
    | LoadState
    | ForwardBackwardCustom
)


@dataclass(frozen=True, slots=True)
class Call:
    """The envelope of one user call: the message, where its answer goes, who asked."""

    msg: TrainingMessage
    reply: concurrent.futures.Future[Any]
    sdk_method: str | None = None
    start_time: float = field(default_factory=time.time)


# ============================================================================ ops
@dataclass(eq=False)
class Op:
    """The actor's record of one request: its message, tokens, wire ids and outcome."""

    msg: TrainingMessage | _Broken
    tokens: range
    cf: concurrent.futures.Future[Any]
    sdk_method: str | None = None
    start_time: float = field(default_factory=time.time)
    wire_ids: list[int] | None = None  # the seq ids it was (or is being) sent with
    wire_model: str | None = None
    # what the caller was told: None (nothing yet), "ok" or "failed"; a failed op is never
    # sent again, an ok one is replayed by recovery (set even when the caller cancelled)
    outcome: Literal["ok", "failed"] | None = None
    carried: int = 0  # times it was carried to a rebuilt model after being lost with a server

    @property
    def first(self) -> int:
        return self.tokens.start

    @property
    def mutates(self) -> bool:
        match self.msg:
            case ForwardBackward(forward_only=forward_only):
                return not forward_only
            case OptimStep() | LoadState() | SaveState():
                return True
        return False


@dataclass(frozen=True, slots=True)
class _Broken:
    """Fills tokens that can never carry their request (a custom loss whose forward failed)."""

    error: BaseException


class TrainingState:
    """What a TrainingClient's actor keeps across its restarts; read and written by the actor
    only (on the runtime loop), except the mailbox, which callers put into."""

    def __init__(
        self,
        session: Session,
        *,
        model_id: str,
        info: types.GetInfoResponse,
        create: dict[str, Any],
        recovery: RecoveryPolicy | None = None,
        checkpoint: tuple[str, bool] | None = None,
    ):
        self.session = session
        self.model_id = model_id
        self.info = info
        self.create = create  # how to rebuild the model from scratch (create_model args)
        self.recovery = recovery
        self.last_checkpoint = checkpoint  # (tinker path, has optimizer state)
        self.mailbox: Mailbox[Call | Backward] = Mailbox(
            session.runtime.call_soon, name=f"training-{model_id}"
        )
        self.next_token = 1  # the next order token to give out, in mailbox order
        self.next_to_send = 1
        self.wire_next = 1  # next wire seq_id for the current model
        self.pending: dict[int, Op] = {}
        self.inflight: dict[int, tuple[Op, list[str], str]] = {}
        self.replay_log: list[Op] = []
        # the last op dropped from a full replay_log, and the save_state op of the last
        # checkpoint: recovery is exact only while nothing after the checkpoint was dropped
        self.replay_dropped = 0
        self.checkpoint_token = 0
        # save_state results not yet usable for recovery: an earlier op still awaits its
        # result, and a checkpoint is only used once every op before it has an outcome
        self.saved: list[tuple[Op, str]] = []
        self.dead: BaseException | None = None
        self.queue_logger = QueueStateLogger(model_id, "Training")
        # how submissions are retried; the time budget is what a server outage may last
        self.retry: RetryPolicy = TRAINING
        self.actor: TrainingActor | None = None
        # set by a RecoveryExecutor before it restarts the actor (actors/recovery.py)
        self.recovery_request: tuple[RecoveryPolicy, concurrent.futures.Future[str]] | None = None
        self.server_model_ids: list[str] = [model_id]

    def take_tokens(self, count: int) -> range:
        tokens = range(self.next_token, self.next_token + count)
        self.next_token += count
        return tokens

    # -------------------------------------------------------------- give up
    def break_sequence(self, op: Op, cause: BaseException) -> None:
        """A submit failed without recovery: this client can send nothing more, loudly."""
        err = SequenceBrokenError(
            f"TrainingClient for model {self.model_id} is broken: the request holding seq ids "
            f"{list(op.tokens)} could not be submitted ({describe_failure(cause)}), so later "
            "requests cannot run in order. Create a new TrainingClient (or restore one from a "
            "checkpoint with ServiceClient.create_training_client_from_state_with_optimizer); "
            "pass recovery_policy=RecoveryPolicy() to recover automatically."
        )
        err.__cause__ = cause
        self._die(err)
        for pending in list(self.pending.values()):
            tell_failed(pending, err)
        self.pending.clear()
        log.error("training sequence broken", model_id=self.model_id, error=repr(cause))

    def commit_checkpoints(self) -> None:
        """Makes saved checkpoints the recovery base once every op before them is answered,
        so recovery never needs the result of an op it can no longer replay."""
        while self.saved:
            op, path = self.saved[0]
            if any(token < op.first for token in self.inflight):
                return
            self.saved.pop(0)
            self.last_checkpoint = (path, True)
            self.replay_log = [o for o in self.replay_log if o.first > op.first]
            self.checkpoint_token = max(self.checkpoint_token, op.first)

    def _die(self, exc: BaseException) -> None:
        """From now on every call is failed as it is taken; the pointer moves past every
        token given out (a custom loss's backward, still to come, is failed on arrival)."""
        self.dead = exc
        self.next_to_send = self.next_token

    def fail_all(self, exc: BaseException) -> None:
        """Answers every future still owed (the supervisor gave up on this client) and
        closes the mailbox: later calls fail at once."""
        self._die(exc)
        owed = [*self.pending.values(), *(op for op, _, _ in self.inflight.values())]
        owed += self.replay_log
        for op in owed:
            if op.outcome is None:
                tell_failed(op, exc)
        self.pending.clear()
        self.inflight.clear()
        self.replay_log.clear()
        for item in self.mailbox.close(exc):
            reject(item.reply, exc)


class TrainingHandle:
    """What a TrainingClient holds: the actor's address and read-only views of its model."""

    __slots__ = ("_state",)

    def __init__(self, state: TrainingState) -> None:
        self._state = state

    def tell(self, msg: TrainingMessage, sdk_method: str | None) -> concurrent.futures.Future[Any]:
        """Puts ``msg`` in the mailbox (any thread) and returns the future of its answer."""
        cf: concurrent.futures.Future[Any] = concurrent.futures.Future()
        st = self._state
        try:
            st.mailbox.put(Call(msg, cf, sdk_method))
        except errors.ActorDeadError as exc:
            reject(cf, st.dead or exc)
        return cf

    @property
    def model_id(self) -> str:
        return self._state.model_id

    @property
    def info(self) -> types.GetInfoResponse:
        return self._state.info

    @property
    def session(self) -> Session:
        return self._state.session

    @property
    def runtime(self) -> Runtime:
        return self._state.session.runtime


def tell_failed(op: Op, exc: BaseException) -> None:
    """Reports ``op`` failed; from now on it is never sent again."""
    op.outcome = "failed"
    reject(op.cf, exc)


def tell_ok(op: Op, result: Any) -> None:
    op.outcome = "ok"
    resolve(op.cf, result)


def describe_failure(exc: BaseException) -> str:
    """``exc`` with how long the transport retried it, when it did."""
    attempts = getattr(exc, "retry_attempts", None)
    elapsed = getattr(exc, "retry_elapsed", None)
    if attempts and attempts > 1 and elapsed is not None:
        return f"{exc!r}, still failing after {attempts} attempts over {elapsed:.0f} s"
    return repr(exc)


def lost_with_server(exc: BaseException) -> bool:
    """The server lost or could not take the request, through no fault of its content."""
    if isinstance(exc, (errors.APIConnectionError, errors.PromiseExpiredError)):
        return True
    if isinstance(exc, errors.RequestFailedError):
        return str(exc.category) == "server"
    if isinstance(exc, errors.APIStatusError):
        s = exc.status_code
        return s in (408, 409, 410, 429) or s >= 500
    return False


# ============================================================================ actor
class TrainingActor(Actor):
    def __init__(self, state: TrainingState, *, recovering: bool = False):
        super().__init__(name=f"training-{state.model_id}")
        self.ts = state
        self.recovering = recovering

    @property
    def session(self) -> Session:
        return self.ts.session

    # -------------------------------------------------------------- lifecycle
    async def on_start(self) -> None:
        self.ts.actor = self

    async def main(self) -> None:
        if self.recovering:
            await self._restarted()
        st = self.ts
        mailbox = st.mailbox
        while True:
            self._take(mailbox.take())
            op = st.pending.pop(st.next_to_send, None)
            if op is None:
                self._take(await mailbox.get())
                continue
            try:
                await self._send(op)
            except asyncio.CancelledError:
                # killed mid-send: the op goes back so a restarted actor can redo it
                st.pending[op.first] = op
                raise
            except Exception as exc:
                self._send_failed(op, exc)
                continue
            st.next_to_send = op.tokens.stop

    async def _restarted(self) -> None:
        """After a crash: recover (under a policy) or re-poll what the server accepted."""
        st = self.ts
        # A corrupted run (actors/recovery.py) brings its own policy and a waiter; its
        # reported ops are rolled back, not replayed (one of them corrupted the weights).
        request, st.recovery_request = st.recovery_request, None
        policy = request[0] if request is not None else st.recovery
        if request is not None:
            st.replay_log = [o for o in st.replay_log if o.outcome != "ok"]
        if policy is not None and policy.enabled:
            try:
                await self._recover(policy)
            except BaseException as exc:
                if request is not None:
                    reject(request[1], exc)
                raise  # a failed recovery is another crash
            if request is not None:
                resolve(request[1], st.model_id)
        else:
            # No recovery: keep the model; re-poll what the server already accepted and
            # fail what never got a seq id through (the sequence is broken).
            for token, (op, rids, rtype) in list(st.inflight.items()):
                self._spawn_poll(op, rids, rtype, token)

    # -------------------------------------------------------------- the mailbox
    def _take(self, items: Sequence[Call | Backward]) -> None:
        """Gives each call its tokens, in mailbox order, and files its ops by first token."""
        st = self.ts
        for item in items:
            if isinstance(item, Backward):
                self._backward_arrived(item)
                continue
            if st.dead is not None:
                reject(item.reply, st.dead)
                continue
            msg = item.msg
            match msg:
                case ForwardBackward(chunks=chunks):
                    self._file(Op(msg, st.take_tokens(len(chunks)), item.reply, item.sdk_method))
                case ForwardBackwardCustom():
                    self._custom(item, msg)
                case _:
                    self._file(Op(msg, st.take_tokens(1), item.reply, item.sdk_method))

    def _file(self, op: Op) -> None:
        self.ts.pending[op.first] = op

    def _custom(self, call: Call, msg: ForwardBackwardCustom) -> None:
        """Files the forward; the loss runs when its result arrives, off the actor."""
        st = self.ts
        n = len(msg.forward.chunks)
        tokens = st.take_tokens(2 * n)
        fwd_cf: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self._file(Op(msg.forward, tokens[:n], fwd_cf, call.sdk_method, call.start_time))
        # Not a task of this actor: the loss must outlive a restart, and its result comes
        # back through the mailbox, which does.
        st.session.runtime.spawn(_compute_backward(st.mailbox, msg, fwd_cf, tokens[n:], call.reply))

    def _backward_arrived(self, b: Backward) -> None:
        st = self.ts
        if b.forward_failed or st.dead is not None:
            # the forward failed: these tokens can never carry the backward
            cause = st.dead or SequenceBrokenError(f"custom loss forward failed: {b.error!r}")
            reject(b.reply, b.error or cause)
            if st.dead is None:
                self._file(Op(_Broken(cause), b.tokens, concurrent.futures.Future()))
            return
        bwd_cf: concurrent.futures.Future[Any] = concurrent.futures.Future()
        msg = ForwardBackward(b.chunks, "cross_entropy", None, forward_only=False)
        self._file(Op(msg, b.tokens, bwd_cf, "TrainingClient.forward_backward_custom"))
        bwd_cf.add_done_callback(lambda f: _finish_custom(f, b))

    def _send_failed(self, op: Op, exc: Exception) -> None:
        """A submit failed past its retries: carry it, or report it and move the pointer on.

        Raises (crashing the actor into recovery) when a RecoveryPolicy is set.
        """
        st = self.ts
        recovery = st.recovery is not None and st.recovery.enabled
        why = describe_failure(exc)
        broken = isinstance(op.msg, _Broken)
        if recovery and not broken and op.carried < 1 and lost_with_server(exc):
            # not the request's fault: the rebuilt model gets it (the pointer stays on it)
            op.carried += 1
            st.pending[op.first] = op
            raise SequenceBrokenError(
                f"request with seq ids {list(op.tokens)} could not be submitted ({why}); "
                "recovering and sending it again"
            ) from exc
        tell_failed(op, exc)
        st.next_to_send = op.tokens.stop  # never sent again: nothing may wait on it
        if recovery:
            # the server holds a gap at this op's wire seq id: rebuild the model
            raise SequenceBrokenError(
                f"request with seq ids {list(op.tokens)} failed ({why}); recovering"
            ) from exc
        # No recovery: the server would wait for this seq id forever, so every later
        # request fails at once (never a hang); results already owed still arrive.
        st.break_sequence(op, exc)

    # -------------------------------------------------------------- sending
    def _wire_ids(self, count: int) -> list[int]:
        st = self.ts
        ids = list(range(st.wire_next, st.wire_next + count))
        st.wire_next += count
        return ids

    async def _send(self, op: Op, *, replay: bool = False) -> None:
        st = self.ts
        msg = op.msg
        if isinstance(msg, _Broken):
            raise msg.error
        t = self.session.transport
        assert t is not None
        model_id = st.model_id
        # A resend after a restart (same model) reuses the op's wire ids: the server dedupes
        # retries of a seq id, while a new id would leave a gap it waits on forever.
        if replay or op.wire_ids is None or op.wire_model != model_id:
            op.wire_ids = self._wire_ids(len(op.tokens))
            op.wire_model = model_id
        seq = op.wire_ids
        if isinstance(msg, ForwardBackward):
            rids, rtype = await self._send_fwdbwd(t, op, msg, model_id, seq)
        else:
            route, body = self._build(msg, model_id, seq[0], replay=replay)
            fut = await t.call(
                route,
                body,
                retry=st.retry,
                sdk_method=op.sdk_method,
                log_context={"model_id": model_id},
            )
            rids, rtype = [fut.request_id], _request_type(route)
        st.inflight[op.first] = (op, rids, rtype)
        if st.recovery is not None and st.recovery.enabled and not replay:
            st.replay_log.append(op)
            if len(st.replay_log) > st.recovery.max_replay:
                dropped = st.replay_log.pop(0)
                if st.replay_dropped <= st.checkpoint_token:
                    log.warning(
                        "more requests since the last checkpoint than RecoveryPolicy.max_replay"
                        " keeps; until the next save_state a crash cannot be recovered",
                        model_id=model_id,
                        max_replay=st.recovery.max_replay,
                    )
                st.replay_dropped = max(st.replay_dropped, dropped.first)
        self._spawn_poll(op, rids, rtype, op.first)

    async def _send_fwdbwd(
        self, t: Transport, op: Op, msg: ForwardBackward, model_id: str, seq: list[int]
    ) -> tuple[list[str], str]:
        """POSTs every chunk (first chunk last) under the dispatch byte budget."""
        from .. import codec

        cfg = self.session.client_config
        chunks = msg.chunks
        bodies = [
            codec.encode_forward_backward_request(
                model_id=model_id,
                seq_id=sid,
                data=list(chunk),
                loss_fn=msg.loss_fn,
                loss_fn_config=dict(msg.loss_fn_config) if msg.loss_fn_config else None,
                forward_only=msg.forward_only,
            )
            for sid, chunk in zip(seq, chunks, strict=True)
        ]
        headers = None
        if cfg.proto_compress_fwdbwd:
            bodies = [codec.zstd_compress(b) for b in bodies]
            headers = {"Content-Encoding": "zstd"}
        nbytes = sum(_fb.estimate_datum_bytes(d) for chunk in chunks for d in chunk)
        budget = self.session.fwdbwd_bytes
        if budget is not None:
            await budget.acquire(nbytes)
        try:

            async def post(body: bytes) -> str:
                fut = await t.call(
                    _FWDBWD,
                    body,
                    headers=headers,
                    retry=self.ts.retry,
                    sdk_method=op.sdk_method,
                    log_context={"model_id": model_id},
                )
                rid: str = fut.request_id
                return rid

            if len(bodies) > 1 and cfg.parallel_fwdbwd_chunks:
                rest = await asyncio.gather(*(post(b) for b in bodies[1:]))
                rids = [await post(bodies[0]), *rest]
            else:
                rids = [await post(b) for b in bodies]
        finally:
            if budget is not None:
                budget.release(nbytes)
        rtype = FORWARD_REQUEST_TYPE_HEADER if msg.forward_only else _FWDBWD_TYPE
        return rids, rtype

    def _build(
        self, msg: TrainingMessage, model_id: str, seq_id: int, *, replay: bool
    ) -> tuple[Route, Any]:
        match msg:
            case OptimStep(params=types.AdamParams() as adam):
                req: Any = types.OptimStepRequest(
                    model_id=model_id, seq_id=seq_id, adam_params=adam
                )
                return ROUTES["optim_step"], req
            case OptimStep(params=types.DimuonParams() as dimuon):
                req = types.OptimStepRequest(
                    model_id=model_id, seq_id=seq_id, optimizer_params=dimuon
                )
                return ROUTES["optim_step"], req
            case SaveState():
                req = types.SaveWeightsRequest(
                    model_id=model_id,
                    path=msg.name,
                    seq_id=seq_id,
                    ttl_seconds=msg.ttl_seconds,
                    overwrite=msg.overwrite or replay,
                    user_metadata=msg.user_metadata,
                )
                return ROUTES["save_weights"], req
            case SaveWeightsForSampler():
                sss = None
                if msg.name is None:
                    sss = self.session.next_sampling_session_seq_id()
                req = types.SaveWeightsForSamplerRequest(
                    model_id=model_id,
                    path=msg.name,
                    sampling_session_seq_id=sss,
                    kind=msg.kind,
                    seq_id=seq_id,
                    ttl_seconds=msg.ttl_seconds,
                    user_metadata=msg.user_metadata,
                )
                return ROUTES["save_weights_for_sampler"], req
            case SaveWeightsExternal():
                req = types.SaveWeightsExternalRequest(
                    model_id=model_id,
                    path=msg.name,
                    seq_id=seq_id,
                    ttl_seconds=msg.ttl_seconds,
                    age_encryption_recipients=msg.age_encryption_recipients,
                )
                return ROUTES["save_weights_external"], req
            case LoadState():
                req = types.LoadWeightsRequest(
                    model_id=model_id,
                    seq_id=seq_id,
                    path=msg.path,
                    optimizer=msg.optimizer,
                    weights_access_token=msg.weights_access_token,
                )
                return ROUTES["load_weights"], req
        raise TypeError(f"the training actor cannot send {type(msg).__name__}")

    # -------------------------------------------------------------- results
    def _spawn_poll(self, op: Op, rids: list[str], rtype: str, token: int) -> None:
        self.spawn(self._poll(op, rids, rtype, token), name=f"poll-{rtype}-{token}")

    async def _poll(self, op: Op, rids: list[str], rtype: str, token: int) -> None:
        st = self.ts
        t = self.session.transport
        assert t is not None
        try:
            parts: list[Any] = await asyncio.gather(
                *(
                    poll_future(
                        t,
                        rid,
                        rtype,
                        observer=st.queue_logger,
                        start_time=op.start_time,
                        sdk_method=op.sdk_method,
                    )
                    for rid in rids
                )
            )
            if isinstance(op.msg, ForwardBackward):
                result: Any = _fb.combine_fwd_bwd_output_results(parts)
            else:
                result = self._shape(op, parts[0])
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # (an op the actor crashes for stays in ``inflight``: no checkpoint after it may
            # become the recovery base before it is replayed)
            recovery = st.recovery is not None and st.recovery.enabled
            if op.outcome == "ok":
                # a replay of an op reported done failed: the rebuilt model lacks it, so
                # recover again rather than leave the model behind what the caller was told
                raise SequenceBrokenError(
                    f"replay of seq ids {list(op.tokens)} failed ({exc!r})"
                ) from exc
            if recovery and op.carried < 1 and lost_with_server(exc):
                # its result was lost with the server: recovery replays it (never reported)
                op.carried += 1
                raise SequenceBrokenError(
                    f"the result of seq ids {list(op.tokens)} was lost ({exc!r}); recovering"
                ) from exc
            st.inflight.pop(token, None)
            tell_failed(op, exc)
            st.commit_checkpoints()
            return
        st.inflight.pop(token, None)
        if isinstance(op.msg, SaveState) and isinstance(result, types.SaveWeightsResponse):
            st.saved.append((op, result.path))
        tell_ok(op, result)
        st.commit_checkpoints()

    def _shape(self, op: Op, result: Any) -> Any:
        match op.msg:
            case SaveWeightsForSampler(name=None):
                if result.sampling_session_id is None:
                    raise errors.ProtocolError(
                        "ephemeral sampler save returned no sampling_session_id"
                    )
                return result.sampling_session_id
            case SaveWeightsForSampler():
                if result.path is None:
                    raise errors.ProtocolError("save_weights_for_sampler result has no path")
                return types.SaveWeightsForSamplerResponse(path=result.path)
            case SaveWeightsExternal():
                if result.path is None:
                    raise errors.ProtocolError("save_weights_external result has no path")
                return types.SaveWeightsExternalResponse(path=result.path)
        return result

    # -------------------------------------------------------------- recovery
    async def _recover(self, policy: RecoveryPolicy) -> None:
        st = self.ts
        if st.replay_dropped > st.checkpoint_token and policy.checkpoint == "latest":
            # the rebuilt model would lack steps reported successful: refuse, loudly
            st.fail_all(
                SequenceBrokenError(
                    f"TrainingClient for model {st.model_id} cannot recover: more than "
                    f"RecoveryPolicy.max_replay={policy.max_replay} requests were made since "
                    "the last save_state. Call save_state more often or raise max_replay."
                )
            )
            return
        ckpt = st.last_checkpoint
        if policy.checkpoint != "latest":
            ckpt = (policy.checkpoint, True)
        # In-flight polls died with the old actor. Ops in the replay log are sent again
        # below; older ones (before the checkpoint, so already in it) are polled again.
        in_log = {id(op) for op in st.replay_log}
        repoll = [
            (token, entry)
            for token, entry in st.inflight.items()
            if id(entry[0]) not in in_log and entry[0].outcome is None
        ]
        st.inflight.clear()
        st.saved.clear()  # saves not yet committed are in the replay log: replayed below
        retry = st.retry
        if ckpt is not None:
            model_id = await create_via_load(
                self.session,
                path=ckpt[0],
                optimizer=policy.restore_optimizer and ckpt[1],
                base_model=None,
                user_metadata=None,
                retry=retry,
            )
        else:
            model_id = await create_model(self.session, **st.create, retry=retry)
        log.warning(
            "training actor recovered",
            old_model_id=st.model_id,
            new_model_id=model_id,
            checkpoint=ckpt[0] if ckpt else None,
            replay=len(st.replay_log),
        )
        st.model_id = model_id
        st.server_model_ids.append(model_id)
        st.wire_next = 1
        st.info = await get_info(self.session, model_id, retry=retry)
        for token, (op, rids, rtype) in repoll:
            st.inflight[token] = (op, rids, rtype)
            self._spawn_poll(op, rids, rtype, token)
        # replay what ran after the checkpoint, in order, with new seq ids; never an op
        # whose failure was reported
        for op in sorted(st.replay_log, key=lambda o: o.first):
            if op.first >= st.next_to_send or op.outcome == "failed":
                continue  # not sent yet (still in pending), or reported failed
            if op.outcome == "ok" and not op.mutates:
                continue  # a delivered forward: nothing to rebuild
            if not policy.replay:
                if op.outcome is None:
                    tell_failed(
                        op,
                        SequenceBrokenError(
                            f"request with seq ids {list(op.tokens)} was lost with model "
                            f"{st.server_model_ids[-2]} and RecoveryPolicy(replay=False) "
                            "does not replay it"
                        ),
                    )
                continue
            await self._send(op, replay=True)
        st.replay_log = [o for o in st.replay_log if o.outcome != "failed"]


# ============================================================================ custom loss
def custom_loss_message(
    data: Sequence[types.Datum],
    loss_fn: Callable[..., Any],
    chunk: Callable[[list[types.Datum]], list[list[types.Datum]]],
    *,
    regularizers: Sequence[Any] | None = None,
    track_grad_norms: bool = False,
) -> ForwardBackwardCustom:
    """Checks a custom loss's data and regularizers now, in the caller's thread, and builds
    its message; ``regularizers`` (``tinker_actors.regularizers.RegularizerSpec``) are added
    to the loss."""
    if regularizers or track_grad_norms:
        from ..regularizers import regularized_loss_fn

        loss_fn = regularized_loss_fn(
            loss_fn, regularizers or [], track_grad_norms=track_grad_norms
        )
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise ImportError("PyTorch is not installed. Cannot run custom forward_backward.") from exc
    fwd_data = []
    for d in data:
        tt = d.loss_fn_inputs.get("target_tokens")
        if tt is None:
            raise ValueError("target_tokens must be provided when using cross_entropy")
        w = d.loss_fn_inputs.get("weights")
        fwd_data.append(_with_weights(d, w if w is not None else _zeros_like(tt)))
    chunks = tuple(tuple(c) for c in chunk(fwd_data))
    forward = ForwardBackward(chunks, "cross_entropy", None, forward_only=True)
    return ForwardBackwardCustom(tuple(data), forward, loss_fn)


async def _compute_backward(
    mailbox: Mailbox[Call | Backward],
    msg: ForwardBackwardCustom,
    forward_cf: concurrent.futures.Future[Any],
    tokens: range,
    reply: concurrent.futures.Future[Any],
) -> None:
    """Waits for the forward, runs the loss off the loop, and sends the backward home."""
    try:
        forward = await asyncio.wrap_future(forward_cf)
    except Exception as exc:
        backward = Backward(tokens, (), reply, error=exc, forward_failed=True)
    else:
        chunks = msg.forward.chunks
        try:
            new_data, metrics, loss_sum = await asyncio.to_thread(
                make_custom_backward, list(msg.data), msg.loss_fn, forward
            )
            backward = Backward(tokens, _regroup(new_data, chunks), reply, metrics, loss_sum)
        except Exception as exc:
            # The user's loss (or a regularizer) failed. The backward's seq ids are already
            # promised, so they carry a zero-weight backward: it adds nothing to the
            # gradient, and the client keeps working after the error.
            zeros = tuple(tuple(_zero_weights(d) for d in c) for c in chunks)
            backward = Backward(tokens, zeros, reply, error=exc)
    try:
        mailbox.put(backward)
    except errors.ActorDeadError as exc:  # the client was given up on meanwhile
        reject(reply, exc)


def _finish_custom(bwd: concurrent.futures.Future[Any], b: Backward) -> None:
    """The backward's answer becomes the custom call's, with the loss's own metrics."""
    exc = bwd.exception() if not bwd.cancelled() else None
    if b.error is not None or exc is not None:
        reject(b.reply, b.error or exc)  # type: ignore[arg-type]
        return
    res: types.ForwardBackwardOutput = bwd.result()
    surrogate = res.metrics.pop("loss:sum")
    res.metrics.update(b.metrics)
    res.metrics["loss:sum"] = b.loss_sum
    res.metrics["surrogate_loss:sum"] = surrogate
    resolve(b.reply, res)


def _regroup(flat: Sequence[types.Datum], like: Chunks) -> Chunks:
    out, i = [], 0
    for c in like:
        out.append(tuple(flat[i : i + len(c)]))
        i += len(c)
    return tuple(out)


def _zeros_like(tt: types.TensorData) -> types.TensorData:
    import numpy as np

    return types.TensorData.from_numpy(np.zeros(tt.to_numpy().shape, dtype=np.float32))


def _with_weights(d: types.Datum, weights: types.TensorData) -> types.Datum:
    return types.Datum(
        model_input=d.model_input,
        loss_fn_inputs={"target_tokens": d.loss_fn_inputs["target_tokens"], "weights": weights},
        model_input_spans=d.model_input_spans,
        loss_fn_input_spans=d.loss_fn_input_spans,
    )


def _zero_weights(d: types.Datum) -> types.Datum:
    """``d`` with every loss weight 0: a backward pass that contributes no gradient."""
    return _with_weights(d, _zeros_like(d.loss_fn_inputs["target_tokens"]))


# ============================================================================ helpers
_FWDBWD = ROUTES["forward_backward"]
_FWDBWD_TYPE = _FWDBWD.request_type_header or "ForwardBackward"


async def create_model(
    session: Session,
    *,
    base_model: str,
    lora_config: types.LoraConfig,
    user_metadata: dict[str, str] | None = None,
    optimizer_config: Any = None,
    sdk_method: str | None = None,
    retry: RetryPolicy | None = None,
) -> str:
    """``create_model`` + poll; returns the new model id."""
    t = session.transport
    assert t is not None
    req = types.CreateModelRequest(
        session_id=session.require_session_id(),
        model_seq_id=session.next_model_seq_id(),
        base_model=base_model,
        lora_config=lora_config,
        user_metadata=user_metadata,
        optimizer_config=optimizer_config or types.AdamOptimizerConfig(),
    )
    start = time.time()
    route = ROUTES["create_model"]
    fut = await t.call(route, req, sdk_method=sdk_method, **_retry_kw(retry))
    res: Any = await poll_future(
        t,
        fut.request_id,
        _request_type(route),
        observer=QueueStateLogger(base_model, "Model creation"),
        start_time=start,
        sdk_method=sdk_method,
    )
    model_id: str = res.model_id
    return model_id


async def create_via_load(
    session: Session,
    *,
    path: str,
    optimizer: bool,
    base_model: str | None,
    user_metadata: dict[str, str] | None,
    optimizer_config: Any = None,
    weights_access_token: str | None = None,
    sdk_method: str | None = None,
    retry: RetryPolicy | None = None,
) -> str:
    """Create-via-load (the model's implicit seq 0); the id is ``{session}:train:{n}``."""
    t = session.transport
    assert t is not None
    sid = session.require_session_id()
    n = session.next_model_seq_id()
    req = types.LoadWeightsRequest(
        session_id=sid,
        model_seq_id=n,
        base_model=base_model,
        user_metadata=user_metadata,
        path=path,
        optimizer=optimizer,
        optimizer_config=optimizer_config,
        weights_access_token=weights_access_token,
    )
    start = time.time()
    route = ROUTES["load_weights"]
    fut = await t.call(route, req, sdk_method=sdk_method, **_retry_kw(retry))
    await poll_future(
        t, fut.request_id, _request_type(route), start_time=start, sdk_method=sdk_method
    )
    return f"{sid}:train:{n}"


async def get_info(
    session: Session, model_id: str, *, retry: RetryPolicy | None = None
) -> types.GetInfoResponse:
    t = session.transport
    assert t is not None
    info: types.GetInfoResponse = await t.call(
        "get_info", types.GetInfoRequest(model_id=model_id), **_retry_kw(retry)
    )
    return info


def _request_type(route: Route) -> str:
    """The request type a future route's results are polled with (every such route has one)."""
    if route.request_type_header is None:
        raise errors.ProtocolError(f"route {route.name} has no request type to poll with")
    return route.request_type_header


def _retry_kw(retry: RetryPolicy | None) -> dict[str, Any]:
    """The transport's default policy unless one is given (recovery passes the training one)."""
    return {} if retry is None else {"retry": retry}


def make_custom_backward(
    data: list[Any], loss_fn: Callable[..., Any], forward: types.ForwardBackwardOutput
) -> tuple[list[Any], dict[str, float], float]:
    """Client-side custom loss (protocol.md 6.1 step 4): weights = -dLoss/dlogprobs."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "forward_backward_custom needs PyTorch: pip install 'tinker-actors[local]'"
        ) from exc
    logprobs = []
    for out in forward.loss_fn_outputs:
        td = out["logprobs"]
        lp = torch.tensor(
            td.to_numpy() if hasattr(td, "to_numpy") else td.data, dtype=torch.float32
        )
        if td.shape is not None:
            lp = lp.reshape(tuple(td.shape))
        logprobs.append(lp.clone().detach().requires_grad_(True))
    t0 = time.monotonic()
    if events.ON:
        events.emit(events.CUSTOM_LOSS_START, {"system_time": time.time()}, {"data": len(data)})
    try:
        loss, metrics = loss_fn(data, logprobs)
        loss_sum = float(loss.detach().sum().item())
        loss.backward()
    except Exception as exc:
        if events.ON:
            events.emit(
                events.CUSTOM_LOSS_EXCEPTION,
                {"duration": time.monotonic() - t0},
                {"data": len(data), "error_type": type(exc).__name__, "error": str(exc)},
            )
        raise
    if events.ON:
        events.emit(
            events.CUSTOM_LOSS_STOP,
            {"duration": time.monotonic() - t0, "loss": loss_sum},
            {"data": len(data)},
        )
    new_data = []
    for datum, lp in zip(data, logprobs, strict=True):
        if lp.grad is None:
            raise ValueError("No gradient computed for logprob tensor")
        weights = types.TensorData.from_numpy((-lp.grad).numpy().astype("float32"))
        new_data.append(_with_weights(datum, weights))
    out_metrics = {
        k: float(v.item() if hasattr(v, "item") else v) for k, v in (metrics or {}).items()
    }
    return new_data, out_metrics, loss_sum
