"""Futures of clients that can also be used, deprecated, as the client itself (0.38's shape).

``create_lora_training_client(...)`` and friends return a future of the client. Older SDKs
returned the client, so 0.38's future *is also* a client: ``isinstance(fut, TrainingClient)``
holds, and every public member of the client forwards to the finished client with a
``FutureWarning``. The two classes are told apart as 0.38 tells them apart: by ``isinstance``
against ``TrainingClient`` / ``SamplingClient`` (and both are ``APIFuture``s).

The forwarders are generated from the client class, so a method added to the client is
forwarded without a hand-written twin here.
"""

from __future__ import annotations

import concurrent.futures
import functools
import inspect
import warnings
from typing import Any, TypeVar

from ..futures import APIFuture
from ..runtime import Runtime
from .sampling import SamplingClient
from .training import TrainingClient

C = TypeVar("C")

__all__ = [
    "BackcompatClientFuture",
    "BackcompatSamplingClientFuture",
    "BackcompatTrainingClientFuture",
]


def _deprecated(name: str) -> None:
    warnings.warn(
        f"Using the future returned by a client-creation method as the client is deprecated "
        f"(`.{name}`); call .result() on it, or await it, to get the client first.",
        FutureWarning,
        stacklevel=3,
    )


class BackcompatClientFuture(APIFuture[C]):
    """The future half: ``result``/``result_async``/``future`` over the pending client."""

    # No __slots__: the client half of a subclass is a plain class with a __dict__.

    def __init__(self, cf: concurrent.futures.Future[C], runtime: Runtime | None = None):
        APIFuture.__init__(self, cf, runtime)

    def __repr__(self) -> str:
        cf = self._cf
        if not cf.done():
            state = "pending"
        elif cf.cancelled():
            state = "cancelled"
        elif (exc := cf.exception()) is not None:
            state = f"failed: {exc!r}"
        else:
            state = repr(cf.result())
        return f"<{type(self).__name__}: {state}>"

    def __getattr__(self, name: str) -> Any:
        # Instance attributes of the client that no forwarder covers.
        if name.startswith("_"):
            raise AttributeError(name)
        _deprecated(name)
        return getattr(self.result(), name)


def _forwarders(client_cls: type) -> dict[str, Any]:
    """One deprecated forwarder per public method or property of ``client_cls``."""
    out: dict[str, Any] = {}
    for name, member in inspect.getmembers(client_cls):
        if name.startswith("_") or name in ("result", "result_async", "future"):
            continue
        raw = inspect.getattr_static(client_cls, name)
        if isinstance(raw, property):

            def prop(self: Any, _n: str = name) -> Any:
                _deprecated(_n)
                return getattr(self.result(), _n)

            out[name] = property(prop, doc=raw.__doc__)
        elif inspect.iscoroutinefunction(member):

            def make_async(n: str, fn: Any) -> Any:
                @functools.wraps(fn)
                async def fwd(self: Any, *args: Any, **kwargs: Any) -> Any:
                    _deprecated(n)
                    client = await self.result_async()
                    return await getattr(client, n)(*args, **kwargs)

                return fwd

            out[name] = make_async(name, member)
        elif inspect.isfunction(member):

            def make_sync(n: str, fn: Any) -> Any:
                @functools.wraps(fn)
                def fwd(self: Any, *args: Any, **kwargs: Any) -> Any:
                    _deprecated(n)
                    return getattr(self.result(), n)(*args, **kwargs)

                return fwd

            out[name] = make_sync(name, member)
    return out


class BackcompatTrainingClientFuture(BackcompatClientFuture[TrainingClient], TrainingClient):
    """A future of a TrainingClient that also works, deprecated, as the client."""


class BackcompatSamplingClientFuture(BackcompatClientFuture[SamplingClient], SamplingClient):
    """A future of a SamplingClient that also works, deprecated, as the client."""

    def __reduce__(self) -> Any:
        # Pickling the future pickles the client it resolves to, as in 0.38.
        return self.result().__reduce__()


for _cls, _client in (
    (BackcompatTrainingClientFuture, TrainingClient),
    (BackcompatSamplingClientFuture, SamplingClient),
):
    for _name, _fwd in _forwarders(_client).items():
        setattr(_cls, _name, _fwd)
del _cls, _client, _name, _fwd
