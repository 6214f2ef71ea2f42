"""Every command shared with the official ``tinker`` CLI, run by both against one real local
server and the same data: JSON outputs equal field for field (times compared as instants,
since the official CLI prints ``str(datetime)`` and ours ISO 8601), tables with the same
columns, the same exit codes, and errors on stderr."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from .conftest import Seeded, run_official, run_ours, table_columns

pytestmark = pytest.mark.e2e


def _times(value: Any) -> Any:
    """Strings that are timestamps become aware datetimes (so both CLIs' formats compare)."""
    if isinstance(value, dict):
        return {k: _times(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_times(v) for v in value]
    if isinstance(value, str) and len(value) >= 19 and value[4] == "-" and value[10] in " T":
        try:
            return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    return value


def both(args: list[str], s: Seeded) -> tuple[Any, Any]:
    return run_official(args, s.env), run_ours(args, s.env)


def same_json(args: list[str], s: Seeded) -> Any:
    off, ours = both(["-f", "json", *args], s)
    assert off.code == ours.code == 0, (off, ours)
    a, b = json.loads(off.stdout), json.loads(ours.stdout)
    assert _times(a) == _times(b)
    return b


def same_columns(args: list[str], s: Seeded) -> list[str]:
    off, ours = both(args, s)
    assert off.code == ours.code == 0, (off, ours)
    cols = table_columns(off.stdout)
    assert cols, off.stdout
    assert table_columns(ours.stdout) == cols
    return cols


def same_failure(args: list[str], s: Seeded, first_line: str) -> None:
    off, ours = both(args, s)
    assert off.code == ours.code == 1, (off, ours)
    assert off.stdout == ours.stdout == ""
    assert "Error: " in off.stderr and "Error: " in ours.stderr
    assert first_line in ours.stderr and first_line in off.stderr, (off.stderr, ours.stderr)


# ------------------------------------------------------------------------------ reads
READS = [
    ["run", "list"],
    ["run", "list", "--limit", "1"],
    ["run", "list", "--limit", "0", "-c", "id,owner,checkpoint,checkpoint_time"],
    ["checkpoint", "list"],
    ["checkpoint", "list", "--limit", "3"],
    ["checkpoint", "list", "--limit", "0"],
    ["model", "list"],
    ["model", "list", "BYTE-1"],
    ["billing", "checkpoint-storage"],
    ["billing", "usage", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"],
]


@pytest.mark.parametrize("args", READS, ids=" ".join)
def test_reads_match_the_official_cli(seeded: Seeded, args: list[str]) -> None:
    same_json(args, seeded)
    if args[:2] != ["billing", "usage"]:  # no rows: the official CLI prints only a title
        same_columns(args, seeded)


def test_run_and_checkpoint_info_match(seeded: Seeded) -> None:
    run = seeded.runs[0]
    data = same_json(["run", "info", run], seeded)
    assert data["training_run_id"] == run and data["last_checkpoint"] is not None
    assert same_columns(["run", "info", run], seeded) == ["Property", "Value"]
    for path in (seeded.state_paths[0], seeded.sampler_paths[0]):
        data = same_json(["checkpoint", "info", path], seeded)
        assert data["tinker_path"] == path and data["is_lora"] is True
    same_json(["checkpoint", "list", "--run-id", seeded.runs[1]], seeded)
    same_columns(["checkpoint", "list", "--run-id", seeded.runs[1]], seeded)


def test_limits_are_respected(seeded: Seeded) -> None:
    assert len(run_ours(["-f", "json", "run", "list", "--limit", "1"], seeded.env).stdout) > 0
    one = json.loads(run_ours(["-f", "json", "run", "list", "--limit", "1"], seeded.env).stdout)
    assert len(one["runs"]) == 1
    three = json.loads(
        run_ours(["-f", "json", "checkpoint", "list", "--limit", "3"], seeded.env).stdout
    )
    assert len(three["checkpoints"]) == 3


def test_version_and_auth(seeded: Seeded) -> None:
    off, ours = both(["version"], seeded)
    assert off.code == ours.code == 0
    assert off.stdout.startswith("tinker ") and ours.stdout.startswith("tinker-actors ")
    off, ours = both(["auth", "status"], seeded)
    assert off.code == ours.code == 0 and off.stdout == ours.stdout
    # whoami needs a JWT; the local server's plain key has none: both fail, on stderr
    off, ours = both(["auth", "whoami"], seeded)
    assert off.code == ours.code == 1 and "JWT" in off.stderr and "JWT" in ours.stderr


# ------------------------------------------------------------------------------ errors
def test_errors_match(seeded: Seeded) -> None:
    same_failure(["run", "info", "no-such-run"], seeded, "Error: Resource not found")
    same_failure(["checkpoint", "info", "not-a-path"], seeded, "Error: Invalid checkpoint path")
    missing = seeded.state_paths[0].rsplit("/", 1)[0] + "/missing"
    same_failure(["checkpoint", "info", missing], seeded, f"Checkpoint not found: {missing}")
    # the official CLI then asks whoami for the organization, which needs a JWT; ours names
    # the substring with or without one
    same_failure(["model", "list", "zzz-no-model"], seeded, "Error: ")
    r = run_ours(["model", "list", "zzz-no-model"], seeded.env)
    assert "No model name contains 'zzz-no-model'" in r.stderr
    same_failure(["checkpoint", "set-ttl", seeded.state_paths[0]], seeded, "--ttl <seconds>")
    session = seeded.runs[0].split(":")[0]
    same_failure(["session", "export-trace", session], seeded, "trace export")
    # an unknown column: the official CLI's catch-all turns click's usage error into exit 1;
    # ours keeps click's usage status, 2 (docs/cli.md lists this difference)
    off, ours = both(["run", "list", "-c", "nope"], seeded)
    assert (off.code, ours.code) == (1, 2)
    assert "Unknown column(s): nope" in off.stderr and "Unknown column(s): nope" in ours.stderr


def test_missing_server_and_key_name_the_fix(seeded: Seeded) -> None:
    r = run_ours(["run", "list"], {**seeded.env, "TINKER_BASE_URL": ""})
    assert r.code == 1 and "TINKER_BASE_URL" in r.stderr and "tinker-actors serve" in r.stderr
    r = run_ours(
        ["run", "list"],
        {**seeded.env, "TINKER_API_KEY": "", "HOME": "/nonexistent", "TINKER_CREDENTIAL_CMD": ""},
    )
    assert r.code == 1 and "TINKER_API_KEY" in r.stderr, r.stderr
    r = run_ours(["run", "list"], {**seeded.env, "TINKER_API_KEY": "tml-wrong-key-000"})
    assert r.code == 1 and "Authentication failed" in r.stderr
    r = run_ours(["run", "list"], {**seeded.env, "TINKER_BASE_URL": "http://127.0.0.1:9"})
    assert r.code == 1 and "Connection failed" in r.stderr and "tinker-actors serve" in r.stderr


# ------------------------------------------------------------------------------ writes
def test_publish_unpublish_ttl_and_delete_match(seeded: Seeded) -> None:
    a, b = seeded.state_paths[2], seeded.state_paths[3]  # run 1's states: one per CLI
    for path, runner in ((a, run_official), (b, run_ours)):
        for args in (
            ["checkpoint", "publish", path],
            ["checkpoint", "set-ttl", path, "--ttl", "7200"],
        ):
            r = runner(args, seeded.env)
            assert r.code == 0 and r.stdout == "", r
    info_a = json.loads(run_ours(["-f", "json", "checkpoint", "info", a], seeded.env).stdout)
    info_b = json.loads(run_ours(["-f", "json", "checkpoint", "info", b], seeded.env).stdout)
    for info in (info_a, info_b):
        assert info["public"] is True and info["expires_at"] is not None
    # publishing twice is a conflict (the official SDK retries a 409 without end, so only
    # ours is run here)
    r = run_ours(["checkpoint", "publish", a], seeded.env)
    assert (
        r.code == 1 and "Error: API error (status 409)" in r.stderr and "already public" in r.stderr
    )
    for path, runner in ((a, run_official), (b, run_ours)):
        for args in (
            ["checkpoint", "unpublish", path],
            ["checkpoint", "set-ttl", path, "--remove"],
        ):
            assert runner(args, seeded.env).code == 0
    for path in (a, b):
        info = json.loads(run_ours(["-f", "json", "checkpoint", "info", path], seeded.env).stdout)
        assert info["public"] is False and info["expires_at"] is None
    # delete: the same JSON summary from both
    off = run_official(["-f", "json", "checkpoint", "delete", "-y", a], seeded.env)
    ours = run_ours(["-f", "json", "checkpoint", "delete", "-y", b], seeded.env)
    assert off.code == ours.code == 0
    assert json.loads(off.stdout) == json.loads(ours.stdout) == {"deleted_count": 1, "failed": []}
    listed = json.loads(
        run_ours(
            ["-f", "json", "checkpoint", "list", "--run-id", seeded.runs[1]], seeded.env
        ).stdout
    )
    assert {a, b}.isdisjoint(c["tinker_path"] for c in listed["checkpoints"])
    seeded.state_paths.remove(a)
    seeded.state_paths.remove(b)


def test_download_of_a_training_checkpoint_matches(seeded: Seeded, tmp_path: Any) -> None:
    path = seeded.state_paths[0]
    off = run_official(
        ["-f", "json", "checkpoint", "download", path, "-o", str(tmp_path)], seeded.env
    )
    assert off.code == 0, off
    target = tmp_path / path.removeprefix("tinker://").replace("/", "_")
    official_files = sorted(p.name for p in target.iterdir())
    again = run_ours(
        ["-f", "json", "checkpoint", "download", path, "-o", str(tmp_path)], seeded.env
    )
    assert again.code == 1 and "already exists" in again.stderr and "--force" in again.stderr
    ours = run_ours(
        ["-f", "json", "checkpoint", "download", path, "-o", str(tmp_path), "--force"], seeded.env
    )
    assert ours.code == 0, ours
    assert json.loads(off.stdout) == json.loads(ours.stdout)
    assert sorted(p.name for p in target.iterdir()) == official_files
    assert "adapter_config.json" in official_files
    # the temporary export was deleted by both: no external weights remain
    listed = run_ours(["-f", "json", "checkpoint", "list", "--limit", "0"], seeded.env)
    assert "external_weights" not in listed.stdout
