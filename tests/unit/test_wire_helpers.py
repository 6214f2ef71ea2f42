"""Chunking, byte estimates, metric reductions, tinker paths and the error tree."""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinker_actors import errors
from tinker_actors import types as t
from tinker_actors.tinker_path import make_tinker_path, parse_tinker_path


def _datum(n_tokens: int, extra: dict | None = None) -> t.Datum:
    return t.Datum(
        model_input=t.ModelInput.from_ints(list(range(n_tokens))),
        loss_fn_inputs={"target_tokens": list(range(n_tokens)), **(extra or {})},
    )


def test_estimate_datum_bytes() -> None:
    d = _datum(10, {"weights": [1.0] * 10})
    assert t.estimate_datum_bytes(d) == 10 * 4 + 10 * 8 + 10 * 4
    w = np.zeros((4, 4), np.float32)
    w[0, 0] = 1
    sparse = t.Datum(
        model_input=t.ModelInput.from_ints([1]),
        loss_fn_inputs={"weights": t.TensorData.from_numpy_sparse(w)},
    )
    assert sparse.loss_fn_inputs["weights"].is_sparse
    assert t.estimate_datum_bytes(sparse) == 4 + 4 + 8 * (5 + 1)
    img = t.Datum(model_input=t.ModelInput(chunks=[t.ImageChunk(data=b"12345", format="png")]))
    assert t.estimate_datum_bytes(img) == 5
    assert t.estimate_model_input_bytes(t.ModelInput.from_ints([1, 2])) == 20


def test_chunking_edge_cases() -> None:
    assert t.chunk_data([]) == []
    data = [_datum(1) for _ in range(2049)]
    chunks = t.chunk_data(data)
    assert [len(c) for c, _ in chunks] == [1024, 1024, 1]
    # One datum above the byte budget still gets its own chunk, never an empty one.
    big = [_datum(10), _datum(10_000), _datum(10)]
    chunks = t.chunk_data(big, max_chunk_bytes=1000)
    assert [len(c) for c, _ in chunks] == [1, 1, 1]
    assert all(c for c, _ in chunks)
    assert [c[0] for c, _ in chunks] == big
    assert chunks[1][1] == t.estimate_datum_bytes(big[1])
    with pytest.raises(ValueError):
        t.chunk_data(data, max_chunk_len=0)


@given(
    sizes=st.lists(st.integers(0, 50), max_size=60),
    max_len=st.integers(1, 8),
    max_bytes=st.integers(1, 1000),
)
def test_chunking_properties(sizes: list[int], max_len: int, max_bytes: int) -> None:
    data = [_datum(n) for n in sizes]
    chunks = t.chunk_data(data, max_chunk_len=max_len, max_chunk_bytes=max_bytes)
    assert [d for c, _ in chunks for d in c] == data  # order kept, nothing lost
    for c, est in chunks:
        assert 1 <= len(c) <= max_len
        assert est == sum(t.estimate_datum_bytes(d) for d in c)
        assert len(c) == 1 or est <= max_bytes
    # Greedy: the next chunk's first datum would not have fitted.
    for (c, est), (nxt, _) in itertools.pairwise(chunks):
        assert len(c) == max_len or est + t.estimate_datum_bytes(nxt[0]) > max_bytes


def _out(n: int, metrics: dict[str, float]) -> t.ForwardBackwardOutput:
    return t.ForwardBackwardOutput(
        loss_fn_output_type="ArrayRecord",
        loss_fn_outputs=[{"logprobs": t.TensorData.from_numpy(np.zeros(1, np.float32))}] * n,
        metrics=metrics,
    )


def test_metric_reductions() -> None:
    a = _out(
        1,
        {
            "l:mean": 1.0,
            "s:sum": 2.0,
            "lo:min": 3.0,
            "hi:max": 3.0,
            "sl:slack": 1.0,
            "h:hash2": 5.0,
            "u:unique": 7.0,
            "x:bogus": 1.0,
            "only:sum": 1.0,
        },
    )
    b = _out(
        3,
        {
            "l:mean": 3.0,
            "s:sum": 4.0,
            "lo:min": -1.0,
            "hi:max": 9.0,
            "sl:slack": 3.0,
            "h:hash2": 6.0,
            "u:unique": 8.0,
            "x:bogus": 1.0,
        },
    )
    c = t.combine_fwd_bwd_output_results([a, b])
    m = c.metrics
    assert m["l:mean"] == pytest.approx((1 * 1 + 3 * 3) / 4)
    assert m["s:sum"] == 6.0 and m["lo:min"] == -1.0 and m["hi:max"] == 9.0
    assert m["sl:slack"] == pytest.approx(3.0 - (1 * 1 + 3 * 3) / 4)
    assert m["h:hash2"] == 11
    assert m["u:unique"] == 7.0 and m["u:unique_1"] == 8.0
    assert "x:bogus" not in m and "only:sum" not in m
    assert len(c.loss_fn_outputs) == 4
    assert t.combine_fwd_bwd_output_results([]).loss_fn_outputs == []
    with pytest.raises(ValueError):
        t.combine_metrics([{"no_colon": 1.0}])
    with pytest.raises(ValueError):
        t.combine_metrics([{"a:b:c": 1.0}])


official_helpers = pytest.importorskip("tinker.lib.chunked_fwdbwd_helpers")


@given(
    chunks=st.lists(
        st.tuples(
            st.integers(0, 5),
            st.fixed_dictionaries(
                {
                    k: st.floats(-1e3, 1e3)
                    for k in ["a:mean", "b:sum", "c:min", "d:max", "e:slack", "f:unique"]
                }
            ),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_metric_reductions_match_official(chunks: list[tuple[int, dict[str, float]]]) -> None:
    from tinker import types as ot

    if sum(n for n, _ in chunks) == 0:
        return  # the official weighted mean divides by zero here
    ours = t.combine_fwd_bwd_output_results([_out(n, m) for n, m in chunks])
    theirs = official_helpers.combine_fwd_bwd_output_results(
        [
            ot.ForwardBackwardOutput(
                loss_fn_output_type="ArrayRecord", loss_fn_outputs=[{}] * n, metrics=m
            )
            for n, m in chunks
        ]
    )
    assert ours.metrics.keys() == theirs.metrics.keys()
    for k, v in theirs.metrics.items():
        assert ours.metrics[k] == pytest.approx(v, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize(
    ("path", "kind", "cid"),
    [
        ("tinker://sess-0:train:0/weights/step-1", "training", "weights/step-1"),
        ("tinker://r/sampler_weights/s1", "sampler", "sampler_weights/s1"),
        ("tinker://r/external_weights/e1", "external", "external_weights/e1"),
    ],
)
def test_parse_tinker_path(path: str, kind: str, cid: str) -> None:
    p = parse_tinker_path(path)
    assert (p.checkpoint_type, p.checkpoint_id) == (kind, cid)
    assert t.ParsedCheckpointTinkerPath.from_tinker_path(path) == p
    assert make_tinker_path(p.training_run_id, p.checkpoint_type, cid.split("/")[1]) == path


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "http://r/weights/x",
        "tinker://r/weights",
        "tinker://r/weights/x/y",
        "tinker://r/bogus/x",
        "tinker:///weights/x",
        "tinker://r/weights/",
    ],
)
def test_parse_tinker_path_errors(bad: str) -> None:
    with pytest.raises(errors.InvalidTinkerPathError, match="Invalid tinker path"):
        parse_tinker_path(bad)
    with pytest.raises(ValueError):
        t.ParsedCheckpointTinkerPath.from_tinker_path(bad)


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, errors.BadRequestError),
        (401, errors.AuthenticationError),
        (402, errors.BillingError),
        (403, errors.PermissionDeniedError),
        (404, errors.NotFoundError),
        (409, errors.ConflictError),
        (422, errors.UnprocessableEntityError),
        (429, errors.RateLimitError),
        (500, errors.InternalServerError),
        (503, errors.InternalServerError),
        (418, errors.APIStatusError),
    ],
)
def test_status_error_for(status: int, cls: type) -> None:
    err = errors.status_error_for(
        status, body=b'{"detail": "nope"}', headers={"x-should-retry": "false"}
    )
    assert type(err) is cls
    assert isinstance(err, errors.APIStatusError) and isinstance(err, errors.TinkerError)
    assert err.status_code == status
    assert err.body == {"detail": "nope"}
    assert err.headers["x-should-retry"] == "false"
    assert err.message == f'Error code: {status} - {{"detail": "nope"}}'
    again = pickle.loads(pickle.dumps(err))
    assert type(again) is cls and again.status_code == status and again.body == err.body


def test_error_constructors_without_http_objects() -> None:
    assert errors.RateLimitError("slow down").status_code == 429
    assert errors.APIStatusError("x", status_code=418).status_code == 418
    assert errors.status_error_for(502, body=b"<html>").body == "<html>"
    e = errors.APIConnectionError("refused")
    assert e.message == "refused" and isinstance(e, errors.APIError)
    assert isinstance(errors.APITimeoutError(), errors.APIConnectionError)
    rf = errors.RequestFailedError("boom", "req-1", "user")
    assert rf.category == t.RequestErrorCategory.User
    assert pickle.loads(pickle.dumps(rf)).category == t.RequestErrorCategory.User
    assert errors.RequestFailedError("x", "r", "???").category == t.RequestErrorCategory.Unknown
    assert errors.APIResponseValidationError().message.startswith("Data returned")
    assert issubclass(errors.DecodeError, errors.ProtocolError)
