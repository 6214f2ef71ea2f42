"""The official ``tinker.auth.raise_if_tinker_not_accessible``.

It probes the service with a ServiceClient, so it lives with the clients (layer 5), not in
``tinker_actors.auth`` (credentials, layer 1), which cannot import them. ``_layout`` serves
this very function at its official path, ``tinker_actors.auth`` (see ``_layout.ADDED``).
"""

from __future__ import annotations

from ..errors import TinkerError
from .service import ServiceClient

__all__ = ["raise_if_tinker_not_accessible"]


def raise_if_tinker_not_accessible() -> None:
    """Raises a TinkerError subclass unless one capabilities request with the credential works."""
    try:
        with ServiceClient() as sc:
            sc.get_server_capabilities()
    except TinkerError:
        raise
    except Exception as exc:
        raise TinkerError(str(exc)) from exc
