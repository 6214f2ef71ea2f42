"""Training and sampling through a fault-injecting proxy, with the server's engine as ground truth.

Each optimizer step of a loop carries its own learning rate, and the ``LedgerEngine`` records
the rates it applied per model (and the server counts ``optimizer_steps``), so "exactly N
steps applied, none doubled, none lost, in order" is checked against what the server did, not
what the client believes. Faults are seeded and bounded; waits that would only test the clock
(a ``Retry-After: 1`` burst, a 30 s outage) are shortened where the count of failed attempts,
not their length, is what defeats a count-based retry budget.

Figures (requests, faults by kind, steps, lost, doubled) are printed with ``-s``.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import tinker_actors as tinker
from tinker_actors import errors, types
from tinker_actors.server import LocalServer
from tinker_actors.transport import STANDARD, TRAINING

from .ledger import LedgerEngine, lr_of, read_ledger, step_of
from .proxy import FaultMix, FaultProxy

pytestmark = pytest.mark.e2e

MODEL = "tinker-actors/byte-1m"
KEY = "tml-fault-suite-key-0000"
OPTIM = "/api/v1/optim_step"
HANG_GUARD = 120.0  # seconds; every loop here finishes in a fraction of it


def datum() -> types.Datum:
    import numpy as np

    toks = list(b"fault suite")
    return types.Datum(
        model_input=types.ModelInput.from_ints(toks[:-1]),
        loss_fn_inputs={
            "target_tokens": np.array(toks[1:], dtype=np.int64),
            "weights": np.ones(len(toks) - 1, dtype=np.float32),
        },
    )


DATA = [datum()]


@dataclasses.dataclass
class LoopResult:
    ok_steps: list[int]
    failed_steps: list[int]
    errors: list[BaseException]


async def training_loop(
    tc: Any, steps: int, *, window: int = 8, save_every: int = 0, on_step: Any = None
) -> LoopResult:
    """forward_backward + optim_step per step, ``window`` steps in flight; every future is
    awaited (under a hang guard) and its outcome recorded."""
    res = LoopResult([], [], [])
    inflight: collections.deque[tuple[int, Any, Any, Any]] = collections.deque()

    async def settle() -> None:
        step, fb, opt, save = inflight.popleft()
        outs = await asyncio.wait_for(
            asyncio.gather(fb, opt, *([save] if save is not None else []), return_exceptions=True),
            HANG_GUARD,
        )
        if isinstance(outs[1], BaseException):
            res.failed_steps.append(step)
        else:
            res.ok_steps.append(step)
        res.errors.extend(o for o in outs if isinstance(o, BaseException))

    for step in range(steps):
        if on_step is not None:
            await on_step(step)
        fb = tc.forward_backward(DATA, "cross_entropy")
        opt = tc.optim_step(types.AdamParams(learning_rate=lr_of(step)))
        save = tc.save_state(f"s{step}") if save_every and step % save_every == 0 else None
        inflight.append((step, fb, opt, save))
        if len(inflight) >= window:
            await settle()
    while inflight:
        await settle()
    return res


def report(
    name: str, proxy: FaultProxy | None, steps: int, applied: list[float], **kw: Any
) -> None:
    seen = [step_of(lr) for lr in applied]
    doubled = len(seen) - len(set(seen))
    lost = steps - len(set(seen))
    line = f"[fault suite] {name}: steps={steps} applied={len(seen)} lost={lost} doubled={doubled}"
    if proxy is not None:
        line += f" requests={proxy.counts['requests']} faults={proxy.faults()}"
    for k, v in kw.items():
        line += f" {k}={v}"
    print(line)


@pytest.fixture
def ledger_server(tmp_path: Path) -> Any:
    engine = LedgerEngine()
    server = LocalServer(
        port=0, data_dir=tmp_path / "server", engine=engine, api_key=KEY, long_poll_s=1.0
    ).start_in_thread()
    try:
        yield server, engine
    finally:
        server.stop_in_thread()


@pytest.fixture
def fault_proxy(ledger_server: Any, request: pytest.FixtureRequest) -> Any:
    server, _ = ledger_server
    opts = getattr(request, "param", None) or {}
    proxy = FaultProxy(server.base_url, **opts).start()
    try:
        yield proxy
    finally:
        proxy.stop()


def service(base_url: str, **kw: Any) -> tinker.ServiceClient:
    return tinker.ServiceClient(base_url=base_url, api_key=KEY, **kw)


# ============================================================================ the default mix
@pytest.mark.parametrize(
    "fault_proxy",
    # issue 9's mix; Retry-After shortened from 1 s (the burst's length is not under test)
    [{"mix": FaultMix.issue9(retry_after=0.05), "seed": 9}],
    indirect=True,
)
async def test_issue9_mix_300_steps_and_a_sampling_burst_lose_nothing(
    ledger_server: Any, fault_proxy: FaultProxy
) -> None:
    server, engine = ledger_server
    async with service(fault_proxy.base_url) as sc:
        tc = await sc.create_lora_training_client(MODEL, rank=2)
        # backoff after a dropped submit: 50 ms, not 0.5 s (its length is not under test)
        tc._handle._state.retry = dataclasses.replace(TRAINING, base_delay=0.05, max_delay=0.5)
        res = await training_loop(tc, 300, window=100)
        sampler = await sc.create_sampling_client(base_model=MODEL)
        params = types.SamplingParams(max_tokens=4)
        prompts = [types.ModelInput.from_ints([1 + i % 200, 2, 3]) for i in range(300)]
        samples = await asyncio.wait_for(
            asyncio.gather(*(sampler.sample(p, 2, params) for p in prompts)), HANG_GUARD
        )
        model_id = tc.model_id
        steps_counted = server.model_counters()[model_id]["optimizer_steps"]
    applied = engine.steps[model_id]
    report(
        "issue-9 mix",
        fault_proxy,
        300,
        applied,
        samples=len(samples),
        sample_jobs_run=engine.sample_jobs,
    )
    assert res.errors == [] and res.ok_steps == list(range(300))
    assert applied == [lr_of(i) for i in range(300)]  # exactly once each, in order
    assert steps_counted == 300
    assert all(len(s.sequences) == 2 for s in samples)  # 0 samples lost
    assert engine.sample_jobs >= 300
    faults = fault_proxy.faults()
    assert faults.get("drop_before") and faults.get("drop_after") and faults.get("error_5xx")


# ============================================================================ acceptance
async def test_ten_429s_at_once_on_optim_step(ledger_server: Any, fault_proxy: FaultProxy) -> None:
    server, engine = ledger_server
    # more 429s in a row than a count-based budget (6 attempts) survives
    assert STANDARD.max_attempts is not None and STANDARD.max_attempts < 10
    fault_proxy.burst_at(OPTIM, nth=100, count=10, retry_after=0.1)
    async with service(fault_proxy.base_url) as sc:
        tc = await sc.create_lora_training_client(MODEL, rank=2)
        res = await training_loop(tc, 300)
        model_id = tc.model_id
        steps_counted = server.model_counters()[model_id]["optimizer_steps"]
    applied = engine.steps[model_id]
    report("10 x 429 on optim_step", fault_proxy, 300, applied)
    assert fault_proxy.faults() == {"burst_429": 10}
    assert res.errors == [] and res.ok_steps == list(range(300))
    assert applied == [lr_of(i) for i in range(300)]
    assert steps_counted == 300


# 8 s: long enough that the waiting optim_step fails more often than a count budget allows;
# TINKER_FAULTS_OUTAGE_S=30 runs issue 9's 30 s outage (same assertions, 30 s longer).
OUTAGE_S = float(os.environ.get("TINKER_FAULTS_OUTAGE_S", "8"))


async def test_an_outage_of_503s_mid_loop(ledger_server: Any, fault_proxy: FaultProxy) -> None:
    server, engine = ledger_server
    fault_proxy.blackout_at(OPTIM, nth=120, seconds=OUTAGE_S)
    async with service(fault_proxy.base_url) as sc:
        tc = await sc.create_lora_training_client(MODEL, rank=2)
        # The budget (10 min) is the default; backoff is capped at 1 s instead of 30 s so the
        # loop resumes within a second of the outage's end instead of up to 30 s later. The
        # outage still costs the waiting optim_step more attempts than a count budget allows.
        tc._handle._state.retry = dataclasses.replace(TRAINING, max_delay=1.0)
        res = await training_loop(tc, 300)
        model_id = tc.model_id
        steps_counted = server.model_counters()[model_id]["optimizer_steps"]
    applied = engine.steps[model_id]
    report("503 outage", fault_proxy, 300, applied, outage_s=OUTAGE_S)
    assert fault_proxy.counts["blackout_503"] > 0
    optim_503s = fault_proxy.path_requests[OPTIM] - 300  # every optim_step beyond one each
    assert optim_503s > (STANDARD.max_attempts or 0)
    assert res.errors == [] and res.ok_steps == list(range(300))
    assert applied == [lr_of(i) for i in range(300)]
    assert steps_counted == 300


async def test_past_the_budget_the_sequence_breaks_and_says_how_long(
    ledger_server: Any, fault_proxy: FaultProxy
) -> None:
    _, engine = ledger_server
    # optim_step answers 503 from its 3rd request for longer than the test runs
    fault_proxy.blackout_at(OPTIM, nth=3, seconds=600.0, scope=OPTIM)
    async with service(fault_proxy.base_url) as sc:
        tc = await sc.create_lora_training_client(MODEL, rank=2)
        tc._handle._state.retry = dataclasses.replace(TRAINING, max_total=2.0, max_delay=0.5)
        res = await training_loop(tc, 6, window=6)
        model_id = tc.model_id
    assert res.ok_steps == [0, 1] and res.failed_steps == [2, 3, 4, 5]
    first = next(e for e in res.errors if isinstance(e, errors.InternalServerError))
    assert "over 2.0 s" in "".join(first.__notes__)
    broken = [e for e in res.errors if isinstance(e, tinker.SequenceBrokenError)]
    assert broken and "still failing after" in str(broken[0]) and "over 2 s" in str(broken[0])
    assert engine.steps[model_id] == [lr_of(0), lr_of(1)]


# ============================================================================ SIGKILL + recovery
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """The ledger server as a child process on a fixed port and data dir."""

    def __init__(self, tmp: Path) -> None:
        self.port = _free_port()
        self.data_dir = tmp / "data"
        self.ledger_dir = tmp / "ledger"
        self.ledger_dir.mkdir()
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        script = Path(__file__).with_name("serve_ledger.py")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(script.parent), *sys.path])}
        args = [str(script), str(self.port), str(self.data_dir), str(self.ledger_dir), KEY]
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, *args, stdout=asyncio.subprocess.PIPE, env=env
        )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 60)
        assert line.startswith(b"READY"), line

    async def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await asyncio.wait_for(self.proc.wait(), 30)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await asyncio.wait_for(self.proc.wait(), 30)

    async def counters(self) -> dict[str, dict[str, int]]:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{self.base_url}/api/v1/_local/stats", headers={"X-API-Key": KEY}) as r,
        ):
            assert r.status == 200
            return (await r.json())["models"]


async def test_sigkill_mid_loop_with_recovery_policy(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path)
    await srv.start()
    killed_at: list[int] = []

    async def on_step(step: int) -> None:
        if step == 150:
            await srv.kill()
            killed_at.append(step)
            await srv.start()  # same port, same data dir

    try:
        sc = service(srv.base_url, recovery_policy=tinker.RecoveryPolicy())
        async with sc:
            tc = await sc.create_lora_training_client(MODEL, rank=2)
            res = await training_loop(tc, 300, save_every=50, on_step=on_step)
            model_id = tc.model_id
            models = list(tc._handle._state.server_model_ids)
            restarts = sc.holder.supervisor.restarts
            counters = await srv.counters()
    finally:
        await srv.stop()
    applied = read_ledger(srv.ledger_dir, model_id)
    report(
        "SIGKILL + recovery",
        None,
        300,
        applied,
        told_ok=len(res.ok_steps),
        told_failed=len(res.failed_steps),
        models=len(models),
        restarts=restarts,
    )
    assert killed_at == [150]
    assert len(models) >= 2  # recovered onto a rebuilt model
    # the loop finished, every future answered (the hang guard would have raised), and the
    # model holds exactly the steps the user was told succeeded, each once, in order
    assert len(res.ok_steps) + len(res.failed_steps) == 300
    assert applied == [lr_of(i) for i in sorted(res.ok_steps)]
    assert counters[model_id]["optimizer_steps"] == len(res.ok_steps)
