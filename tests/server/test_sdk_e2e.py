"""Issue-3 acceptance: the unmodified official ``tinker==0.38.0`` SDK against the local server."""

from __future__ import annotations

import pytest

tinker = pytest.importorskip("tinker")
from tinker import types  # noqa: E402

pytestmark = pytest.mark.e2e

TEXTS = ["hello world\n", "hello there world\n", "say hello world\n", "hello world again\n"]


def _datums(tok, texts=TEXTS):
    out = []
    for text in texts:
        ids = tok.encode(text, add_special_tokens=False)
        out.append(
            types.Datum(
                model_input=types.ModelInput.from_ints(ids[:-1]),
                loss_fn_inputs={"target_tokens": ids[1:], "weights": [1.0] * (len(ids) - 1)},
            )
        )
    return out


def _train(tc, data, steps, lr=5e-3):
    losses = []
    for _ in range(steps):
        fb = tc.forward_backward(data, "cross_entropy")
        opt = tc.optim_step(types.AdamParams(learning_rate=lr))
        losses.append(fb.result().metrics["loss:sum"])
        assert "grad_norm:mean" in opt.result().metrics or opt.result().metrics is not None
    return losses


def _rl_datums(data, fwd):
    """IS/PPO inputs from a forward pass: sampling logprobs = current logprobs."""
    out = []
    for datum, o in zip(data, fwd.loss_fn_outputs, strict=True):
        lp = o["logprobs"].tolist()
        out.append(
            types.Datum(
                model_input=datum.model_input,
                loss_fn_inputs={
                    "target_tokens": datum.loss_fn_inputs["target_tokens"],
                    "logprobs": types.TensorData(data=lp, dtype="float32", shape=[len(lp)]),
                    "advantages": types.TensorData(
                        data=[1.0] * len(lp), dtype="float32", shape=[len(lp)]
                    ),
                },
            )
        )
    return out


@pytest.mark.parametrize("local_server", ["torch"], indirect=True)
def test_official_sdk_trains_saves_resumes_and_samples(local_server):
    sc = tinker.ServiceClient(base_url=local_server.base_url, api_key=local_server.api_key)
    tc = sc.create_lora_training_client(base_model="tinker-actors/byte-1m", rank=8, seed=0)
    tc = tc.result() if hasattr(tc, "result") else tc
    info = tc.get_info()
    assert info.model_data.model_name == "tinker-actors/byte-1m"
    tok = tc.get_tokenizer()
    data = _datums(tok)

    losses = _train(tc, data, 30)
    assert min(losses[-5:]) <= losses[0] / 2, losses

    state = tc.save_state("after-30").result()
    assert state.path.endswith("/weights/after-30")

    tc2 = sc.create_training_client_from_state_with_optimizer(state.path)
    tc2 = tc2.result() if hasattr(tc2, "result") else tc2
    assert tc2.model_id != tc.model_id
    more = _train(tc2, data, 3)
    assert more[0] <= losses[0] / 2, (losses, more)

    sampler = tc2.save_weights_and_get_sampling_client()
    sampler = sampler.result() if hasattr(sampler, "result") else sampler
    prompt = types.ModelInput.from_ints(tok.encode("hello", add_special_tokens=False))
    res = sampler.sample(
        prompt,
        num_samples=4,
        sampling_params=types.SamplingParams(max_tokens=24, stop=["\n"], temperature=0.3, seed=1),
    ).result()
    assert len(res.sequences) == 4
    texts = [tok.decode(s.tokens) for s in res.sequences]
    assert sum("world" in t for t in texts) >= 2, texts
    assert all(s.sequence_id for s in res.sequences)

    plp = sampler.compute_logprobs(prompt).result()
    assert plp[0] is None and len(plp) == prompt.length
    assert all(isinstance(v, float) for v in plp[1:])

    fwd = tc2.forward(data, "cross_entropy").result()
    rl = _rl_datums(data, fwd)
    is_out = tc2.forward_backward(rl, "importance_sampling").result()
    ppo_out = tc2.forward_backward(
        rl, "ppo", {"clip_low_threshold": 0.8, "clip_high_threshold": 1.2}
    ).result()
    tc2.optim_step(types.AdamParams(learning_rate=1e-4)).result()
    for out in (is_out, ppo_out):
        assert "loss:sum" in out.metrics
        assert len(out.loss_fn_outputs) == len(rl)

    rest = tinker.RestClient(base_url=local_server.base_url, api_key=local_server.api_key)
    runs = rest.list_training_runs().result()
    run_ids = {r.training_run_id for r in runs.training_runs}
    assert {tc.model_id, tc2.model_id} <= run_ids
    ckpts = rest.list_checkpoints(tc.model_id).result()
    assert [c.checkpoint_id for c in ckpts.checkpoints] == ["weights/after-30"]
    user = rest.list_user_checkpoints().result()
    assert state.path in {c.tinker_path for c in user.checkpoints}
    sessions = rest.list_sessions().result()
    assert len(sessions.sessions) >= 1
    session = rest.get_session(sessions.sessions[0]).result()
    assert tc.model_id in session.training_run_ids
    sc.close("success").result()  # sessions/{id}/finish; records stay listed
    assert tc.model_id in rest.get_session(sessions.sessions[0]).result().training_run_ids


def test_500_concurrent_samples(local_server):
    sc = tinker.ServiceClient(base_url=local_server.base_url, api_key=local_server.api_key)
    sampler = sc.create_sampling_client(base_model="tinker-actors/byte-1m")
    sampler = sampler.result() if hasattr(sampler, "result") else sampler
    prompt = types.ModelInput.from_ints([104, 101, 108, 108, 111])
    params = types.SamplingParams(max_tokens=4)
    futures = [sampler.sample(prompt, num_samples=1, sampling_params=params) for _ in range(500)]
    results = [f.result(timeout=120) for f in futures]
    assert len(results) == 500
    assert all(len(r.sequences[0].tokens) == 4 for r in results)
    ids = {r.sequences[0].sequence_id for r in results}
    assert len(ids) == 500
