"""Shared fixtures for the torch engine tests: one engine per test module, a tiny dataset."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tinker_actors.server.engine.base import DatumArrays  # noqa: E402
from tinker_actors.server.engine.tokenizer import BOS_ID  # noqa: E402
from tinker_actors.server.engine.torch_engine import TorchEngine  # noqa: E402

TEXTS = ["the quick brown fox\n", "hello world hello\n", "abcabcabcabc\n", "tinker tinker\n"]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("engine-cache")


@pytest.fixture(scope="module")
def engine(cache_dir):
    return TorchEngine(cache_dir=cache_dir)


def _sft_datum(text: str, weight: float = 1.0) -> DatumArrays:
    """Next-byte prediction of ``text`` after a BOS."""
    b = list(text.encode())
    tokens = np.array([BOS_ID, *b[:-1]], dtype=np.int64)
    return DatumArrays(
        tokens,
        {
            "target_tokens": np.array(b, dtype=np.int64),
            "weights": np.full(len(b), weight, dtype=np.float32),
        },
    )


@pytest.fixture
def sft_datum():
    """``sft_datum(text, weight=1.0)``: next-byte prediction of ``text`` after a BOS."""
    return _sft_datum


@pytest.fixture(scope="module")
def sft_batch() -> list[DatumArrays]:
    return [_sft_datum(t) for t in TEXTS]
