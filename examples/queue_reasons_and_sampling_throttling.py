"""Queue states and sampling throttling: queue-state events as the client sees them, the
warning a paused sampler logs (with the server's reason), the byte estimate that sampling
admission charges a prompt, and a burst of samples through that admission.

Admission (see docs/sampling.md): at most 400 asample requests at once and a 10 MB budget
charged 10 B per prompt token; after a 429 every dispatch pauses, then concurrency is capped
at 10 and estimates count 20x for 10 s. The local server answers 429 only past its queue
depth, so here the burst goes straight through.

Env: TINKER_BASE_MODEL, TINKER_PROMPT, TINKER_BURST (32).
"""

from __future__ import annotations

import asyncio
import logging
import sys

import _common as c
from tinker_actors.lib.api_future_impl import QueueState  # the official module path

import tinker_actors as tinker
from tinker_actors import events, metrics
from tinker_actors.types.fwdbwd import estimate_model_input_bytes


def main() -> None:
    logging.basicConfig(
        stream=sys.stdout, level=logging.WARNING, format="[%(levelname)s] %(message)s"
    )
    hid = events.attach(
        lambda name, m, md: print(
            f"[queue] state={md.get('queue_state')}, reason={md.get('queue_state_reason')}, "
            f"request_id={md.get('request_id')}"
        ),
        events.QUEUE_STATE_CHANGE,
    )
    prompt_text = c.env_str("TINKER_PROMPT", "Hello from tinker_actors!")
    with tinker.ServiceClient() as service:
        sampler = service.create_sampling_client(base_model=c.base_model()).result()
        print("[info] a paused queue, as the server would report it:")
        sampler.on_queue_state_change(
            QueueState.PAUSED_CAPACITY, "server says: running short on capacity (demo)"
        )

        prompt = tinker.ModelInput.from_ints(
            sampler.get_tokenizer().encode(prompt_text, add_special_tokens=False)
        )
        print(
            f"[info] estimated prompt bytes: {estimate_model_input_bytes(prompt)} ({prompt.length} tokens)"
        )

        burst = c.env_int("TINKER_BURST", 32)
        params = tinker.SamplingParams(max_tokens=8)

        async def run_burst() -> list[tinker.SampleResponse]:
            return await asyncio.gather(*(sampler.sample(prompt, 1, params) for _ in range(burst)))

        results = asyncio.run(run_burst())
        snap = metrics.snapshot()["counters"]
        print(
            f"[info] burst of {burst}: 429s={snap.get('requests_429', 0):g} retries={snap.get('retries_total', 0):g}"
        )
        res = sampler.sample(prompt, 2, params).result()
        print(
            f"[ok] sample returned {len(res.sequences)} sequence(s) (and {len(results)} in the burst)"
        )
    events.detach(hid)


if __name__ == "__main__":
    main()
