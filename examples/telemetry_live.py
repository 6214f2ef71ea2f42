"""Telemetry while sampling: the console event logger (one line per HTTP request, in Tinkex's
format), the session's telemetry reporter (generic events sent to /api/v1/telemetry), one
sample, and a flush.

Env: TINKER_BASE_MODEL, TINKER_PROMPT, TINKER_TELEMETRY (on unless 0/false/no/off).
"""

from __future__ import annotations

import logging

import _common as c

import tinker_actors as tinker
from tinker_actors import telemetry


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="[%(levelname)s] %(message)s")
    logging.getLogger("tinker_actors.events").setLevel(logging.INFO)
    handler_id = telemetry.attach_logger()  # HTTP start/stop/exception + queue state changes

    prompt = c.env_str("TINKER_PROMPT", "Hello from tinker_actors!")
    with tinker.ServiceClient() as service:
        sampler = service.create_sampling_client(base_model=c.base_model()).result()
        reporter = service.get_telemetry()
        if reporter is None:
            print("Telemetry reporter is off (TINKER_TELEMETRY); only the console log runs.")
        else:
            reporter.log("example.start", {"prompt_chars": len(prompt)})
        tokenizer = sampler.get_tokenizer()
        ids = tokenizer.encode(prompt, add_special_tokens=False)
        res = sampler.sample(
            tinker.ModelInput.from_ints(ids), 1, tinker.SamplingParams(max_tokens=16)
        ).result()
        print(f"Sampled sequences: {[tokenizer.decode(s.tokens) for s in res.sequences]!r}")
        if reporter is not None:
            reporter.log("example.complete", {"sequences": len(res.sequences)})
            drained = reporter.wait_until_drained(10)
            print(
                f"Flushed telemetry (drained={drained}, {reporter.snapshot()['flushed']} events sent); detach logger and exit."
            )
    telemetry.detach(handler_id)


if __name__ == "__main__":
    main()
