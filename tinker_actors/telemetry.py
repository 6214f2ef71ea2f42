"""Logging access for library code: structlog ``get_logger`` only, never configuration."""

from __future__ import annotations

from typing import Any

import structlog

__all__ = ["get_logger"]


def get_logger(name: str | None = None, **initial: Any) -> Any:
    """A structlog logger bound to ``logger=name``; the app decides where lines go."""
    return structlog.get_logger(name, **initial) if name else structlog.get_logger(**initial)
