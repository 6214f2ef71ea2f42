from __future__ import annotations

import json

from transformers import AutoTokenizer

from tinker_actors.server.engine.tokenizer import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    VOCAB_SIZE,
    byte_tokenizer_dir,
)

M1 = "tinker-actors/byte-1m"
M20 = "tinker-actors/byte-20m"


def test_tokenizer_dir_loads_offline_and_round_trips(engine, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = engine.tokenizer_dir(M1)
    assert path == engine.tokenizer_dir(M20)
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    text = "héllo wörld 🎉\nline two\t<x>"
    ids = tok.encode(text)
    assert ids == list(text.encode())  # plain bytes, nothing added
    assert tok.decode(ids) == text
    assert (tok.eos_token_id, tok.bos_token_id, tok.pad_token_id) == (EOS_ID, BOS_ID, PAD_ID)
    assert len(tok) == VOCAB_SIZE
    assert engine.eos_token_id(M1) == EOS_ID


def test_tokenizer_dir_is_created_once_and_deterministic(tmp_path):
    a = byte_tokenizer_dir(tmp_path / "a")
    b = byte_tokenizer_dir(tmp_path / "b")
    again = byte_tokenizer_dir(tmp_path / "a")
    assert a == again
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    config = json.loads((a / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast"
    # no temp dirs left behind
    assert [p.name for p in (tmp_path / "a" / "tokenizers").iterdir()] == [a.name]
