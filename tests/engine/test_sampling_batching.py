"""Merged sampler weights and the vectorised decode loop: same samples as the reference forms."""

from __future__ import annotations

import numpy as np
import torch

from tinker_actors.server.engine.base import LoraSpec, SampleJob
from tinker_actors.server.engine.lora import merge_adapter, use_adapter
from tinker_actors.server.engine.tokenizer import BOS_ID, EOS_ID
from tinker_actors.server.engine.torch_engine import TorchEngine

M1 = "tinker-actors/byte-1m"


def _prompt(text: str) -> np.ndarray:
    return np.array([BOS_ID, *text.encode()], dtype=np.int64)


def _lora_engine(cache_dir, budget: int | None = None) -> TorchEngine:
    kw = {} if budget is None else {"merged_budget_bytes": budget}
    eng = TorchEngine(cache_dir=cache_dir, **kw)
    eng.create_model("m", M1, LoraSpec(rank=4, seed=3))
    with torch.no_grad():
        g = torch.Generator().manual_seed(5)
        for pair in eng._models["m"].adapter.pairs.values():
            pair.b.copy_(torch.randn(pair.b.shape, generator=g) * 0.05)
    return eng


def _jobs() -> list[SampleJob]:
    """Mixed lengths, stops and settings, so rows finish at different steps."""
    return [
        SampleJob(prompt=_prompt("hello"), num_samples=3, max_tokens=20, seed=1),
        SampleJob(prompt=_prompt("a longer prompt here"), max_tokens=7, seed=2, top_k=5),
        SampleJob(prompt=_prompt("x"), max_tokens=25, temperature=0.0, stop_tokens=(101, 32)),
        SampleJob(prompt=_prompt("the"), max_tokens=30, seed=4, stop_strings=("e", "zz")),
        SampleJob(prompt=_prompt("q"), max_tokens=0, seed=5),
        SampleJob(prompt=_prompt("abc"), num_samples=2, max_tokens=16, seed=6, top_p=0.8),
        SampleJob(prompt=_prompt("eos"), max_tokens=40, seed=7, stop_tokens=(EOS_ID,)),
    ]


def _flat(outcomes):
    return [(s.tokens.tolist(), s.stop_reason) for o in outcomes for s in o.sequences]


def test_merged_adapter_matches_the_unmerged_forward(cache_dir):
    eng = _lora_engine(cache_dir)
    base = eng._base(M1)
    pairs = eng._models["m"].adapter.pairs
    ids = torch.from_numpy(_prompt("merge me please"))[None]
    with torch.no_grad():
        with use_adapter(pairs):
            ref = base.logits(ids)
        with use_adapter(merge_adapter(base.module, pairs)):
            merged = base.logits(ids)
        plain = base.logits(ids)
    torch.testing.assert_close(merged, ref, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(plain, ref, atol=1e-3)  # the adapter does change the output


def test_merged_and_unmerged_samplers_sample_alike(cache_dir):
    merged_eng = _lora_engine(cache_dir)
    plain_eng = _lora_engine(cache_dir, budget=0)  # too small to merge: always unmerged
    for eng in (merged_eng, plain_eng):
        eng.snapshot_sampler("s", "m")
    a = merged_eng.sample("s", _jobs())
    b = plain_eng.sample("s", _jobs())
    assert merged_eng.stats().extra["merged_samplers"] == 1
    assert plain_eng.stats().extra["merged_samplers"] == 0
    assert _flat(a) == _flat(b)
    for x, y in zip(a, b, strict=True):
        for s, t in zip(x.sequences, y.sequences, strict=True):
            np.testing.assert_allclose(s.logprobs, t.logprobs, atol=1e-4)


def test_evicted_sampler_re_merges_to_the_same_samples(cache_dir):
    eng = _lora_engine(cache_dir)
    eng.snapshot_sampler("s1", "m")
    first = eng.sample("s1", _jobs())
    one = eng._merged["s1"][1]
    eng._merged_budget = one  # room for exactly one merged sampler
    eng.snapshot_sampler("s2", "m")
    eng.sample("s2", _jobs()[:1])
    assert list(eng._merged) == ["s2"]  # s1 was evicted
    again = eng.sample("s1", _jobs())
    assert list(eng._merged) == ["s1"]
    assert _flat(again) == _flat(first)
    eng.close_sampler("s1")
    assert "s1" not in eng._merged


def test_batch_equals_one_job_at_a_time(cache_dir):
    """Rows finishing at different steps (kept, then compacted away) change nothing."""
    eng = _lora_engine(cache_dir)
    eng.snapshot_sampler("s", "m")
    jobs = _jobs() * 3  # enough rows that finished ones linger before a compaction
    together = eng.sample("s", jobs)
    alone = [eng.sample("s", [j])[0] for j in jobs]
    assert _flat(together) == _flat(alone)
    for x, y in zip(together, alone, strict=True):
        for s, t in zip(x.sequences, y.sequences, strict=True):
            np.testing.assert_allclose(s.logprobs, t.logprobs, atol=1e-5)
            assert len(s.tokens) == len(s.logprobs)
    lengths = {len(s.tokens) for o in together for s in o.sequences}
    assert len(lengths) > 3  # the rows really did finish at different steps
    reasons = {s.stop_reason for o in together for s in o.sequences}
    assert reasons == {"stop", "length"}


def test_stop_string_rows_beside_plain_rows(cache_dir):
    """A stop-string row ends at the token completing the string; rows beside it go on."""
    eng = _lora_engine(cache_dir)
    eng.snapshot_sampler("s", "m")
    prompt = _prompt("the")
    plain = SampleJob(prompt=prompt, max_tokens=40, seed=4, stop_at_eos=False)
    free = eng.sample("s", [plain])[0].sequences[0].tokens.tolist()
    at = next(i for i, t in enumerate(free) if i >= 2 and 33 <= t < 127)
    stop = chr(free[at])
    first = free.index(free[at])  # where the (ASCII) string first appears
    stopper = SampleJob(
        prompt=prompt, max_tokens=40, seed=4, stop_strings=(stop, "never-there"), stop_at_eos=False
    )
    out = eng.sample("s", [plain, stopper, plain])
    assert out[0].sequences[0].tokens.tolist() == free
    assert out[2].sequences[0].tokens.tolist() == free
    got = out[1].sequences[0]
    assert got.stop_reason == "stop"
    assert got.tokens.tolist() == free[: first + 1]
    assert len(got.logprobs) == first + 1
