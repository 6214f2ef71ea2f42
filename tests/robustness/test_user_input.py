"""Bad user input through the public API: a clear InvalidInputError (a ValueError, as the
official SDK's pydantic ValidationError is) at construction / call time, in the caller's
thread; the lenient coercions the official SDK performs are kept."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import tinker_actors as tinker
from tinker_actors import types
from tinker_actors.errors import InvalidInputError, InvalidTinkerPathError

MI = types.ModelInput.from_ints([1, 2, 3])

BAD = [
    ("from_ints float", lambda: types.ModelInput.from_ints([1.5, 2]), "token 0 is float"),
    ("from_ints None", lambda: types.ModelInput.from_ints([1, None]), "token 1 is NoneType"),
    ("from_ints str", lambda: types.ModelInput.from_ints(["a"]), "token 0 is str"),
    ("from_ints nested", lambda: types.ModelInput.from_ints([[1, 2]]), "token 0 is list"),
    ("from_ints huge", lambda: types.ModelInput.from_ints([2**40]), "int32"),
    ("from_ints not a list", lambda: types.ModelInput.from_ints(5), "got int"),
    ("from_ints str arg", lambda: types.ModelInput.from_ints("abc"), "got str"),
    ("np 2-D", lambda: types.ModelInput.from_ints(np.ones((2, 2), dtype=np.int64)), "1-D"),
    ("np fractional", lambda: types.ModelInput.from_ints(np.array([1.5])), "non-integral"),
    ("np int64 huge", lambda: types.ModelInput.from_ints(np.array([2**40])), "int32"),
    ("chunks None", lambda: types.ModelInput(chunks=None), "list of chunks"),
    ("chunks ints", lambda: types.ModelInput(chunks=[1, 2]), "from_ints"),
    ("Datum model_input list", lambda: types.Datum(model_input=[1, 2]), "ModelInput"),
    ("Datum lfi list", lambda: types.Datum(model_input=MI, loss_fn_inputs=[1]), "dict"),
    ("Datum lfi int key", lambda: types.Datum(model_input=MI, loss_fn_inputs={1: [1]}), "keys"),
    (
        "Datum tt None",
        lambda: types.Datum(model_input=MI, loss_fn_inputs={"target_tokens": [1, None, 3]}),
        "must be numeric",
    ),
    (
        "TensorData shape",
        lambda: types.TensorData(data=[1, 2, 3], dtype="int64", shape=[2, 2]),
        "needs 4 values, got 3",
    ),
    (
        "TensorData neg shape",
        lambda: types.TensorData(data=[1], dtype="int64", shape=[-1]),
        "non-negative",
    ),
    (
        "TensorData str shape",
        lambda: types.TensorData(data=[1], dtype="int64", shape="12"),
        "list of ints",
    ),
    ("TensorData str data", lambda: types.TensorData(data="abc", dtype="int64"), "numeric"),
    ("TensorData huge", lambda: types.TensorData(data=[2**70], dtype="int64"), "numeric"),
    ("SP temperature", lambda: types.SamplingParams(temperature="hot"), "temperature"),
    ("SP temperature None", lambda: types.SamplingParams(temperature=None), "temperature"),
    ("SP max_tokens", lambda: types.SamplingParams(max_tokens=1.5), "max_tokens"),
    ("SP top_k", lambda: types.SamplingParams(top_k="x"), "top_k"),
    ("SP top_p", lambda: types.SamplingParams(top_p=[1]), "top_p"),
    ("SP stop mixed", lambda: types.SamplingParams(stop=["a", 1]), "all strings or all"),
    ("SP stop float", lambda: types.SamplingParams(stop=[1.5]), "all strings or all"),
    ("SP stop int", lambda: types.SamplingParams(stop=5), "stop must be"),
    ("Adam lr str", lambda: types.AdamParams(learning_rate="x"), "learning_rate"),
    ("Lora rank", lambda: types.LoraConfig(rank="big"), "rank"),
]


@pytest.mark.parametrize(("name", "make", "fragment"), BAD, ids=[b[0] for b in BAD])
def test_bad_construction_is_a_clear_value_error(name: str, make: Any, fragment: str) -> None:
    with pytest.raises(InvalidInputError, match=fragment) as ei:
        make()
    assert isinstance(ei.value, ValueError) and isinstance(ei.value, tinker.TinkerError)


def test_official_leniency_is_kept() -> None:
    # pydantic lax mode in the official SDK: "7" -> 7, 2.0 -> 2, True -> 1, ints for floats
    assert types.ModelInput.from_ints([1.0, "7", True, 3]).to_ints() == [1, 7, 1, 3]
    sp = types.SamplingParams(max_tokens="10", temperature=1, top_p="0.5", top_k=5.0, seed="3")
    assert (sp.max_tokens, sp.temperature, sp.top_p, sp.top_k, sp.seed) == (10, 1.0, 0.5, 5, 3)
    assert type(sp.temperature) is float and type(sp.max_tokens) is int
    assert types.SamplingParams(stop=("a", "b")).stop == ("a", "b")
    assert types.SamplingParams(stop=[1, np.int64(2)]).stop == [1, 2]
    assert types.AdamParams(learning_rate=1).learning_rate == 1.0
    assert types.LoraConfig(rank="8").rank == 8
    # ranges are the server's to judge, as in the official SDK
    assert types.SamplingParams(max_tokens=-1, temperature=-1.0).max_tokens == -1
    assert types.AdamParams(learning_rate=-1.0).learning_rate == -1.0
    # lists, numpy and torch still become TensorData; int arrays of tokens stay arrays (a
    # writable one is copied, as the caller may reuse it; a read-only one is shared)
    d = types.Datum(model_input=MI, loss_fn_inputs={"target_tokens": [2, 3, 4], "weights": [1] * 3})
    assert d.loss_fn_inputs["weights"].dtype == "float32"
    arr = np.array([5, 6], dtype=np.int64)
    kept = types.ModelInput.from_ints(arr).chunks[0].tokens
    assert isinstance(kept, np.ndarray) and kept is not arr and kept.tolist() == [5, 6]
    arr.flags.writeable = False
    assert types.ModelInput.from_ints(arr).chunks[0].tokens is arr
    torch = pytest.importorskip("torch")
    assert types.ModelInput.from_ints(torch.tensor([4, 5])).to_ints() == [4, 5]
    # a dict model_input converts, as pydantic would
    d2 = types.Datum(model_input={"chunks": [{"type": "encoded_text", "tokens": [1]}]})
    assert d2.model_input.to_ints() == [1]


def test_base_url_and_api_key_shapes_fail_at_construction(monkeypatch: Any) -> None:
    monkeypatch.delenv("TINKER_BASE_URL", raising=False)
    for url in ["127.0.0.1:8000", "ftp://host", "http://", "http://h:notaport"]:
        with pytest.raises(InvalidInputError, match="base_url"):
            tinker.ServiceClient(base_url=url, api_key="tml-abcd")
    with pytest.raises(InvalidInputError, match="api_key must be a string"):
        tinker.ServiceClient(base_url="http://127.0.0.1:1", api_key=123)  # type: ignore[arg-type]
    monkeypatch.setenv("TINKER_BASE_URL", "localhost:8000")
    with pytest.raises(InvalidInputError, match="TINKER_BASE_URL"):
        tinker.RestClient(api_key="tml-abcd")


def test_settings_and_transport_reprs_redact_secrets() -> None:
    from tinker_actors.config import Settings
    from tinker_actors.runtime import get_runtime
    from tinker_actors.transport import Transport

    s = Settings(
        base_url="http://user:supersecret@h",
        api_key="tml-supersecret",
        cf_access_client_secret="cf-supersecret",
        default_headers=(("Authorization", "Bearer supersecret"), ("X-Other", "fine")),
    )
    t = Transport(get_runtime(), s)
    for text in (repr(s), str(s), repr(t)):
        assert "supersecret" not in text
    assert "fine" in repr(s)


# ------------------------------------------------------------------ end to end, local server
@pytest.fixture
def clients(local_server: Any) -> Any:
    TEST_API_KEY = "tml-test-key-0000"  # tests/conftest.py

    sc = tinker.ServiceClient(base_url=local_server.base_url, api_key=TEST_API_KEY)
    tc = sc.create_lora_training_client(base_model="tinker-actors/byte-1m", rank=4).result()
    yield sc, tc
    sc.close().result(timeout=30)


def _datum(tokens: Any = (1, 2, 3)) -> types.Datum:
    return types.Datum(
        model_input=types.ModelInput.from_ints(list(tokens)),
        loss_fn_inputs={"target_tokens": [2, 3, 4], "weights": [1.0, 1.0, 1.0]},
    )


def test_bad_calls_raise_at_call_time_and_leave_the_training_client_usable(clients: Any) -> None:
    sc, tc = clients
    bad_calls = [
        (lambda: tc.forward_backward(_datum(), "cross_entropy"), InvalidInputError),
        (lambda: tc.forward_backward(None, "cross_entropy"), InvalidInputError),
        (lambda: tc.forward_backward([{"model_input": 1}], "cross_entropy"), InvalidInputError),
        (lambda: tc.forward_backward([_datum()], None), InvalidInputError),
        (lambda: tc.save_state("a/b"), InvalidInputError),
        (lambda: tc.save_state(".."), InvalidInputError),
        (lambda: tc.save_weights_for_sampler("x/y"), InvalidInputError),
        (lambda: sc.create_sampling_client(model_path="not-a-path"), InvalidTinkerPathError),
    ]
    for call, exc in bad_calls:
        with pytest.raises(exc):
            call()
    # load_state*() is deprecated in 0.38: the call warns, then refuses the path
    deprecated_calls = [
        (lambda: tc.load_state("garbage"), InvalidTinkerPathError),
        (lambda: tc.load_state_with_optimizer("tinker://a/b"), InvalidTinkerPathError),
    ]
    for call, exc in deprecated_calls:
        with pytest.warns(FutureWarning, match=r"load_state\*\(\) is deprecated"):
            with pytest.raises(exc):
                call()
    # nothing above took a seq id, so the sequence is intact
    out = tc.forward_backward([_datum()], "cross_entropy").result(timeout=30)
    assert "loss:sum" in out.metrics
    tc.optim_step(types.AdamParams(learning_rate=1e-3)).result(timeout=30)
    # an unknown loss name is the server's call: a typed error in the future, client fine
    with pytest.raises(tinker.RequestFailedError, match="unknown loss_fn"):
        tc.forward_backward([_datum()], "nope").result(timeout=30)
    assert tc.forward_backward([_datum()], "cross_entropy").result(timeout=30).metrics


def test_sample_with_a_non_model_input_prompt_raises_at_call_time(clients: Any) -> None:
    sc, _ = clients
    samp = sc.create_sampling_client(base_model="tinker-actors/byte-1m").result()
    with pytest.raises(InvalidInputError, match="ModelInput"):
        samp.sample([1, 2, 3], 1, types.SamplingParams(max_tokens=2))
    # server-side range checks stay typed errors in the future (the request type's bounds
    # answer 422, as the hosted service's validation does)
    with pytest.raises(tinker.UnprocessableEntityError, match="max_tokens"):
        samp.sample(MI, 1, types.SamplingParams(max_tokens=-1)).result(timeout=30)
    assert samp.sample(MI, 1, types.SamplingParams(max_tokens=2)).result(timeout=30).sequences
