"""The benchmark's timed region counts the garbage collector's share of the client CPU."""

from __future__ import annotations

import gc

from benchmarks.client_worker import Region


def test_region_counts_collections_per_generation_and_their_cpu() -> None:
    with Region() as reg:
        gc.collect(0)
        gc.collect(0)
        gc.collect(2)
    fields = reg.gc_fields()
    # automatic collections may add to these, never take away
    assert fields["gc_gen0_runs"] >= 2
    assert fields["gc_gen2_runs"] >= 1
    assert 0.0 <= fields["gc_s"] <= reg.cpu + 0.01


def test_region_stops_listening_when_it_ends() -> None:
    before = list(gc.callbacks)
    with Region() as reg:
        assert len(gc.callbacks) == len(before) + 1
    runs = reg.gc_fields()["gc_gen2_runs"]
    gc.collect()
    assert gc.callbacks == before
    assert reg.gc_fields()["gc_gen2_runs"] == runs


def _scenario(conc: int, total: int, floor: list[dict], ours: list[dict]) -> dict:
    return {
        "key": f"sample_c{conc}",
        "params": {"concurrency": conc, "total": total},
        "clients": {"floor": {"runs": floor}, "tinker_actors": {"runs": ours}},
    }


def _run(cpu: float, gc_s: float, young: int, full: int) -> dict:
    return {"ok": True, "cpu_s": cpu, "gc_s": gc_s, "gc_gen0_runs": young, "gc_gen2_runs": full}


def test_gc_section_splits_client_cpu_into_collector_and_the_rest() -> None:
    from benchmarks.__main__ import _gc_section

    results = {
        "scenarios": [
            _scenario(
                1000,
                2000,
                [_run(1.0, 0.25, 100, 1), _run(1.2, 0.3, 120, 1), _run(1.1, 0.2, 110, 1)],
                [_run(1.5, 0.5, 200, 2), _run(1.3, 0.4, 180, 2), _run(1.4, 0.6, 190, 2)],
            ),
            {"key": "train", "params": {}, "clients": {}},
        ]
    }
    lines = _gc_section(results)
    rows = [line for line in lines if line.startswith("| 1,000 |")]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    # GC shares (medians of gc/cpu), young collections per 1,000 samples, full per 1,000
    assert cells[1:7] == ["25%", "33%", "55", "95", "0.5", "1.0"]
    # client CPU vs floor: 1.1 / 1.4; without GC: median(0.75, 0.9, 0.9) / median(1, 0.9, 0.8)
    assert cells[7] == "0.79x"
    assert cells[8].strip("*") == "1.00x"


def test_gc_section_is_left_out_for_results_without_gc_measures() -> None:
    from benchmarks.__main__ import _gc_section

    old = _scenario(64, 100, [{"ok": True, "cpu_s": 1.0}], [{"ok": True, "cpu_s": 1.2}])
    assert _gc_section({"scenarios": [old]}) == []
