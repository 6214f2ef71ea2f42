"""Issue-4 acceptance: one scenario, two SDKs, changing only the import.

The same scenario runs with the official ``tinker==0.38.0`` SDK and with ``tinker_actors``
against the real local server (torch engine, ``tinker-actors/byte-1m``), in a sync variant
(plain methods, ``.result()``) and an async variant (``_async`` methods, ``await``): four runs.
Each run asserts the observable outcomes (result types, metric keys, logprob shapes, the loss
falling, stop reasons, text cut at the stop strings, REST listings holding what was created,
the same exception classes). What must be numerically identical given the same server (a fresh
server per run, the same LoRA seed, data and request order: logprobs, losses, sampled tokens
for a seed, compute_logprobs) is recorded per run and compared with the module's first run,
so all four runs must agree.
"""

from __future__ import annotations

import asyncio
import importlib
import math
from typing import Any

import pytest

pytest.importorskip("tinker")
torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.parametrize("local_server", [{"engine": "torch"}], indirect=True),
]

MODEL = "tinker-actors/byte-1m"
RANK = 8
SEED = 0
STEPS = 8
LR = 5e-3
TEXTS = ["hello world\n", "hello there world\n", "say hello world\n", "hello world again\n"]
SDKS = ["tinker", "tinker_actors"]
WIDE = 257  # 257 * 4 datums = 1028 > fwdbwd_max_chunk_len (1024)

# "{sdk}-{variant}" -> what that run observed; later runs compare with the first one.


# --------------------------------------------------------------------------- helpers


def _datums(sdk, tok):
    out = []
    for text in TEXTS:
        ids = tok.encode(text, add_special_tokens=False)
        out.append(
            sdk.types.Datum(
                model_input=sdk.types.ModelInput.from_ints(ids[:-1]),
                loss_fn_inputs={"target_tokens": ids[1:], "weights": [1.0] * (len(ids) - 1)},
            )
        )
    return out


def _rl_datums(sdk, data, fwd):
    """importance_sampling / ppo inputs: sampling logprobs = the current forward logprobs."""
    out = []
    for datum, o in zip(data, fwd.loss_fn_outputs, strict=True):
        lp = [float(x) for x in o["logprobs"].tolist()]
        out.append(
            sdk.types.Datum(
                model_input=datum.model_input,
                loss_fn_inputs={
                    "target_tokens": datum.loss_fn_inputs["target_tokens"],
                    "logprobs": sdk.types.TensorData(data=lp, dtype="float32", shape=[len(lp)]),
                    "advantages": sdk.types.TensorData(
                        data=[1.0] * len(lp), dtype="float32", shape=[len(lp)]
                    ),
                },
            )
        )
    return out


def custom_nll(data, logprobs_list):
    """A client-side custom loss in torch: the weighted negative log-likelihood."""
    total = torch.zeros((), dtype=torch.float32)
    for datum, lp in zip(data, logprobs_list, strict=True):
        w = torch.tensor(datum.loss_fn_inputs["weights"].tolist(), dtype=lp.dtype)
        total = total - (lp * w).sum()
    return total, {"custom_nll": float(total.detach())}


def _logprobs(fwd) -> list[float]:
    """All per-token logprobs of a forward pass, flattened (pytest.approx needs flat lists)."""
    return [float(x) for o in fwd.loss_fn_outputs for x in o["logprobs"].tolist()]


def _n_targets(data) -> int:
    return sum(len(d.loss_fn_inputs["target_tokens"].tolist()) for d in data)


def _check_forward(sdk, fwd, data) -> None:
    assert isinstance(fwd, sdk.types.ForwardBackwardOutput)
    assert fwd.loss_fn_output_type
    assert "loss:sum" in fwd.metrics
    assert len(fwd.loss_fn_outputs) == len(data)
    for o, d in zip(fwd.loss_fn_outputs, data, strict=True):
        assert "logprobs" in o
        lp = o["logprobs"].tolist()
        assert len(lp) == len(d.loss_fn_inputs["target_tokens"].tolist())
        assert all(v <= 0.0 and math.isfinite(v) for v in lp)


def _check_wide(sdk, wide, fwd0, data) -> None:
    _check_forward(sdk, wide, data * WIDE)
    assert wide.metrics["loss:sum"] == pytest.approx(WIDE * fwd0.metrics["loss:sum"], rel=1e-4)
    tail = wide.loss_fn_outputs[-len(data) :]
    assert [float(x) for o in tail for x in o["logprobs"].tolist()] == pytest.approx(
        _logprobs(fwd0), abs=1e-5
    )


def _check_training_losses(losses: list[float]) -> None:
    assert all(math.isfinite(x) for x in losses), losses
    assert losses[-1] < losses[0] / 4, losses


def _check_sample(sdk, res, tok, prompt_len: int, n: int, max_tokens: int, topk: int) -> list[str]:
    assert isinstance(res, sdk.types.SampleResponse)
    assert len(res.sequences) == n
    texts = []
    for seq in res.sequences:
        assert seq.stop_reason in ("stop", "length")
        assert 1 <= len(seq.tokens) <= max_tokens
        assert seq.logprobs is not None and len(seq.logprobs) == len(seq.tokens)
        assert all(v <= 0.0 for v in seq.logprobs)
        text = tok.decode(seq.tokens)
        body = text[:-1] if text.endswith("\n") else text
        assert "\n" not in body, text  # nothing is generated past the stop string
        if seq.stop_reason == "length":
            assert len(seq.tokens) == max_tokens
        else:
            assert text.endswith("\n") or len(seq.tokens) < max_tokens, text
        texts.append(text)
    # the trained pattern: most samples complete "hello" with " world" and stop at the newline
    assert sum(s.stop_reason == "stop" for s in res.sequences) >= n // 2, texts
    assert res.prompt_logprobs is not None and len(res.prompt_logprobs) == prompt_len
    assert res.prompt_logprobs[0] is None
    assert all(isinstance(v, float) and v <= 0.0 for v in res.prompt_logprobs[1:])
    assert res.topk_prompt_logprobs is not None and len(res.topk_prompt_logprobs) == prompt_len
    assert res.topk_prompt_logprobs[0] is None
    for row in res.topk_prompt_logprobs[1:]:
        assert len(row) == topk
        lps = [lp for _, lp in row]
        assert lps == sorted(lps, reverse=True)
        assert all(isinstance(t, int) for t, _ in row)
    return texts


STOP = "ld"  # several byte tokens: the stop string is matched on text, not on one token


def _multichar_params(types, seed: int):
    return types.SamplingParams(max_tokens=12, stop=[STOP], temperature=0.7, seed=seed)


def _check_greedy(sdk, greedy, tok) -> list[int]:
    assert isinstance(greedy, sdk.types.SampleResponse) and len(greedy.sequences) == 1
    seq = greedy.sequences[0]
    text = tok.decode(seq.tokens)
    assert seq.stop_reason == "stop" and "world" in text, text
    return list(seq.tokens)


def _check_multichar_stop(responses, tok) -> list[list[int]]:
    tokens, n_stopped = [], 0
    for res in responses:
        for seq in res.sequences:
            text = tok.decode(seq.tokens)
            cut = text.find(STOP)
            assert cut < 0 or cut + len(STOP) == len(text), text  # nothing past the stop
            if seq.stop_reason == "stop":
                n_stopped += 1
            else:
                assert cut < 0 and len(seq.tokens) == 12, text
            tokens.append(list(seq.tokens))
    assert n_stopped >= len(tokens) // 2, [tok.decode(t) for t in tokens]
    return tokens


def _check_compute_logprobs(plp, prompt_len: int) -> None:
    assert isinstance(plp, list) and len(plp) == prompt_len
    assert plp[0] is None
    assert all(isinstance(v, float) and v <= 0.0 for v in plp[1:])


def _compare(run: str, obs: dict[str, Any], ref: dict[str, Any]) -> None:
    """Every run of the scenario meets a fresh server with the same seed, data and request
    order, so every run must observe the same numbers as the reference run."""
    assert obs.keys() == ref.keys()
    for key, value in ref.items():
        numeric = isinstance(value, float) or (
            isinstance(value, list) and value and all(isinstance(v, float) for v in value)
        )
        if numeric:
            assert obs[key] == pytest.approx(value, rel=1e-4, abs=1e-4), (key, run)
        else:
            assert obs[key] == value, (key, run)


def _check_info(sdk, info, tc) -> None:
    assert isinstance(info, sdk.types.GetInfoResponse)
    assert info.model_id == tc.model_id and info.model_data.model_name == MODEL
    assert info.is_lora and info.lora_rank == RANK


def _check_page(items, cursor, *, offset: int, at_least: int) -> None:
    assert len(items) == 1
    assert cursor is not None and cursor.offset == offset and cursor.limit == 1
    assert cursor.total_count >= at_least


def _sessions_with(rest_list_sessions, get_session, model_id):
    return [s for s in rest_list_sessions if model_id in get_session(s).training_run_ids]


# --------------------------------------------------------------------------- sync variant


def run_sync(sdk, base_url: str, api_key: str) -> dict[str, Any]:
    types = sdk.types
    obs: dict[str, Any] = {}
    sc = sdk.ServiceClient(base_url=base_url, api_key=api_key)

    with pytest.warns(FutureWarning, match=r"get_server_capabilities\(\) is deprecated"):
        caps = sc.get_server_capabilities()  # deprecated in 0.38, by both SDKs
    assert MODEL in {m.model_name for m in caps.supported_models}

    tc = sc.create_lora_training_client(base_model=MODEL, rank=RANK, seed=SEED).result()
    assert type(tc).__name__ == "TrainingClient"
    info = tc.get_info()
    _check_info(sdk, info, tc)
    tok = tc.get_tokenizer()
    assert tok.decode(tok.encode("hello", add_special_tokens=False)) == "hello"
    data = _datums(sdk, tok)

    # forward on the fresh model: identical across SDKs (same server, same seed)
    fwd0 = tc.forward(data, "cross_entropy").result()
    _check_forward(sdk, fwd0, data)
    obs["fresh_logprobs"] = _logprobs(fwd0)
    # a batch past the 1024-datum chunk limit: two chunks, results combined client-side
    wide = tc.forward(data * WIDE, "cross_entropy").result()
    _check_wide(sdk, wide, fwd0, data)

    # pipelined training loop: every request is queued before any result is awaited
    adam = types.AdamParams(learning_rate=LR)
    pending = []
    for _ in range(STEPS):
        fb = tc.forward_backward(data, "cross_entropy")
        opt = tc.optim_step(adam)
        assert isinstance(fb, sdk.APIFuture) and isinstance(opt, sdk.APIFuture)
        pending.append((fb, opt))
    losses = []
    for fb, opt in pending:
        out = fb.result()
        _check_forward(sdk, out, data)
        losses.append(out.metrics["loss:sum"])
        step = opt.result()
        assert isinstance(step, sdk.types.OptimStepResponse)
        obs.setdefault("optim_metric_keys", sorted(step.metrics or {}))
    _check_training_losses(losses)
    obs["losses"] = losses
    obs["fb_metric_keys"] = sorted(out.metrics)

    # save the state, restore it with the optimizer, and keep training
    state = tc.save_state("twin-state").result()
    assert state.path == f"tinker://{tc.model_id}/weights/twin-state"
    at_save = tc.forward(data, "cross_entropy").result()
    tc2 = sc.create_training_client_from_state_with_optimizer(state.path).result()
    assert type(tc2).__name__ == "TrainingClient" and tc2.model_id != tc.model_id
    restored = tc2.forward(data, "cross_entropy").result()
    assert _logprobs(restored) == pytest.approx(_logprobs(at_save), abs=1e-5)
    more = []
    for _ in range(3):
        fb = tc2.forward_backward(data, "cross_entropy")
        tc2.optim_step(adam)
        more.append(fb.result().metrics["loss:sum"])
    assert more[0] == pytest.approx(at_save.metrics["loss:sum"], rel=1e-4)
    assert more[-1] < more[0], more
    obs["restored_losses"] = more
    # load_state brings the first client back; a client from state (weights only) starts there
    tc.forward_backward(data, "cross_entropy")
    tc.optim_step(adam).result()
    with pytest.warns(FutureWarning, match=r"load_state\*\(\) is deprecated"):
        loaded = tc.load_state(state.path)  # deprecated in 0.38, by both SDKs
    assert isinstance(loaded.result(), types.LoadWeightsResponse)
    assert _logprobs(tc.forward(data, "cross_entropy").result()) == pytest.approx(
        _logprobs(at_save), abs=1e-5
    )
    tc3 = sc.create_training_client_from_state(state.path).result()
    assert _logprobs(tc3.forward(data, "cross_entropy").result()) == pytest.approx(
        _logprobs(at_save), abs=1e-5
    )

    # sampler weights: a named save + create_sampling_client, and the one-call form
    sampler_path = tc2.save_weights_for_sampler("twin-sampler").result().path
    assert sampler_path == f"tinker://{tc2.model_id}/sampler_weights/twin-sampler"
    named = sc.create_sampling_client(model_path=sampler_path).result()
    assert type(named).__name__ == "SamplingClient"
    sampler = tc2.save_weights_and_get_sampling_client().result()
    assert type(sampler).__name__ == "SamplingClient"
    # (SamplingClient.get_tokenizer is left out: the official SDK loads it from the Hugging
    # Face Hub by base-model name, which a built-in local model does not have.)
    assert sampler.get_base_model() == MODEL

    prompt = types.ModelInput.from_ints(tok.encode("hello", add_special_tokens=False))
    params = types.SamplingParams(max_tokens=16, stop=["\n"], temperature=0.5, seed=7)
    res = sampler.sample(
        prompt,
        num_samples=3,
        sampling_params=params,
        include_prompt_logprobs=True,
        topk_prompt_logprobs=3,
    ).result()
    _check_sample(sdk, res, tok, prompt.length, 3, 16, 3)
    obs["prompt_logprobs"] = res.prompt_logprobs[1:]
    greedy = named.sample(
        prompt,
        num_samples=1,
        sampling_params=types.SamplingParams(max_tokens=16, stop=["\n"], temperature=0.0),
    ).result()
    obs["greedy_tokens"] = _check_greedy(sdk, greedy, tok)
    stopped = [
        sampler.sample(prompt, num_samples=2, sampling_params=_multichar_params(types, seed))
        for seed in range(3)
    ]
    obs["multichar_stop_tokens"] = _check_multichar_stop([f.result() for f in stopped], tok)

    plp = sampler.compute_logprobs(prompt).result()
    _check_compute_logprobs(plp, prompt.length)
    assert plp[1:] == pytest.approx(res.prompt_logprobs[1:], abs=1e-4)
    base = sc.create_sampling_client(base_model=MODEL).result()
    base_plp = base.compute_logprobs(prompt).result()
    _check_compute_logprobs(base_plp, prompt.length)
    obs["base_compute_logprobs"] = base_plp[1:]

    # a custom loss (client-side, torch): its value is the cross-entropy loss:sum
    before = tc2.forward(data, "cross_entropy").result()
    small = types.AdamParams(learning_rate=1e-3)
    customs = []
    for _ in range(3):
        customs.append(tc2.forward_backward_custom(data, custom_nll))
        tc2.optim_step(small)
    custom_out = customs[0].result()
    assert [type(c.result()).__name__ for c in customs] == ["ForwardBackwardOutput"] * 3
    assert "loss:sum" in custom_out.metrics
    obs["custom_metric_keys"] = sorted(custom_out.metrics)
    assert custom_out.metrics["custom_nll"] == pytest.approx(before.metrics["loss:sum"], rel=1e-4)
    after = tc2.forward(data, "cross_entropy").result()
    assert after.metrics["loss:sum"] < before.metrics["loss:sum"]
    obs["custom_nll"] = custom_out.metrics["custom_nll"]

    # importance_sampling and ppo steps
    rl = _rl_datums(sdk, data, after)
    is_out = tc2.forward_backward(rl, "importance_sampling").result()
    ppo_out = tc2.forward_backward(
        rl, "ppo", {"clip_low_threshold": 0.8, "clip_high_threshold": 1.2}
    ).result()
    tc2.optim_step(types.AdamParams(learning_rate=1e-4)).result()
    for out in (is_out, ppo_out):
        assert "loss:sum" in out.metrics and len(out.loss_fn_outputs) == len(rl)
        # ratio 1, advantage 1: loss = -(number of target tokens)
        assert out.metrics["loss:sum"] == pytest.approx(-_n_targets(rl), rel=1e-3)

    # REST
    rest = sdk.RestClient(base_url=base_url, api_key=api_key)
    runs = rest.list_training_runs().result()
    assert {tc.model_id, tc2.model_id} <= {r.training_run_id for r in runs.training_runs}
    page = rest.list_training_runs(limit=1, offset=1).result()
    _check_page(page.training_runs, page.cursor, offset=1, at_least=3)
    page = rest.list_user_checkpoints(limit=1).result()
    _check_page(page.checkpoints, page.cursor, offset=0, at_least=2)
    run = rest.get_training_run(tc.model_id).result()
    assert run.training_run_id == tc.model_id and run.base_model == MODEL
    assert run.is_lora and run.lora_rank == RANK
    ckpts = rest.list_checkpoints(tc.model_id).result()
    assert [c.checkpoint_id for c in ckpts.checkpoints] == ["weights/twin-state"]
    user = rest.list_user_checkpoints().result()
    assert {state.path, sampler_path} <= {c.tinker_path for c in user.checkpoints}
    winfo = rest.get_weights_info_by_tinker_path(state.path).result()
    assert winfo.base_model == MODEL and winfo.lora_rank == RANK
    sessions = rest.list_sessions().result().sessions
    mine = _sessions_with(sessions, lambda s: rest.get_session(s).result(), tc.model_id)
    assert len(mine) == 1
    assert tc2.model_id in rest.get_session(mine[0]).result().training_run_ids

    rest.publish_checkpoint_from_tinker_path(sampler_path).result()
    by_id = {c.checkpoint_id: c for c in rest.list_checkpoints(tc2.model_id).result().checkpoints}
    assert by_id["sampler_weights/twin-sampler"].public is True
    rest.unpublish_checkpoint_from_tinker_path(sampler_path).result()
    by_id = {c.checkpoint_id: c for c in rest.list_checkpoints(tc2.model_id).result().checkpoints}
    assert by_id["sampler_weights/twin-sampler"].public is False
    rest.delete_checkpoint(tc2.model_id, "sampler_weights/twin-sampler").result()
    left = rest.list_checkpoints(tc2.model_id).result().checkpoints
    assert "sampler_weights/twin-sampler" not in {c.checkpoint_id for c in left}

    # the same exception classes for the same failures
    with pytest.raises(sdk.NotFoundError):
        rest.get_training_run("no-such-run").result()
    bad = tc2.forward_backward(data, "no_such_loss")
    with pytest.raises(sdk.RequestFailedError):
        bad.result()

    sc.close("success").result()
    with pytest.raises(RuntimeError, match="closed"):
        sc.create_lora_training_client(base_model=MODEL).result()
    return obs


# --------------------------------------------------------------------------- async variant


async def run_async(sdk, base_url: str, api_key: str) -> dict[str, Any]:
    types = sdk.types
    obs: dict[str, Any] = {}
    sc = sdk.ServiceClient(base_url=base_url, api_key=api_key)

    caps = await sc.get_server_capabilities_async()
    assert MODEL in {m.model_name for m in caps.supported_models}

    tc = await sc.create_lora_training_client_async(base_model=MODEL, rank=RANK, seed=SEED)
    assert type(tc).__name__ == "TrainingClient"
    info = await tc.get_info_async()
    _check_info(sdk, info, tc)
    tok = tc.get_tokenizer()
    data = _datums(sdk, tok)

    fwd0 = await (await tc.forward_async(data, "cross_entropy"))
    _check_forward(sdk, fwd0, data)
    obs["fresh_logprobs"] = _logprobs(fwd0)
    wide = await (await tc.forward_async(data * WIDE, "cross_entropy"))
    _check_wide(sdk, wide, fwd0, data)

    adam = types.AdamParams(learning_rate=LR)
    pending = []
    for _ in range(STEPS):
        fb = await tc.forward_backward_async(data, "cross_entropy")
        opt = await tc.optim_step_async(adam)
        assert isinstance(fb, sdk.APIFuture) and isinstance(opt, sdk.APIFuture)
        pending.append((fb, opt))
    losses = []
    for fb, opt in pending:
        out = await fb
        _check_forward(sdk, out, data)
        losses.append(out.metrics["loss:sum"])
        step = await opt
        assert isinstance(step, sdk.types.OptimStepResponse)
        obs.setdefault("optim_metric_keys", sorted(step.metrics or {}))
    _check_training_losses(losses)
    obs["losses"] = losses
    obs["fb_metric_keys"] = sorted(out.metrics)

    state = await (await tc.save_state_async("twin-state"))
    assert state.path == f"tinker://{tc.model_id}/weights/twin-state"
    at_save = await (await tc.forward_async(data, "cross_entropy"))
    tc2 = await sc.create_training_client_from_state_with_optimizer_async(state.path)
    assert type(tc2).__name__ == "TrainingClient" and tc2.model_id != tc.model_id
    restored = await (await tc2.forward_async(data, "cross_entropy"))
    assert _logprobs(restored) == pytest.approx(_logprobs(at_save), abs=1e-5)
    more = []
    for _ in range(3):
        fb = await tc2.forward_backward_async(data, "cross_entropy")
        await tc2.optim_step_async(adam)
        more.append((await fb).metrics["loss:sum"])
    assert more[0] == pytest.approx(at_save.metrics["loss:sum"], rel=1e-4)
    assert more[-1] < more[0], more
    obs["restored_losses"] = more
    await tc.forward_backward_async(data, "cross_entropy")
    await (await tc.optim_step_async(adam))
    loaded = await (await tc.load_state_async(state.path))
    assert isinstance(loaded, types.LoadWeightsResponse)
    again = await (await tc.forward_async(data, "cross_entropy"))
    assert _logprobs(again) == pytest.approx(_logprobs(at_save), abs=1e-5)
    tc3 = await sc.create_training_client_from_state_async(state.path)
    from_state = await (await tc3.forward_async(data, "cross_entropy"))
    assert _logprobs(from_state) == pytest.approx(_logprobs(at_save), abs=1e-5)

    sampler_path = (await (await tc2.save_weights_for_sampler_async("twin-sampler"))).path
    assert sampler_path == f"tinker://{tc2.model_id}/sampler_weights/twin-sampler"
    named = await sc.create_sampling_client(model_path=sampler_path)  # the 0.38 awaitable form
    assert type(named).__name__ == "SamplingClient"
    sampler = await tc2.save_weights_and_get_sampling_client_async()
    assert type(sampler).__name__ == "SamplingClient"
    assert await sampler.get_base_model_async() == MODEL

    prompt = types.ModelInput.from_ints(tok.encode("hello", add_special_tokens=False))
    params = types.SamplingParams(max_tokens=16, stop=["\n"], temperature=0.5, seed=7)
    res = await sampler.sample_async(
        prompt,
        num_samples=3,
        sampling_params=params,
        include_prompt_logprobs=True,
        topk_prompt_logprobs=3,
    )
    _check_sample(sdk, res, tok, prompt.length, 3, 16, 3)
    obs["prompt_logprobs"] = res.prompt_logprobs[1:]
    greedy = await named.sample_async(
        prompt,
        num_samples=1,
        sampling_params=types.SamplingParams(max_tokens=16, stop=["\n"], temperature=0.0),
    )
    obs["greedy_tokens"] = _check_greedy(sdk, greedy, tok)
    stopped = await asyncio.gather(
        *[
            sampler.sample_async(
                prompt, num_samples=2, sampling_params=_multichar_params(types, seed)
            )
            for seed in range(3)
        ]
    )
    obs["multichar_stop_tokens"] = _check_multichar_stop(stopped, tok)

    plp = await sampler.compute_logprobs_async(prompt)
    _check_compute_logprobs(plp, prompt.length)
    assert plp[1:] == pytest.approx(res.prompt_logprobs[1:], abs=1e-4)
    base = await sc.create_sampling_client_async(base_model=MODEL)
    base_plp = await base.compute_logprobs_async(prompt)
    _check_compute_logprobs(base_plp, prompt.length)
    obs["base_compute_logprobs"] = base_plp[1:]

    before = await (await tc2.forward_async(data, "cross_entropy"))
    small = types.AdamParams(learning_rate=1e-3)
    customs = []
    for _ in range(3):
        customs.append(await tc2.forward_backward_custom_async(data, custom_nll))
        opt = await tc2.optim_step_async(small)
    custom_out = await customs[0]
    assert [type(await c).__name__ for c in customs] == ["ForwardBackwardOutput"] * 3
    assert "loss:sum" in custom_out.metrics
    obs["custom_metric_keys"] = sorted(custom_out.metrics)
    await opt
    assert custom_out.metrics["custom_nll"] == pytest.approx(before.metrics["loss:sum"], rel=1e-4)
    after = await (await tc2.forward_async(data, "cross_entropy"))
    assert after.metrics["loss:sum"] < before.metrics["loss:sum"]
    obs["custom_nll"] = custom_out.metrics["custom_nll"]

    rl = _rl_datums(sdk, data, after)
    is_out = await (await tc2.forward_backward_async(rl, "importance_sampling"))
    ppo_out = await (
        await tc2.forward_backward_async(
            rl, "ppo", {"clip_low_threshold": 0.8, "clip_high_threshold": 1.2}
        )
    )
    await (await tc2.optim_step_async(types.AdamParams(learning_rate=1e-4)))
    for out in (is_out, ppo_out):
        assert "loss:sum" in out.metrics and len(out.loss_fn_outputs) == len(rl)
        assert out.metrics["loss:sum"] == pytest.approx(-_n_targets(rl), rel=1e-3)

    rest = sdk.RestClient(base_url=base_url, api_key=api_key)
    runs = await rest.list_training_runs_async()
    assert {tc.model_id, tc2.model_id} <= {r.training_run_id for r in runs.training_runs}
    page = await rest.list_training_runs_async(limit=1, offset=1)
    _check_page(page.training_runs, page.cursor, offset=1, at_least=3)
    page = await rest.list_user_checkpoints_async(limit=1)
    _check_page(page.checkpoints, page.cursor, offset=0, at_least=2)
    run = await rest.get_training_run_async(tc.model_id)
    assert run.training_run_id == tc.model_id and run.base_model == MODEL
    assert run.is_lora and run.lora_rank == RANK
    ckpts = await rest.list_checkpoints_async(tc.model_id)
    assert [c.checkpoint_id for c in ckpts.checkpoints] == ["weights/twin-state"]
    user = await rest.list_user_checkpoints_async()
    assert {state.path, sampler_path} <= {c.tinker_path for c in user.checkpoints}
    winfo = await rest.get_weights_info_by_tinker_path(state.path)
    assert winfo.base_model == MODEL and winfo.lora_rank == RANK
    sessions = (await rest.list_sessions_async()).sessions
    mine = [
        s for s in sessions if tc.model_id in (await rest.get_session_async(s)).training_run_ids
    ]
    assert len(mine) == 1
    assert tc2.model_id in (await rest.get_session_async(mine[0])).training_run_ids

    await rest.publish_checkpoint_from_tinker_path_async(sampler_path)
    listed = (await rest.list_checkpoints_async(tc2.model_id)).checkpoints
    assert {c.checkpoint_id: c for c in listed}["sampler_weights/twin-sampler"].public is True
    await rest.unpublish_checkpoint_from_tinker_path_async(sampler_path)
    listed = (await rest.list_checkpoints_async(tc2.model_id)).checkpoints
    assert {c.checkpoint_id: c for c in listed}["sampler_weights/twin-sampler"].public is False
    await rest.delete_checkpoint_async(tc2.model_id, "sampler_weights/twin-sampler")
    left = (await rest.list_checkpoints_async(tc2.model_id)).checkpoints
    assert "sampler_weights/twin-sampler" not in {c.checkpoint_id for c in left}

    with pytest.raises(sdk.NotFoundError):
        await rest.get_training_run_async("no-such-run")
    bad = await tc2.forward_backward_async(data, "no_such_loss")
    with pytest.raises(sdk.RequestFailedError):
        await bad

    await sc.close("success")
    with pytest.raises(RuntimeError, match="closed"):
        await sc.create_lora_training_client_async(base_model=MODEL)
    return obs


# --------------------------------------------------------------------------- the four runs


def _fresh_server(tmp: Any) -> Any:
    from tinker_actors.server import LocalServer

    opts = {"engine": "torch", "long_poll_s": 2.0, "api_key": "tml-twin-reference-0000"}
    return LocalServer(port=0, data_dir=tmp / "server", **opts).start_in_thread()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: Any) -> dict[str, Any]:
    """The official SDK's sync run on its own fresh server: what every other run must match.

    A fixture, not a module global filled by whichever test runs first, so the tests pass
    in any order and alone."""
    import tinker as official

    server = _fresh_server(tmp_path_factory.mktemp("reference"))
    try:
        return run_sync(official, server.base_url, server.api_key)
    finally:
        server.stop_in_thread()


@pytest.mark.parametrize("sdk_name", ["tinker_actors"])
def test_twin_scenario_sync(local_server, sdk_name, reference):
    sdk = importlib.import_module(sdk_name)
    obs = run_sync(sdk, local_server.base_url, local_server.api_key)
    _compare(f"{sdk_name}-sync", obs, reference)


@pytest.mark.parametrize("sdk_name", SDKS)
async def test_twin_scenario_async(local_server, sdk_name, reference):
    sdk = importlib.import_module(sdk_name)
    # 0.38 deprecates the clients' _async methods, and both SDKs say so; every other warning
    # (not a FutureWarning saying "deprecated") is re-raised at the block's end, an error.
    with pytest.warns(FutureWarning, match="deprecated"):
        obs = await run_async(sdk, local_server.base_url, local_server.api_key)
    _compare(f"{sdk_name}-async", obs, reference)
