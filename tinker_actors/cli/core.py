"""What every command shares: the context object, the error type, clients and error mapping.

Errors say what to do next: a missing key names the ways to give one, an unknown checkpoint
names the command that lists them, an unreachable server names ``tinker-actors serve``.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import click

from tinker_actors.errors import CliError as CliError  # re-exported: the commands import it here

if TYPE_CHECKING:
    from tinker_actors.clients.admin import AdminClient
    from tinker_actors.clients.rest import RestClient
    from tinker_actors.clients.service import ServiceClient
    from tinker_actors.types import ParsedCheckpointTinkerPath

F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C")

PATH_HINT = "Checkpoint paths look like tinker://<run-id>/weights/<name>"
NO_SERVER_HINT = (
    "Set TINKER_BASE_URL to the server's URL (and TINKER_API_KEY to its key); "
    "`tinker-actors serve` starts a local one and prints both."
)


@dataclass
class CliContext:
    """Shared by every command through ``click.pass_obj``."""

    format: Literal["table", "json"] = "table"


def show_error(exc: CliError) -> None:
    """``Error: <message>`` and the details of a CliError, on stderr."""
    click.echo(f"Error: {exc.message}", err=True)
    if exc.details:
        click.echo(exc.details, err=True)


def cli_context() -> CliContext:
    ctx = click.get_current_context(silent=True)
    obj = ctx.find_object(CliContext) if ctx is not None else None
    return obj or CliContext()


# ------------------------------------------------------------------------------ clients
def endpoint(base_url: str | None = None, api_key: str | None = None) -> tuple[str, str | None]:
    """Where the CLI talks to: ``base_url`` or TINKER_BASE_URL, never an implicit server.

    The library starts an embedded server when no URL is set; a command line that did so
    would show an empty, private server, so the CLI asks for a URL instead.
    """
    url = base_url or os.environ.get("TINKER_BASE_URL", "").strip() or None
    if url is None:
        raise CliError("No Tinker server configured", NO_SERVER_HINT)
    return url, api_key


def _setup_errors(build: Callable[[], C]) -> C:
    from tinker_actors.errors import InvalidInputError, TinkerError

    try:
        return build()
    except CliError:
        raise
    except (InvalidInputError, ValueError) as exc:
        raise CliError(f"Configuration error: {exc}", _key_hint(exc)) from exc
    except TinkerError as exc:  # a client that checks in at construction: the server answered
        mapped = _mapped(exc)
        if mapped is not None and type(exc) is not TinkerError:
            raise mapped from exc
        raise CliError(f"Configuration error: {exc}", _key_hint(exc)) from exc


def _key_hint(exc: BaseException) -> str:
    text = str(exc).lower()
    if "credential" in text or "api key" in text or "api_key" in text:
        return (
            "Set TINKER_API_KEY (a local server prints its key when it starts), set "
            "TINKER_CREDENTIAL_CMD, or run `tinker-actors auth login`."
        )
    return "Check TINKER_BASE_URL and TINKER_API_KEY."


def rest_client(base_url: str | None = None, api_key: str | None = None) -> RestClient:
    def build() -> RestClient:
        from tinker_actors.clients.rest import RestClient

        url, key = endpoint(base_url, api_key)
        return RestClient(base_url=url, api_key=key)

    return _setup_errors(build)


def admin_client() -> AdminClient:
    def build() -> AdminClient:
        from tinker_actors.clients.admin import AdminClient

        url, key = endpoint()
        return AdminClient(base_url=url, api_key=key)

    return _setup_errors(build)


def service_client(
    base_url: str | None = None, api_key: str | None = None, **kwargs: Any
) -> ServiceClient:
    def build() -> ServiceClient:
        from tinker_actors.clients.service import ServiceClient

        url, key = endpoint(base_url, api_key)
        return ServiceClient(base_url=url, api_key=key, **kwargs)

    return _setup_errors(build)


def parse_path(path: str) -> ParsedCheckpointTinkerPath:
    """A ``tinker://`` path, or a CliError naming the expected shape."""
    from tinker_actors.errors import InvalidTinkerPathError
    from tinker_actors.tinker_path import parse_tinker_path

    if not path.startswith("tinker://"):
        raise CliError(f"Invalid checkpoint path: {path}", PATH_HINT)
    try:
        return parse_tinker_path(path)
    except (InvalidTinkerPathError, ValueError) as exc:
        raise CliError(f"Invalid checkpoint path: {exc}", PATH_HINT) from exc


# ------------------------------------------------------------------------------ error mapping
def _mapped(exc: BaseException) -> CliError | None:
    """The CliError for a library error, or None when it is not one."""
    from tinker_actors import errors as e

    msg = getattr(exc, "message", None) or str(exc)
    detail = f"Details: {msg}"
    if isinstance(exc, e.NotFoundError):
        return CliError(
            "Resource not found",
            f"{detail}\nCheck the id or path: `tinker-actors run list`, `checkpoint list` and "
            "`session list` show what exists.",
        )
    if isinstance(exc, e.AuthenticationError):
        return CliError(
            "Authentication failed",
            "Please check your API key or authentication credentials (TINKER_API_KEY).\n" + detail,
        )
    if isinstance(exc, e.BillingError):
        return CliError("Billing issue", "Check that billing is set up.\n" + detail)
    if isinstance(exc, e.PermissionDeniedError):
        return CliError(
            "Permission denied", "You don't have permission to access this resource.\n" + detail
        )
    if isinstance(exc, e.BadRequestError):
        return CliError("Invalid request", detail)
    if isinstance(exc, e.UnprocessableEntityError):
        return CliError("Invalid data provided", detail)
    if isinstance(exc, e.RateLimitError):
        return CliError("Rate limit exceeded", "Please wait a moment and retry.\n" + detail)
    if isinstance(exc, e.InternalServerError):
        return CliError("Internal server error", "The server failed; try again later.\n" + detail)
    if isinstance(exc, e.APITimeoutError):
        return CliError("Request timeout", "The request timed out; please retry.\n" + detail)
    if isinstance(exc, e.APIConnectionError):
        return CliError(
            "Connection failed",
            f"Could not reach the Tinker server at {os.environ.get('TINKER_BASE_URL', '?')}. "
            "Is it running? `tinker-actors serve` starts a local one.\n" + detail,
        )
    if isinstance(exc, e.APIStatusError):
        status = getattr(exc, "status_code", "unknown")
        if status == 501:
            return CliError("Not supported by this server", detail)
        return CliError(f"API error (status {status})", detail)
    if isinstance(exc, e.InvalidTinkerPathError):
        return CliError(f"Invalid checkpoint path: {msg}", PATH_HINT)
    if isinstance(exc, e.TinkerError):
        text = str(exc)
        if "credential" in text.lower():
            return CliError(f"Configuration error: {text}", _key_hint(exc))
        return CliError(f"API error occurred: {text}")
    return None


def handle_errors(func: F) -> F:
    """Turns library exceptions into CliErrors with a next step (tracebacks only on a tty)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (CliError, click.ClickException, click.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:
            mapped = _mapped(exc)
            if mapped is not None:
                raise mapped from exc
            details = None
            if sys.stderr.isatty():
                import traceback

                details = traceback.format_exc()
            raise CliError(f"Unexpected error occurred: {exc}", details) from exc

    return wrapper  # type: ignore[return-value]
