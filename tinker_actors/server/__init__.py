"""The embedded Tinker-compatible local server (see docs/server.md).

``LocalServer`` runs it in-process; ``tinker-actors serve`` runs it from the command line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tinker_actors.server.config import ServerConfig
    from tinker_actors.server.local import LocalServer

__all__ = ["LocalServer", "ServerConfig"]


def __getattr__(name: str) -> Any:
    # Lazy, so importing the engine seam does not pull in aiohttp and the store.
    if name == "LocalServer":
        from tinker_actors.server.local import LocalServer

        return LocalServer
    if name == "ServerConfig":
        from tinker_actors.server.config import ServerConfig

        return ServerConfig
    raise AttributeError(name)
