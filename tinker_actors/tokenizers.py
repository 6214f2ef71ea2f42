"""Tokenizer resolution and a process-wide tokenizer cache (the rules of the official SDK 0.38).

``resolve(model_name, tokenizer_id)`` says which tokenizer a model uses, without loading it:

- an explicit ``tokenizer_id`` (a training model's ``get_info``) wins; otherwise
- ``meta-llama/Llama-3*`` uses ``thinkingmachineslabinc/meta-llama-3-instruct-tokenizer``
  (the official repos are gated), ``org/model/variant`` uses ``org/model``, and any other
  name is its own tokenizer;
- ``TML/`` and ``thinkingmachines/`` tokenizers come from ``tml-tokenizers`` when it is
  installed (a clear error otherwise), and the Kimi models load at pinned revisions with
  ``trust_remote_code``;
- a ``:suffix`` (a revision tag) is dropped from names; an existing local directory is used
  as is and never downloads.

``get_tokenizer`` loads each resolved tokenizer once per process, also when many threads ask
at the same moment; a failed load is not cached. ``HF_HUB_OFFLINE=1`` means local files only.
"""

from __future__ import annotations

import numbers
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import TokenizerError

__all__ = [
    "LLAMA3_TOKENIZER",
    "TokenizerError",
    "TokenizerRef",
    "clear_cache",
    "decode",
    "encode",
    "get_tokenizer",
    "get_tokenizer_id",
    "resolve",
]

LLAMA3_TOKENIZER = "thinkingmachineslabinc/meta-llama-3-instruct-tokenizer"
_TML_PREFIXES = ("TML/", "thinkingmachines/")
_TML_MISSING = (
    "Thinking Machines models do not support get_tokenizer. Prefer to construct a renderer "
    "with tml-renderers instead: https://pypi.org/project/tml-renderers/"
)
# tokenizer id -> (id actually loaded, pinned revision); all of them need trust_remote_code
_KIMI: dict[str, tuple[str, str]] = {
    "moonshotai/Kimi-K2-Thinking": (
        "moonshotai/Kimi-K2-Thinking",
        "612681931a8c906ddb349f8ad0f582cb552189cd",
    ),
    "moonshotai/Kimi-K2.5-Text-Only": (
        "moonshotai/Kimi-K2.5",
        "4d01dfe0332d63057c186e0b262165819efb6611",
    ),
    "moonshotai/Kimi-K2.5": ("moonshotai/Kimi-K2.5", "4d01dfe0332d63057c186e0b262165819efb6611"),
    "moonshotai/Kimi-K2.6": ("moonshotai/Kimi-K2.6", "b5aabbfb20227ed42becbf5541dbffd213942c58"),
    "moonshotai/Kimi-K3": ("moonshotai/Kimi-K3", "f831ab66814297da540d832a5235f8e904f29d06"),
}


@dataclass(frozen=True)
class TokenizerRef:
    """Where a model's tokenizer comes from (no I/O was done to find it)."""

    tokenizer_id: str
    revision: str | None = None
    trust_remote_code: bool = False
    source: str = "hub"  # "hub" | "local" (a directory) | "tml" (tml-tokenizers)
    model_name: str = field(default="", compare=False)

    @property
    def key(self) -> tuple[str, str | None, bool, str]:
        return (self.tokenizer_id, self.revision, self.trust_remote_code, self.source)


def _strip_tag(name: str) -> str:
    return name if os.path.isdir(name) else name.split(":", 1)[0]


def resolve(model_name: str, tokenizer_id: str | None = None) -> TokenizerRef:
    """The tokenizer of ``model_name`` (``tokenizer_id``: the server's, when known)."""
    if not isinstance(model_name, str) or not model_name:
        raise TypeError(f"model_name must be a non-empty string, got {model_name!r}")
    if tokenizer_id is not None and (not isinstance(tokenizer_id, str) or not tokenizer_id):
        raise TypeError(f"tokenizer_id must be a non-empty string or None, got {tokenizer_id!r}")
    model = _strip_tag(model_name)
    if tokenizer_id is not None:
        tid = _strip_tag(tokenizer_id)
    elif model.startswith("meta-llama/Llama-3"):
        tid = LLAMA3_TOKENIZER
    elif model.count("/") == 2 and not os.path.isdir(model):
        org, name, _variant = model.split("/", 2)
        tid = f"{org}/{name}"
    else:
        tid = model
    if os.path.isdir(tid):
        return TokenizerRef(tid, source="local", model_name=model_name)
    if tid.startswith(_TML_PREFIXES):
        return TokenizerRef(tid, source="tml", model_name=model_name)
    if tid in _KIMI:
        repo, rev = _KIMI[tid]
        return TokenizerRef(repo, revision=rev, trust_remote_code=True, model_name=model_name)
    return TokenizerRef(tid, model_name=model_name)


def get_tokenizer_id(model_name: str, training_client: Any = None) -> str:
    """The tokenizer id for ``model_name``; a training client's ``get_info`` wins."""
    tokenizer_id = None
    if training_client is not None:
        md = training_client.get_info().model_data
        tokenizer_id = md.tokenizer_id
        model_name = model_name or md.model_name
    return resolve(model_name, tokenizer_id).tokenizer_id


# ----------------------------------------------------------------------------- loading
_cache: dict[tuple[Any, ...], Any] = {}
_locks: dict[tuple[Any, ...], threading.Lock] = {}
_guard = threading.Lock()
load_count: dict[tuple[Any, ...], int] = {}  # loads done per key (for tests and diagnostics)


def clear_cache() -> None:
    """Forgets every loaded tokenizer."""
    with _guard:
        _cache.clear()
        _locks.clear()


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _load(ref: TokenizerRef) -> Any:
    model = ref.model_name or ref.tokenizer_id
    if ref.source == "tml":
        try:
            from tml_tokenizers.tinker_tokenizers import get_tinker_tokenizer
        except ImportError as exc:
            raise RuntimeError(_TML_MISSING) from exc
        tok = get_tinker_tokenizer(ref.tokenizer_id)
        if tok is not None:
            return tok
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise TokenizerError(
            model, "transformers is not installed: pip install 'tinker-actors[local]'"
        ) from exc
    kwargs: dict[str, Any] = {}
    if ref.revision is not None:
        kwargs["revision"] = ref.revision
    if ref.trust_remote_code:
        kwargs["trust_remote_code"] = True
    local_only = ref.source == "local" or _offline()
    if local_only:
        kwargs["local_files_only"] = True
    try:
        return AutoTokenizer.from_pretrained(ref.tokenizer_id, **kwargs)
    except Exception as exc:
        if ref.source == "local":
            why = f"the directory {ref.tokenizer_id!r} holds no loadable tokenizer"
        elif local_only:
            why = f"HF_HUB_OFFLINE is set and {ref.tokenizer_id!r} is not in the local cache"
        else:
            why = f"{ref.tokenizer_id!r} could not be loaded"
        raise TokenizerError(model, f"{why} ({type(exc).__name__}: {exc})") from exc


def get_tokenizer(model_name: str, tokenizer_id: str | None = None) -> Any:
    """The tokenizer of ``model_name``, loaded once per process."""
    ref = resolve(model_name, tokenizer_id)
    key = ref.key
    tok = _cache.get(key)
    if tok is not None:
        return tok
    with _guard:
        lock = _locks.setdefault(key, threading.Lock())
    with lock:  # one loader per key; the others wait for its result
        tok = _cache.get(key)
        if tok is None:
            tok = _load(ref)
            load_count[key] = load_count.get(key, 0) + 1
            _cache[key] = tok
    return tok


def encode(
    text: str,
    model_name: str,
    *,
    tokenizer_id: str | None = None,
    add_special_tokens: bool = True,
) -> list[int]:
    """``text`` as token ids of ``model_name``'s tokenizer."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    tok = get_tokenizer(model_name, tokenizer_id)
    return list(tok.encode(text, add_special_tokens=add_special_tokens))


def decode(
    ids: Sequence[int],
    model_name: str,
    *,
    tokenizer_id: str | None = None,
    skip_special_tokens: bool = False,
) -> str:
    """Token ids back to text with ``model_name``'s tokenizer."""
    if isinstance(ids, str | bytes) or not isinstance(ids, Sequence):
        raise TypeError(f"ids must be a list of integers, got {type(ids).__name__}")
    bad = [i for i in ids if isinstance(i, bool) or not isinstance(i, numbers.Integral)]
    if bad:
        raise TypeError(f"ids must be integers, got {bad[0]!r}")
    tok = get_tokenizer(model_name, tokenizer_id)
    return str(tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens))
