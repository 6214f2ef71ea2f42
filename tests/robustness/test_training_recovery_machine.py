"""Property test: the training actor under fault schedules never hangs and never replays a failure.

A hypothesis state machine puts forward_backward / optim_step / save_state messages in the
mailbox of a real ``TrainingActor`` (real supervisor, transport and HTTP) whose server is a scripted training
server in miniature (``ToyTrainer`` on ``ScriptedServer``): per-model seq lanes deduplicating
retries, futures, checkpoints that copy the applied ops, and faults armed by the machine
(503 bursts, a 400 or a lost model at the next submit, a failed result, the actor killed
mid-send). Each op carries a marker the toy server records when it applies the op.

Invariants, checked once everything has settled (a bounded wait, never a hang):
- every future is answered (``Sent.outcome`` is what its caller saw);
- the op pointer and the pending set agree: nothing pending, the pointer past every token;
- the model the client ends on holds exactly the ops reported successful, in order, once
  each: no reported failure applied, no reported success lost, nothing doubled (without a
  RecoveryPolicy a model the server lost is gone, and the client reports it broken).

Retries sleep on a virtual clock, so a fault schedule costs no real time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np
from client.scripted import ScriptedServer, Seen, VirtualTime
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from tinker_actors import codec, types
from tinker_actors.actors.actor import ActorState
from tinker_actors.actors.supervisor import ChildSpec, Supervisor
from tinker_actors.actors.training import (
    ForwardBackward,
    OptimStep,
    SaveState,
    TrainingActor,
    TrainingHandle,
    TrainingMessage,
    TrainingState,
)
from tinker_actors.config import RecoveryPolicy, Restart, RestartPolicy, Settings
from tinker_actors.runtime import loop_runtime
from tinker_actors.transport import Transport

API = "/api/v1"
SESSION = "toy-session"
FAULTS = ("burst_503", "submit_400", "lose_model", "result_server", "result_user", "kill")
MUTATING = ("fwdbwd", "optim")  # what the toy server applies
MUTATING_MESSAGES = (ForwardBackward, OptimStep)


@dataclass(eq=False)
class Sent:
    """One message the machine sent, and the future its caller holds."""

    msg: TrainingMessage
    cf: concurrent.futures.Future[Any]

    @property
    def outcome(self) -> str | None:
        if not self.cf.done():
            return None
        return "failed" if self.cf.exception() is not None else "ok"

    @property
    def marker(self) -> float:
        if isinstance(self.msg, OptimStep):
            return float(self.msg.params.learning_rate)
        assert isinstance(self.msg, ForwardBackward) and self.msg.loss_fn_config is not None
        return float(self.msg.loss_fn_config["marker"])


# ============================================================================ toy server
@dataclass
class ToyModel:
    model_id: str
    applied: list[float] = field(default_factory=list)
    next_seq: int = 1
    rids: dict[int, str] = field(default_factory=dict)  # seq id -> request id (dedupe)
    lost: bool = False


class ToyTrainer:
    """A training server in miniature, with faults armed by the test."""

    def __init__(self) -> None:
        self.models: dict[str, ToyModel] = {}
        self.futures: dict[str, dict[str, Any]] = {}
        self.owner: dict[str, str] = {}  # request id -> model id
        self.retrieved: set[str] = set()
        self.ckpts: dict[str, list[float]] = {}
        self.faults: list[str] = []  # consumed in order by the next new submissions
        self.burst = 0  # submits still to answer 503
        self.violations: list[str] = []
        self.on_kill: Any = None
        self._ids = itertools.count(1)

    def install(self, m: ScriptedServer) -> None:
        m.handle_with("POST", f"{API}/forward_backward", self.forward_backward)
        for name in ("optim_step", "save_weights"):
            m.handle_with("POST", f"{API}/{name}", getattr(self, name))
        m.handle_with("POST", f"{API}/create_model", self.create_model)
        m.handle_with("POST", f"{API}/load_weights", self.load_weights)
        m.handle_with("POST", f"{API}/get_info", self.get_info)
        m.handle_with("POST", f"{API}/retrieve_future", self.retrieve)

    # ---------------------------------------------------------------- helpers
    def _future(self, model_id: str, result: dict[str, Any]) -> dict[str, Any]:
        rid = f"req-{next(self._ids)}"
        self.futures[rid] = result
        self.owner[rid] = model_id
        return {"payload": {"request_id": rid, "model_id": model_id}}

    def new_model(self, model_id: str, applied: list[float]) -> None:
        if model_id in self.models:
            self.violations.append(f"model {model_id} created twice")
        self.models[model_id] = ToyModel(model_id, list(applied))

    def lose(self, model: ToyModel) -> None:
        """As a server killed with SIGKILL: the model and its unread results are gone."""
        model.lost = True
        for rid, owner in self.owner.items():
            if owner == model.model_id and rid not in self.retrieved:
                self.futures[rid] = {
                    "error": "the server restarted before this request finished; resubmit it",
                    "category": "server",
                }

    # ---------------------------------------------------------------- training submits
    def _submit(self, kind: str, model_id: str, seq: int, marker: float, path: str = "") -> Any:
        if self.burst:
            self.burst -= 1
            headers = {"Retry-After": "1"} if self.burst % 2 else None
            return {"status": 503, "payload": {"detail": "injected"}, "headers": headers}
        model = self.models.get(model_id)
        if model is None or model.lost:
            return {"status": 410, "payload": {"detail": f"model {model_id} lost its live state"}}
        if seq in model.rids:  # a retry of an accepted request: same future
            return {"payload": {"request_id": model.rids[seq], "model_id": model_id}}
        fault = self.faults.pop(0) if self.faults else None
        if fault == "burst_503":
            self.burst = 3
            return self._submit(kind, model_id, seq, marker, path)
        if fault == "submit_400":
            return {"status": 400, "payload": {"detail": "injected"}}
        if fault == "lose_model":
            self.lose(model)
            return {"status": 410, "payload": {"detail": f"model {model_id} lost its live state"}}
        if fault == "kill" and self.on_kill is not None:
            self.on_kill()  # the actor dies awaiting this answer; the server still takes it
        if seq != model.next_seq:
            # the client left a gap (or skipped ahead): a real server would wait forever
            self.violations.append(f"{model_id}: got seq {seq}, expected {model.next_seq}")
            return {"status": 400, "payload": {"detail": "out of order"}}
        model.next_seq += 1
        if fault == "result_server":
            result: dict[str, Any] = {"error": "injected engine failure", "category": "server"}
        elif fault == "result_user":
            result = {"error": "injected bad input", "category": "user"}
        else:
            if kind in MUTATING:
                model.applied.append(marker)
            result = self._result(kind, model, path)
        reply = self._future(model_id, result)
        model.rids[seq] = reply["payload"]["request_id"]
        return reply

    def _result(self, kind: str, model: ToyModel, path: str) -> dict[str, Any]:
        if kind == "fwdbwd":
            out = types.ForwardBackwardOutput(
                loss_fn_output_type="cross_entropy",
                loss_fn_outputs=[{"logprobs": types.TensorData.from_numpy(np.zeros(2, "f4"))}],
                metrics={"loss:sum": 0.0},
            )
            return {"proto": codec.encode_forward_backward_output(out)}
        if kind == "save":
            tinker_path = f"tinker://{model.model_id}/weights/{path}"
            self.ckpts[tinker_path] = list(model.applied)
            return {"json": {"path": tinker_path, "type": "save_weights"}}
        return {"json": {"metrics": {}}}

    def forward_backward(self, seen: Seen) -> Any:
        req = codec.decode_forward_backward_request(seen.body)
        marker = float((req.loss_fn_config or {})["marker"])
        return self._submit("fwdbwd", req.model_id, int(req.seq_id), marker)

    def optim_step(self, seen: Seen) -> Any:
        body = seen.json()
        marker = float(body["adam_params"]["learning_rate"])
        return self._submit("optim", body["model_id"], int(body["seq_id"]), marker)

    def save_weights(self, seen: Seen) -> Any:
        body = seen.json()
        return self._submit("save", body["model_id"], int(body["seq_id"]), 0.0, body["path"])

    # ---------------------------------------------------------------- models
    def create_model(self, seen: Seen) -> Any:
        body = seen.json()
        model_id = f"{body['session_id']}:train:{body['model_seq_id']}"
        self.new_model(model_id, [])
        return self._future(model_id, {"json": {"model_id": model_id, "type": "create_model"}})

    def load_weights(self, seen: Seen) -> Any:
        body = seen.json()
        model_id = f"{body['session_id']}:train:{body['model_seq_id']}"
        if body["path"] not in self.ckpts:
            return {"status": 404, "payload": {"detail": "no such checkpoint"}}
        self.new_model(model_id, self.ckpts[body["path"]])
        return self._future(model_id, {"json": {"path": body["path"], "type": "load_weights"}})

    def get_info(self, seen: Seen) -> Any:
        model_id = seen.json()["model_id"]
        return {"payload": {"model_data": {"model_name": "toy"}, "model_id": model_id}}

    def retrieve(self, seen: Seen) -> Any:
        rid = seen.json()["request_id"]
        self.retrieved.add(rid)
        result = self.futures[rid]
        if "proto" in result:
            return {"body": result["proto"], "content_type": "application/x-protobuf"}
        if "json" in result:
            return {"payload": result["json"]}
        return {"payload": result}


# ============================================================================ client side
class ToySession:
    """What the training actor reads from its session (a ServiceClient's holder)."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.client_config = types.ClientConfigResponse()
        self.fwdbwd_bytes = None
        self.runtime = loop_runtime()
        self._models = itertools.count(1)

    def require_session_id(self) -> str:
        return SESSION

    def next_model_seq_id(self) -> int:
        return next(self._models)


class OwnHttp:
    """The transport's HTTP session, owned by the test's loop."""

    def __init__(self) -> None:
        self.session: aiohttp.ClientSession | None = None

    def http(self) -> aiohttp.ClientSession:
        if self.session is None:
            self.session = aiohttp.ClientSession()
        return self.session


def datum() -> types.Datum:
    return types.Datum(
        model_input=types.ModelInput.from_ints([1, 2]),
        loss_fn_inputs={
            "target_tokens": np.array([2, 3], dtype=np.int64),
            "weights": np.ones(2, dtype=np.float32),
        },
    )


SETTLE_DEADLINE = 20.0  # real seconds; a hang guard, everything settles in milliseconds


class TrainingUnderFaults(RuleBasedStateMachine):
    recovery = RecoveryPolicy()
    restart = RestartPolicy(intensity=10_000, period=1.0)

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.toy = ToyTrainer()
        self.ops: list[Sent] = []
        self.markers = itertools.count(1)
        self.loop.run_until_complete(self._start())

    async def _start(self) -> None:
        self.server = ScriptedServer()
        await self.server.__aenter__()
        self.toy.install(self.server)
        self.time = VirtualTime()
        self.http = OwnHttp()
        transport = Transport(
            self.http,  # type: ignore[arg-type]  # only .http() is used
            Settings(base_url=self.server.base, api_key="tml-toy-key"),
            sleep=self.time.sleep,
            clock=self.time.clock,
        )
        session = ToySession(transport)
        model_id = f"{SESSION}:train:0"
        self.toy.new_model(model_id, [])
        self.state = TrainingState(
            session,  # type: ignore[arg-type]
            model_id=model_id,
            info=types.GetInfoResponse(model_data=types.ModelData(), model_id=model_id),
            create={"base_model": "toy", "lora_config": types.LoraConfig(rank=1)},
            recovery=self.recovery,
        )
        self.handle = TrainingHandle(self.state)
        self.sup = Supervisor(self.restart, clock=self.time.clock)
        state = self.state

        async def start(prev: Any) -> TrainingActor:
            actor = TrainingActor(state, recovering=prev is not None)
            await actor.start()
            return actor

        await self.sup.start_child(
            ChildSpec("training", start, restart=Restart.TRANSIENT, on_give_up=state.fail_all)
        )
        self.toy.on_kill = lambda: state.actor.kill() if state.actor is not None else None

    # ---------------------------------------------------------------- ops
    def _submit(self, msg: TrainingMessage) -> None:
        self.ops.append(Sent(msg, self.handle.tell(msg, None)))

    @rule()
    def forward_backward(self) -> None:
        marker = float(next(self.markers))
        self._submit(ForwardBackward(((datum(),),), "cross_entropy", {"marker": marker}, False))

    @rule()
    def optim_step(self) -> None:
        marker = float(next(self.markers))
        self._submit(OptimStep(types.AdamParams(learning_rate=marker)))

    @rule()
    def training_step(self) -> None:
        self.forward_backward()
        self.optim_step()

    @rule()
    def save_state(self) -> None:
        self._submit(SaveState(f"ck{len(self.ops)}"))

    @precondition(lambda self: len(self.toy.faults) < 4)
    @rule(fault=st.sampled_from(FAULTS))
    def arm_fault(self, fault: str) -> None:
        self.toy.faults.append(fault)

    @rule()
    def settle(self) -> None:
        self.loop.run_until_complete(self._settle())

    # ---------------------------------------------------------------- checks
    def _quiet(self) -> bool:
        st_ = self.state
        actor = st_.actor
        return (
            all(op.cf.done() for op in self.ops)
            and not st_.inflight
            and not self.sup._tasks
            and actor is not None
            and actor.state is ActorState.RUNNING
        )

    async def _settle(self) -> None:
        # polls a real signal (futures, actor, supervisor: no single event covers them all)
        async with asyncio.timeout(SETTLE_DEADLINE):
            while not self._quiet():  # noqa: ASYNC110
                await asyncio.sleep(0.002)

    @invariant()
    def answers_and_ledger_agree(self) -> None:
        if not self._quiet():
            return  # checked at each settle and at the end
        st_ = self.state
        assert not self.toy.violations, self.toy.violations
        assert not st_.pending and st_.next_to_send == st_.next_token
        assert not len(st_.mailbox)
        # mailbox order is seq-id order: the machine's order of sends
        told_ok = [
            op.marker
            for op in self.ops
            if isinstance(op.msg, MUTATING_MESSAGES) and op.outcome == "ok"
        ]
        model = self.toy.models[st_.model_id]
        if model.lost:
            # only without recovery: the server lost the model and the client says so
            assert st_.recovery is None and st_.dead is not None
            return
        assert model.applied == told_ok

    def teardown(self) -> None:
        try:
            self.loop.run_until_complete(self._settle())
            self.answers_and_ledger_agree()
            event(f"recoveries: {min(len(self.state.server_model_ids) - 1, 3)}+")
            event(f"ops failed: {sum(op.outcome == 'failed' for op in self.ops) > 0}")
        finally:
            self.loop.run_until_complete(self._close())
            self.loop.close()

    async def _close(self) -> None:
        await self.sup.stop()
        if self.http.session is not None:
            await self.http.session.close()
        await self.server.__aexit__()


TrainingUnderFaults.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=30,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
test_training_under_fault_schedules = TrainingUnderFaults.TestCase


class TrainingUnderFaultsWithoutRecovery(TrainingUnderFaults):
    """No RecoveryPolicy: a killed actor resends with the same seq ids (the server
    deduplicates); a submit that fails breaks the sequence and every later op fails at once.
    The same invariants hold on the one model."""

    recovery = None  # type: ignore[assignment]


TrainingUnderFaultsWithoutRecovery.TestCase.settings = TrainingUnderFaults.TestCase.settings
test_training_without_recovery_under_fault_schedules = TrainingUnderFaultsWithoutRecovery.TestCase


# ============================================================================ the limits
def run_machine(machine: TrainingUnderFaults, script: list[str]) -> list[Sent]:
    """Runs rule names / ``fault:<kind>`` in order, then waits until every future is answered."""
    try:
        for step in script:
            if step.startswith("fault:"):
                machine.arm_fault(step.removeprefix("fault:"))
            elif step == "settle":
                machine.settle()
            else:
                getattr(machine, step)()

        async def answered() -> None:
            async with asyncio.timeout(SETTLE_DEADLINE):
                while not all(op.cf.done() for op in machine.ops):  # noqa: ASYNC110
                    await asyncio.sleep(0.002)

        machine.loop.run_until_complete(answered())
        return machine.ops
    finally:
        machine.loop.run_until_complete(machine._close())
        machine.loop.close()


def test_past_the_restart_intensity_every_future_is_answered() -> None:
    from tinker_actors.actors.supervisor import RestartLimitExceeded

    class NoRestarts(TrainingUnderFaults):
        restart = RestartPolicy(intensity=0, period=60.0)

    m = NoRestarts()
    ops = run_machine(m, ["training_step", "settle", "fault:lose_model", *["training_step"] * 3])
    assert [op.outcome for op in ops[:2]] == ["ok", "ok"]
    assert all(op.outcome == "failed" for op in ops[2:])
    assert any(isinstance(op.cf.exception(), RestartLimitExceeded) for op in ops[2:])
    assert m.toy.models[f"{SESSION}:train:0"].applied == [1.0, 2.0]


def test_recovery_refuses_when_the_replay_log_overflowed() -> None:
    from tinker_actors.actors.training import SequenceBrokenError

    class ShortLog(TrainingUnderFaults):
        recovery = RecoveryPolicy(max_replay=2)

    m = ShortLog()
    ops = run_machine(m, [*["optim_step"] * 4, "settle", "fault:lose_model", "optim_step"])
    assert [op.outcome for op in ops] == ["ok"] * 4 + ["failed"]
    err = ops[-1].cf.exception()
    assert isinstance(err, SequenceBrokenError) and "max_replay=2" in str(err)
    # it says so instead of rebuilding a model without the first two steps
    assert all(not model.applied or model.applied[0] == 1.0 for model in m.toy.models.values())
