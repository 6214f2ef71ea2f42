"""What a benchmark sends, decided before it runs: lengths, prompts and arrival times.

Everything here is a pure function of the seed (numpy ``Generator``s seeded by
``[seed, stream, index]``), so a run is reproducible and request ``i`` is the same request
whatever the concurrency, the rate or the order in which workers pick requests up.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

# independent random streams of one seed
_PROMPT, _OUTPUT, _TOKENS, _ARRIVALS = 1, 2, 3, 4

DIST_HELP = (
    "a fixed N, or uniform:LOW,HIGH (inclusive), normal:MEAN,STD or exponential:MEAN "
    "(drawn per request, rounded, at least 1)"
)


@dataclass(frozen=True, slots=True)
class LengthDist:
    """A length per request: ``fixed``, ``uniform`` (inclusive), ``normal`` or ``exponential``."""

    kind: str
    a: float
    b: float = 0.0

    @classmethod
    def parse(cls, text: str) -> LengthDist:
        """``128``, ``uniform:64,256``, ``normal:128,32``, ``exponential:128``; ValueError else."""
        text = str(text).strip()
        kind, sep, rest = text.partition(":")
        if not sep:
            n = _int(text, "a length")
            if n < 1:
                raise ValueError(f"a length must be 1 or more, got {n}")
            return cls("fixed", n)
        kind = kind.strip().lower()
        args = [p.strip() for p in rest.split(",")] if rest.strip() else []
        if kind == "uniform":
            lo, hi = (_int(a, "uniform bounds") for a in _nargs(kind, args, 2))
            if not 1 <= lo <= hi:
                raise ValueError(f"uniform:{lo},{hi} needs 1 <= LOW <= HIGH")
            return cls("uniform", lo, hi)
        if kind == "normal":
            mean, std = (_float(a, "normal parameters") for a in _nargs(kind, args, 2))
            if mean < 1 or std < 0:
                raise ValueError(f"normal:{mean},{std} needs MEAN >= 1 and STD >= 0")
            return cls("normal", mean, std)
        if kind in ("exponential", "exp"):
            (mean,) = (_float(a, "the exponential mean") for a in _nargs(kind, args, 1))
            if mean < 1:
                raise ValueError(f"exponential:{mean} needs MEAN >= 1")
            return cls("exponential", mean)
        raise ValueError(f"unknown distribution {kind!r}: expected {DIST_HELP}")

    def draw(self, rng: np.random.Generator) -> int:
        if self.kind == "fixed":
            return int(self.a)
        if self.kind == "uniform":
            return int(rng.integers(int(self.a), int(self.b) + 1))
        if self.kind == "normal":
            value = rng.normal(self.a, self.b)
        else:
            value = rng.exponential(self.a)
        return max(1, round(float(value)))

    def __str__(self) -> str:
        if self.kind == "fixed":
            return str(int(self.a))
        if self.kind == "uniform":
            return f"uniform:{int(self.a)},{int(self.b)}"
        if self.kind == "normal":
            return f"normal:{self.a:g},{self.b:g}"
        return f"exponential:{self.a:g}"


def _nargs(kind: str, args: list[str], n: int) -> list[str]:
    if len(args) != n:
        raise ValueError(f"{kind} takes {n} parameter(s), got {len(args)}: expected {DIST_HELP}")
    return args


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{what} must be whole numbers, got {text!r}") from None


def _float(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{what} must be numbers, got {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{what} must be finite, got {text!r}")
    return value


@dataclass(frozen=True, slots=True)
class SampleSpec:
    """Request ``index`` of a run: its prompt tokens, its max_tokens and its sampling seed."""

    index: int
    prompt: list[int]
    max_tokens: int
    seed: int


@dataclass(frozen=True, slots=True)
class Workload:
    """The requests of a sampling run, request ``i`` a pure function of ``(seed, i)``."""

    prompt_len: LengthDist
    output_len: LengthDist
    seed: int = 0
    vocab_size: int = 256

    def spec(self, index: int) -> SampleSpec:
        n_in = self.prompt_len.draw(np.random.default_rng([self.seed, _PROMPT, index]))
        n_out = self.output_len.draw(np.random.default_rng([self.seed, _OUTPUT, index]))
        tokens = np.random.default_rng([self.seed, _TOKENS, index]).integers(
            0, self.vocab_size, size=n_in
        )
        return SampleSpec(index, tokens.tolist(), n_out, (self.seed * 1_000_003 + index) % 2**31)


def arrivals(rate: float, *, seed: int = 0, process: str = "poisson") -> Iterator[float]:
    """Send times (seconds from the start) of an open-loop run at ``rate`` requests/s.

    ``poisson``: exponential gaps of mean 1/rate from the seeded generator (the first request
    goes after the first gap, as in a Poisson process started at 0); ``fixed``: every 1/rate s.
    An endless iterator: the caller stops at its request count or duration.
    """
    if not (rate > 0 and math.isfinite(rate)):
        raise ValueError(f"request rate must be a positive finite number, got {rate}")
    if process not in ("poisson", "fixed"):
        raise ValueError(f"arrival process must be 'poisson' or 'fixed', got {process!r}")
    gap = 1.0 / rate
    t = 0.0
    if process == "fixed":
        i = 0
        while True:
            yield i * gap
            i += 1
    rng = np.random.default_rng([seed, _ARRIVALS])
    while True:
        for g in rng.exponential(gap, size=256):
            t += float(g)
            yield t


def schedule(
    rate: float,
    *,
    seed: int = 0,
    process: str = "poisson",
    requests: int | None = None,
    duration: float | None = None,
) -> list[float]:
    """The first send times of :func:`arrivals`: ``requests`` of them, those before
    ``duration``, or whichever ends first when both are given."""
    if requests is None and duration is None:
        raise ValueError("a schedule needs a request count, a duration, or both")
    out: list[float] = []
    for t in arrivals(rate, seed=seed, process=process):
        if requests is not None and len(out) >= requests:
            break
        if duration is not None and t >= duration:
            break
        out.append(t)
    return out
