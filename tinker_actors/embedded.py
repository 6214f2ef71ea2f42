"""The embedded local server, as the client side sees it: a factory it is given.

With no base URL anywhere (no ``base_url=`` and no ``TINKER_BASE_URL``) a session talks to a
local server started in this process, once, on first use (``Session.ensure_transport``).
Starting one is the server's business (``tinker_actors.server``, layer 6), which nothing below
it may import; so the server is *injected*: the package root, the composition root that sees
every layer, calls :func:`provide` at import (before any submodule can run), and this module
only keeps the factory and the one server it made. No import, no I/O here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

__all__ = ["EmbeddedServer", "embedded_endpoint", "provide"]


class EmbeddedServer(Protocol):
    """What the factory returns: a running server (kept alive here for the process)."""

    @property
    def base_url(self) -> str: ...

    @property
    def api_key(self) -> str: ...


_lock = threading.Lock()
_factory: Callable[[], EmbeddedServer] | None = None
_server: EmbeddedServer | None = None


def provide(factory: Callable[[], EmbeddedServer] | None) -> None:
    """Sets the factory that starts the embedded server (None: there is none).

    A server already started stays the process's server.
    """
    global _factory
    with _lock:
        _factory = factory


def embedded_endpoint() -> tuple[str, str]:
    """Base URL and API key of this process's embedded local server, starting it once.

    Used only when no base URL was given and ``TINKER_BASE_URL`` is unset. Blocking: call it
    off the event loop (``asyncio.to_thread``).
    """
    global _server
    with _lock:
        if _server is None:
            if _factory is None:
                from .errors import TinkerError

                raise TinkerError(
                    "no Tinker server configured: set TINKER_BASE_URL (or pass base_url=); "
                    "no embedded local server is available in this process"
                )
            from .telemetry import get_logger

            server = _factory()
            _server = server
            # A warning, so it shows with no logging configured: a user who forgot
            # TINKER_BASE_URL must not think they are training on the Tinker service.
            get_logger(__name__).warning(
                "no TINKER_BASE_URL set: started the embedded local Tinker server "
                "(set TINKER_BASE_URL to use a Tinker service)",
                base_url=server.base_url,
            )
        return _server.base_url, _server.api_key
