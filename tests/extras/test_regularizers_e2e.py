"""forward_backward_custom with regularizers against the real local server (torch engine)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch")

import tinker_actors as tinker
from tinker_actors import types
from tinker_actors.regularizers import L1, Entropy, RegularizerSpec

pytestmark = pytest.mark.e2e
MODEL = "tinker-actors/byte-1m"
TEXT = b"abcabcabcabcabcabc"
DATA = [
    types.Datum(
        model_input=types.ModelInput.from_ints(list(TEXT[:-1])),
        loss_fn_inputs={
            "target_tokens": np.array(list(TEXT[1:]), dtype=np.int64),
            "weights": np.ones(len(TEXT) - 1, dtype=np.float32),
        },
    )
]


def nll(data: list[Any], logprobs: list[Any]) -> tuple[Any, dict[str, float]]:
    loss = sum((-lp).sum() for lp in logprobs)
    return loss, {"nll": float(loss.detach())}


def _train(sc: Any, regularizers: list[RegularizerSpec], steps: int) -> tuple[Any, float, Any]:
    tc = sc.create_lora_training_client(MODEL, rank=8, seed=0).result()
    out = None
    for _ in range(steps):
        out = tc.forward_backward_custom(
            DATA, nll, regularizers=regularizers, track_grad_norms=bool(regularizers)
        ).result()
        tc.optim_step(types.AdamParams(learning_rate=5e-3)).result()
    sampler = tc.save_weights_and_get_sampling_client().result()
    res = sampler.sample(
        types.ModelInput.from_ints(list(b"abcabc")),
        16,
        types.SamplingParams(max_tokens=6, seed=1, temperature=1.0),
    ).result()
    # mean -log p of sampled tokens: an unbiased estimate of the per-token sampling entropy
    entropy = -float(np.mean([lp for s in res.sequences for lp in s.logprobs]))
    return tc, entropy, out


@pytest.mark.parametrize("local_server", [{"engine": "torch"}], indirect=True)
def test_an_entropy_bonus_trains_a_higher_entropy_model(local_server: Any) -> None:
    bonus = [
        RegularizerSpec(Entropy(mode="maximize"), 5.0, "entropy"),
        RegularizerSpec(L1(), 0.0, "l1_zero_weight"),
    ]
    with tinker.ServiceClient(base_url=local_server.base_url, api_key=local_server.api_key) as sc:
        _, plain_entropy, plain = _train(sc, [], 20)
        _, bonus_entropy, out = _train(sc, bonus, 20)
    # Without the bonus the model memorises the text (sampling is near-deterministic); with it
    # the target tokens settle well below probability 1, so sampling stays spread out.
    assert plain_entropy < 0.05
    assert bonus_entropy > plain_entropy + 0.5
    assert out.metrics["base_loss"] > 10 * plain.metrics["loss:sum"]
    # the metrics of every term come back; loss:sum is the regularized total
    m = out.metrics
    assert m["nll"] == pytest.approx(m["base_loss"])
    assert m["loss_total"] == pytest.approx(m["base_loss"] + m["regularizer_total"], rel=1e-5)
    assert m["loss:sum"] == pytest.approx(m["loss_total"], rel=1e-5)
    assert m["regularizer/entropy/contribution"] == pytest.approx(
        5.0 * m["regularizer/entropy/value"], rel=1e-5
    )
    assert m["regularizer/entropy/entropy"] == pytest.approx(-m["regularizer/entropy/value"])
    assert m["regularizer/entropy/grad_norm"] > 0 and m["total_grad_norm"] > 0
    assert m["regularizer/l1_zero_weight/contribution"] == 0.0


@pytest.mark.parametrize("local_server", [{"engine": "torch"}], indirect=True)
def test_bad_regularizers_fail_the_call_naming_the_regularizer(
    local_server: Any,
) -> None:
    def broken(data: Any, logprobs: Any) -> Any:
        raise RuntimeError("no")

    with tinker.ServiceClient(base_url=local_server.base_url, api_key=local_server.api_key) as sc:
        tc = sc.create_lora_training_client(MODEL, rank=8, seed=0).result()
        # refused at call time, before a seq id is taken
        with pytest.raises(ValueError, match="Duplicate regularizer names"):
            tc.forward_backward_custom(
                DATA,
                nll,
                regularizers=[RegularizerSpec(L1(), 1, "a"), RegularizerSpec(L1(), 1, "a")],
            )
        before = tc.forward(DATA, "cross_entropy").result().metrics["loss:sum"]
        fut = tc.forward_backward_custom(
            DATA, nll, regularizers=[RegularizerSpec(broken, 1.0, "broken")]
        )
        with pytest.raises(Exception, match="'broken'"):
            fut.result()
        # The failed call's promised seq ids were filled with a zero-weight backward: the
        # client keeps working, and the step after it applies no gradient from the failure.
        tc.optim_step(types.AdamParams(learning_rate=1e-2)).result()
        after = tc.forward(DATA, "cross_entropy").result().metrics["loss:sum"]
        assert after == pytest.approx(before, abs=1e-6)
        ok = tc.forward_backward_custom(DATA, nll).result()
        assert ok.metrics["loss:sum"] > 0
