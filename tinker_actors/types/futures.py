"""Futures: submit responses, retrieve_future polling replies, the session poller."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from ._base import WireStruct, always, force_set
from ._bounds import Count64

RequestID = str


class RequestErrorCategory(StrEnum):
    """Who is to blame for a failed request; unknown strings map to Unknown."""

    Unknown = "unknown"
    Server = "server"
    User = "user"

    @classmethod
    def parse(cls, value: object) -> RequestErrorCategory:
        try:
            return cls(str(value).lower())
        except ValueError:
            return cls.Unknown


class UntypedAPIFuture(WireStruct):
    """The immediate reply of every async submit."""

    request_id: RequestID
    model_id: str | None = None
    sample_sequence_ids: list[str] | None = None


class FutureRetrieveRequest(WireStruct):
    request_id: RequestID
    allow_metadata_only: bool = always(False)


class TryAgainResponse(WireStruct, tag_field="type", tag="try_again"):
    """Still pending; ``queue_state`` is active / paused_capacity / paused_rate_limit."""

    request_id: str
    queue_state: str = always("active")
    queue_state_reason: str | None = None


class FutureMetadataOnlyResponse(WireStruct, kw_only=True):
    """The result is ready; re-poll with allow_metadata_only=false to get it."""

    status: Literal["complete_metadata"] = always("complete_metadata")
    response_payload_size: int


class RequestFailedResponse(WireStruct):
    """A terminal failure of the future (``{"error", "category"}``)."""

    error: str
    category: str = always("unknown")

    def __post_init__(self) -> None:
        force_set(self, "category", RequestErrorCategory.parse(self.category))


class CancelFutureRequest(WireStruct):
    request_id: RequestID


class SamplingSessionFuturesTarget(WireStruct, tag_field="type", tag="sampling_session"):
    sampling_session_id: str
    cloned_sampler_id: Count64 = always(0)


class FuturesRetrieveRequest(WireStruct):
    target: SamplingSessionFuturesTarget
    prev_cursor: Count64 = always(0)
    timeout: float | None = None
    retrieved_request_ids: list[str] = always([])


class FutureFinished(WireStruct, tag_field="state", tag="finished"):
    request_id: RequestID
    response_payload_uncompressed_size: int | None = None


class FutureFailed(WireStruct, tag_field="state", tag="failed"):
    request_id: RequestID


FutureCompletion = FutureFinished | FutureFailed


class FuturesRetrieveResponse(WireStruct):
    completions: list[FutureCompletion]
    cursor: int


# The union of JSON results a retrieve_future poll can return (documentation alias;
# the client decodes by the expected type of the request instead).
FutureRetrieveResponse = object
