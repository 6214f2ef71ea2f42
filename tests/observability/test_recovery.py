"""Corrupted-run recovery end to end on the torch engine (issue 11).

A learning rate of 1e30 at a known step makes the next step's loss NaN and the optimizer
step after it leaves non-finite weights; the local server marks the run corrupted. The
monitor sees it, the executor rebuilds the same TrainingClient from its last good checkpoint,
and the loop carries on with finite losses.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tinker_actors as tinker
from tests.conftest import TEST_API_KEY
from tinker_actors import events
from tinker_actors.actors.recovery import RecoveryExecutor, RecoveryMonitor
from tinker_actors.config import RecoveryPolicy
from tinker_actors.server import LocalServer

BASE_MODEL = "tinker-actors/byte-1m"
BLOWUP = 3  # the step whose learning rate is 1e30
TEXT = list(b"the quick brown fox jumps over the lazy dog")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    srv = LocalServer(
        port=0,
        data_dir=tmp_path_factory.mktemp("recovery"),
        engine="torch",
        api_key=TEST_API_KEY,
        long_poll_s=2.0,
    ).start_in_thread()
    try:
        yield srv
    finally:
        srv.stop_in_thread()


@pytest.fixture
def recorded() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    seen: list[tuple[str, dict[str, Any]]] = []
    hid = events.attach(lambda n, m, md: seen.append((n, dict(md))), events="recovery")
    yield seen
    events.detach(hid)


def datum() -> Any:
    return tinker.types.Datum(
        model_input=tinker.types.ModelInput.from_ints(TEXT[:-1]),
        loss_fn_inputs={"target_tokens": TEXT[1:], "weights": [1.0] * (len(TEXT) - 1)},
    )


def step(tc: Any, lr: float) -> float:
    loss = tc.forward_backward([datum()], "cross_entropy").result().metrics["loss:sum"]
    tc.optim_step(tinker.types.AdamParams(learning_rate=lr)).result()
    return float(loss)


def start(server: Any, policy: RecoveryPolicy) -> tuple[Any, Any, RecoveryMonitor]:
    sc = tinker.ServiceClient(base_url=server.base_url, api_key=TEST_API_KEY)
    tc = sc.create_lora_training_client(base_model=BASE_MODEL, rank=4, seed=0).result()
    ex = RecoveryExecutor.start_for(sc)
    mon = RecoveryMonitor.start_for(sc, ex)
    mon.monitor(tc, policy)
    return sc, tc, mon


def test_policy_rejects_bad_values() -> None:
    for bad in (
        {"max_attempts": 0},
        {"max_attempts": 1.5},
        {"backoff": -1},
        {"poll_interval": float("inf")},
        {"backoff": 10, "max_backoff": 1},
        {"checkpoint": "best"},
        {"on_failure": 3},
        {"enabled": "yes"},
    ):
        with pytest.raises((ValueError, TypeError), match="RecoveryPolicy"):
            RecoveryPolicy(**bad)
    with pytest.raises(ValueError, match="max_concurrent"):
        RecoveryExecutor(max_concurrent=0)


def test_a_corrupted_run_resumes_on_the_same_client(
    server: Any, recorded: list[tuple[str, dict[str, Any]]]
) -> None:
    recovered = threading.Event()
    calls: list[tuple[str, str, str | None]] = []

    def on_recovery(old: str, new: str, ckpt: str | None) -> None:
        calls.append((old, new, ckpt))
        recovered.set()

    policy = RecoveryPolicy(poll_interval=0.05, backoff=0.05, on_recovery=on_recovery)
    sc, tc, mon = start(server, policy)
    first_run = tc.model_id
    rest = tinker.RestClient(base_url=server.base_url, api_key=TEST_API_KEY)
    losses: list[float] = []
    good: str | None = None
    for i in range(10):
        loss = step(tc, 1e30 if i == BLOWUP else 1e-2)
        losses.append(loss)
        if math.isnan(loss):
            # the user's loop notices the NaN and waits for recovery (bounded), then goes on
            assert recovered.wait(60), "the corrupted run was not recovered"
        elif i < BLOWUP and i % 2 == 0:
            good = tc.save_state(f"good-{i}").result().path
    sc_run = rest.get_training_run(first_run).result()
    assert sc_run.corrupted  # the server's own verdict on the old run
    first_nan = next(i for i, x in enumerate(losses) if math.isnan(x))
    assert first_nan == BLOWUP + 1  # 1e30 weights give a NaN loss one step later
    after = [x for x in losses[first_nan:] if not math.isnan(x)]
    assert after and all(math.isfinite(x) for x in after) and math.isfinite(losses[-1])
    # the first loss on the rebuilt model is the checkpoint's: the weights after step 2
    assert after[0] == pytest.approx(losses[BLOWUP], rel=1e-4)
    assert calls == [(first_run, tc.model_id, good)] and tc.model_id != first_run
    assert not rest.get_training_run(tc.model_id).result().corrupted
    names = [n for n, _ in recorded]
    assert names == [
        events.RECOVERY_DETECTED,
        events.RECOVERY_STARTED,
        events.RECOVERY_CHECKPOINT_SELECTED,
        events.RECOVERY_CLIENT_CREATED,
        events.RECOVERY_COMPLETED,
    ]
    assert recorded[2][1]["checkpoint"] == good
    assert recorded[4][1]["new_run_id"] == tc.model_id
    assert mon.watching(tc)  # the recovered run stays monitored
    sc.close("success").result()


def test_exhausted_attempts_call_on_failure(
    server: Any, recorded: list[tuple[str, dict[str, Any]]], tmp_path: Path
) -> None:
    failed = threading.Event()
    failures: list[tuple[str, BaseException]] = []

    def on_failure(run_id: str, exc: BaseException) -> None:
        failures.append((run_id, exc))
        failed.set()

    policy = RecoveryPolicy(
        checkpoint="tinker://no-such-run/weights/none",
        max_attempts=2,
        poll_interval=0.05,
        backoff=0.01,
        max_backoff=0.02,
        on_failure=on_failure,
    )
    sc, tc, mon = start(server, policy)
    run_id = tc.model_id
    for i in range(BLOWUP + 2):
        step(tc, 1e30 if i == BLOWUP else 1e-2)
    assert failed.wait(60)
    assert [r for r, _ in failures] == [run_id]
    assert isinstance(failures[0][1], tinker.NotFoundError)
    names = [n for n, _ in recorded]
    assert names == [
        events.RECOVERY_DETECTED,
        events.RECOVERY_STARTED,
        events.RECOVERY_FAILED,
        events.RECOVERY_STARTED,
        events.RECOVERY_FAILED,
        events.RECOVERY_EXHAUSTED,
    ]
    assert [md["attempt"] for n, md in recorded if n == events.RECOVERY_STARTED] == [1, 2]
    assert tc.model_id == run_id and not mon.watching(tc)  # given up: no longer watched
    sc.close("success").result()
