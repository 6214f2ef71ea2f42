"""The CLI's sampler with a prompt file and JSON output: the prompt (token ids as a JSON list,
or text) goes to a file, ``tinker-actors sample --prompt-file F --json --output OUT`` writes
the SampleResponse, and the script reads it back.

Env: TINKER_BASE_MODEL, TINKER_PROMPT, TINKER_PROMPT_TOKENS (a JSON list of ids; wins over
TINKER_PROMPT), TINKER_MAX_TOKENS (16).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import _common as c


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        prompt_file, out_file = Path(tmp) / "prompt.txt", Path(tmp) / "out.json"
        tokens = os.environ.get("TINKER_PROMPT_TOKENS")
        if tokens:
            prompt_file.write_text(json.dumps(json.loads(tokens)))
        else:
            prompt_file.write_text(c.env_str("TINKER_PROMPT", "Hello from a prompt file"))
        c.run_cli(
            "sample",
            "--base-model",
            c.base_model(),
            "--prompt-file",
            str(prompt_file),
            "--max-tokens",
            str(c.env_int("TINKER_MAX_TOKENS", 16)),
            "--json",
            "--output",
            str(out_file),
        )
        print(f"JSON output written to {out_file}")
        result = json.loads(out_file.read_text())
        seq = result["sequences"][0]
        print(
            f"Preview: {len(result['sequences'])} sequence(s); first has {len(seq['tokens'])} tokens, "
            f"stop_reason={seq['stop_reason']}, tokens[:8]={seq['tokens'][:8]}"
        )


if __name__ == "__main__":
    main()
