"""The ``_async`` twins of the clients' methods, made by one mechanism instead of by hand.

0.38 gives nearly every client method an ``_async`` twin of one of two shapes:

* :func:`async_twin`: the twin returns what the method returns (TrainingClient's
  ``forward_backward_async`` gives the same ``APIFuture``; awaiting the twin only hands it
  over);
* :func:`awaited_twin`: the twin awaits the method's future and returns its result
  (RestClient, AdminClient, the client-creation methods, the deprecated sampling twins).

A twin has the method's signature (``help()`` and ``inspect.signature`` follow
``__wrapped__``; type checkers see it through ``ParamSpec``), calls the method by name (so a
subclass override is used), and can run an ``await``-able step first (the ServiceClient
starts its session without blocking the caller's loop). 0.38 deprecates every ``_async``
twin of the clients with a ``FutureWarning`` naming the replacement; so do ours, unless
``deprecated=False``.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

from ..transport import sdk_method_scope

S = TypeVar("S")
P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

__all__ = ["async_twin", "awaited_twin"]


def _named(twin: Any, sync: Callable[..., Any]) -> None:
    functools.update_wrapper(twin, sync)
    twin.__name__ = f"{sync.__name__}_async"
    twin.__qualname__ = f"{sync.__qualname__}_async"


def _deprecation(owner: Any, name: str, instead: str) -> str:
    cls = type(owner).__name__
    return (
        f"{cls}.{name}_async() is deprecated, as in tinker 0.38, and will go with it: "
        f"use {instead.format(cls=cls, name=name)} instead"
    )


def _warn_deprecated(
    owner: Any, name: str, instead: str, messages: dict[type[Any], str] | None = None
) -> None:
    """0.38's FutureWarning, on every call (the warnings filters and registry decide what is
    shown). ``messages`` caches the text per class: a twin on a hot path (``sample_async``)
    formats it once, not once per call."""
    if messages is None:
        msg = _deprecation(owner, name, instead)
    else:
        msg = messages.get(type(owner)) or messages.setdefault(
            type(owner), _deprecation(owner, name, instead)
        )
    warnings.warn(msg, FutureWarning, stacklevel=3)


def async_twin(
    sync: Callable[Concatenate[S, P], R], *, deprecated: bool = True
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, R]]:
    """``name_async(...)`` returning what ``name(...)`` returns (usually its APIFuture)."""
    name = sync.__name__
    messages: dict[type[Any], str] = {}

    async def twin(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        if deprecated:
            _warn_deprecated(
                self, name, "{cls}.{name}(...), which returns an awaitable future", messages
            )
        method: Callable[P, R] = getattr(self, name)
        return method(*args, **kwargs)

    _named(twin, sync)
    return twin


def awaited_twin(
    sync: Callable[Concatenate[S, P], Awaitable[T]],
    *,
    deprecated: bool = True,
    before: Callable[[Any], Awaitable[None]] | None = None,
    sdk_method: str | None = None,
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, T]]:
    """``name_async(...)`` awaiting ``name(...)``'s future and returning its result.

    ``before(self)`` is awaited first. ``sdk_method`` labels the requests (``x-sdk-method``) with the twin's own
    name, ``"{sdk_method}.{name}_async"``, as 0.38 does for some methods.
    """
    name = sync.__name__
    label = f"{sdk_method}.{name}_async" if sdk_method else None
    messages: dict[type[Any], str] = {}

    async def twin(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        if deprecated:
            _warn_deprecated(self, name, "`await {cls}.{name}(...)`", messages)
        if before is not None:
            await before(self)
        # the bound method is not kept in a local: it would live as long as the await
        fut: Awaitable[T] | T
        if label is None:
            fut = getattr(self, name)(*args, **kwargs)
        else:
            with sdk_method_scope(label):
                fut = getattr(self, name)(*args, **kwargs)
        return await fut if inspect.isawaitable(fut) else fut

    _named(twin, sync)
    return twin
