"""Corrupted-run recovery, end to end: a RecoveryMonitor watches a TrainingClient; a fault is
injected for real (one optim_step with learning rate 1e30 leaves non-finite weights, and the
server marks the run corrupted); the RecoveryExecutor rebuilds the same client from its last
save_state; the on_recovery callback fires; training goes on and saves a second checkpoint.

Env: TINKER_BASE_MODEL, TINKER_RECOVERY_TIMEOUT (seconds to wait for recovery, 120).
"""

from __future__ import annotations

import math
import threading

import _common as c

import tinker_actors as tinker
from tinker_actors.actors.recovery import RecoveryExecutor, RecoveryMonitor


def main() -> None:
    recovered = threading.Event()
    seen: dict[str, str | None] = {}

    def on_recovery(old_run: str, new_run: str, checkpoint: str | None) -> None:
        print(f"Recovery callback: old={old_run} new={new_run} cp={checkpoint}", flush=True)
        seen.update(old=old_run, new=new_run, cp=checkpoint)
        recovered.set()

    def on_failure(run_id: str, error: BaseException) -> None:
        print(f"[error] recovery of {run_id} failed: {error!r}", flush=True)
        recovered.set()

    policy = tinker.RecoveryPolicy(
        poll_interval=0.5,
        backoff=1.0,
        max_backoff=10.0,
        max_attempts=5,
        on_recovery=on_recovery,
        on_failure=on_failure,
    )
    with tinker.ServiceClient() as service:
        training = service.create_lora_training_client(base_model=c.base_model(), rank=8).result()
        datum = c.text_datum(
            tinker, training.get_tokenizer(), "the quick brown fox jumps over the lazy dog"
        )
        executor = RecoveryExecutor.start_for(service, max_concurrent=1)
        monitor = RecoveryMonitor.start_for(service, executor)
        monitor.monitor(training, policy)

        def step(lr: float) -> float:
            loss = training.forward_backward([datum], "cross_entropy").result().metrics["loss:sum"]
            training.optim_step(tinker.AdamParams(learning_rate=lr)).result()
            return float(loss)

        step(1e-2)
        path = training.save_state("recovery-live-1").result().path
        print(f"Saved checkpoint {path}")
        print("Injecting a fault: one optim_step with learning_rate=1e30")
        step(1e30)
        loss = step(1e-2)
        print(
            f"Next loss: {loss} (the weights are no longer finite)"
            if math.isnan(loss)
            else f"Next loss: {loss}"
        )
        if not recovered.wait(c.env_float("TINKER_RECOVERY_TIMEOUT", 120)):
            c.fail("[error] the corrupted run was not recovered in time")
        if "new" not in seen:
            raise SystemExit(1)
        print(f"Recovered from {seen['cp']}")
        loss = step(1e-2)
        print(f"Loss after recovery: {loss:.4f}")
        second = training.save_state("recovery-live-2").result().path
        print(f"Second checkpoint saved: {second}")


if __name__ == "__main__":
    main()
