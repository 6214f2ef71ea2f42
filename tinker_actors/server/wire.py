"""Wire <-> engine conversions for the server, built on the shared codec and wire types.

Request bodies become engine inputs (numpy arrays, ``SampleJob``); engine results become
protobuf (0.38 clients) or the older JSON shapes (clients that accept only JSON).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import numpy as np

from tinker_actors import codec, types
from tinker_actors.errors import DecodeError
from tinker_actors.server.engine.base import (
    DatumArrays,
    EngineUserError,
    ForwardBackwardResult,
    SampleJob,
    SampleOutcome,
)
from tinker_actors.server.errors import HttpError, bad_request
from tinker_actors.server.futures import Outcome
from tinker_actors.types._bounds import INT64_MAX, MAX_NUM_SAMPLES

JSON = "application/json"
PROTO = "application/x-protobuf"
# Encoding a result bigger than this runs in a thread, so the loop stays responsive.
OFFLOAD_ENCODE_BYTES = 256 * 1024


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# Deepest JSON nesting a request body may have; the API's own shapes need under 10 levels.
MAX_JSON_DEPTH = 64
_JSON_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def check_json_depth(raw: bytes, limit: int = MAX_JSON_DEPTH) -> None:
    """A 400 for JSON nested deeper than ``limit`` (a decoder would recurse that deep).

    Bodies with fewer brackets than the limit cannot be too deep and skip the scan; the
    scan steps over whole strings with one regex, so brackets inside strings do not count.
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return
    depth = 0
    for m in _JSON_TOKENS.finditer(raw):
        c = m.group()[0]
        if c == 0x5B or c == 0x7B:  # [ {
            depth += 1
            if depth > limit:
                raise bad_request(f"JSON body is nested deeper than {limit} levels")
        elif c == 0x5D or c == 0x7D:  # ] }
            depth -= 1


_JSON_NUMBERS = re.compile(rb'"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?')


def integral_floats_to_ints(raw: bytes) -> bytes:
    """``2.0`` / ``1e3`` written as ``2`` / ``1000``: JSON Schema's integers (and pydantic's
    lax mode, as the hosted service decodes) include integral floats; msgspec's strict
    decoding does not. Strings are left alone; float fields accept the ints unchanged."""

    def fix(m: re.Match[bytes]) -> bytes:
        tok = m.group()
        if tok[:1] == b'"' or not any(c in tok for c in b".eE"):
            return tok
        try:
            value = Decimal(tok.decode())
        except InvalidOperation:
            return tok
        if value != value.to_integral_value() or abs(value) > 2**64:
            return tok
        return str(int(value)).encode()

    return _JSON_NUMBERS.sub(fix, raw)


def decode_json(raw: bytes, type_: Any) -> Any:
    """A request body as ``type_``; integral floats are accepted for integer fields."""
    try:
        return codec.json_decode(raw, type_)
    except DecodeError as exc:
        if "got `float`" not in str(exc):
            raise
        return codec.json_decode(integral_floats_to_ints(raw), type_)


# -- forward_backward -------------------------------------------------------------------------
@dataclass(slots=True)
class FwdBwd:
    model_id: str
    seq_id: int
    data: Callable[[], list[DatumArrays]]  # deferred: bad data fails this seq's future
    loss_fn: str
    loss_fn_config: dict[str, float | str]
    forward_only: bool


def _arrays(data: list[types.Datum]) -> Callable[[], list[DatumArrays]]:
    def convert() -> list[DatumArrays]:
        out = []
        for i, datum in enumerate(data):
            try:
                tokens = codec.datum_tokens_np(datum, np.int64)
                inputs = {}
                for k, v in codec.datum_loss_fn_inputs_np(datum).items():
                    inputs[k] = v.astype(
                        np.int64 if v.dtype.kind in "iub" else np.float32, copy=False
                    )
            except (ValueError, TypeError) as exc:
                raise EngineUserError(f"datum {i}: {exc}") from exc
            if not len(tokens):
                raise EngineUserError(f"datum {i}: empty model_input")
            for k, v in inputs.items():
                if v.ndim == 0 or v.shape[0] != len(tokens):
                    raise EngineUserError(
                        f"datum {i}: loss_fn_inputs[{k!r}] has shape {list(v.shape)} but "
                        f"model_input has {len(tokens)} tokens; they must be aligned"
                    )
            out.append(DatumArrays(tokens=tokens, inputs=inputs))
        return out

    return convert


def parse_fwdbwd_proto(raw: bytes) -> FwdBwd:
    try:
        req = codec.decode_forward_backward_request(raw)
    except DecodeError as exc:
        raise bad_request(f"malformed protobuf ForwardBackwardRequest: {exc}") from exc
    if not req.model_id:
        raise HttpError(422, "ForwardBackwardRequest.model_id is required")
    if not 1 <= req.seq_id <= INT64_MAX:
        raise HttpError(
            422, f"ForwardBackwardRequest.seq_id must be in [1, 2**63 - 1], got {req.seq_id}"
        )
    return FwdBwd(
        req.model_id,
        req.seq_id,
        _arrays(req.data),
        req.loss_fn,
        dict(req.loss_fn_config or {}),
        req.forward_only,
    )


def parse_fwdbwd_json(raw: bytes, envelope: str) -> FwdBwd:
    """The older JSON bodies: ``{forward_backward_input|forward_input, model_id, seq_id}``."""
    check_json_depth(raw)
    type_ = (
        types.ForwardBackwardRequest
        if envelope == "forward_backward_input"
        else types.ForwardRequest
    )
    try:
        req = decode_json(raw, type_)
    except DecodeError as exc:
        raise HttpError(422, str(exc)) from exc
    inp = getattr(req, envelope)
    if req.seq_id is None:
        raise HttpError(422, "seq_id is required")
    return FwdBwd(
        req.model_id,
        req.seq_id,
        _arrays(inp.data),
        inp.loss_fn,
        dict(inp.loss_fn_config or {}),
        envelope == "forward_input",
    )


def fwdbwd_output(result: ForwardBackwardResult) -> types.ForwardBackwardOutput:
    outputs = []
    for out in result.outputs:
        outputs.append(
            {
                k: types.TensorData(
                    data=np.ascontiguousarray(v),
                    dtype=types.tensor_dtype_of(v.dtype),
                    shape=list(v.shape),
                )
                for k, v in out.items()
            }
        )
    return types.ForwardBackwardOutput(
        loss_fn_output_type=result.loss_fn_output_type,
        loss_fn_outputs=outputs,
        metrics={k: float(v) for k, v in result.metrics.items()},
    )


def fwdbwd_outcome_json(outcome: Outcome) -> str:
    """A forward_backward result as stored JSON (kept across a clean stop)."""
    return codec.json_encode(fwdbwd_output(outcome.value)).decode()


def fwdbwd_outcome_from_json(text: str) -> Outcome:
    """The stored JSON back as a result that renders as protobuf or JSON per Accept."""
    out = codec.json_decode(text.encode(), types.ForwardBackwardOutput)
    outputs = [{k: np.asarray(v.to_numpy()) for k, v in o.items()} for o in out.loss_fn_outputs]
    result = ForwardBackwardResult(outputs, dict(out.metrics), out.loss_fn_output_type)
    return Outcome("fwdbwd", result)


# -- sampling ---------------------------------------------------------------------------------
def request_seed(req: types.SampleRequest, prompt: np.ndarray) -> int:
    """A sampling seed that depends only on the request (seq_id, prompt, num_samples)."""
    h = hashlib.blake2b(digest_size=8)
    h.update(f"{req.seq_id}|{req.num_samples}|".encode())
    h.update(prompt.astype("<i8").tobytes())
    return int.from_bytes(h.digest(), "little") >> 2


def sample_job(
    req: types.SampleRequest, *, deterministic: bool = False
) -> tuple[SampleJob, Callable[[Any], Outcome]]:
    """Validates a SampleRequest into a SampleJob and the result shaper for its outcome.

    ``deterministic``: a request with no seed gets :func:`request_seed` (see
    ``ServerConfig.deterministic_sampling``) instead of a random one.
    """
    try:
        prompt = req.prompt.to_numpy(np.int64)
    except ValueError as exc:
        raise bad_request(
            f"prompt: {exc} (the local server samples from text tokens only)"
        ) from exc
    if not len(prompt):
        raise bad_request("prompt is empty")
    if not 1 <= req.num_samples <= MAX_NUM_SAMPLES:
        raise bad_request(f"num_samples must be between 1 and {MAX_NUM_SAMPLES}")
    sp = req.sampling_params
    if sp.max_tokens is not None and sp.max_tokens < 1:
        raise bad_request("max_tokens must be >= 1")
    if not (math.isfinite(sp.temperature) and sp.temperature >= 0):
        raise bad_request("temperature must be >= 0")
    if not 0 < sp.top_p <= 1:
        raise bad_request("top_p must be in (0, 1]")
    for name, value in (
        ("topk_sample_logprobs", req.topk_sample_logprobs),
        ("prompt_alt_tokens_k", req.prompt_alt_tokens_k),
    ):
        if value:
            raise bad_request(f"{name} is not supported by the local server")
    if req.target_prompt_logprobs is not None:
        raise bad_request("target_prompt_logprobs is not supported by the local server")
    if req.topk_prompt_logprobs < 0:
        raise bad_request("topk_prompt_logprobs must be >= 0")
    stop = sp.stop
    strings: tuple[str, ...] = ()
    tokens: tuple[int, ...] = ()
    if isinstance(stop, str):
        strings = (stop,)
    elif isinstance(stop, list):
        if all(isinstance(s, str) for s in stop):
            strings = tuple(stop)  # type: ignore[arg-type]
        elif all(isinstance(s, int) and not isinstance(s, bool) for s in stop):
            tokens = tuple(stop)  # type: ignore[arg-type]
        else:
            raise bad_request("stop must be all strings or all token ids")
    want_plp = bool(req.prompt_logprobs) or req.topk_prompt_logprobs > 0
    last_n = req.prompt_logprobs_last_n
    if last_n is not None and last_n >= len(prompt) - 1:
        last_n = None  # at least every prompt position that has a logprob: all of them
    job = SampleJob(
        prompt=prompt,
        num_samples=req.num_samples,
        max_tokens=sp.max_tokens,
        temperature=float(sp.temperature),
        top_k=int(sp.top_k),
        top_p=float(sp.top_p),
        seed=request_seed(req, prompt) if sp.seed is None and deterministic else sp.seed,
        stop_strings=strings,
        stop_tokens=tokens,
        # stop=None keeps EOS; an explicit token list (even []) is the whole stop set;
        # stop strings add to EOS.
        stop_at_eos=stop is None or bool(strings),
        prompt_logprobs=want_plp,
        topk_prompt_logprobs=int(req.topk_prompt_logprobs),
    )
    keep_plp = bool(req.prompt_logprobs)

    def finish(outcome: SampleOutcome) -> Outcome:
        if len(outcome.sequences) != req.num_samples:
            raise RuntimeError(
                f"engine returned {len(outcome.sequences)} sequences for num_samples="
                f"{req.num_samples}"
            )
        if not keep_plp:
            outcome.prompt_logprobs = None
        elif last_n is not None and outcome.prompt_logprobs is not None:
            plp = np.array(outcome.prompt_logprobs, dtype=np.float32)
            plp[: len(plp) - last_n] = np.nan
            outcome.prompt_logprobs = plp
        if req.topk_prompt_logprobs == 0:
            outcome.topk_prompt_logprobs = None
        return Outcome("sample", outcome)

    return job, finish


def _topk_entries(ids: np.ndarray, lps: np.ndarray) -> list[list[tuple[int, float]] | None]:
    out: list[list[tuple[int, float]] | None] = []
    for row_ids, row_lps in zip(ids.tolist(), lps.tolist(), strict=True):
        pairs = [(i, lp) for i, lp in zip(row_ids, row_lps, strict=True) if lp > -99999.0]
        out.append(pairs or None)
    return out


def sample_response(outcome: SampleOutcome) -> types.SampleResponse:
    seqs = [
        types.SampledSequence(
            stop_reason=s.stop_reason,
            tokens=np.asarray(s.tokens).tolist(),
            logprobs=np.asarray(s.logprobs, dtype=np.float32).tolist(),
        )
        for s in outcome.sequences
    ]
    plp = None
    if outcome.prompt_logprobs is not None:
        plp = [None if math.isnan(v) else v for v in np.asarray(outcome.prompt_logprobs).tolist()]
    topk = None
    if outcome.topk_prompt_logprobs is not None:
        topk = _topk_entries(*outcome.topk_prompt_logprobs)
    return types.SampleResponse(
        sequences=seqs,
        prompt_logprobs=plp,
        topk_prompt_logprobs=topk,
        prompt_cache_hit_tokens=int(outcome.prompt_cache_hit_tokens),
    )


# -- results ----------------------------------------------------------------------------------
def _encode(outcome: Outcome, proto: bool) -> bytes:
    if outcome.kind == "sample":
        resp = sample_response(outcome.value)
        return codec.encode_sample_response(resp) if proto else codec.json_encode(resp)
    out = fwdbwd_output(outcome.value)
    return codec.encode_forward_backward_output(out) if proto else codec.json_encode(out)


async def render_outcome(outcome: Outcome, proto: bool) -> tuple[bytes, str]:
    """Bytes and Content-Type of a finished result; tensor results are encoded once per form."""
    if outcome.kind == "json":
        return outcome.value, JSON
    key = PROTO if proto else JSON
    cached = outcome.encoded.get(key)
    if cached is None:
        size = _approx_size(outcome)
        if size > OFFLOAD_ENCODE_BYTES:
            cached = await asyncio.get_running_loop().run_in_executor(None, _encode, outcome, proto)
        else:
            cached = _encode(outcome, proto)
        outcome.encoded[key] = cached
    return cached, key


def _approx_size(outcome: Outcome) -> int:
    value = outcome.value
    if isinstance(value, SampleOutcome):
        return sum(len(s.tokens) * 8 for s in value.sequences) + (
            0 if value.prompt_logprobs is None else len(value.prompt_logprobs) * 4
        )
    if isinstance(value, ForwardBackwardResult):
        return sum(v.nbytes for out in value.outputs for v in out.values())
    return 0
