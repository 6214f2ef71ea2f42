"""Server-side futures: what a submit returns and ``retrieve_future`` long-polls on.

A record lives in memory with an ``asyncio.Event``; its state (and small JSON results) are
mirrored in the store so a restart can still answer, fail cleanly, or say 410. Those store
writes are queued and committed once per event-loop turn (one transaction for a burst), and
``persist`` lets a handler wait for that commit before its response names a request id. Tensor results
(sample, forward_backward) stay as engine objects and are encoded per request ``Accept``
(protobuf or the older JSON), cached once encoded.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal

from tinker_actors.server.store import Store
from tinker_actors.server.users import DEFAULT_USER as DEFAULT_OWNER
from tinker_actors.server.users import caller

# The request ids created while handling the current request (set per request by the
# middleware), so it can check that their store rows were written before it answers.
CREATED: ContextVar[list[str] | None] = ContextVar("tinker_actors_server_created", default=None)

OutcomeKind = Literal["json", "sample", "fwdbwd"]


@dataclass(slots=True)
class Outcome:
    """A finished result: JSON bytes, or an engine object encoded lazily per Accept."""

    kind: OutcomeKind
    value: Any
    encoded: dict[str, bytes] = field(default_factory=dict)


@dataclass(slots=True)
class FutureRecord:
    request_id: str
    request_type: str  # the X-Tinker-Request-Type vocabulary: CreateModel, Sample, ...
    model_id: str | None = None
    seq_id: int | None = None
    sampler_id: str | None = None
    created_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    state: Literal["pending", "done", "failed"] = "pending"
    outcome: Outcome | None = None
    error: str | None = None
    category: str | None = None
    cancelled: bool = False
    owner: str | None = None  # the user whose request created it (server/users.py)
    event: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def finished(self) -> bool:
        return self.state != "pending"


def new_request_id() -> str:
    return "req-" + uuid.uuid4().hex


class FutureRegistry:
    def __init__(self, store: Store, ttl_s: float) -> None:
        self._store = store
        self._ttl_s = ttl_s
        self._records: dict[str, FutureRecord] = {}
        self._listeners: list[Callable[[FutureRecord], None]] = []
        self._flush_scheduled = False
        # request_type -> how a stored JSON result becomes an Outcome again (results that
        # are not plain JSON, kept across a clean stop); other types are served as JSON.
        self.rebuilders: dict[str, Callable[[str], Outcome]] = {}

    def __len__(self) -> int:
        return len(self._records)

    def add_listener(self, fn: Callable[[FutureRecord], None]) -> None:
        self._listeners.append(fn)

    def create(
        self,
        request_type: str,
        *,
        session_id: str | None = None,
        model_id: str | None = None,
        seq_id: int | None = None,
        sampler_id: str | None = None,
        digest: str | None = None,
    ) -> FutureRecord:
        rec = FutureRecord(
            new_request_id(),
            request_type,
            model_id=model_id,
            seq_id=seq_id,
            sampler_id=sampler_id,
            owner=caller(),
        )
        self._records[rec.request_id] = rec
        self._store.add_future(
            rec.request_id,
            request_type,
            session_id=session_id,
            model_id=model_id,
            seq_id=seq_id,
            digest=digest,
            owner=rec.owner,
        )
        created = CREATED.get()
        if created is not None:
            created.append(rec.request_id)
        self._schedule_flush()
        return rec

    def _schedule_flush(self) -> None:
        """Commits the queued store writes on the next loop turn (at once without a loop)."""
        if self._flush_scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._store.flush_futures()
            return
        self._flush_scheduled = True
        loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._store.flush_futures()

    async def persist(self) -> None:
        """Returns once every future created so far is committed to the store.

        Yields one loop turn first, so the handlers of a burst share one transaction.
        """
        if self._store.futures_unflushed:
            await asyncio.sleep(0)
            self._store.flush_futures()

    def unrecorded(self, request_ids: list[str]) -> list[tuple[FutureRecord, str]]:
        """Of ``request_ids``, those whose store row could not be written (and why); each
        is failed here, since a request id the client was never given cannot be kept."""
        out = []
        for rid in request_ids:
            error = self._store.insert_failures.pop(rid, None)
            rec = self._records.get(rid)
            if error is not None and rec is not None:
                self.fail(rec, f"the server could not record this request: {error}")
                out.append((rec, error))
        return out

    def get(self, request_id: str) -> FutureRecord | None:
        """The record, from memory or (after a restart) rebuilt from the store; None = 410."""
        rec = self._records.get(request_id)
        if rec is not None:
            return rec
        row = self._store.get_future(request_id)
        if row is None:
            return None
        if row.status == "failed":
            rec = FutureRecord(
                row.request_id,
                row.request_type,
                state="failed",
                error=row.error,
                category=row.category or "unknown",
            )
        elif row.status == "done" and row.result is not None:
            rebuild = self.rebuilders.get(row.request_type)
            rec = FutureRecord(
                row.request_id,
                row.request_type,
                state="done",
                outcome=rebuild(row.result) if rebuild else Outcome("json", row.result.encode()),
            )
        else:
            return None  # a tensor result from before a restart is gone: 410, resubmit
        rec.owner = row.owner or DEFAULT_OWNER
        rec.event.set()
        self._records[request_id] = rec
        return rec

    def resolve(self, rec: FutureRecord, outcome: Outcome) -> None:
        if rec.finished:
            return
        rec.state, rec.outcome, rec.finished_at = "done", outcome, time.time()
        self._store.finish_future(
            rec.request_id, result_json=outcome.value.decode() if outcome.kind == "json" else None
        )
        self._schedule_flush()
        self._finished(rec)

    def fail(self, rec: FutureRecord, message: str, category: str = "server") -> None:
        if rec.finished:
            return
        rec.state, rec.error, rec.category = "failed", message, category
        rec.finished_at = time.time()
        self._store.finish_future(rec.request_id, error=message, category=category)
        self._schedule_flush()
        self._finished(rec)

    def _finished(self, rec: FutureRecord) -> None:
        rec.event.set()
        for fn in self._listeners:
            fn(rec)

    async def wait(self, rec: FutureRecord, hold_s: float) -> bool:
        """Holds up to ``hold_s`` for the result (the long poll); True when finished."""
        if rec.finished:
            return True
        try:
            async with asyncio.timeout(hold_s):
                await rec.event.wait()
        except TimeoutError:
            return False
        return True

    def sweep(self, now: float | None = None) -> int:
        """Drops finished records older than the TTL (their ids then answer 410)."""
        now = time.time() if now is None else now
        cutoff = now - self._ttl_s
        stale = [
            rid
            for rid, rec in self._records.items()
            if rec.finished_at is not None and rec.finished_at < cutoff
        ]
        for rid in stale:
            del self._records[rid]
        self._store.purge_futures(cutoff)
        return len(stale)

    def pending(self) -> list[FutureRecord]:
        return [r for r in self._records.values() if not r.finished]
