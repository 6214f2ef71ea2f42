"""Bounded integer types for the request fields.

msgspec checks these ``Meta`` bounds when a server decodes a request (a 422 that names the
field) and the OpenAPI export shows them as ``minimum``/``maximum``; constructing a Struct in
Python does not check them. Every integer field of a request type uses one of these, so no
value reaches SQLite (64-bit signed), numpy/torch (int32 token ids) or an allocation unbounded.
Bounds that depend on the model (``max_tokens`` against its context, token ids against its
vocabulary) are checked by the server.
"""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta

INT32_MAX = 2**31 - 1
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# Documented caps (docs/server.md "Bounds").
MAX_LORA_RANK = 1024
MAX_NUM_SAMPLES = 1024
MAX_TOPK_LOGPROBS = 1024
MAX_SEARCH_LIMIT = 200
TTL_MIN_S = 3600
TTL_MAX_S = 10 * 365 * 24 * 3600

SeqId = Annotated[int, Meta(ge=0, le=INT64_MAX)]
Count32 = Annotated[int, Meta(ge=0, le=INT32_MAX)]
Count64 = Annotated[int, Meta(ge=0, le=INT64_MAX)]
# The one unbounded integer: any int is a seed (as in the official SDK's types; msgspec
# cannot bound past int64 and uint64 seeds are common). Never stored in a column; the
# server reduces seeds modulo 2**63 before they reach an RNG.
Seed = int
TokenId = Annotated[int, Meta(ge=0, le=INT32_MAX)]
LoraRank = Annotated[int, Meta(ge=1, le=MAX_LORA_RANK)]
NumSamples = Annotated[int, Meta(ge=1, le=MAX_NUM_SAMPLES)]
MaxTokens = Annotated[int, Meta(ge=1, le=INT32_MAX)]
TopK = Annotated[int, Meta(ge=-1, le=INT32_MAX)]
TopKLogprobs = Annotated[int, Meta(ge=0, le=MAX_TOPK_LOGPROBS)]
PositiveCount32 = Annotated[int, Meta(ge=1, le=INT32_MAX)]
TtlSeconds = Annotated[int, Meta(ge=TTL_MIN_S, le=TTL_MAX_S)]
SearchLimit = Annotated[int, Meta(ge=1, le=MAX_SEARCH_LIMIT)]
