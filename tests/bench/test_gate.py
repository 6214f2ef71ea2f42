"""The benchmark gate's comparison (``benchmarks/gate.py``) on fabricated result documents,
plus the committed ``benchmarks/results.json`` checked against itself. Nothing is run."""

from __future__ import annotations

import copy
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import gate

ROOT = Path(__file__).resolve().parents[2]
PARAMS = {"concurrency": 64, "total": 1920}


def scenario(
    key: str,
    metrics: dict[str, tuple[str, dict[str, list[float]]]],
    params: dict[str, Any] | None = None,
    with_better: bool = True,
) -> dict[str, Any]:
    """A scenario as ``python -m benchmarks`` writes it: per client the repetitions' runs
    and their medians, and the median ratios (> 1: ours better)."""
    clients: dict[str, Any] = {}
    for _, (_, per_client) in metrics.items():
        for c in per_client:
            clients.setdefault(c, {"runs": [], "median": {}})
    n = max(len(v) for _, pc in metrics.values() for v in pc.values())
    for c, entry in clients.items():
        entry["runs"] = [{"ok": True} for _ in range(n)]
        for m, (_, per_client) in metrics.items():
            vals = per_client.get(c, [])
            for i, v in enumerate(vals):
                entry["runs"][i][m] = v
            if vals:
                entry["median"][m] = statistics.median(vals)
        entry["ok_runs"] = entry["runs_n"] = n
    ratios: dict[str, dict[str, float]] = {}
    for m, (better, _) in metrics.items():
        ours = clients["tinker_actors"]["median"][m]
        for comp, other in (("vs_official", "official"), ("vs_floor", "floor")):
            if other in clients and m in clients[other]["median"]:
                theirs = clients[other]["median"][m]
                ratios.setdefault(m, {})[comp] = ours / theirs if better == "hi" else theirs / ours
    out = {"key": key, "params": params or dict(PARAMS), "clients": clients, "ratios": ratios}
    if with_better:
        out["better"] = {m: b for m, (b, _) in metrics.items()}
    return out


def doc(*scenarios: dict[str, Any]) -> dict[str, Any]:
    return {"meta": {"machine": {"cpu": "X", "cores": 2}}, "scenarios": list(scenarios)}


def cpu(ours: list[float], official: list[float], floor: list[float] | None = None) -> Any:
    clients = {"tinker_actors": ours, "official": official}
    if floor is not None:
        clients["floor"] = floor
    return ("lo", clients)


def findings(report: gate.Report, status: str) -> list[tuple[str, str, str]]:
    return [(f.scenario, f.metric, f.comparison) for f in report.findings if f.status == status]


# ------------------------------------------------------------------------------ the rule
def test_a_run_equal_to_the_baseline_passes() -> None:
    base = doc(scenario("s", {"cpu_s": cpu([1.0, 1.02, 0.98], [8.0, 8.1, 7.9], [0.6] * 3)}))
    report = gate.compare(base, copy.deepcopy(base))
    assert report.exit_code() == 0
    assert findings(report, "ok") == [("s", "cpu_s", "vs_official"), ("s", "cpu_s", "vs_floor")]
    assert "passed, 2 ratio(s) compared" in report.render()


def test_a_drop_beyond_the_tolerance_fails_naming_scenario_metric_and_comparison() -> None:
    base = doc(scenario("sample_c64", {"cpu_s": cpu([1.0, 1.01, 0.99], [8.0] * 3)}))
    # ours costs 30 % more CPU, the official SDK the same: the ratio falls from 8.0 to ~6.15
    cur = doc(scenario("sample_c64", {"cpu_s": cpu([1.3, 1.31, 1.29], [8.0] * 3)}))
    report = gate.compare(base, cur)
    assert report.exit_code() == 1
    assert findings(report, "regression") == [("sample_c64", "cpu_s", "vs_official")]
    text = report.render()
    assert "REGRESSION  sample_c64 cpu_s vs_official: 8x -> 6.15x (-23.1%; tolerance 10.0%" in text
    assert text.splitlines()[-1].startswith("benchmark gate: FAILED, 1 regression(s)")


def test_rates_regress_when_ours_gets_slower() -> None:
    rate = ("hi", {"tinker_actors": [600.0] * 3, "official": [100.0] * 3})
    slower = ("hi", {"tinker_actors": [450.0] * 3, "official": [100.0] * 3})
    report = gate.compare(
        doc(scenario("s", {"req_per_s": rate})), doc(scenario("s", {"req_per_s": slower}))
    )
    assert findings(report, "regression") == [("s", "req_per_s", "vs_official")]


def test_both_sides_slower_by_the_same_factor_is_no_regression() -> None:
    """A busier machine slows both clients: the ratio, which the gate compares, holds."""
    base = doc(scenario("s", {"cpu_s": cpu([1.0] * 3, [8.0] * 3, [0.6] * 3)}))
    cur = doc(scenario("s", {"cpu_s": cpu([1.7] * 3, [13.6] * 3, [1.02] * 3)}))
    assert gate.compare(base, cur).exit_code() == 0


def test_the_floor_of_the_tolerance_applies_to_quiet_metrics() -> None:
    base = doc(scenario("s", {"cpu_s": cpu([1.0] * 3, [8.0] * 3)}))  # no spread at all
    within = doc(scenario("s", {"cpu_s": cpu([1.08] * 3, [8.0] * 3)}))  # ratio -7.4 %
    beyond = doc(scenario("s", {"cpu_s": cpu([1.13] * 3, [8.0] * 3)}))  # ratio -11.5 %
    assert gate.compare(base, within).exit_code() == 0
    assert gate.compare(base, beyond).exit_code() == 1
    assert gate.compare(base, beyond, floor=0.15).exit_code() == 0


def test_a_noisy_metric_gets_twice_its_spread() -> None:
    # per-repetition ratios 8.0, 10.0, 6.0: spread (10 - 6) / 8 = 50 %, tolerance 100 %
    base = doc(scenario("s", {"cpu_s": cpu([1.0, 1.0, 1.0], [8.0, 10.0, 6.0])}))
    cur = doc(scenario("s", {"cpu_s": cpu([2.0] * 3, [8.0] * 3)}))  # ratio halved: -50 %
    report = gate.compare(base, cur)
    assert report.exit_code() == 0
    (f,) = report.findings
    assert f.spreads == (pytest.approx(0.5), 0.0) and f.tol == pytest.approx(1.0)
    assert "cannot fail" in report.render()
    assert gate.compare(base, cur, factor=0.5).exit_code() == 1  # tolerance 25 %


def test_a_noisy_run_widens_the_tolerance() -> None:
    base = doc(scenario("s", {"cpu_s": cpu([1.0] * 3, [8.0] * 3)}))
    # this run's own ratios 4.0 .. 8.0 (median 6.0): spread 67 %, so a -25 % median passes
    cur = doc(scenario("s", {"cpu_s": cpu([1.0, 1.0, 1.0], [6.0, 8.0, 4.0])}))
    report = gate.compare(base, cur)
    assert report.exit_code() == 0 and report.findings[0].tol == pytest.approx(4 / 6 * 2)


def test_single_repetitions_use_the_unmeasured_tolerance() -> None:
    assert gate.tolerance([None, None]) == gate.UNMEASURED == 0.25
    assert gate.tolerance([0.01, None]) == gate.FLOOR
    assert gate.tolerance([0.2, 0.05]) == pytest.approx(0.4)
    base = doc(scenario("idle", {"cpu_s": cpu([1.0], [2.0])}))
    assert gate.compare(base, doc(scenario("idle", {"cpu_s": cpu([1.2], [2.0])}))).exit_code() == 0
    assert gate.compare(base, doc(scenario("idle", {"cpu_s": cpu([1.4], [2.0])}))).exit_code() == 1


def test_improvements_are_reported_and_do_not_fail() -> None:
    base = doc(scenario("s", {"cpu_s": cpu([1.0] * 3, [8.0] * 3)}))
    cur = doc(scenario("s", {"cpu_s": cpu([0.5] * 3, [8.0] * 3)}))
    report = gate.compare(base, cur)
    assert report.exit_code() == 0
    assert findings(report, "improvement") == [("s", "cpu_s", "vs_official")]
    assert "consider committing a new baseline" in report.render()


# ------------------------------------------------------------------------------ selection
def test_only_checks_the_selected_scenarios_by_key_or_prefix() -> None:
    good = {"cpu_s": cpu([1.0] * 3, [8.0] * 3)}
    bad = {"cpu_s": cpu([2.0] * 3, [8.0] * 3)}
    base = doc(
        scenario("sample_c1", good), scenario("sample_c64", good), scenario("train_loop", good)
    )
    cur = doc(
        scenario("sample_c1", good), scenario("sample_c64", good), scenario("train_loop", bad)
    )
    assert gate.compare(base, cur).exit_code() == 1
    only_sample = gate.compare(base, cur, only=["sample"])
    assert only_sample.exit_code() == 0
    assert {f.scenario for f in only_sample.findings} == {"sample_c1", "sample_c64"}
    assert gate.compare(base, cur, only=["train"]).exit_code() == 1
    assert gate.compare(base, cur, only=["sample_c64"]).compared == 1
    # a full key selects that scenario only, not the keys it is a prefix of
    assert gate.selected("sample_c1", ["sample_c1"], ["sample_c1", "sample_c1000"])
    assert not gate.selected("sample_c1000", ["sample_c1"], ["sample_c1", "sample_c1000"])
    assert gate.selected("sample_c1000", ["sample_c"], ["sample_c1", "sample_c1000"])
    c1000 = doc(scenario("sample_c1", good), scenario("sample_c1000", bad))
    base2 = doc(scenario("sample_c1", good), scenario("sample_c1000", good))
    assert gate.compare(base2, c1000, only=["sample_c1"]).exit_code() == 0
    assert gate.compare(base2, c1000, only=["sample_c1000"]).exit_code() == 1


def test_a_partial_run_checks_what_it_ran() -> None:
    good = {"cpu_s": cpu([1.0] * 3, [8.0] * 3)}
    base = doc(scenario("a", good), scenario("b", good))
    report = gate.compare(base, doc(scenario("a", good)))
    assert report.exit_code() == 0 and report.compared == 1
    assert "note: b is in the baseline but not in this run: not checked" in report.notes


# ------------------------------------------------------------------------------ the edges
def test_our_client_failing_is_a_regression() -> None:
    base = doc(scenario("s", {"cpu_s": cpu([1.0] * 3, [8.0] * 3)}))
    cur = copy.deepcopy(base)
    cur["scenarios"][0]["clients"]["tinker_actors"] = {
        "runs": [{"ok": False, "error": "timed out after 180 s"}],
        "ok_runs": 0,
        "runs_n": 1,
        "error": "timed out after 180 s",
    }
    cur["scenarios"][0]["ratios"] = {}
    report = gate.compare(base, cur)
    assert report.exit_code() == 1
    assert (
        "FAILED      s: tinker_actors failed in this run: timed out after 180 s" in report.render()
    )


def test_other_parameters_are_not_comparable() -> None:
    base = doc(scenario("s", {"cpu_s": cpu([1.0] * 3, [8.0] * 3)}))
    cur = doc(scenario("s", {"cpu_s": cpu([2.0] * 3, [8.0] * 3)}, params={**PARAMS, "total": 640}))
    report = gate.compare(base, cur)
    assert report.exit_code() == 2 and not report.findings
    assert "total 1920 vs 640" in report.render()
    assert "nothing to compare" in report.render()


def test_a_missing_comparison_is_noted_not_failed() -> None:
    base = doc(scenario("s", {"cpu_s": cpu([1.0] * 3, [8.0] * 3, [0.5] * 3)}))
    cur = doc(scenario("s", {"cpu_s": cpu([1.0] * 3, [8.0] * 3)}))  # no floor this time
    report = gate.compare(base, cur)
    assert report.exit_code() == 0 and report.compared == 1
    assert any("cpu_s vs_floor" in n and "not checked" in n for n in report.notes)


def test_values_at_or_below_zero_have_no_ratio() -> None:
    """peak RSS - RSS after import can be 0 or negative for the floor: nothing to gate."""
    growth = ("lo", {"tinker_actors": [10.0] * 3, "floor": [-0.2, 0.0, 0.1]})
    report = gate.compare(
        doc(scenario("s", {"rss_growth_mb": growth})), doc(scenario("s", {"rss_growth_mb": growth}))
    )
    assert report.exit_code() == 2 and not report.findings


def test_a_floor_without_runs_pairs_its_median_with_each_repetition() -> None:
    """The torch rows' floor is derived from the torch_floor scenario: a median, no runs."""
    base = scenario(
        "torch_train",
        {"tokens_per_s": ("hi", {"tinker_actors": [500.0, 600.0, 700.0], "floor": [1000.0]})},
    )
    base["clients"]["floor"]["runs"] = []
    assert gate.paired_ratios(base, "tokens_per_s", "vs_floor", "hi") == [0.5, 0.6, 0.7]
    spreads = gate.scenario_spreads(base, {"tokens_per_s": "hi"})
    assert spreads["tokens_per_s"]["vs_floor"]["spread"] == pytest.approx(0.2 / 0.6)


def test_directions_come_from_the_specs_for_documents_written_before_the_gate() -> None:
    old = doc(scenario("s", {"cpu_s": cpu([1.0] * 3, [8.0] * 3)}, with_better=False))
    cur = doc(scenario("s", {"cpu_s": cpu([2.0] * 3, [8.0] * 3)}, with_better=False))
    report = gate.compare(old, cur)
    assert report.exit_code() == 2 and "no metric directions known" in report.render()
    assert gate.compare(old, cur, better_fallback={"s": {"cpu_s": "lo"}}).exit_code() == 1


def test_another_machine_is_noted() -> None:
    base = doc(scenario("s", {"cpu_s": cpu([1.0] * 3, [8.0] * 3)}))
    cur = copy.deepcopy(base)
    cur["meta"]["machine"] = {"cpu": "Y", "cores": 16}
    assert any("recorded on X x2, this run on Y x16" in n for n in gate.compare(base, cur).notes)


# ------------------------------------------------------------------------------ the command
def test_the_committed_results_pass_against_themselves(tmp_path: Path) -> None:
    results = ROOT / "benchmarks" / "results.json"
    if not results.exists():
        pytest.skip("no benchmarks/results.json yet (a full `python -m benchmarks` writes it)")

    def check(current: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "benchmarks", "--check", "--current", str(current), *extra],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )

    r = check(results)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "benchmark gate: passed" in r.stdout
    # one ratio of the baseline made worse than its tolerance: exit 1, named
    doc_ = json.loads(results.read_text())
    sc = next(s for s in doc_["scenarios"] if s["key"] == "sample_c64")
    for run in sc["clients"]["tinker_actors"]["runs"]:
        run["cpu_s"] *= 2
    sc["clients"]["tinker_actors"]["median"]["cpu_s"] *= 2
    sc["ratios"]["cpu_s"] = {k: v / 2 for k, v in sc["ratios"]["cpu_s"].items()}
    worse = tmp_path / "worse.json"
    worse.write_text(json.dumps(doc_))
    r = check(worse, "--only", "sample")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "REGRESSION  sample_c64 cpu_s vs_official" in r.stdout
