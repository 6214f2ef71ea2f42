"""The training actor: one per TrainingClient; strict seq_id order, chunking, recovery.

Order tokens are reserved in the caller's thread (``TrainingState.reserve``) and each call
becomes an ``Op`` in a reorder buffer that outlives actor instances. The actor sends the op
holding token k only after every op < k was acknowledged by the server; the chunks of one
forward_backward go out together, first chunk last. Results are polled in owned tasks so
many ops are queued server-side at once.

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
  ``pending`` or was failed and the pointer moved past it, so a restarted actor never waits
  on an entry that cannot come; give-up (``fail_all``) answers every future still owed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import errors, events, types
from ..config import RecoveryPolicy
from ..errors import SequenceBrokenError
from ..futures import QueueStateLogger, poll_future, reject, resolve
from ..manifest import FORWARD_REQUEST_TYPE_HEADER, ROUTES, Route
from ..telemetry import get_logger
from ..transport import TRAINING, RetryPolicy
from ..types import fwdbwd as _fb
from .actor import Actor, ActorState

if TYPE_CHECKING:
    from .session import Session

__all__ = ["Op", "SequenceBrokenError", "TrainingActor", "TrainingState"]

log = get_logger(__name__)


# ============================================================================ ops
@dataclass(eq=False)
class Op:
    """One user call: ``kind`` plus its arguments, its order tokens and its future."""

    kind: str  # fwdbwd | optim | save_state | save_sampler | save_external | load | broken
    tokens: range
    cf: concurrent.futures.Future[Any]
    args: dict[str, Any] = field(default_factory=dict)
    sdk_method: str | None = None
    start_time: float = field(default_factory=time.time)
    wire_ids: list[int] | None = None  # the seq ids it was (or is being) sent with
    wire_model: str | None = None
    # what the caller was told: None (nothing yet), "ok" or "failed"; a failed op is never
    # sent again, an ok one is replayed by recovery (set even when the caller cancelled)
    outcome: str | None = None
    carried: int = 0  # times it was carried to a rebuilt model after being lost with a server

    @property
    def first(self) -> int:
        return self.tokens.start

    @property
    def mutates(self) -> bool:
        if self.kind == "fwdbwd":
            return not self.args["forward_only"]
        return self.kind in ("optim", "load", "save_state")


class TrainingState:
    """Everything a TrainingClient's actor needs that must survive the actor's restarts."""

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
        self._lock = threading.Lock()
        self._next_token = 1
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
        self.wake = asyncio.Event()
        self.dead: BaseException | None = None
        self.queue_logger = QueueStateLogger(model_id, "Training")
        # how submissions are retried; the time budget is what a server outage may last
        self.retry: RetryPolicy = TRAINING
        self.actor: TrainingActor | None = None
        # set by a RecoveryExecutor before it restarts the actor (actors/recovery.py)
        self.recovery_request: tuple[RecoveryPolicy, concurrent.futures.Future[str]] | None = None
        self.server_model_ids: list[str] = [model_id]

    # -------------------------------------------------------------- caller side
    def reserve(self, count: int) -> range:
        """Takes ``count`` consecutive order tokens now, in the caller's thread."""
        with self._lock:
            start = self._next_token
            self._next_token += count
            return range(start, start + count)

    def submit(self, op: Op) -> None:
        """Hands ``op`` to the actor (thread-safe)."""
        self.session.runtime.call_soon(self._enqueue, op)

    def _enqueue(self, op: Op) -> None:
        if self.dead is not None:
            tell_failed(op, self.dead)
            self.next_to_send = max(self.next_to_send, op.tokens.stop)
            return
        self.pending[op.first] = op
        self.wake.set()

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
        """From now on every op is failed at once: those reserved but not yet handed over are
        failed by ``_enqueue``, so the pointer moves past every token taken so far."""
        with self._lock:
            self.dead = exc
            self.next_to_send = self._next_token

    def fail_all(self, exc: BaseException) -> None:
        """Answers every future still owed (the supervisor gave up on this client)."""
        self._die(exc)
        owed = [*self.pending.values(), *(op for op, _, _ in self.inflight.values())]
        owed += self.replay_log
        for op in owed:
            if op.outcome is None:
                tell_failed(op, exc)
        self.pending.clear()
        self.inflight.clear()
        self.replay_log.clear()


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
    uses_mailbox = False

    def __init__(self, state: TrainingState, *, recovering: bool = False):
        super().__init__(name=f"training-{state.model_id}")
        self.ts = state
        self.recovering = recovering
        # a poll that failed while on_start was still replaying (the base class only
        # crashes a RUNNING actor); on_start raises it so the recovery is redone
        self._early_failure: BaseException | None = None

    def _child_done(self, task: asyncio.Task[Any]) -> None:
        if (
            self.state is ActorState.NEW
            and not task.cancelled()
            and task.exception() is not None
            and self._early_failure is None
        ):
            self._early_failure = task.exception()
        super()._child_done(task)

    @property
    def session(self) -> Session:
        return self.ts.session

    # -------------------------------------------------------------- lifecycle
    async def on_start(self) -> None:
        self.ts.actor = self
        if not self.recovering:
            return
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
                if self._early_failure is not None:  # no await from here to RUNNING
                    raise self._early_failure
            except BaseException as exc:
                # a failed recovery counts as another crash; its polls must not outlive it
                for task in list(self._children):
                    task.cancel()
                if request is not None:
                    reject(request[1], exc)
                raise
            if request is not None:
                resolve(request[1], st.model_id)
        else:
            # No recovery: keep the model; re-poll what the server already accepted and
            # fail what never got a seq id through (the sequence is broken).
            for token, (op, rids, rtype) in list(st.inflight.items()):
                self._spawn_poll(op, rids, rtype, token)

    async def main(self) -> None:
        st = self.ts
        while True:
            op = st.pending.pop(st.next_to_send, None)
            if op is None:
                st.wake.clear()
                await st.wake.wait()
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

    def _send_failed(self, op: Op, exc: Exception) -> None:
        """A submit failed past its retries: carry it, or report it and move the pointer on.

        Raises (crashing the actor into recovery) when a RecoveryPolicy is set.
        """
        st = self.ts
        recovery = st.recovery is not None and st.recovery.enabled
        why = describe_failure(exc)
        if recovery and op.kind != "broken" and op.carried < 1 and lost_with_server(exc):
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
        if op.kind == "broken":
            raise op.args["error"]
        t = self.session.transport
        assert t is not None
        model_id = st.model_id
        # A resend after a restart (same model) reuses the op's wire ids: the server dedupes
        # retries of a seq id, while a new id would leave a gap it waits on forever.
        if replay or op.wire_ids is None or op.wire_model != model_id:
            op.wire_ids = self._wire_ids(len(op.tokens))
            op.wire_model = model_id
        seq = op.wire_ids
        if op.kind == "fwdbwd":
            rids, rtype = await self._send_fwdbwd(t, op, model_id, seq)
        else:
            route, body = self._build(op, model_id, seq[0], replay=replay)
            fut = await t.call(
                route,
                body,
                retry=st.retry,
                sdk_method=op.sdk_method,
                log_context={"model_id": model_id},
            )
            rids, rtype = [fut.request_id], route.request_type_header
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
        self, t: Any, op: Op, model_id: str, seq: list[int]
    ) -> tuple[list[str], str]:
        """POSTs every chunk (first chunk last) under the dispatch byte budget."""
        from .. import codec

        cfg = self.session.client_config
        chunks = op.args["chunks"]
        bodies = [
            codec.encode_forward_backward_request(
                model_id=model_id,
                seq_id=sid,
                data=chunk,
                loss_fn=op.args["loss_fn"],
                loss_fn_config=op.args["loss_fn_config"],
                forward_only=op.args["forward_only"],
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
                return fut.request_id

            if len(bodies) > 1 and cfg.parallel_fwdbwd_chunks:
                rest = await asyncio.gather(*(post(b) for b in bodies[1:]))
                rids = [await post(bodies[0]), *rest]
            else:
                rids = [await post(b) for b in bodies]
        finally:
            if budget is not None:
                budget.release(nbytes)
        rtype = FORWARD_REQUEST_TYPE_HEADER if op.args["forward_only"] else _FWDBWD_TYPE
        return rids, rtype

    def _build(self, op: Op, model_id: str, seq_id: int, *, replay: bool) -> tuple[Route, Any]:
        a = op.args
        if op.kind == "optim":
            params = a["params"]
            if isinstance(params, types.AdamParams):
                req = types.OptimStepRequest(model_id=model_id, seq_id=seq_id, adam_params=params)
            else:
                req = types.OptimStepRequest(
                    model_id=model_id, seq_id=seq_id, optimizer_params=params
                )
            return ROUTES["optim_step"], req
        if op.kind == "save_state":
            req = types.SaveWeightsRequest(
                model_id=model_id,
                path=a["name"],
                seq_id=seq_id,
                ttl_seconds=a.get("ttl_seconds"),
                overwrite=bool(a.get("overwrite")) or replay,
                user_metadata=a.get("user_metadata"),
            )
            return ROUTES["save_weights"], req
        if op.kind == "save_sampler":
            sss = None
            if a.get("name") is None:
                sss = self.session.next_sampling_session_seq_id()
            req = types.SaveWeightsForSamplerRequest(
                model_id=model_id,
                path=a.get("name"),
                sampling_session_seq_id=sss,
                kind=a.get("kind", "snapshot"),
                seq_id=seq_id,
                ttl_seconds=a.get("ttl_seconds"),
                user_metadata=a.get("user_metadata"),
            )
            return ROUTES["save_weights_for_sampler"], req
        if op.kind == "save_external":
            req = types.SaveWeightsExternalRequest(
                model_id=model_id,
                path=a["name"],
                seq_id=seq_id,
                ttl_seconds=a.get("ttl_seconds"),
                age_encryption_recipients=a.get("age_encryption_recipients"),
            )
            return ROUTES["save_weights_external"], req
        if op.kind == "load":
            req = types.LoadWeightsRequest(
                model_id=model_id,
                seq_id=seq_id,
                path=a["path"],
                optimizer=a["optimizer"],
                weights_access_token=a.get("weights_access_token"),
            )
            return ROUTES["load_weights"], req
        raise ValueError(f"unknown op kind {op.kind}")

    # -------------------------------------------------------------- results
    def _spawn_poll(self, op: Op, rids: list[str], rtype: str, token: int) -> None:
        self.spawn(self._poll(op, rids, rtype, token), name=f"poll-{rtype}-{token}")

    async def _poll(self, op: Op, rids: list[str], rtype: str, token: int) -> None:
        st = self.ts
        t = self.session.transport
        assert t is not None
        try:
            parts = await asyncio.gather(
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
            if op.kind == "fwdbwd":
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
        if op.kind == "save_state" and isinstance(result, types.SaveWeightsResponse):
            st.saved.append((op, result.path))
        tell_ok(op, result)
        st.commit_checkpoints()

    def _shape(self, op: Op, result: Any) -> Any:
        if op.kind == "save_sampler":
            if op.args.get("name") is not None:
                if result.path is None:
                    raise errors.ProtocolError("save_weights_for_sampler result has no path")
                return types.SaveWeightsForSamplerResponse(path=result.path)
            if result.sampling_session_id is None:
                raise errors.ProtocolError("ephemeral sampler save returned no sampling_session_id")
            return result.sampling_session_id
        if op.kind == "save_external":
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
    res = await poll_future(
        t,
        fut.request_id,
        route.request_type_header,
        observer=QueueStateLogger(base_model, "Model creation"),
        start_time=start,
        sdk_method=sdk_method,
    )
    return res.model_id


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
        t, fut.request_id, route.request_type_header, start_time=start, sdk_method=sdk_method
    )
    return f"{sid}:train:{n}"


async def get_info(
    session: Session, model_id: str, *, retry: RetryPolicy | None = None
) -> types.GetInfoResponse:
    t = session.transport
    assert t is not None
    return await t.call("get_info", types.GetInfoRequest(model_id=model_id), **_retry_kw(retry))


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
        new_data.append(
            types.Datum(
                model_input=datum.model_input,
                loss_fn_inputs={
                    "target_tokens": datum.loss_fn_inputs["target_tokens"],
                    "weights": types.TensorData.from_numpy((-lp.grad).numpy().astype("float32")),
                },
                model_input_spans=datum.model_input_spans,
                loss_fn_input_spans=datum.loss_fn_input_spans,
            )
        )
    out_metrics = {
        k: float(v.item() if hasattr(v, "item") else v) for k, v in (metrics or {}).items()
    }
    return new_data, out_metrics, loss_sum
