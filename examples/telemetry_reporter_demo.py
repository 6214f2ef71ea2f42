"""The session telemetry reporter step by step: generic events at several severities, a
non-fatal exception, a drain check, a batch of events, and the session end, with the
reporter's own counters after each step.

Env: TINKER_BASE_MODEL, TINKER_PROMPT. The demo turns telemetry on for its own session
even when TINKER_TELEMETRY is off (and says so).
"""

from __future__ import annotations

import os

import _common as c

import tinker_actors as tinker


def main() -> None:
    if os.environ.get("TINKER_TELEMETRY", "1").lower() in {"0", "false", "no", "off"}:
        print("TINKER_TELEMETRY is off in the environment: enabling it for this demo's session")
        os.environ["TINKER_TELEMETRY"] = "1"
    prompt = c.env_str("TINKER_PROMPT", "Hello from tinker_actors!")
    sent = []
    with tinker.ServiceClient() as service:
        sampler = service.create_sampling_client(base_model=c.base_model()).result()
        reporter = service.get_telemetry()
        print(f"1) Reporter for session {reporter.snapshot()['session_id']}")

        reporter.log("demo.started", {"prompt": prompt})
        reporter.log("demo.info", {"level": "info"}, "INFO")
        reporter.log("demo.warning", {"level": "warning"}, "WARNING")
        reporter.log("demo.debug", {"level": "debug"}, "DEBUG")
        sent += ["demo.started", "demo.info", "demo.warning", "demo.debug"]
        print(f"2) Logged 4 generic events: {reporter.snapshot()}")

        try:
            raise ValueError("a handled error, reported without ending the session")
        except ValueError as exc:
            reporter.log_exception_sync(exc, "WARNING")
            sent.append("UNHANDLED_EXCEPTION (non-fatal)")
        print("3) Logged a non-fatal exception")

        ids = sampler.get_tokenizer().encode(prompt, add_special_tokens=False)
        res = sampler.sample(
            tinker.ModelInput.from_ints(ids), 1, tinker.SamplingParams(max_tokens=8)
        ).result()
        reporter.log("demo.sampling_complete", {"tokens": len(res.sequences[0].tokens)})
        sent.append("demo.sampling_complete")
        print(
            f"4) Sampled {len(res.sequences[0].tokens)} tokens; drained={reporter.wait_until_drained(10)}"
        )

        for i in range(5):
            reporter.log("demo.batch_event", {"i": i})
        reporter.log("demo.completing")
        sent += ["demo.batch_event x5", "demo.completing"]
        print(f"5) Logged 6 more; drained={reporter.wait_until_drained(10)}")
        print(f"6) Counters before close: {reporter.snapshot()}")
    # Closing the ServiceClient stops the reporter: SESSION_END, then a final flush.
    snap = reporter.snapshot()
    print(
        f"7) Session closed: session_ended={snap['session_ended']} flushed={snap['flushed']}/{snap['pushed']}"
    )
    print("Summary: events sent: " + ", ".join(sent) + ", SESSION_START, SESSION_END")


if __name__ == "__main__":
    main()
