"""Tokenizer resolution against the official SDK 0.38, the process-wide cache, encode/decode."""

from __future__ import annotations

import sys
import threading
import types as pytypes
from typing import Any

import pytest

pytest.importorskip("transformers")

from tinker_actors import tokenizers

OFFICIAL = pytest.importorskip("tinker.lib.public_interfaces.sampling_client")

TABLE: list[tuple[str, str | None]] = [
    ("meta-llama/Llama-3.1-8B", None),
    ("meta-llama/Llama-3.2-1B-Instruct", None),
    ("meta-llama/Llama-3.3-70B-Instruct:peft", None),
    ("meta-llama/Llama-2-7b-hf", None),
    ("Qwen/Qwen3-8B", None),
    ("Qwen/Qwen3-8B/variant", None),
    ("Qwen/Qwen3-30B-A3B-Base:abc", None),
    ("deepseek-ai/DeepSeek-V3.1/fp8", None),
    ("gpt2", None),
    ("moonshotai/Kimi-K2-Thinking", None),
    ("moonshotai/Kimi-K2.5-Text-Only", None),
    ("moonshotai/Kimi-K2.5", None),
    ("moonshotai/Kimi-K2.6", None),
    ("moonshotai/Kimi-K3", None),
    ("moonshotai/Kimi-K2-Instruct", None),
    ("Qwen/Qwen3-8B", "Qwen/Qwen3-8B-Base"),
    ("meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-8B"),
    ("anything/at-all", "moonshotai/Kimi-K2-Thinking"),
    ("openai/gpt-oss-20b/low", "openai/gpt-oss-20b"),
]


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """AutoTokenizer.from_pretrained records its arguments instead of downloading."""
    from transformers import AutoTokenizer

    calls: list[tuple[str, dict[str, Any]]] = []

    def fake(name: str, *args: Any, **kwargs: Any) -> Any:
        calls.append((name, kwargs))
        return pytypes.SimpleNamespace(name=name, kwargs=kwargs)

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", fake)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    OFFICIAL._load_tokenizer_from_model_info.cache_clear()
    tokenizers.clear_cache()
    yield calls
    OFFICIAL._load_tokenizer_from_model_info.cache_clear()
    tokenizers.clear_cache()


def _essential(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: kwargs[k] for k in ("revision", "trust_remote_code") if k in kwargs}


@pytest.mark.parametrize(("model", "tokenizer_id"), TABLE)
def test_same_tokenizer_as_the_official_sdk(
    recorded: list[tuple[str, dict[str, Any]]], model: str, tokenizer_id: str | None
) -> None:
    OFFICIAL._load_tokenizer_from_model_info(model, tokenizer_id)
    ours = tokenizers.get_tokenizer(model, tokenizer_id)
    (official_name, official_kwargs), (our_name, our_kwargs) = recorded
    assert our_name == official_name
    assert _essential(our_kwargs) == _essential(official_kwargs)
    ref = tokenizers.resolve(model, tokenizer_id)
    assert ref.tokenizer_id == official_name == ours.name
    assert tokenizers.get_tokenizer_id(model) == tokenizers.resolve(model).tokenizer_id


def test_the_llama3_override_and_variants() -> None:
    assert tokenizers.get_tokenizer_id("meta-llama/Llama-3.1-8B") == tokenizers.LLAMA3_TOKENIZER
    assert tokenizers.get_tokenizer_id("Qwen/Qwen3-8B/variant") == "Qwen/Qwen3-8B"
    kimi = tokenizers.resolve("moonshotai/Kimi-K2.5-Text-Only")
    assert (kimi.tokenizer_id, kimi.trust_remote_code) == ("moonshotai/Kimi-K2.5", True)
    assert kimi.revision == "4d01dfe0332d63057c186e0b262165819efb6611"


def test_tml_names_without_tml_tokenizers_fail_like_the_official_sdk(
    recorded: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tml_tokenizers", None)  # import fails
    for name in ("TML/some-model", "thinkingmachines/other"):
        with pytest.raises(RuntimeError) as official:
            OFFICIAL._load_tokenizer_from_model_info(name)
        with pytest.raises(RuntimeError) as ours:
            tokenizers.get_tokenizer(name)
        assert str(ours.value) == str(official.value)
        assert "tml-renderers" in str(ours.value)
    assert recorded == []


def test_tml_names_use_tml_tokenizers_when_installed(
    recorded: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = pytypes.ModuleType("tml_tokenizers")
    mod = pytypes.ModuleType("tml_tokenizers.tinker_tokenizers")
    sentinel = object()
    mod.get_tinker_tokenizer = lambda name: sentinel if name == "TML/known" else None  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tml_tokenizers", pkg)
    monkeypatch.setitem(sys.modules, "tml_tokenizers.tinker_tokenizers", mod)
    assert tokenizers.get_tokenizer("TML/known") is sentinel
    assert OFFICIAL._load_tokenizer_from_model_info("TML/known") is sentinel
    # unknown to tml-tokenizers: both fall back to the hub by name
    tokenizers.get_tokenizer("TML/unknown")
    OFFICIAL._load_tokenizer_from_model_info("TML/unknown")
    assert [c[0] for c in recorded] == ["TML/unknown", "TML/unknown"]


def test_each_tokenizer_loads_once_under_concurrency(monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoTokenizer

    tokenizers.clear_cache()
    entered = threading.Event()
    release = threading.Event()
    calls: list[str] = []

    def slow(name: str, **kwargs: Any) -> Any:
        calls.append(name)
        entered.set()
        assert release.wait(10)
        return pytypes.SimpleNamespace(name=name)

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", slow)
    results: list[Any] = []
    threads = [
        threading.Thread(target=lambda: results.append(tokenizers.get_tokenizer("org/m/v")))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    assert entered.wait(10)
    release.set()
    for t in threads:
        t.join(10)
    assert calls == ["org/m"]
    assert len(results) == 8 and all(r is results[0] for r in results)
    tokenizers.clear_cache()


def test_a_failed_load_names_the_model_and_is_not_cached(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from transformers import AutoTokenizer

    tokenizers.clear_cache()
    attempts: list[dict[str, Any]] = []

    def fail(name: str, **kwargs: Any) -> Any:
        attempts.append(kwargs)
        raise OSError("not found")

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", fail)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(tokenizers.TokenizerError) as info:
        tokenizers.get_tokenizer("Qwen/Qwen3-8B/variant")
    assert info.value.model == "Qwen/Qwen3-8B/variant"
    assert "HF_HUB_OFFLINE" in str(info.value) and "'Qwen/Qwen3-8B'" in str(info.value)
    assert attempts[-1]["local_files_only"] is True
    with pytest.raises(tokenizers.TokenizerError, match="holds no loadable tokenizer"):
        tokenizers.get_tokenizer(str(tmp_path))
    assert attempts[-1]["local_files_only"] is True
    with pytest.raises(tokenizers.TokenizerError):
        tokenizers.get_tokenizer("Qwen/Qwen3-8B/variant")
    assert len(attempts) == 3  # the failure was not cached
    with pytest.raises(TypeError, match="model_name"):
        tokenizers.resolve("")


def test_encode_decode_with_a_local_directory(tmp_path: Any) -> None:
    """A real byte-level tokenizer saved to disk: loads offline, round-trips text."""
    from tinker_actors.server.engine.tokenizer import byte_tokenizer_dir

    path = byte_tokenizer_dir(tmp_path)
    tokenizers.clear_cache()
    ids = tokenizers.encode("héllo", "tinker-actors/byte-1m", tokenizer_id=str(path))
    assert tokenizers.decode(ids, "tinker-actors/byte-1m", tokenizer_id=str(path)) == "héllo"
    assert tokenizers.resolve("x", str(path)).source == "local"
    tok = tokenizers.get_tokenizer(str(path))
    assert tokenizers.get_tokenizer("tinker-actors/byte-1m", str(path)) is tok
    with pytest.raises(TypeError, match="text must be a str"):
        tokenizers.encode(b"bytes", "m", tokenizer_id=str(path))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="ids must be integers"):
        tokenizers.decode([1, "2"], "m", tokenizer_id=str(path))  # type: ignore[list-item]
    tokenizers.clear_cache()


def test_a_training_clients_get_info_supplies_the_tokenizer_id() -> None:
    def client(model: str, tokenizer_id: str | None) -> Any:
        md = pytypes.SimpleNamespace(model_name=model, tokenizer_id=tokenizer_id)
        return pytypes.SimpleNamespace(get_info=lambda: pytypes.SimpleNamespace(model_data=md))

    tc = client("meta-llama/Llama-3.1-8B", "org/special-tokenizer:rev2")
    assert tokenizers.get_tokenizer_id("meta-llama/Llama-3.1-8B", tc) == "org/special-tokenizer"
    tc = client("Qwen/Qwen3-8B/variant", None)
    assert tokenizers.get_tokenizer_id("", tc) == "Qwen/Qwen3-8B"
