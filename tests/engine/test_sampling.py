"""Sampling: seeds, greedy, stops, prompt logprobs, batching, limits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tinker_actors.server.engine.base import (
    AdamSpec,
    DatumArrays,
    EngineUserError,
    LoraSpec,
    SampleJob,
)
from tinker_actors.server.engine.sampling import DEFAULT_MAX_TOKENS
from tinker_actors.server.engine.tokenizer import BOS_ID, EOS_ID

M1 = "tinker-actors/byte-1m"


def _prompt(text: str) -> np.ndarray:
    return np.array([BOS_ID, *text.encode()], dtype=np.int64)


def _lora_sampler(engine, model_id: str) -> str:
    """A sampler (``{model_id}-s``) over a LoRA with non-zero B, so the adapter is in the
    computation."""
    engine.create_model(model_id, M1, LoraSpec(rank=4, seed=9))
    with torch.no_grad():
        g = torch.Generator().manual_seed(2)
        for pair in engine._models[model_id].adapter.pairs.values():
            pair.b.copy_(torch.randn(pair.b.shape, generator=g) * 0.05)
    engine.snapshot_sampler(f"{model_id}-s", model_id)
    return f"{model_id}-s"


@pytest.fixture(scope="module")
def sampler(engine):
    """Shared by the module's tests, which compare it with the live model "smp": none may
    train "smp" (the snapshot test trains a model of its own)."""
    return _lora_sampler(engine, "smp")


def _toks(outcome):
    return [s.tokens.tolist() for s in outcome.sequences]


def test_same_seed_same_tokens_whatever_the_batch(engine, sampler):
    job = SampleJob(prompt=_prompt("hello"), num_samples=3, max_tokens=12, seed=42)
    alone = engine.sample(sampler, [job])[0]
    other = SampleJob(
        prompt=_prompt("a much longer prompt than the other one"), max_tokens=30, seed=7, top_k=5
    )
    mixed = engine.sample(sampler, [other, job, other])[1]
    assert _toks(alone) == _toks(mixed)
    for a, b in zip(alone.sequences, mixed.sequences, strict=True):
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-5)
    assert len({tuple(t) for t in _toks(alone)}) > 1  # samples of one job differ
    different = engine.sample(
        sampler, [SampleJob(prompt=job.prompt, num_samples=3, max_tokens=12, seed=43)]
    )[0]
    assert _toks(different) != _toks(alone)


def _forward_logprobs(engine, model_id, prompt, tokens):
    full = np.concatenate([prompt, np.asarray(tokens, dtype=np.int64)])
    d = DatumArrays(full[:-1], {"target_tokens": full[1:]})
    res = engine.forward_backward(model_id, [d], "cross_entropy", {}, True)
    return res.outputs[0]["logprobs"], full


def test_greedy_is_argmax_and_logprobs_match_forward(engine, sampler):
    prompt = _prompt("greedy")
    out = engine.sample(
        sampler, [SampleJob(prompt=prompt, max_tokens=10, temperature=0.0, stop_at_eos=False)]
    )[0]
    seq = out.sequences[0]
    assert seq.stop_reason == "length" and len(seq.tokens) == 10
    assert seq.tokens.dtype == np.int32 and seq.logprobs.dtype == np.float32
    lp, full = _forward_logprobs(engine, "smp", prompt, seq.tokens)
    np.testing.assert_allclose(seq.logprobs, lp[len(prompt) - 1 :], atol=1e-5)
    # each greedy token is the argmax of the model's next-token distribution
    m = engine._models["smp"]
    from tinker_actors.server.engine.lora import use_adapter

    with torch.no_grad(), use_adapter(m.adapter.pairs):
        logits = m.base.logits(torch.from_numpy(full[:-1])[None])[0]
    assert logits[len(prompt) - 1 :].argmax(-1).tolist() == seq.tokens.tolist()


def test_temperature_top_k_top_p_restrict_choices(engine, sampler):
    prompt = _prompt("x")
    m = engine._models["smp"]
    from tinker_actors.server.engine.lora import use_adapter

    with torch.no_grad(), use_adapter(m.adapter.pairs):
        first = m.base.logits(torch.from_numpy(prompt)[None])[0, -1]
    top3 = set(first.topk(3).indices.tolist())
    jobs = [
        SampleJob(prompt=prompt, num_samples=16, max_tokens=1, seed=s, top_k=3) for s in range(4)
    ]
    got = {s.tokens[0] for o in engine.sample(sampler, jobs) for s in o.sequences}
    assert got <= top3 and len(got) > 1
    tiny_p = SampleJob(prompt=prompt, num_samples=8, max_tokens=1, seed=1, top_p=1e-6)
    argmax = int(first.argmax())
    assert {s.tokens[0] for s in engine.sample(sampler, [tiny_p])[0].sequences} == {argmax}


def test_stop_token_and_eos_are_included(engine, sampler):
    prompt = _prompt("stop")
    free = engine.sample(
        sampler, [SampleJob(prompt=prompt, max_tokens=20, temperature=0.0, stop_at_eos=False)]
    )[0].sequences[0]
    stop_tok = int(free.tokens[4])
    first_at = free.tokens.tolist().index(stop_tok)
    out = engine.sample(
        sampler, [SampleJob(prompt=prompt, max_tokens=20, temperature=0.0, stop_tokens=(stop_tok,))]
    )[0].sequences[0]
    assert out.tokens.tolist() == free.tokens.tolist()[: first_at + 1]
    assert out.stop_reason == "stop"
    # EOS: a model that always says EOS stops after one token unless stops are disabled
    engine.create_model("eos", M1, LoraSpec(rank=4))
    tokens = np.concatenate([prompt, [EOS_ID] * 6])
    datum = DatumArrays(tokens, {"target_tokens": np.full(len(tokens), EOS_ID)})
    for _ in range(15):
        engine.forward_backward("eos", [datum], "cross_entropy", {}, False)
        engine.optim_step("eos", AdamSpec(learning_rate=1e-2))
    engine.snapshot_sampler("eos-s", "eos")
    jobs = [
        SampleJob(prompt=prompt, max_tokens=5, seed=0),
        SampleJob(prompt=prompt, max_tokens=5, seed=0, stop_at_eos=False),
    ]
    a, b = engine.sample("eos-s", jobs)
    assert a.sequences[0].tokens.tolist() == [EOS_ID] and a.sequences[0].stop_reason == "stop"
    assert b.sequences[0].tokens.tolist() == [EOS_ID] * 5
    assert b.sequences[0].stop_reason == "length"


@pytest.fixture(scope="module")
def trained(engine, sft_batch):
    """A sampler over a LoRA trained on the tiny dataset: greedy text is readable ASCII."""
    engine.create_model("tr", M1, LoraSpec(rank=16, seed=0))
    for _ in range(40):
        engine.forward_backward("tr", sft_batch, "cross_entropy", {}, False)
        engine.optim_step("tr", AdamSpec(learning_rate=3e-3))
    engine.snapshot_sampler("tr-s", "tr")
    return "tr-s"


def test_trained_pattern_shows_in_samples(engine, trained):
    out = engine.sample(
        trained,
        [SampleJob(prompt=_prompt("hello"), max_tokens=30, temperature=0.0, stop_strings=("\n",))],
    )[0]
    seq = out.sequences[0]
    assert bytes(seq.tokens.tolist()).decode() == " world hello\n"
    assert seq.stop_reason == "stop"


def test_stop_string_ends_at_the_completing_token(engine, trained):
    sampler = trained
    prompt = _prompt("the")
    free = engine.sample(
        sampler, [SampleJob(prompt=prompt, max_tokens=24, temperature=0.0, stop_at_eos=False)]
    )[0].sequences[0]
    text = bytes(free.tokens.tolist()).decode()
    stop = text[5:8]
    end = text.index(stop) + len(stop)
    out = engine.sample(
        sampler,
        [
            SampleJob(
                prompt=prompt, max_tokens=24, temperature=0.0, stop_strings=(stop, "never-there")
            )
        ],
    )[0]
    seq = out.sequences[0]
    assert seq.stop_reason == "stop"
    assert seq.tokens.tolist() == free.tokens.tolist()[:end]


def test_prompt_logprobs_and_topk_layout(engine, sampler):
    prompt = _prompt("prompt logprobs")
    out = engine.sample(
        sampler,
        [
            SampleJob(prompt=prompt, max_tokens=1, prompt_logprobs=True, topk_prompt_logprobs=4),
            SampleJob(prompt=_prompt("pad me"), max_tokens=2),
        ],
    )
    pl = out[0].prompt_logprobs
    assert pl.dtype == np.float32 and pl.shape == (len(prompt),) and np.isnan(pl[0])
    lp, _ = _forward_logprobs(engine, "smp", prompt[:1], prompt[1:])
    np.testing.assert_allclose(pl[1:], lp, atol=1e-5)
    ids, vals = out[0].topk_prompt_logprobs
    assert ids.shape == vals.shape == (len(prompt), 4)
    assert ids.dtype == np.int32 and vals.dtype == np.float32
    assert ids[0].tolist() == [0] * 4 and vals[0].tolist() == [-99999.0] * 4
    assert np.all(np.diff(vals[1:], axis=1) <= 0)
    assert np.all(vals[1:, 0] >= pl[1:] - 1e-6)
    assert out[1].prompt_logprobs is None and out[1].topk_prompt_logprobs is None


def test_base_sampler_and_limits(engine):
    engine.create_sampler("base", M1, None)
    prompt = _prompt("limits")
    out = engine.sample("base", [SampleJob(prompt=prompt, seed=1, stop_at_eos=False)])[0]
    assert len(out.sequences[0].tokens) == DEFAULT_MAX_TOKENS
    near_end = np.full(1020, 65, dtype=np.int64)
    out = engine.sample(
        "base", [SampleJob(prompt=near_end, max_tokens=50, seed=1, stop_at_eos=False)]
    )[0]
    assert len(out.sequences[0].tokens) == 4 and out.sequences[0].stop_reason == "length"
    zero = engine.sample("base", [SampleJob(prompt=prompt, max_tokens=0, num_samples=2)])[0]
    assert [len(s.tokens) for s in zero.sequences] == [0, 0]
    assert engine.sample("base", []) == []
    for bad in (
        SampleJob(prompt=np.zeros(0, np.int64)),
        SampleJob(prompt=np.array([999])),
        SampleJob(prompt=np.zeros(1024, np.int64)),
        SampleJob(prompt=prompt, top_p=0.0),
        SampleJob(prompt=prompt, num_samples=0),
    ):
        with pytest.raises(EngineUserError):
            engine.sample("base", [bad])
    with pytest.raises(EngineUserError, match="unknown sampler"):
        engine.sample("nope", [SampleJob(prompt=prompt)])
    engine.close_sampler("base")
    with pytest.raises(EngineUserError):
        engine.sample("base", [SampleJob(prompt=prompt)])


def test_sampler_snapshot_is_immutable(engine, sft_batch, tmp_path):
    # its own model: training the shared "smp" would change what later tests compare with
    sampler = _lora_sampler(engine, "snap")
    job = SampleJob(prompt=_prompt("snap"), max_tokens=8, temperature=0.0, prompt_logprobs=True)
    engine.save_sampler_weights("snap", tmp_path / "w")
    engine.create_sampler("disk", M1, tmp_path / "w")
    before = engine.sample(sampler, [job])[0]
    from_disk = engine.sample("disk", [job])[0]
    assert _toks(before) == _toks(from_disk)
    for _ in range(3):
        engine.forward_backward("snap", sft_batch, "cross_entropy", {}, False)
        engine.optim_step("snap", AdamSpec(learning_rate=1e-2))
    after = engine.sample(sampler, [job])[0]
    np.testing.assert_array_equal(before.prompt_logprobs, after.prompt_logprobs)
    assert _toks(before) == _toks(after)
