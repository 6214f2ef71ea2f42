"""How a large forward_backward is split into requests (a preview of the chunks), then one
forward_backward over all of it and an optim_step with AdamParams (weight_decay, grad_clip_norm).

Env: TINKER_BASE_MODEL, TINKER_CHUNK_COUNT (number of data, 1025),
TINKER_RUN_COUNT (tokens per datum, 16).
"""

from __future__ import annotations

import _common as c

import tinker_actors as tinker
from tinker_actors.types.fwdbwd import chunk_data


def main() -> None:
    count = c.env_int("TINKER_CHUNK_COUNT", 1025)
    run = c.env_int("TINKER_RUN_COUNT", 16)
    tokens = [(i * 7 + 65) % 256 for i in range(run + 1)]
    datum = tinker.Datum(
        model_input=tinker.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={"target_tokens": tokens[1:], "weights": [1.0] * run},
    )
    data = [datum] * count

    with tinker.ServiceClient() as service:
        training = service.create_lora_training_client(base_model=c.base_model(), rank=8).result()
        # The limits the server announced at start-up (client/config), as the client uses them.
        cfg = service.holder.client_config
        sizes = [
            len(chunk)
            for chunk, _ in chunk_data(
                data, cfg.fwdbwd_max_chunk_len, cfg.fwdbwd_max_chunk_bytes_count
            )
        ]
        print(f"[info] chunk preview (byte-based): {sizes}")

        out = training.forward_backward(data, "cross_entropy").result()
        print(f"[ok] forward_backward over {count} data: loss:sum={out.metrics['loss:sum']:.2f}")
        adam = tinker.AdamParams(learning_rate=1e-4, weight_decay=0.01, grad_clip_norm=1.0)
        step = training.optim_step(adam).result()
        print(f"[ok] optim_step metrics: {step.metrics}")


if __name__ == "__main__":
    main()
