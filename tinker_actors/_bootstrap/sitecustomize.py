"""Started by ``tinker-actors exec``: serve ``tinker`` imports from tinker_actors.

``tinker_actors.launcher`` puts this file's directory first on ``PYTHONPATH`` and sets
``TINKER_ACTORS_INSTALL=1``, so every Python process of the launched program (and the
processes it starts: multiprocessing workers, subprocesses) calls
``tinker_actors.install()`` at start-up. A ``sitecustomize`` this file shadows still runs.
If tinker_actors cannot be imported, the process stops at once with a clear message
rather than silently running the official SDK.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys


def _chain() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules[__name__] = module
    spec.loader.exec_module(module)


def _activate() -> None:
    if os.environ.get("TINKER_ACTORS_INSTALL") != "1":
        return
    try:
        import tinker_actors

        tinker_actors.install()
    except BaseException as exc:
        sys.stderr.write(
            f"tinker-actors exec: cannot serve `tinker` from tinker_actors in "
            f"{sys.executable}: {exc!r}\n"
        )
        sys.stderr.flush()
        os._exit(2)


_chain()
_activate()
