"""A byte-level tokenizer that needs no download, saved as a Hugging Face tokenizer directory.

Token ids 0..255 are the UTF-8 bytes themselves (so ``encode(text)`` is just the text's bytes),
then ``<pad>`` = 256, ``<bos>`` = 257, ``<eos>`` = 258. Nothing is added automatically on
encode (no BOS): what you encode is what the model sees. The directory is written once,
atomically (temp dir + rename), and its contents are deterministic, so any process can share it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tokenizers import Tokenizer

PAD_ID = 256
BOS_ID = 257
EOS_ID = 258
VOCAB_SIZE = 259
SPECIAL_TOKENS = {"<pad>": PAD_ID, "<bos>": BOS_ID, "<eos>": EOS_ID}
# Bump when the saved files change so old cache dirs are not reused.
TOKENIZER_VERSION = "byte-v1"

_lock = threading.Lock()


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character map, which the ByteLevel pre-tokenizer uses."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs, strict=True)}


def build_tokenizer() -> Tokenizer:
    """The `tokenizers.Tokenizer`: BPE without merges over the 256 byte symbols."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    vocab = {ch: b for b, ch in _bytes_to_unicode().items()}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    assert tok.get_vocab_size() == VOCAB_SIZE
    return tok


def default_cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("tinker-actors"))


def byte_tokenizer_dir(cache_dir: Path | None = None) -> Path:
    """Path of the saved tokenizer directory, creating it once (atomically) if missing."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / "tokenizers" / TOKENIZER_VERSION
    if (target / "tokenizer.json").is_file():
        return target
    with _lock:
        if (target / "tokenizer.json").is_file():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
        try:
            _write_tokenizer_files(tmp)
            try:
                os.rename(tmp, target)
            except OSError:
                # Another process won the race; its files are identical.
                if not (target / "tokenizer.json").is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _write_tokenizer_files(directory: Path) -> None:
    """tokenizer.json plus configs written by hand, so they load in transformers 4.x and 5.x."""
    build_tokenizer().save(str(directory / "tokenizer.json"))
    specials = {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>"}
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **specials,
        "model_max_length": 1024,
        "clean_up_tokenization_spaces": False,
        "add_bos_token": False,
        "add_eos_token": False,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    (directory / "special_tokens_map.json").write_text(
        json.dumps(specials, indent=2, sort_keys=True)
    )


@lru_cache(maxsize=8)
def load_fast_tokenizer(directory: str) -> Tokenizer | None:
    """A `tokenizers.Tokenizer` for a tokenizer directory (used for stop-string decoding)."""
    from tokenizers import Tokenizer

    path = Path(directory) / "tokenizer.json"
    if path.is_file():
        return Tokenizer.from_file(str(path))
    return None
