"""Future rows are written behind (one transaction per loop turn) but never lost or unseen."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tinker_actors.server.futures import FutureRegistry, Outcome
from tinker_actors.server.store import Store


def _committed(path: Path) -> dict[str, str]:
    """request_id -> status as another process (a restarted server) would read them."""
    with sqlite3.connect(path) as db:
        return dict(db.execute("SELECT request_id, status FROM futures").fetchall())


def test_queued_future_writes_are_committed_in_order_and_seen_by_reads(tmp_path):
    path = tmp_path / "db.sqlite"
    store = Store(path)
    store.add_future("req-a", "Sample", session_id=None, model_id=None, seq_id=1)
    store.finish_future("req-a", error="boom", category="user")
    assert store.futures_unflushed
    assert _committed(path) == {}
    row = store.get_future("req-a")  # a read flushes first
    assert row is not None and (row.status, row.error) == ("failed", "boom")
    assert not store.futures_unflushed
    assert _committed(path) == {"req-a": "failed"}
    store.add_future("req-b", "OptimStep", session_id=None, model_id="m", seq_id=2)
    store.close()  # closing flushes too
    assert _committed(path) == {"req-a": "failed", "req-b": "pending"}


@pytest.mark.asyncio
async def test_registry_commits_once_per_loop_turn_and_persist_waits_for_it(tmp_path):
    path = tmp_path / "db.sqlite"
    registry = FutureRegistry(Store(path), 3600.0)
    recs = [registry.create("Sample", seq_id=s) for s in range(3)]
    assert _committed(path) == {}  # queued within this turn
    await registry.persist()
    assert _committed(path) == {r.request_id: "pending" for r in recs}
    registry.resolve(recs[0], Outcome("json", b"{}"))
    registry.fail(recs[1], "no", "user")
    await registry.persist()
    assert _committed(path) == {
        recs[0].request_id: "done",
        recs[1].request_id: "failed",
        recs[2].request_id: "pending",
    }
