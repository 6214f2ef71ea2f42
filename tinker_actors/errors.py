"""The exception tree, shaped like the official SDK's ``tinker._exceptions``.

Constructors take plain values (status, headers, body) rather than HTTP-library
objects, so the transport seam can build them from whatever client it uses and
nothing above it depends on aiohttp. ``status_error_for`` picks the subclass.

Every exception class of the package lives here, whatever layer raises it, and is exported
from the package root (``tests/unit/test_errors_tree.py`` holds both); the modules that raise
them re-export them under their old names.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIResponseValidationError",
    "APIStatusError",
    "APITimeoutError",
    "ActorDeadError",
    "ActorKilled",
    "AuthenticationError",
    "BadRequestError",
    "BillingError",
    "BlockingOnLoopError",
    "CliError",
    "ConflictError",
    "DecodeError",
    "DecompressedTooLarge",
    "DriverError",
    "EncodeError",
    "ExperimentalWarning",
    "InternalServerError",
    "InvalidInputError",
    "InvalidTinkerPathError",
    "MailboxFullError",
    "NotFoundError",
    "PermissionDeniedError",
    "PromiseExpiredError",
    "ProtocolError",
    "RateLimitError",
    "RegularizerError",
    "RegularizerTimeoutError",
    "RequestFailedError",
    "RequestInfo",
    "ResponseInfo",
    "RestartLimitExceeded",
    "RetryableException",
    "RunCorruptedError",
    "SequenceBrokenError",
    "TinkerAlreadyImportedError",
    "TinkerError",
    "TokenizerError",
    "UnprocessableEntityError",
    "status_error_for",
]


@dataclass(frozen=True)
class RequestInfo:
    """What we know about the request behind an error (no HTTP-library object)."""

    method: str = ""
    url: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ResponseInfo:
    """What we know about the response behind an error: status, headers, raw body."""

    status_code: int
    headers: Mapping[str, str] = field(default_factory=dict)
    content: bytes = b""
    request: RequestInfo | None = None

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


class TinkerError(Exception):
    """Base exception for all Tinker-related errors."""


class APIError(TinkerError):
    """Base class for errors tied to an API call; ``body`` is the decoded JSON body or raw text."""

    message: str
    request: RequestInfo | None
    body: object | None

    def __init__(
        self, message: str, request: RequestInfo | None = None, *, body: object | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.request = request
        self.body = body

    def __reduce__(self) -> Any:
        return (_rebuild, (self.__class__, self.__dict__.copy(), self.args))


def _rebuild(cls: type[BaseException], state: dict[str, Any], args: tuple[Any, ...]) -> Any:
    obj = cls.__new__(cls)
    Exception.__init__(obj, *args)
    obj.__dict__.update(state)
    return obj


class APIResponseValidationError(APIError):
    """The response did not match the expected schema."""

    response: ResponseInfo | None
    status_code: int

    def __init__(
        self,
        response: ResponseInfo | None = None,
        body: object | None = None,
        message: str | None = None,
    ) -> None:
        super().__init__(
            message or "Data returned by API invalid for expected schema.",
            response.request if response is not None else None,
            body=body,
        )
        self.response = response
        self.status_code = response.status_code if response is not None else 200


class APIStatusError(APIError):
    """The server answered with a 4xx/5xx status."""

    response: ResponseInfo | None
    status_code: int

    def __init__(
        self,
        message: str,
        response: ResponseInfo | None = None,
        body: object | None = None,
        *,
        status_code: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if status_code is None:
            status_code = (
                response.status_code
                if response is not None
                else getattr(type(self), "status_code", 0)
            )
        if response is None:
            response = ResponseInfo(status_code=status_code, headers=dict(headers or {}))
        super().__init__(message, response.request, body=body)
        self.response = response
        self.status_code = status_code

    @property
    def headers(self) -> Mapping[str, str]:
        return self.response.headers if self.response is not None else {}


class APIConnectionError(APIError):
    """The request never got an HTTP response (connection refused, reset, DNS...)."""

    def __init__(
        self, request: RequestInfo | str | None = None, message: str = "Connection error."
    ) -> None:
        if isinstance(request, str):  # allow APIConnectionError("message")
            message = request
            request = None
        super().__init__(message, request, body=None)


class APITimeoutError(APIConnectionError):
    """The request timed out."""

    def __init__(
        self, request: RequestInfo | None = None, message: str = "Request timed out."
    ) -> None:
        super().__init__(request=request, message=message)


class BadRequestError(APIStatusError):
    """HTTP 400."""

    status_code: int = 400


class AuthenticationError(APIStatusError):
    """HTTP 401."""

    status_code: int = 401


class BillingError(APIStatusError):
    """HTTP 402 (billing pause)."""

    status_code: int = 402


class PermissionDeniedError(APIStatusError):
    """HTTP 403."""

    status_code: int = 403


class NotFoundError(APIStatusError):
    """HTTP 404."""

    status_code: int = 404


class ConflictError(APIStatusError):
    """HTTP 409."""

    status_code: int = 409


class UnprocessableEntityError(APIStatusError):
    """HTTP 422."""

    status_code: int = 422


class RateLimitError(APIStatusError):
    """HTTP 429."""

    status_code: int = 429


class InternalServerError(APIStatusError):
    """HTTP 500 and above."""


class RequestFailedError(TinkerError):
    """An asynchronous request finished in a failed state (``{"error", "category"}``)."""

    def __init__(self, message: str, request_id: str, category: Any = "unknown") -> None:
        from .types.futures import RequestErrorCategory

        super().__init__(message)
        self.message = message
        self.request_id = request_id
        self.category = RequestErrorCategory.parse(category)

    def __reduce__(self) -> Any:
        return (self.__class__, (self.message, self.request_id, str(self.category)))


class PromiseExpiredError(TinkerError):
    """retrieve_future answered 410: the future expired or broke; resubmit to retry."""


class ProtocolError(TinkerError, ValueError):
    """A body violated the wire protocol (bad JSON/protobuf, wrong shape or type)."""


class DecodeError(ProtocolError):
    """A body could not be decoded into the expected type."""


class DecompressedTooLarge(DecodeError):
    """A compressed body would decompress past the allowed size (HTTP 413 on a server)."""


class EncodeError(ProtocolError):
    """A value cannot be encoded for the wire (for example an image pointer in fwd/bwd)."""


class InvalidInputError(TinkerError, ValueError):
    """A value given to a public type or method has the wrong type or shape.

    Raised at call / construction time, in the caller's thread. A ``ValueError``, as the
    official SDK's pydantic ``ValidationError`` is, so ``except ValueError`` code keeps working.
    """


class InvalidTinkerPathError(TinkerError, ValueError):
    """A ``tinker://`` path is malformed."""


# ---------------------------------------------------------------- the runtime and its actors
class SequenceBrokenError(TinkerError):
    """A request holding a seq id could not be delivered; later requests cannot run in order."""


class RunCorruptedError(TinkerError):
    """The server marked the training run corrupted; the training actor restarts from a checkpoint."""


class RestartLimitExceeded(TinkerError):
    """A child crashed more often than the restart policy allows; its work is abandoned."""


class ActorDeadError(TinkerError, RuntimeError):
    """The actor stopped (or crashed) before it handled the message."""


class MailboxFullError(TinkerError, RuntimeError):
    """A bounded mailbox is full: back off and send again."""


class ActorKilled(TinkerError):
    """The exit reason of an actor killed from outside (supervision tests, an operator)."""


class BlockingOnLoopError(RuntimeError):
    """A blocking call was made on the loop that would have to produce its result."""


# ---------------------------------------------------------------- the domain: losses, tokenizers
class RegularizerError(RuntimeError):
    """A regularizer raised, returned something unusable, or timed out; ``name`` says which."""

    def __init__(self, name: str, reason: str, cause: BaseException | None = None):
        super().__init__(f"regularizer {name!r} failed: {reason}")
        self.name = name
        self.reason = reason
        self.__cause__ = cause


class RegularizerTimeoutError(RegularizerError, TimeoutError):
    """A regularizer did not finish within the pipeline's ``timeout``."""


class TokenizerError(RuntimeError):
    """A tokenizer could not be resolved or loaded; names the model and the reason."""

    def __init__(self, model: str, reason: str):
        super().__init__(f"cannot load the tokenizer for {model!r}: {reason}")
        self.model = model
        self.reason = reason


# ---------------------------------------------------------------- official-SDK names, the drop-in
class RetryableException(Exception):
    """Raise it from a function run by ``RetryHandler`` to ask for a retry (official name,
    served at ``tinker.lib.retry_handler`` and ``tinker.lib.retryable_exception``)."""


class ExperimentalWarning(FutureWarning):
    """An API that may change or go away in any release was called (shown by default)."""


class TinkerAlreadyImportedError(RuntimeError):
    """``tinker`` was imported from the official package before ``install()``."""


# ---------------------------------------------------------------- the applications
class CliError(Exception):
    """A command-line failure the user can act on: ``Error: <message>`` and ``details`` on
    stderr, then exit with ``exit_code`` (shown by ``tinker_actors.cli.core.show_error``)."""

    def __init__(self, message: str, details: str | None = None, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.exit_code = exit_code


class DriverError(RuntimeError):
    """A benchmark driver cannot run as asked (the official SDK missing, streaming through
    it...)."""


_STATUS_CLASSES: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: BillingError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def status_error_class(status: int) -> type[APIStatusError]:
    """The exception class for an HTTP status (>= 500 is InternalServerError)."""
    if status >= 500:
        return InternalServerError
    return _STATUS_CLASSES.get(status, APIStatusError)


def _decode_body(body: object | None) -> object | None:
    if isinstance(body, bytes | bytearray):
        if not body:
            return None
        try:
            decoded: object = json.loads(body)
        except ValueError:
            return bytes(body).decode("utf-8", "replace")
        return decoded
    return body


def status_error_for(
    status: int,
    message: str | None = None,
    body: object | None = None,
    headers: Mapping[str, str] | None = None,
    *,
    request: RequestInfo | None = None,
) -> APIStatusError:
    """Build the right APIStatusError subclass from a status, body and headers.

    ``body`` may be raw bytes (decoded as JSON when possible) or an already
    decoded value. The default message is the SDK's ``"Error code: {status} - {body}"``.
    """
    raw = bytes(body) if isinstance(body, bytes | bytearray) else b""
    decoded = _decode_body(body)
    if message is None:
        shown = json.dumps(decoded) if not isinstance(decoded, str) else decoded
        message = (
            f"Error code: {status} - {shown}" if decoded is not None else f"Error code: {status}"
        )
    response = ResponseInfo(
        status_code=status, headers=dict(headers or {}), content=raw, request=request
    )
    cls = status_error_class(status)
    return cls(message, response, decoded, status_code=status)
