"""Watching queue states on one sample and one forward_backward, three ways (OBSERVER_MODE):
``builtin``, the clients' own observers (a warning when a queue pauses, at most once a minute);
``custom``, your own on_queue_state_change on the sampling client; ``telemetry``, the
queue.state_change events only.

The local server never pauses its queues, so locally no change may be seen; the hosted
service reports paused_rate_limit / paused_capacity under load.

Env: OBSERVER_MODE (builtin), TINKER_BASE_MODEL.
"""

from __future__ import annotations

import _common as c

import tinker_actors as tinker
from tinker_actors import events


def main() -> None:
    mode = c.env_str("OBSERVER_MODE", "builtin")
    if mode not in {"builtin", "custom", "telemetry"}:
        c.fail(f"OBSERVER_MODE must be builtin, custom or telemetry, got {mode!r}")
    seen: list[str] = []
    hid = None
    with tinker.ServiceClient() as service:
        print("[step] creating clients")
        sampler = service.create_sampling_client(base_model=c.base_model()).result()
        training = service.create_lora_training_client(base_model=c.base_model(), rank=8).result()
        if mode == "builtin":
            print("[info] Using built-in observer (automatic logging)")
        elif mode == "custom":
            print("[info] Using a custom observer on the sampling client")

            def custom(state: object, reason: str | None) -> None:
                seen.append(f"{state}")
                print(f"[CustomObserver] sampling queue is {state} (reason: {reason})")

            sampler.on_queue_state_change = custom  # the client calls this on every change
        else:
            print("[info] Using telemetry events only")
            hid = events.attach(
                lambda n, m, md: (
                    seen.append(md.get("queue_state")),
                    print(
                        f"[telemetry] queue {md.get('queue_state')} ({md.get('queue_state_reason')})"
                    ),
                ),
                events.QUEUE_STATE_CHANGE,
            )

        print("[step] sampling")
        tok = sampler.get_tokenizer()
        ids = tok.encode("queue state demo", add_special_tokens=False)
        res = sampler.sample(
            tinker.ModelInput.from_ints(ids), 2, tinker.SamplingParams(max_tokens=8)
        ).result()
        print(f"[success] Got {len(res.sequences)} sample(s)")

        print("[step] forward_backward")
        try:
            out = training.forward_backward(
                [c.text_datum(tinker, tok, "queue state demo")], "cross_entropy"
            ).result()
            print(f"[success] forward_backward loss:sum={out.metrics['loss:sum']:.4f}")
        except tinker.RateLimitError as exc:
            print(f"[warning] Training failed (this is expected if rate limited): {exc}")
    if hid is not None:
        events.detach(hid)
    print(f"[done] mode={mode}, queue state changes observed: {len(seen)}")


if __name__ == "__main__":
    main()
