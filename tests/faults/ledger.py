"""Ground truth for the fault suite: the null engine plus a ledger of what it applied.

``LedgerEngine`` is the null benchmark engine that also records, per model, the learning rate
of every optimizer step it applied (the test loops give each step its own rate, so a step is
identified by it) and counts the sample jobs and sequences it ran. A checkpoint carries its
model's ledger, so a model restored from one continues it. With ``ledger_dir`` each model's
ledger is also written to ``<ledger_dir>/<model>.json`` after every step, so it outlives a
server killed with SIGKILL.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from tinker_actors.server.engine.null import NullEngine

LEDGER_FILE = "ledger_steps.json"


def lr_of(step: int) -> float:
    """The learning rate that marks step ``step`` (0-based)."""
    return (step + 1) * 1e-6


def step_of(lr: float) -> int:
    return round(lr * 1e6) - 1


class LedgerEngine(NullEngine):
    def __init__(self, cache_dir: Path | None = None, ledger_dir: Path | None = None) -> None:
        super().__init__(cache_dir)
        self.ledger_lock = threading.Lock()
        self.steps: dict[str, list[float]] = {}
        self.sample_jobs = 0
        self.sample_sequences = 0
        self.ledger_dir = ledger_dir

    def _persist(self, model_id: str) -> None:
        if self.ledger_dir is not None:
            path = self.ledger_dir / f"{model_id.replace(':', '_')}.json"
            path.write_text(json.dumps(self.steps[model_id]))

    def optim_step(self, model_id: str, adam: Any) -> dict[str, float]:
        before = self.counters(model_id)["optimizer_steps"]
        out = super().optim_step(model_id, adam)
        if self.counters(model_id)["optimizer_steps"] > before:  # applied (it had gradients)
            with self.ledger_lock:
                self.steps.setdefault(model_id, []).append(float(adam.learning_rate))
                self._persist(model_id)
        return out

    def save_state(self, model_id: str, directory: Path) -> int:
        n = super().save_state(model_id, directory)
        with self.ledger_lock:
            data = json.dumps(self.steps.get(model_id, []))
        (directory / LEDGER_FILE).write_text(data)
        return n + len(data)

    def load_state(
        self, model_id: str, directory: Path, *, with_optimizer: bool, base_model: str | None
    ) -> Any:
        details = super().load_state(
            model_id, directory, with_optimizer=with_optimizer, base_model=base_model
        )
        path = directory / LEDGER_FILE
        steps = json.loads(path.read_text()) if path.is_file() else []
        with self.ledger_lock:
            self.steps[model_id] = steps
            self._persist(model_id)
        return details

    def sample(self, sampler_id: str, jobs: list[Any]) -> list[Any]:
        out = super().sample(sampler_id, jobs)
        with self.ledger_lock:
            self.sample_jobs += len(jobs)
            self.sample_sequences += sum(job.num_samples for job in jobs)
        return out


def read_ledger(ledger_dir: Path, model_id: str) -> list[float]:
    path = ledger_dir / f"{model_id.replace(':', '_')}.json"
    return json.loads(path.read_text()) if path.is_file() else []
