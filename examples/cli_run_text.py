"""The CLI's sampler: ``tinker-actors sample --base-model M --prompt TEXT ...``, run as a
command against the examples' server (the embedded one when TINKER_BASE_URL is unset).

Env: TINKER_BASE_MODEL, TINKER_PROMPT ("Hello from the CLI runner"), TINKER_MAX_TOKENS (32),
TINKER_TEMPERATURE (0.7), TINKER_NUM_SAMPLES (1).
"""

from __future__ import annotations

import _common as c


def main() -> None:
    args = [
        "sample",
        "--base-model",
        c.base_model(),
        "--prompt",
        c.env_str("TINKER_PROMPT", "Hello from the CLI runner"),
        "--max-tokens",
        str(c.env_int("TINKER_MAX_TOKENS", 32)),
        "--temperature",
        str(c.env_float("TINKER_TEMPERATURE", 0.7)),
        "--num-samples",
        str(c.env_int("TINKER_NUM_SAMPLES", 1)),
    ]
    c.run_cli(*args)  # the API key travels in the environment, never on the command line


if __name__ == "__main__":
    main()
