"""HTTP-level failures raised by the server's service layer and rendered as ``{"detail"}``."""

from __future__ import annotations


class HttpError(Exception):
    """An error answer: FastAPI-style JSON ``{"detail": ...}`` with this status."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def bad_request(detail: str) -> HttpError:
    return HttpError(400, detail)


def not_found(detail: str) -> HttpError:
    return HttpError(404, detail)


def conflict(detail: str) -> HttpError:
    return HttpError(409, detail)


def gone(detail: str) -> HttpError:
    return HttpError(410, detail)
