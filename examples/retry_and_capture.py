"""Retries and exception capture: the official RetryHandler runs a flaky call (a 500 on the
first two attempts) with exponential backoff, inside the telemetry reporter's
capture_exceptions, which would report an exception that escaped.

Env: TINKER_RETRY_BASE_DELAY (seconds, 0.2). Telemetry is reported when the session has a
reporter (TINKER_TELEMETRY on); without one the retries still run.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import _common as c
from tinker_actors.lib.retry_handler import RetryConfig, RetryHandler

import tinker_actors as tinker


def main() -> None:
    base = c.env_float("TINKER_RETRY_BASE_DELAY", 0.2)
    with tinker.ServiceClient() as service:
        _ = service.holder  # start the session, so it has its reporter
        reporter = service.get_telemetry()
        if reporter is not None:
            print("Telemetry reporter started for the session.")
        else:
            print("Telemetry reporter skipped (TINKER_TELEMETRY is off).")

        attempts = 0
        last = time.monotonic()

        async def flaky() -> str:
            nonlocal attempts, last
            now = time.monotonic()
            print(f"[retry start] attempt={attempts} (+{1000 * (now - last):.0f}ms)")
            last = now
            attempts += 1
            if attempts < 3:
                raise tinker.InternalServerError("synthetic 500 for retry demo", status_code=500)
            return f"succeeded on attempt {attempts}"

        handler = RetryHandler(
            RetryConfig(retry_delay_base=base, jitter_factor=0.0), telemetry=reporter
        )
        capture = reporter.capture_exceptions(fatal=True) if reporter else contextlib.nullcontext()
        with capture:
            result = asyncio.run(handler.execute(flaky))
        print(f"[retry stop] retries={handler.retry_count}")
        print(f"Final result: {result!r}")


if __name__ == "__main__":
    main()
