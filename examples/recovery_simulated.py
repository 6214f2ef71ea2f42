"""Corrupted-run recovery with the corruption flag simulated: the script tells a
RecoveryExecutor that the run is corrupted (as a RecoveryMonitor would on seeing
``corrupted: true``), and the executor really rebuilds the same TrainingClient from its last
checkpoint on a new run. Recovery events are printed as they happen.

Env: TINKER_BASE_MODEL.
"""

from __future__ import annotations

import _common as c

import tinker_actors as tinker
from tinker_actors import events
from tinker_actors.actors.recovery import RecoveryExecutor


def main() -> None:
    hid = events.attach(
        lambda name, m, md: print(f"   [event] {name} attempt={md.get('attempt', '-')}"), "recovery"
    )
    policy = tinker.RecoveryPolicy(
        backoff=0.1, max_backoff=0.4, max_attempts=3, restore_optimizer=True
    )
    with tinker.ServiceClient() as service:
        training = service.create_lora_training_client(base_model=c.base_model(), rank=8).result()
        datum = c.text_datum(tinker, training.get_tokenizer(), "recovery demo text")
        training.forward_backward([datum], "cross_entropy").result()
        training.optim_step(tinker.AdamParams(learning_rate=1e-3)).result()
        first = training.save_state("recovery-sim-0001").result().path
        old_run = training.model_id
        print(f"1) Seeded checkpoint {first}")

        executor = RecoveryExecutor.start_for(service)
        print(f"2) Simulated corruption flag on {old_run}")
        done = executor.recover(training, policy)
        new_run = done.result(timeout=120)
        print(f"3) Recovery succeeded from {first} -> {new_run}")

        training.forward_backward([datum], "cross_entropy").result()
        training.optim_step(tinker.AdamParams(learning_rate=1e-3)).result()
        second = training.save_state("recovery-sim-0002").result().path
        print(f"4) Checkpoints processed: {first}, {second}")

        run = tinker.RestClient().get_training_run(training.model_id).result()
        last = run.last_checkpoint.tinker_path if run.last_checkpoint else None
        print(
            f"Final run status: run={run.training_run_id} corrupted={run.corrupted} last_checkpoint={last}"
        )
    events.detach(hid)


if __name__ == "__main__":
    main()
