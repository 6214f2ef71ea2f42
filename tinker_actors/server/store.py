"""SQLite store for everything that must survive a restart.

One stdlib connection in WAL mode, used with short synchronous calls from the event loop (each
is a single indexed statement, well under a millisecond) behind a lock; engine threads never
touch it. Tensor results are not stored: only small JSON results and future states, so a
restart can answer old futures with their result, a clean failure, or 410.

Future writes (one insert and one update per request) are the hot path, so they are queued
and committed together by ``flush_futures`` (one transaction for everything queued, called
once per event-loop turn by the futures registry and before a response leaves); every read
of the futures table flushes first, so callers never see the queue.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    tags TEXT NOT NULL DEFAULT '[]',
    user_metadata TEXT NOT NULL DEFAULT '{}',
    sdk_version TEXT,
    project_id TEXT,
    display_name TEXT,
    status TEXT NOT NULL DEFAULT 'active',
    finish_reason TEXT,
    finish_detail TEXT,
    last_heartbeat REAL,
    owner TEXT NOT NULL DEFAULT 'local-user'
);
CREATE TABLE IF NOT EXISTS models (
    model_id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    model_seq_id INTEGER NOT NULL,
    base_model TEXT NOT NULL,
    lora TEXT NOT NULL,
    user_metadata TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    last_request_time REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'live',
    last_seq INTEGER NOT NULL DEFAULT 0,
    live_state_dir TEXT,
    corrupted INTEGER NOT NULL DEFAULT 0,
    lost_seqs TEXT NOT NULL DEFAULT '[]',
    owner TEXT NOT NULL DEFAULT 'local-user'
);
CREATE INDEX IF NOT EXISTS models_session ON models(session_id);
CREATE TABLE IF NOT EXISTS checkpoints (
    model_id TEXT NOT NULL,
    checkpoint_id TEXT NOT NULL,
    checkpoint_type TEXT NOT NULL,
    created_at REAL NOT NULL,
    size_bytes INTEGER,
    public INTEGER NOT NULL DEFAULT 0,
    expires_at REAL,
    user_metadata TEXT,
    path TEXT NOT NULL,
    PRIMARY KEY (model_id, checkpoint_id)
);
CREATE TABLE IF NOT EXISTS samplers (
    sampler_id TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    base_model TEXT NOT NULL,
    model_path TEXT,
    weights_dir TEXT,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS samplers_session ON samplers(session_id);
CREATE TABLE IF NOT EXISTS futures (
    request_id TEXT PRIMARY KEY,
    session_id TEXT,
    model_id TEXT,
    seq_id INTEGER,
    request_type TEXT NOT NULL,
    created_at REAL NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    result TEXT,
    error TEXT,
    category TEXT,
    digest TEXT,
    owner TEXT
);
CREATE INDEX IF NOT EXISTS futures_model_seq ON futures(model_id, seq_id);
"""

MIGRATIONS = (
    ("futures", "digest", "TEXT"),
    ("models", "lost_seqs", "TEXT NOT NULL DEFAULT '[]'"),
    ("sessions", "owner", "TEXT NOT NULL DEFAULT 'local-user'"),
    ("models", "owner", "TEXT NOT NULL DEFAULT 'local-user'"),
    ("futures", "owner", "TEXT"),
)
DEFAULT_OWNER = "local-user"  # rows written before there were several users


@dataclass(slots=True)
class SessionRow:
    session_id: str
    created_at: float
    tags: list[str]
    user_metadata: dict[str, Any]
    sdk_version: str | None
    project_id: str | None
    display_name: str | None
    status: str
    finish_reason: str | None
    finish_detail: str | None
    last_heartbeat: float | None
    owner: str = DEFAULT_OWNER


@dataclass(slots=True)
class ModelRow:
    model_id: str
    session_id: str
    model_seq_id: int
    base_model: str
    lora: dict[str, Any]
    user_metadata: dict[str, Any]
    created_at: float
    last_request_time: float
    state: str  # live | dormant (before a restart) | unloaded | failed
    last_seq: int
    live_state_dir: str | None
    corrupted: bool
    # forward_backward seq ids a clean stop failed before they ran (see Training.lost)
    lost_seqs: list[int] = field(default_factory=list)
    owner: str = DEFAULT_OWNER


@dataclass(slots=True)
class CheckpointRow:
    model_id: str
    checkpoint_id: str  # "{segment}/{name}"
    checkpoint_type: str  # training | sampler | external
    created_at: float
    size_bytes: int | None
    public: bool
    expires_at: float | None
    user_metadata: dict[str, str] | None
    path: str

    @property
    def tinker_path(self) -> str:
        return f"tinker://{self.model_id}/{self.checkpoint_id}"


@dataclass(slots=True)
class SamplerRow:
    sampler_id: str
    session_id: str
    base_model: str
    model_path: str | None
    weights_dir: str | None
    created_at: float


@dataclass(slots=True)
class FutureRow:
    request_id: str
    session_id: str | None
    model_id: str | None
    seq_id: int | None
    request_type: str
    created_at: float
    status: str  # pending | done | failed
    result: str | None
    error: str | None
    category: str | None
    digest: str | None = None
    owner: str | None = None


# A checkpoint belongs to the owner of its training run.
_OWNED = "JOIN models m ON m.model_id = c.model_id WHERE m.owner=?"


def _j(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


class Store:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # (sql, args, request id of an insert): see flush_futures
        self._future_writes: list[tuple[str, tuple[Any, ...], str | None]] = []
        self.insert_failures: dict[str, str] = {}
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        # data dirs written before a column existed
        for table, column, decl in MIGRATIONS:
            columns = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
            if columns and column not in columns:
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self.flush_futures()
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _all(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _one(self, sql: str, args: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        with self._lock:
            row: tuple[Any, ...] | None = self._db.execute(sql, args).fetchone()
            return row

    def _exec(self, sql: str, args: tuple[Any, ...] = ()) -> int:
        with self._lock:
            return self._db.execute(sql, args).rowcount

    # startup -----------------------------------------------------------------------------
    def recover_after_restart(self) -> tuple[int, int]:
        """Fails futures left pending by the previous process; live models become dormant."""
        self.flush_futures()
        with self._tx() as db:
            failed = db.execute(
                "UPDATE futures SET status='failed', category='server', error=? "
                "WHERE status='pending'",
                (
                    "the local server restarted before this request finished; "
                    "its result is lost, resubmit it",
                ),
            ).rowcount
            dormant = db.execute("UPDATE models SET state='dormant' WHERE state='live'").rowcount
        return failed, dormant

    # sessions ----------------------------------------------------------------------------
    def add_session(self, row: SessionRow) -> None:
        self._exec(
            "INSERT INTO sessions VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                row.session_id,
                row.created_at,
                _j(row.tags),
                _j(row.user_metadata),
                row.sdk_version,
                row.project_id,
                row.display_name,
                row.status,
                row.finish_reason,
                row.finish_detail,
                row.last_heartbeat,
                row.owner,
            ),
        )

    @staticmethod
    def _session(r: tuple[Any, ...]) -> SessionRow:
        return SessionRow(
            r[0],
            r[1],
            json.loads(r[2]),
            json.loads(r[3]),
            r[4],
            r[5],
            r[6],
            r[7],
            r[8],
            r[9],
            r[10],
            r[11],
        )

    def get_session(self, session_id: str) -> SessionRow | None:
        r = self._one("SELECT * FROM sessions WHERE session_id=?", (session_id,))
        return self._session(r) if r else None

    def list_sessions(self, limit: int, offset: int, owner: str) -> list[SessionRow]:
        rows = self._all(
            "SELECT * FROM sessions WHERE owner=? ORDER BY created_at DESC, session_id "
            "LIMIT ? OFFSET ?",
            (owner, limit, offset),
        )
        return [self._session(r) for r in rows]

    def all_sessions(self) -> list[SessionRow]:
        rows = self._all("SELECT * FROM sessions ORDER BY created_at DESC, session_id DESC")
        return [self._session(r) for r in rows]

    def heartbeat(self, session_id: str, now: float) -> None:
        self._exec("UPDATE sessions SET last_heartbeat=? WHERE session_id=?", (now, session_id))

    def finish_session(self, session_id: str, reason: str, detail: str | None) -> bool:
        """The first reason wins; returns False when the session was already finished."""
        return bool(
            self._exec(
                "UPDATE sessions SET status='finished', finish_reason=?, finish_detail=? "
                "WHERE session_id=? AND status='active'",
                (reason, detail, session_id),
            )
        )

    def expire_session(self, session_id: str, detail: str) -> bool:
        """An active session that stopped heartbeating; False when it was not active."""
        return bool(
            self._exec(
                "UPDATE sessions SET status='expired', finish_reason='expired', finish_detail=? "
                "WHERE session_id=? AND status='active'",
                (detail, session_id),
            )
        )

    def set_session_project(self, session_id: str, project_id: str) -> bool:
        return bool(
            self._exec(
                "UPDATE sessions SET project_id=? WHERE session_id=?", (project_id, session_id)
            )
        )

    # models ------------------------------------------------------------------------------
    def add_model(self, row: ModelRow) -> None:
        self._exec(
            "INSERT OR REPLACE INTO models VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                row.model_id,
                row.session_id,
                row.model_seq_id,
                row.base_model,
                _j(row.lora),
                _j(row.user_metadata),
                row.created_at,
                row.last_request_time,
                row.state,
                row.last_seq,
                row.live_state_dir,
                int(row.corrupted),
                _j(row.lost_seqs),
                row.owner,
            ),
        )

    @staticmethod
    def _model(r: tuple[Any, ...]) -> ModelRow:
        return ModelRow(
            r[0],
            r[1],
            r[2],
            r[3],
            json.loads(r[4]),
            json.loads(r[5]),
            r[6],
            r[7],
            r[8],
            r[9],
            r[10],
            bool(r[11]),
            json.loads(r[12]),
            r[13],
        )

    def get_model(self, model_id: str) -> ModelRow | None:
        r = self._one("SELECT * FROM models WHERE model_id=?", (model_id,))
        return self._model(r) if r else None

    def list_models(self, limit: int, offset: int, owner: str) -> tuple[list[ModelRow], int]:
        rows = self._all(
            "SELECT * FROM models WHERE owner=? ORDER BY created_at DESC, model_id "
            "LIMIT ? OFFSET ?",
            (owner, limit, offset),
        )
        total = self._one("SELECT COUNT(*) FROM models WHERE owner=?", (owner,))
        return [self._model(r) for r in rows], int(total[0] if total else 0)

    def session_models(self, session_id: str) -> list[str]:
        rows = self._all(
            "SELECT model_id FROM models WHERE session_id=? ORDER BY model_seq_id", (session_id,)
        )
        return [r[0] for r in rows]

    def update_model(self, model_id: str, **fields: Any) -> None:
        if not fields:
            return
        cols = ", ".join(f"{k}=?" for k in fields)
        vals = tuple(_j(v) if isinstance(v, dict | list) else v for v in fields.values())
        self._exec(f"UPDATE models SET {cols} WHERE model_id=?", (*vals, model_id))

    # checkpoints -------------------------------------------------------------------------
    def add_checkpoint(self, row: CheckpointRow) -> None:
        self._exec(
            "INSERT OR REPLACE INTO checkpoints VALUES (?,?,?,?,?,?,?,?,?)",
            (
                row.model_id,
                row.checkpoint_id,
                row.checkpoint_type,
                row.created_at,
                row.size_bytes,
                int(row.public),
                row.expires_at,
                _j(row.user_metadata) if row.user_metadata is not None else None,
                row.path,
            ),
        )

    @staticmethod
    def _ckpt(r: tuple[Any, ...]) -> CheckpointRow:
        return CheckpointRow(
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            bool(r[5]),
            r[6],
            json.loads(r[7]) if r[7] is not None else None,
            r[8],
        )

    def get_checkpoint(self, model_id: str, checkpoint_id: str) -> CheckpointRow | None:
        r = self._one(
            "SELECT * FROM checkpoints WHERE model_id=? AND checkpoint_id=?",
            (model_id, checkpoint_id),
        )
        return self._ckpt(r) if r else None

    def run_checkpoints(self, model_id: str) -> list[CheckpointRow]:
        rows = self._all(
            "SELECT * FROM checkpoints WHERE model_id=? ORDER BY created_at, checkpoint_id",
            (model_id,),
        )
        return [self._ckpt(r) for r in rows]

    def user_checkpoints(
        self, limit: int, offset: int, owner: str
    ) -> tuple[list[CheckpointRow], int]:
        rows = self._all(
            f"SELECT c.* FROM checkpoints c {_OWNED} "
            "ORDER BY c.created_at DESC, c.model_id, c.checkpoint_id LIMIT ? OFFSET ?",
            (owner, limit, offset),
        )
        total = self._one(f"SELECT COUNT(*) FROM checkpoints c {_OWNED}", (owner,))
        return [self._ckpt(r) for r in rows], int(total[0] if total else 0)

    def last_checkpoint(self, model_id: str, checkpoint_type: str) -> CheckpointRow | None:
        r = self._one(
            "SELECT * FROM checkpoints WHERE model_id=? AND checkpoint_type=? "
            "ORDER BY created_at DESC LIMIT 1",
            (model_id, checkpoint_type),
        )
        return self._ckpt(r) if r else None

    def update_checkpoint(self, model_id: str, checkpoint_id: str, **fields: Any) -> None:
        cols = ", ".join(f"{k}=?" for k in fields)
        self._exec(
            f"UPDATE checkpoints SET {cols} WHERE model_id=? AND checkpoint_id=?",
            (*fields.values(), model_id, checkpoint_id),
        )

    def delete_checkpoint(self, model_id: str, checkpoint_id: str) -> bool:
        return bool(
            self._exec(
                "DELETE FROM checkpoints WHERE model_id=? AND checkpoint_id=?",
                (model_id, checkpoint_id),
            )
        )

    def expired_checkpoints(self, now: float) -> list[CheckpointRow]:
        rows = self._all(
            "SELECT * FROM checkpoints WHERE expires_at IS NOT NULL AND expires_at<=?", (now,)
        )
        return [self._ckpt(r) for r in rows]

    def storage_bytes(self, owner: str) -> tuple[int, int]:
        r = self._one(
            f"SELECT COUNT(*), COALESCE(SUM(c.size_bytes),0) FROM checkpoints c {_OWNED}",
            (owner,),
        )
        return (int(r[0]), int(r[1])) if r else (0, 0)

    # samplers ----------------------------------------------------------------------------
    def add_sampler(self, row: SamplerRow) -> None:
        self._exec(
            "INSERT OR REPLACE INTO samplers VALUES (?,?,?,?,?,?)",
            (
                row.sampler_id,
                row.session_id,
                row.base_model,
                row.model_path,
                row.weights_dir,
                row.created_at,
            ),
        )

    def get_sampler(self, sampler_id: str) -> SamplerRow | None:
        r = self._one("SELECT * FROM samplers WHERE sampler_id=?", (sampler_id,))
        return SamplerRow(*r) if r else None

    def session_samplers(self, session_id: str) -> list[str]:
        rows = self._all(
            "SELECT sampler_id FROM samplers WHERE session_id=? ORDER BY created_at",
            (session_id,),
        )
        return [r[0] for r in rows]

    # futures -----------------------------------------------------------------------------
    @property
    def futures_unflushed(self) -> bool:
        return bool(self._future_writes)

    def flush_futures(self) -> None:
        """Commits the queued future inserts and updates, in order, in one transaction.

        A write the database refuses must fail only its own request: then each write is
        committed on its own, and a refused insert is kept in ``insert_failures`` (request
        id -> error) for the handler that named that id.
        """
        if not self._future_writes:
            return
        writes, self._future_writes = self._future_writes, []
        try:
            with self._tx() as db:
                for sql, args, _ in writes:
                    db.execute(sql, args)
            return
        except (sqlite3.Error, OverflowError, ValueError, TypeError):
            pass
        for sql, args, request_id in writes:
            try:
                with self._tx() as db:
                    db.execute(sql, args)
            except (sqlite3.Error, OverflowError, ValueError, TypeError) as exc:
                if request_id is not None:
                    if len(self.insert_failures) >= 10_000:  # nobody collected them
                        self.insert_failures.clear()
                    self.insert_failures[request_id] = f"{type(exc).__name__}: {exc}"

    def add_future(
        self,
        request_id: str,
        request_type: str,
        *,
        session_id: str | None,
        model_id: str | None,
        seq_id: int | None,
        digest: str | None = None,
        owner: str | None = None,
    ) -> None:
        """Queued: committed by the next ``flush_futures``."""
        self._future_writes.append(
            (
                "INSERT INTO futures (request_id, session_id, model_id, seq_id, request_type, "
                "created_at, digest, owner) VALUES (?,?,?,?,?,?,?,?)",
                (
                    request_id,
                    session_id,
                    model_id,
                    seq_id,
                    request_type,
                    time.time(),
                    digest,
                    owner,
                ),
                request_id,
            )
        )

    def finish_future(
        self,
        request_id: str,
        *,
        result_json: str | None = None,
        error: str | None = None,
        category: str | None = None,
    ) -> None:
        """Queued: committed by the next ``flush_futures``."""
        status = "failed" if error is not None else "done"
        self._future_writes.append(
            (
                "UPDATE futures SET status=?, result=?, error=?, category=? WHERE request_id=?",
                (status, result_json, error, category, request_id),
                None,
            )
        )

    def get_future(self, request_id: str) -> FutureRow | None:
        self.flush_futures()
        r = self._one("SELECT * FROM futures WHERE request_id=?", (request_id,))
        return FutureRow(*r) if r else None

    def future_for_seq(self, model_id: str, seq_id: int) -> FutureRow | None:
        """The latest future recorded for a model's seq id (a retry after a restart)."""
        self.flush_futures()
        r = self._one(
            "SELECT * FROM futures WHERE model_id=? AND seq_id=? ORDER BY created_at DESC LIMIT 1",
            (model_id, seq_id),
        )
        return FutureRow(*r) if r else None

    def purge_futures(self, before: float) -> int:
        self.flush_futures()
        return self._exec("DELETE FROM futures WHERE created_at<? AND status!='pending'", (before,))
