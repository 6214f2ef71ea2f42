"""Issue-8 acceptance: tinker-cookbook 0.6.1's own training loops, unedited, on tinker_actors.

Each loop runs twice against a fresh real local server (torch engine, ``tinker-actors/byte-1m``,
the cookbook's ``role_colon`` renderer): once with the official ``tinker`` SDK and once with
``tinker_actors.install()`` serving every ``tinker`` import. Each run is its own subprocess
(``cookbook/run_loop.py``), so the two SDKs share no module state. The loops:

- ``supervised/train.py``: pipelined, the held-out NLL evaluator, periodic and final
  checkpoints, on a small local JSONL of chats;
- ``rl/train.py``: a tiny reward task on the cookbook's ``Env`` types (``cookbook/envs.py``),
  periodic and final checkpoints.

Every metric the cookbook logs per step (losses, NLLs, gradient norms, rewards, KL, entropy,
token counts; not timings) must be equal across the two runs. The RL loop samples with no
seed, so the server runs with ``deterministic_sampling`` (seeds derived from the request) and
one sample job per engine call (so logprobs do not depend on what was batched together).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("tinker")
pytest.importorskip("tinker_cookbook")
pytest.importorskip("torch")

pytestmark = [
    pytest.mark.e2e,
]

RUNNER = Path(__file__).parent / "cookbook" / "run_loop.py"
API_KEY = "tml-test-key-0000"
RUN_TIMEOUT_S = 240
DEADLINE_S = RUN_TIMEOUT_S - 30  # the runner dumps its threads' stacks and exits
_RUNS: dict[tuple[str, str], dict[str, Any]] = {}


def _run(loop: str, sdk: str, tmp_root: Path) -> dict[str, Any]:
    """One loop with one SDK against its own fresh server; cached for the module."""
    key = (loop, sdk)
    if key in _RUNS:
        return _RUNS[key]
    from tinker_actors.server import LocalServer

    work = tmp_root / f"{loop}-{sdk}"
    server = LocalServer(
        port=0,
        data_dir=work / "server",
        engine="torch",
        api_key=API_KEY,
        deterministic_sampling=True,
        sample_batch_size=1,
    ).start_in_thread()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TINKER_")}
    env.update(TINKER_API_KEY=API_KEY, TINKER_TELEMETRY="0", NO_COLOR="1")
    try:
        proc = subprocess.run(
            [sys.executable, str(RUNNER), sdk, loop, server.base_url, str(work), str(DEADLINE_S)],
            capture_output=True,
            text=True,
            errors="replace",
            env=env,
            timeout=RUN_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"") + (exc.stderr or b"")
        tail = out.decode(errors="replace") if isinstance(out, bytes) else out
        pytest.fail(f"cookbook {loop} loop with {sdk} hung ({RUN_TIMEOUT_S} s):\n{tail[-6000:]}")
    finally:
        server.stop_in_thread()
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        out = proc.stdout + proc.stderr
        start = out.find("Traceback (most recent call last)")
        shown = out[start:] if start >= 0 else out
        pytest.fail(f"cookbook {loop} loop with {sdk} exited {proc.returncode}:\n{shown[-8000:]}")
    _RUNS[key] = json.loads(lines[-1][len("RESULT ") :])
    return _RUNS[key]


@pytest.fixture(scope="module")
def tmp_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cookbook")


def _served_by(result: dict[str, Any]) -> str:
    """The package whose ServiceClient the run used."""
    parts = Path(result["served_by"]).parts
    return next((p for p in ("tinker_actors", "tinker") if p in parts), result["served_by"])


def _steps(result: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """Per step: every logged metric but the timings (rows of one step are merged)."""
    out: dict[int, dict[str, Any]] = {}
    for row in result["metrics"]:
        clean = {k: v for k, v in row.items() if k != "step" and not k.startswith("time/")}
        out.setdefault(row["step"], {}).update(clean)
    return out


def _checkpoints(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Checkpoint records without the paths (they name a per-run session id)."""
    rows = []
    for row in result["checkpoints"]:
        assert row["state_path"].startswith("tinker://"), row
        rows.append({k: v for k, v in row.items() if not k.endswith("_path")})
    return rows


def _check_official_sl(result: dict[str, Any]) -> None:
    assert _served_by(result) == "tinker", result["served_by"]
    steps = _steps(result)
    assert sorted(steps) == [0, 1, 2, 3]
    nll = [steps[s]["train_mean_nll"] for s in range(4)]
    assert all(math.isfinite(x) for x in nll) and nll[-1] < nll[0], nll
    assert {s for s in steps if "test/nll" in steps[s]} == {0, 2}  # eval_every=2
    assert [c["name"] for c in result["checkpoints"]] == ["000002", "final"]


def _check_official_rl(result: dict[str, Any]) -> None:
    assert _served_by(result) == "tinker", result["served_by"]
    steps = _steps(result)
    for s in range(3):
        m = steps[s]
        assert math.isfinite(m["grad_norm:mean"]) and m["grad_norm:mean"] > 0, m
        assert math.isfinite(m["optim/entropy"]), m
        assert m["env/all/total_episodes"] == 8
        # rewards differ within the groups, so the advantages (and the loss) are not zero
        assert m["env/all/by_group/frac_mixed"] > 0, m
    assert [c["name"] for c in result["checkpoints"]] == ["000002", "final"]


CHECKS = {"sl": _check_official_sl, "rl": _check_official_rl}


@pytest.mark.parametrize("loop", ["sl", "rl"])
def test_official_sdk_runs_the_cookbook_loop(loop: str, tmp_root: Path) -> None:
    CHECKS[loop](_run(loop, "tinker", tmp_root))


@pytest.mark.parametrize("loop", ["sl", "rl"])
def test_tinker_actors_runs_the_cookbook_loop_with_equal_metrics(loop: str, tmp_root: Path) -> None:
    official = _run(loop, "tinker", tmp_root)
    ours = _run(loop, "tinker_actors", tmp_root)
    assert _served_by(ours) == "tinker_actors", ours["served_by"]
    assert ours["official_modules"] == [], "the official package was loaded"
    assert official["official_modules"], "the official run did not load the official package"
    want, got = _steps(official), _steps(ours)
    assert sorted(got) == sorted(want)
    diffs = [
        (step, key, want[step].get(key), got[step].get(key))
        for step in sorted(want)
        for key in sorted(set(want[step]) | set(got[step]))
        if want[step].get(key) != got[step].get(key)
    ]
    assert not diffs, "metrics differ (step, metric, official, tinker_actors):\n" + "\n".join(
        map(str, diffs)
    )
    assert _checkpoints(ours) == _checkpoints(official)
