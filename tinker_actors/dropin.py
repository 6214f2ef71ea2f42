"""The switch for unedited third-party code: serve ``import tinker`` from tinker_actors.

Libraries written for the official SDK (tinker-cookbook, ...) ``import tinker`` and
``from tinker.types.tensor_data import TensorData`` themselves. After :func:`install`,
every ``tinker`` and ``tinker.<path>`` import returns the module ``tinker_actors.<path>``
(the same object, so classes are identical), and nothing is ever loaded from an installed
official package, whether or not one is installed. A path that tinker_actors does not
provide raises ``ModuleNotFoundError`` naming it.

If the official package was imported before :func:`install`, its classes are already in
use and mixing the two would fail in confusing ways later, so :func:`install` raises
:class:`TinkerAlreadyImportedError`; ``install(replace=True)`` evicts the official modules
from ``sys.modules`` instead (references taken earlier keep the official objects).
:func:`uninstall` undoes it (restoring evicted modules); :func:`installed` is the context
manager form.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
import types
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from .errors import TinkerAlreadyImportedError

__all__ = ["TinkerAlreadyImportedError", "install", "installed", "is_installed", "uninstall"]

OFFICIAL = "tinker"
OURS = "tinker_actors"


def _is_official(name: str) -> bool:
    return name == OFFICIAL or name.startswith(OFFICIAL + ".")


def _ours(name: str) -> str:
    return OURS + name[len(OFFICIAL) :]


class _TinkerFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """First on ``sys.meta_path``: ``tinker.X`` is the already-imported ``tinker_actors.X``."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not _is_official(fullname):
            return None
        name = _ours(fullname)
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and name.startswith(exc.name):
                raise ModuleNotFoundError(
                    f"No module named {fullname!r}: tinker_actors.install() serves `tinker` "
                    f"imports from tinker_actors, which has no {name!r}",
                    name=fullname,
                ) from None
            raise
        return importlib.util.spec_from_loader(
            fullname, self, is_package=hasattr(module, "__path__")
        )

    def __init__(self) -> None:
        self._specs: dict[str, importlib.machinery.ModuleSpec | None] = {}

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = sys.modules[_ours(spec.name)]
        self._specs[module.__name__] = module.__spec__
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        # The import system set the alias spec on our module: put its own spec back.
        module.__spec__ = self._specs.pop(module.__name__, module.__spec__)


_FINDER = _TinkerFinder()
_lock = threading.Lock()
_evicted: dict[str, types.ModuleType] = {}


def is_installed() -> bool:
    return _FINDER in sys.meta_path


def install(*, replace: bool = False) -> None:
    """Serve every ``tinker`` / ``tinker.*`` import from tinker_actors (idempotent).

    Call it before the code that imports ``tinker``. With ``replace=True`` an official
    ``tinker`` already in ``sys.modules`` is evicted instead of raising.
    """
    with _lock:
        if is_installed():
            return
        loaded = {n: m for n, m in sys.modules.items() if _is_official(n)}
        foreign = {n: m for n, m in loaded.items() if not _served_by_us(m)}
        if foreign:
            if not replace:
                where = getattr(foreign.get(OFFICIAL), "__file__", None) or "?"
                raise TinkerAlreadyImportedError(
                    f"`tinker` was already imported from the official package ({where}); "
                    "call tinker_actors.install() before anything imports tinker, run the "
                    "program with `tinker-actors exec -- ...`, or pass replace=True to evict it"
                )
            for n in foreign:
                _evicted[n] = sys.modules.pop(n)
        sys.meta_path.insert(0, _FINDER)


def uninstall() -> None:
    """Stop serving ``tinker`` from tinker_actors and restore evicted official modules."""
    with _lock:
        while _FINDER in sys.meta_path:
            sys.meta_path.remove(_FINDER)
        for n in [n for n, m in sys.modules.items() if _is_official(n) and _served_by_us(m)]:
            del sys.modules[n]
        sys.modules.update(_evicted)
        _evicted.clear()


@contextmanager
def installed(*, replace: bool = False) -> Iterator[None]:
    """``with tinker_actors.installed(): import tinker`` (uninstalled on exit)."""
    was = is_installed()
    install(replace=replace)
    try:
        yield
    finally:
        if not was:
            uninstall()


def _served_by_us(module: object) -> bool:
    name = getattr(module, "__name__", "")
    return isinstance(name, str) and (name == OURS or name.startswith(OURS + "."))
