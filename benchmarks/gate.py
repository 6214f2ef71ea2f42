"""The benchmark gate: ``python -m benchmarks --check`` compares a run with the committed
``benchmarks/results.json`` and fails on a regression beyond the run-to-run spread.

It compares **ratios**, not times: for each scenario and metric, tinker_actors against the
official SDK (``vs_official``) and against the bare-aiohttp floor (``vs_floor``), as the
report computes them (> 1: ours is better; for costs the ratio is other/ours, for rates
ours/other). Both sides of a ratio run on the same machine minutes apart, so a slower or
busier machine moves it far less than it moves a time.

Tolerance, per scenario, metric and comparison: ``max(factor x spread, floor)`` (defaults
2 x spread, 10 %), where *spread* is the relative range ``(max - min) / median`` of the
per-repetition ratios (repetition *i* of ours against repetition *i* of the other client,
which ran next to it), the larger of the baseline's and this run's. With fewer than two
repetitions on both sides there is no spread to go by, and ``unmeasured`` (25 %) applies.

A regression: the ratio fell by more than the tolerance, ``current < baseline x (1 - tol)``,
or our client failed where the baseline has a result. Everything here is a pure function of
the two result documents (the dicts ``python -m benchmarks`` writes), so it is unit-tested
with fabricated ones (tests/bench/test_gate.py).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

OURS = "tinker_actors"
COMPARISONS = {"vs_official": "official", "vs_floor": "floor"}
FACTOR = 2.0
FLOOR = 0.10
UNMEASURED = 0.25

__all__ = [
    "Finding",
    "Report",
    "compare",
    "paired_ratios",
    "scenario_spreads",
    "selected",
    "tolerance",
]


# --------------------------------------------------------------------------- ratios
def _ratio(better: str, ours: float, other: float) -> float | None:
    """> 1 means ours is better; the same definition as the report's. Only between positive
    values: a difference that can be 0 or negative (peak RSS - RSS after import, for the
    floor) has no ratio to gate."""
    if not (isinstance(ours, (int, float)) and isinstance(other, (int, float))):
        return None
    if ours <= 0 or other <= 0:
        return None
    if better == "lo":
        return other / ours
    if better == "hi":
        return ours / other
    return None


def _values(entry: Mapping[str, Any], metric: str) -> list[float | None]:
    """The metric per repetition, in repetition order (None where that repetition failed)."""
    return [
        r[metric] if r.get("ok") and isinstance(r.get(metric), (int, float)) else None
        for r in entry.get("runs", [])
    ]


def paired_ratios(
    scenario: Mapping[str, Any], metric: str, comparison: str, better: str
) -> list[float]:
    """Per-repetition ratios of ours against the other client: repetition *i* with repetition
    *i* (they ran back to back). A client with no runs of its own (the torch floor, derived
    from the ``torch_floor`` scenario) contributes its median to every pair."""
    clients = scenario.get("clients", {})
    ours, other = clients.get(OURS), clients.get(COMPARISONS[comparison])
    if not ours or not other:
        return []
    mine = _values(ours, metric)
    theirs = _values(other, metric)
    if not theirs or not any(v is not None for v in theirs):
        med = other.get("median", {}).get(metric)
        if not isinstance(med, (int, float)):
            return []
        theirs = [med] * len(mine)
    out = []
    for a, b in zip(mine, theirs, strict=False):
        if a is not None and b is not None:
            r = _ratio(better, a, b)
            if r is not None:
                out.append(r)
    return out


def _spread(ratios: list[float]) -> float | None:
    if len(ratios) < 2:
        return None
    mid = statistics.median(ratios)
    return (max(ratios) - min(ratios)) / mid if mid else None


def _better(
    scenario: Mapping[str, Any], fallback: Mapping[str, Mapping[str, str]]
) -> dict[str, str]:
    """metric -> "hi" / "lo": written by the run since the gate exists; older documents get
    it from the scenario specs (``fallback``, by scenario key)."""
    return dict(scenario.get("better") or fallback.get(scenario.get("key", ""), {}))


def scenario_spreads(
    scenario: Mapping[str, Any], better: Mapping[str, str]
) -> dict[str, dict[str, dict[str, Any]]]:
    """metric -> comparison -> {"ratio", "min", "max", "spread", "n"}: the median ratio (as
    the report has it) and the range of the per-repetition ratios. Written to results.json."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for metric, b in better.items():
        if b not in ("hi", "lo"):
            continue
        for comparison in COMPARISONS:
            ratio = _median_ratio(scenario, metric, comparison, b)
            if ratio is None:
                continue
            pr = paired_ratios(scenario, metric, comparison, b)
            out.setdefault(metric, {})[comparison] = {
                "ratio": ratio,
                "min": min(pr) if pr else None,
                "max": max(pr) if pr else None,
                "spread": _spread(pr),
                "n": len(pr),
            }
    return out


def _median_ratio(
    scenario: Mapping[str, Any], metric: str, comparison: str, better: str
) -> float | None:
    stored = scenario.get("ratios", {}).get(metric, {}).get(comparison)
    if isinstance(stored, (int, float)):
        return float(stored) if stored > 0 else None
    clients = scenario.get("clients", {})
    a = clients.get(OURS, {}).get("median", {}).get(metric)
    b = clients.get(COMPARISONS[comparison], {}).get("median", {}).get(metric)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return _ratio(better, a, b)
    return None


def tolerance(
    spreads: Iterable[float | None],
    *,
    factor: float = FACTOR,
    floor: float = FLOOR,
    unmeasured: float = UNMEASURED,
) -> float:
    """``max(factor x the largest known spread, floor)``; ``unmeasured`` if none is known."""
    known = [s for s in spreads if s is not None]
    if not known:
        return max(unmeasured, floor)
    return max(factor * max(known), floor)


# --------------------------------------------------------------------------- comparing
@dataclass
class Finding:
    scenario: str
    metric: str
    comparison: str  # "vs_official" / "vs_floor"; "" for a failed client
    status: str  # "regression", "improvement", "ok", "failed"
    baseline: float | None = None
    current: float | None = None
    tol: float = 0.0
    spreads: tuple[float | None, float | None] = (None, None)  # baseline's, this run's
    detail: str = ""

    @property
    def change(self) -> float | None:
        if self.baseline is None or self.current is None or not self.baseline:
            return None
        return self.current / self.baseline - 1

    def line(self) -> str:
        if self.status == "failed":
            return f"FAILED      {self.scenario}: {self.detail}"
        sb, sc = (f"{s:.1%}" if s is not None else "n/a" for s in self.spreads)
        head = {"regression": "REGRESSION", "improvement": "improved", "ok": "ok"}[self.status]
        change = self.change
        return (
            f"{head:<11} {self.scenario} {self.metric} {self.comparison}: "
            f"{self.baseline:.3g}x -> {self.current:.3g}x "
            f"({change:+.1%}; tolerance {self.tol:.1%}, spread baseline {sb} / run {sc})"
        )


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[Finding]:
        return [f for f in self.findings if f.status in ("regression", "failed")]

    @property
    def compared(self) -> int:
        return sum(1 for f in self.findings if f.status != "failed")

    def exit_code(self) -> int:
        """1 on a regression, 2 if nothing could be compared, else 0."""
        if self.regressions:
            return 1
        return 0 if self.compared else 2

    def render(self, verbose: bool = False) -> str:
        lines = list(self.notes)
        shown = [f for f in self.findings if verbose or f.status != "ok"]
        order = {"failed": 0, "regression": 1, "improvement": 2, "ok": 3}
        lines += [f.line() for f in sorted(shown, key=lambda f: order[f.status])]
        n_ok = sum(1 for f in self.findings if f.status == "ok")
        n_imp = sum(1 for f in self.findings if f.status == "improvement")
        loose = [f for f in self.findings if f.status != "failed" and f.tol >= 1.0]
        if loose:
            lines.append(
                f"note: {len(loose)} ratio(s) vary so much between repetitions that the "
                "tolerance is 100 % or more: they cannot fail (more repetitions in the "
                "baseline narrow it; --verbose lists them)"
            )
        if self.regressions:
            verdict = (
                f"benchmark gate: FAILED, {len(self.regressions)} regression(s) beyond the "
                f"spread ({self.compared} ratio(s) compared, {n_ok} within tolerance, "
                f"{n_imp} improved)"
            )
        elif not self.compared:
            verdict = "benchmark gate: nothing to compare (see the notes above)"
        else:
            verdict = (
                f"benchmark gate: passed, {self.compared} ratio(s) compared, {n_ok} within "
                f"tolerance, {n_imp} improved beyond it"
                + (" (consider committing a new baseline)" if n_imp else "")
            )
        return "\n".join([*lines, verdict])


def selected(key: str, only: Iterable[str] | None, known: Iterable[str] = ()) -> bool:
    """``--only`` semantics: scenario keys or key prefixes; none given selects everything. A
    selector that is itself a ``known`` key selects only that scenario (``sample_c1`` is not
    also ``sample_c1000``)."""
    sels = [k for k in (only or ()) if k]
    exact = set(known)
    return not sels or any(key == k or (k not in exact and key.startswith(k)) for k in sels)


def compare(
    baseline: Mapping[str, Any],
    current: Mapping[str, Any],
    *,
    only: Iterable[str] | None = None,
    better_fallback: Mapping[str, Mapping[str, str]] | None = None,
    factor: float = FACTOR,
    floor: float = FLOOR,
    unmeasured: float = UNMEASURED,
) -> Report:
    """Every ratio of ``current`` against ``baseline`` (two documents as written by
    ``python -m benchmarks``), for the scenarios selected by ``only``."""
    fallback = better_fallback or {}
    only = list(only or ())
    report = Report()
    _machine_note(baseline, current, report)
    known = {s["key"] for d in (baseline, current) for s in d.get("scenarios", [])}
    base = {s["key"]: s for s in baseline.get("scenarios", []) if selected(s["key"], only, known)}
    cur = {s["key"]: s for s in current.get("scenarios", []) if selected(s["key"], only, known)}
    for key in [k for k in base if k not in cur]:
        report.notes.append(f"note: {key} is in the baseline but not in this run: not checked")
    for key in [k for k in cur if k not in base]:
        report.notes.append(f"note: {key} is not in the baseline: not checked")
    for key, b in base.items():
        c = cur.get(key)
        if c is None:
            continue
        if b.get("params") != c.get("params"):
            diff = _param_diff(b.get("params", {}), c.get("params", {}))
            report.notes.append(
                f"note: {key} ran with other parameters than the baseline ({diff}): not "
                "comparable, not checked (a --quick run against a full baseline?)"
            )
            continue
        ours_b = b.get("clients", {}).get(OURS, {})
        ours_c = c.get("clients", {}).get(OURS)
        if ours_c is not None and "median" in ours_b and "median" not in ours_c:
            err = str(ours_c.get("error", "failed"))[:200]
            report.findings.append(
                Finding(key, "", "", "failed", detail=f"tinker_actors failed in this run: {err}")
            )
            continue
        better = _better(b, fallback) or _better(c, fallback)
        if not better:
            report.notes.append(f"note: {key}: no metric directions known: not checked")
            continue
        sb, sc = scenario_spreads(b, better), scenario_spreads(c, better)
        for metric, comps in sb.items():
            for comparison, bs in comps.items():
                cs = sc.get(metric, {}).get(comparison)
                if cs is None:
                    report.notes.append(
                        f"note: {key} {metric} {comparison}: not measured in this run "
                        f"(no {COMPARISONS[comparison]} result, or a value <= 0): not checked"
                    )
                    continue
                spreads = (bs["spread"], cs["spread"])
                tol = tolerance(spreads, factor=factor, floor=floor, unmeasured=unmeasured)
                bv, cv = bs["ratio"], cs["ratio"]
                if cv < bv * (1 - tol):
                    status = "regression"
                elif cv > bv * (1 + tol):
                    status = "improvement"
                else:
                    status = "ok"
                report.findings.append(
                    Finding(key, metric, comparison, status, bv, cv, tol, spreads)
                )
    return report


def _param_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    keys = sorted(set(a) | set(b))
    diffs = [f"{k} {a.get(k)!r} vs {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]
    return ", ".join(diffs[:4]) + (", ..." if len(diffs) > 4 else "")


def _machine_note(baseline: Mapping[str, Any], current: Mapping[str, Any], report: Report) -> None:
    mb = baseline.get("meta", {}).get("machine", {})
    mc = current.get("meta", {}).get("machine", {})
    if mb and mc and (mb.get("cpu"), mb.get("cores")) != (mc.get("cpu"), mc.get("cores")):
        report.notes.append(
            f"note: the baseline was recorded on {mb.get('cpu')} x{mb.get('cores')}, this run "
            f"on {mc.get('cpu')} x{mc.get('cores')}: ratios travel better than times, not "
            "perfectly (record a baseline on this machine to gate it)"
        )
