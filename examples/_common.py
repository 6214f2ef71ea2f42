"""Helpers shared by the examples: environment variables, the model default, small printers.

Every example reads its settings from ``TINKER_*`` environment variables, as the Tinkex
examples do. With no ``TINKER_BASE_URL`` the client starts the embedded local server, so the
defaults fit its built-in models (``tinker-actors/byte-1m``, a byte-level tokenizer).
"""

from __future__ import annotations

import os
import sys
from typing import Any

DEFAULT_MODEL = "tinker-actors/byte-1m"


def env_str(name: str, default: str) -> str:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def env_int(name: str, default: int) -> int:
    return int(env_str(name, str(default)))


def env_float(name: str, default: float) -> float:
    return float(env_str(name, str(default)))


def env_flag(name: str, default: bool) -> bool:
    return env_str(name, "1" if default else "0").lower() in {"1", "true", "yes", "on"}


def base_model() -> str:
    return env_str("TINKER_BASE_MODEL", DEFAULT_MODEL)


def is_local() -> bool:
    """True when the examples talk to the embedded local server (no TINKER_BASE_URL)."""
    return not os.environ.get("TINKER_BASE_URL")


def endpoint() -> tuple[str, str]:
    """``(base_url, api_key)`` of the server the examples use; starts the embedded one if
    ``TINKER_BASE_URL`` is unset (for code that speaks HTTP itself, or runs the CLI)."""
    url = os.environ.get("TINKER_BASE_URL")
    if url:
        return url.rstrip("/"), os.environ.get("TINKER_API_KEY", "")
    from tinker_actors.runtime import embedded_endpoint

    return embedded_endpoint()


def not_available(what: str) -> None:
    """The one-line notice for a step the local server cannot do (never a faked result)."""
    print(f"[not available locally] {what}", flush=True)


def fail(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
    raise SystemExit(1)


def text_datum(tinker: Any, tokenizer: Any, text: str) -> Any:
    """A next-token-prediction datum over the whole of ``text``."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    return tinker.Datum(
        model_input=tinker.ModelInput.from_ints(ids[:-1]),
        loss_fn_inputs={"target_tokens": ids[1:], "weights": [1.0] * (len(ids) - 1)},
    )
