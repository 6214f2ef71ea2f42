"""Persist and restore training state: save_state with a TTL, load_state_with_optimizer into
the same client, then a fresh client from the checkpoint
(create_training_client_from_state_with_optimizer), which keeps training.

Env: TINKER_BASE_MODEL, TINKER_SAVE_TTL_SECONDS (86400).
"""

from __future__ import annotations

import time
import warnings

import _common as c

import tinker_actors as tinker


def main() -> None:
    ttl = c.env_int("TINKER_SAVE_TTL_SECONDS", 86400)
    name = f"demo-checkpoint-{int(time.time() * 1000)}"
    with tinker.ServiceClient() as service:
        training = service.create_lora_training_client(base_model=c.base_model(), rank=8).result()
        datum = c.text_datum(tinker, training.get_tokenizer(), "persistence demo text")
        training.forward_backward([datum], "cross_entropy").result()
        training.optim_step(tinker.AdamParams(learning_rate=1e-3)).result()

        print(f"Checkpoint name: {name}")
        print(f"Checkpoint TTL: {ttl}s")
        path = training.save_state(name, ttl_seconds=ttl).result().path
        print(f"Saved checkpoint to {path}")

        with warnings.catch_warnings():  # deprecated in 0.38 (the next step is the new way)
            warnings.simplefilter("ignore", FutureWarning)
            training.load_state_with_optimizer(path).result()
        print("Reloaded checkpoint with optimizer state (load_state_with_optimizer, deprecated)")

        restored = service.create_training_client_from_state_with_optimizer(path).result()
        print(f"Created a fresh training client from checkpoint: {restored.model_id}")
        out = restored.forward_backward([datum], "cross_entropy").result()
        print(f"Restored client trains: loss:sum={out.metrics['loss:sum']:.4f}")


if __name__ == "__main__":
    main()
