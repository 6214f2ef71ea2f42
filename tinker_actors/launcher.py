"""``tinker-actors exec -- CMD ARGS...``: run unedited ``tinker`` code on tinker_actors.

The command is executed (``os.execvpe``, a plain child process on Windows) with
``TINKER_ACTORS_INSTALL=1`` and the ``_bootstrap`` directory first on ``PYTHONPATH``; its
``sitecustomize`` calls :func:`tinker_actors.install` in every Python process the command
starts, child processes included. So all of these work::

    tinker-actors exec -- python -m some.module args...
    tinker-actors exec -- python script.py args...
    tinker-actors exec -- some-console-script args...

``python`` / ``python3`` / ``python3.X`` (this interpreter's version) mean the interpreter
running the launcher, so the program sees the environment tinker_actors is installed in.
Another interpreter must have tinker_actors installed; if it has not, the program stops at
start-up with a message instead of running the official SDK. ``python -I`` / ``-E`` ignore
``PYTHONPATH`` and so bypass the switch. Also runnable as
``python -m tinker_actors.launcher -- CMD ARGS...``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["BOOTSTRAP_DIR", "ENV_FLAG", "command_and_env", "main"]

BOOTSTRAP_DIR = str(Path(__file__).resolve().parent / "_bootstrap")
ENV_FLAG = "TINKER_ACTORS_INSTALL"

USAGE = "usage: tinker-actors exec [--] COMMAND [ARGS...]"


def _this_python(name: str) -> bool:
    major, minor = sys.version_info[:2]
    return name in ("python", "python3", f"python{major}", f"python{major}.{minor}")


def command_and_env(
    argv: Sequence[str], environ: dict[str, str] | None = None
) -> tuple[list[str], dict[str, str]]:
    """The command line to run and its environment (no side effects)."""
    args = list(argv)
    if args and args[0] == "--":
        args = args[1:]
    if not args:
        raise ValueError(USAGE)
    if _this_python(args[0]):
        args[0] = sys.executable
    env = dict(os.environ if environ is None else environ)
    env[ENV_FLAG] = "1"
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([BOOTSTRAP_DIR, *(p for p in paths if p != BOOTSTRAP_DIR)])
    return args, env


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command with ``tinker`` served from tinker_actors; returns its exit status."""
    try:
        args, env = command_and_env(sys.argv[1:] if argv is None else argv)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    exe = args[0] if os.sep in args[0] else shutil.which(args[0], path=env.get("PATH"))
    if exe is None or not os.path.exists(exe):
        print(f"tinker-actors exec: command not found: {args[0]}", file=sys.stderr)
        return 127
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "nt":  # no real exec on Windows
        return subprocess.call([exe, *args[1:]], env=env)
    os.execve(exe, args, env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
