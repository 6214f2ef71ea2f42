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
