"""``--help`` latency: the official ``tinker`` CLI vs ``tinker-actors`` (a fresh process each).

Run: ``.venv/bin/python benchmarks/bench_cli.py [--repeat N]``. Each row starts the command
``N`` times and reports the best and median wall time of the whole process. Rows:

* ``tinker --help`` and ``tinker-actors --help``: the installed console scripts;
* ``tinker-actors checkpoint --help``: a group, so its module (and the manifest) loads;
* ``cli alone``: ``tinker-actors --help`` with the ``tinker_actors`` package ``__init__``
  skipped (a bare package object stands in for it), i.e. what the CLI itself costs. The
  difference to the second row is what ``import tinker_actors`` costs before the CLI runs;
* ``python -c pass``: the interpreter's own start-up, the floor.

A script, not a test: timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

CLI_ALONE = (
    "import sys, types; p = types.ModuleType('tinker_actors'); "
    f"p.__path__ = [{str(ROOT / 'tinker_actors')!r}]; sys.modules['tinker_actors'] = p; "
    "from tinker_actors.cli import main; sys.argv = ['tinker-actors', '--help']; main()"
)


def _script(name: str) -> str:
    found = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} is not installed in {BIN}")
    return found


def _time(cmd: list[str], repeat: int) -> list[float]:
    env = {**os.environ, "TINKER_TELEMETRY": "0"}
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, env=env, check=False)
        out.append(time.perf_counter() - t0)
        if r.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.decode()[-500:]}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    rows = [
        ("tinker --help", [_script("tinker"), "--help"]),
        ("tinker-actors --help", [_script("tinker-actors"), "--help"]),
        ("tinker-actors checkpoint --help", [_script("tinker-actors"), "checkpoint", "--help"]),
        ("cli alone (package __init__ skipped)", [sys.executable, "-c", CLI_ALONE]),
        ("python -c pass", [sys.executable, "-c", "pass"]),
    ]
    print(f"{'command':<40} {'best s':>8} {'median s':>9}  ({args.repeat} runs)")
    for label, cmd in rows:
        _time(cmd, 1)  # warm the file cache
        ts = _time(cmd, args.repeat)
        print(f"{label:<40} {min(ts):8.3f} {statistics.median(ts):9.3f}")


if __name__ == "__main__":
    main()
