"""``python -m benchmarks --instructions``: the arithmetic and the report around callgrind's
counts (valgrind itself is not needed here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import __main__ as bench
from benchmarks.instructions import (
    collected,
    per_sample,
    render,
    samples_for,
    section,
    too_many_exchanges,
)


def test_collected_reads_the_totals_line(tmp_path: Path) -> None:
    out = tmp_path / "callgrind.out"
    out.write_bytes(b"version: 1\ncreator: callgrind\nevents: Ir\nsummary: 123\nfn=x\n1 5\n")
    assert collected(out) == 123
    bad = tmp_path / "other.out"
    bad.write_bytes(b"events: Ir\nfn=x\n")
    with pytest.raises(ValueError, match="no totals line"):
        collected(bad)


def test_one_sample_is_the_difference_of_the_two_runs() -> None:
    # start-up and imports (the same in both runs) cancel out
    startup, each = 3_000_000_000, 1_200_000
    assert per_sample(startup + 1000 * each, startup + 2000 * each, 1000) == each
    with pytest.raises(ValueError, match="no more"):
        per_sample(5, 5, 1000)


def test_each_scenario_runs_a_full_wave_of_its_concurrency() -> None:
    by_key = {s.key: s for s in bench.specs(False) if s.scenario == "sample"}
    assert samples_for(by_key["sample_c64"]) == 1000
    assert samples_for(by_key["sample_c5000"]) == 5000


def test_report_gives_ratios_to_the_first_client() -> None:
    md = render(
        {"sample_c1000": {"floor": 1_000_000.0, "tinker_actors": 1_250_000.0}},
        ("floor", "tinker_actors"),
    )
    lines = md.splitlines()
    assert lines[0].count("|") == lines[1].count("|") == lines[2].count("|")
    assert "| sample_c1000 | 1,000 | 1,250 | 1.25x |" in md


def test_the_page_shows_the_last_run_with_its_commit() -> None:
    saved = {
        "meta": {
            "date": "2026-12-01 12:00 UTC",
            "commit": "abc1234",
            "command": "python -m benchmarks --instructions",
            "clients": ["floor", "tinker_actors"],
            "samples": {"sample_c64": 1000},
        },
        "scenarios": {"sample_c64": {"floor": 1_000_000.0, "tinker_actors": 1_100_000.0}},
    }
    text = "\n".join(section(saved))
    assert text.startswith("## Instructions per sample (callgrind)")
    assert "commit abc1234" in text
    assert "| sample_c64 | 1,000 | 1,100 | 1.10x |" in text


def test_a_starved_servers_extra_polls_are_flagged_but_heartbeats_are_not() -> None:
    assert not too_many_exchanges(2002, 4004, 1000)  # two heartbeats in the longer run
    assert too_many_exchanges(2000, 4400, 1000)  # 2.4 requests per sample: try_again polls
