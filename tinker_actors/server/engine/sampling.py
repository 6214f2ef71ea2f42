"""Batched sampling with a KV cache: every job of one `sample` call, and every one of their
num_samples, decodes in one lock-step batch.

* Prompts are left-padded and prefilled once per job; the cache rows are then repeated for the
  job's num_samples (the prompt is computed once). Finished sequences leave the batch (their
  cache rows are dropped), so a long sequence does not pay for short ones.
* Randomness: each sequence draws its uniforms up front from its own torch.Generator seeded
  with ``seed + sample_index`` (a random seed when None), and samples by inverse CDF, so the
  tokens depend on the seed and the model only, not on what else is in the batch.
* Reported logprobs are of the *untempered* model distribution (as SkyRL does), so they match
  forward/compute_logprobs and importance ratios are 1 on-policy at temperature 1.
* Stops: a stop token (or EOS when ``stop_at_eos``) is included in the returned tokens. Stop
  strings are matched on the decoded text of the generated tokens only (not the prompt), after
  every token; generation stops at the token that completes the string and that token is the
  last one returned (the text may run past the stop string inside that token), as in SkyRL.
  stop_reason is "stop" for both, "length" when max_tokens ran out.
* max_tokens None means ``min(DEFAULT_MAX_TOKENS, context left)``; a larger max_tokens is cut to
  the context left (stop_reason "length").
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .base import EngineUserError, SampledSeq, SampleJob, SampleOutcome
from .lora import AdapterWeights, use_adapter
from .model import Backend, RowCache

DEFAULT_MAX_TOKENS = 256
TOPK_SENTINEL = (0, -99999.0)


@dataclass(slots=True)
class _Seq:
    job: int
    max_new: int
    stop_tokens: frozenset[int]
    stop_strings: tuple[str, ...]
    window: int
    length: int = 0  # tokens generated, set when it finishes
    reason: str | None = None


def validate_job(job: SampleJob, vocab_size: int, max_context: int, i: int) -> int:
    """Checks one job; returns its effective max_tokens."""
    prompt = np.asarray(job.prompt)
    if prompt.ndim != 1 or prompt.shape[0] == 0:
        raise EngineUserError(f"sample job {i}: the prompt must be a non-empty token sequence")
    if prompt.min() < 0 or prompt.max() >= vocab_size:
        raise EngineUserError(f"sample job {i}: prompt token ids must be in [0, {vocab_size})")
    n = int(prompt.shape[0])
    left = max_context - n
    if left <= 0:
        raise EngineUserError(
            f"sample job {i}: prompt of {n} tokens leaves no room in the context of {max_context}"
        )
    if job.num_samples < 1:
        raise EngineUserError(f"sample job {i}: num_samples must be >= 1")
    if job.temperature < 0:
        raise EngineUserError(f"sample job {i}: temperature must be >= 0")
    if not 0.0 < job.top_p <= 1.0:
        raise EngineUserError(f"sample job {i}: top_p must be in (0, 1]")
    if job.max_tokens is not None and job.max_tokens < 0:
        raise EngineUserError(f"sample job {i}: max_tokens must be >= 0")
    if job.topk_prompt_logprobs < 0:
        raise EngineUserError(f"sample job {i}: topk_prompt_logprobs must be >= 0")
    wanted = DEFAULT_MAX_TOKENS if job.max_tokens is None else job.max_tokens
    return min(wanted, left)


def _choose(
    last: torch.Tensor,
    temps: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    u: torch.Tensor,
    any_random: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Next token per row (greedy where temperature is 0) and its untempered logprob."""
    last = last.float()
    logp = torch.log_softmax(last, dim=-1)
    tok = last.argmax(-1)
    if any_random:
        greedy = temps == 0
        scaled = last / torch.where(greedy, torch.ones_like(temps), temps)[:, None]
        sorted_logits, order = scaled.sort(dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        ranks = torch.arange(probs.shape[-1], device=probs.device)[None]
        keep = ranks < top_k[:, None]
        keep &= (probs.cumsum(-1) - probs) < top_p[:, None]  # always keeps the top token
        cdf = (probs * keep).cumsum(-1)
        target = (u * cdf[:, -1])[:, None]
        pick = torch.searchsorted(cdf, target).clamp(max=probs.shape[-1] - 1)
        sampled = order.gather(-1, pick).squeeze(-1)
        tok = torch.where(greedy, tok, sampled)
    return tok, logp.gather(-1, tok[:, None]).squeeze(-1)


def sample_batch(
    backend: Backend,
    jobs: list[SampleJob],
    decode: Callable[[list[int]], str] | None,
) -> list[SampleOutcome]:
    """Runs ``jobs`` (under the caller's adapter context and inference mode)."""
    dev = backend.device
    vocab, ctx = backend.vocab_size, backend.max_context_length
    max_new = [validate_job(j, vocab, ctx, i) for i, j in enumerate(jobs)]
    if not jobs:
        return []
    prompts = [np.asarray(j.prompt, dtype=np.int64) for j in jobs]
    plen = [p.shape[0] for p in prompts]
    pmax, nmax = max(plen), max(max_new)

    ids = np.full((len(jobs), pmax), backend.pad_id, dtype=np.int64)
    for i, p in enumerate(prompts):
        ids[i, pmax - plen[i] :] = p
    pad_len = torch.tensor([pmax - n for n in plen], device=dev)
    key_mask = torch.arange(pmax + nmax, device=dev)[None] >= pad_len[:, None]
    key_mask[:, pmax:] = False
    positions = (torch.arange(pmax, device=dev)[None] - pad_len[:, None]).clamp(min=0)
    cache = backend.new_cache(len(jobs), pmax + nmax)
    logits = backend.step(torch.from_numpy(ids).to(dev), positions, key_mask[:, :pmax], cache)

    outcomes = [SampleOutcome(sequences=[]) for _ in jobs]
    for i, job in enumerate(jobs):
        if job.prompt_logprobs or job.topk_prompt_logprobs:
            _prompt_logprobs(outcomes[i], logits[i, pmax - plen[i] :], prompts[i], job)
    last = logits[:, -1]
    del logits

    # one row per sequence
    seqs: list[_Seq] = []
    rows: list[int] = []
    uniforms = torch.zeros((sum(j.num_samples for j in jobs), max(nmax, 1)))
    for i, job in enumerate(jobs):
        stops = set(job.stop_tokens)
        if job.stop_at_eos and backend.eos_id is not None:
            stops.add(int(backend.eos_id))
        longest = max((len(s.encode()) for s in job.stop_strings), default=0)
        base_seed = secrets.randbits(62) if job.seed is None else int(job.seed)
        for k in range(job.num_samples):
            g = torch.Generator().manual_seed((base_seed + k) % (1 << 63))
            if max_new[i] > 0:
                uniforms[len(seqs), : max_new[i]] = torch.rand(max_new[i], generator=g)
            seqs.append(
                _Seq(i, max_new[i], frozenset(stops), tuple(job.stop_strings), 4 * longest + 8)
            )
            rows.append(i)
    for s in seqs:
        if s.max_new == 0:
            s.reason = "length"

    alive = [n for n, s in enumerate(seqs) if s.reason is None]
    out_tok = torch.zeros((len(seqs), max(nmax, 1)), dtype=torch.int64, device=dev)
    out_lp = torch.zeros((len(seqs), max(nmax, 1)), dtype=torch.float32, device=dev)
    if alive:
        row_idx = torch.tensor([rows[n] for n in alive], device=dev)
        cache = backend.select(cache, row_idx)
        key_mask, pad_len, last = key_mask[row_idx], pad_len[row_idx], last[row_idx]
        _decode(
            backend,
            jobs,
            seqs,
            alive,
            cache,
            key_mask,
            pad_len,
            last,
            uniforms,
            pmax,
            out_tok,
            out_lp,
            decode,
        )

    tok_np, lp_np = out_tok.cpu().numpy(), out_lp.cpu().numpy()
    for n, s in enumerate(seqs):
        outcomes[s.job].sequences.append(
            SampledSeq(
                tokens=tok_np[n, : s.length].astype(np.int32),
                logprobs=lp_np[n, : s.length].copy(),
                stop_reason="stop" if s.reason == "stop" else "length",
            )
        )
    return outcomes


def _decode(
    backend: Backend,
    jobs: list[SampleJob],
    seqs: list[_Seq],
    alive: list[int],
    cache: Any,  # the backend's (Backend.new_cache)
    key_mask: torch.Tensor,
    pad_len: torch.Tensor,
    last: torch.Tensor,
    uniforms: torch.Tensor,
    pmax: int,
    out_tok: torch.Tensor,
    out_lp: torch.Tensor,
    decode: Callable[[list[int]], str] | None,
) -> None:
    """The decode loop, vectorised: tokens and logprobs go into ``out_tok``/``out_lp`` rows
    (one per sequence), stop tokens and lengths are checked as tensors, and only sequences
    with stop strings are decoded in Python. Every live sequence has generated ``step + 1``
    tokens after a step, since all start together.

    Finished rows stay in the batch (their extra tokens land past their length and are never
    read) until enough have finished to pay for compacting the KV cache: dropping a row copies
    every cache row, once per finished sequence before.
    """
    dev = backend.device
    vocab, ctx = backend.vocab_size, backend.max_context_length
    uniforms = uniforms.to(dev)
    job_of = [jobs[seqs[n].job] for n in alive]
    temps = torch.tensor([j.temperature for j in job_of], device=dev, dtype=torch.float32)
    top_k = torch.tensor([j.top_k if j.top_k > 0 else vocab for j in job_of], device=dev)
    top_p = torch.tensor([j.top_p for j in job_of], device=dev, dtype=torch.float32)
    max_new = torch.tensor([seqs[n].max_new for n in alive], device=dev)
    width = max(len(seqs[n].stop_tokens) for n in alive)
    stop_tab = None
    if width:
        padded = [sorted(seqs[n].stop_tokens) + [-1] * width for n in alive]
        stop_tab = torch.tensor([p[:width] for p in padded], device=dev)
    # the decoder, when some sequence has stop strings
    string_decode = decode if any(seqs[n].stop_strings for n in alive) else None
    any_random = bool((temps > 0).any())
    alive_t = torch.tensor(alive, device=dev)
    live = torch.ones(len(alive), dtype=torch.bool, device=dev)
    n_live = len(alive)
    history: dict[int, list[int]] = {}  # generated tokens of the sequences with stop strings
    streams = _token_streams(jobs, seqs)  # seq -> (on_token, sample index); usually empty
    cur, step = pmax, 0
    while True:
        tok, lp = _choose(last, temps, top_k, top_p, uniforms[alive_t, step], any_random)
        out_tok[alive_t, step] = tok
        out_lp[alive_t, step] = lp
        stopped = torch.zeros_like(live) if stop_tab is None else (tok[:, None] == stop_tab).any(-1)
        if streams:
            ended = _emit_tokens(streams, alive, step, tok, lp, live)
            if ended:
                stopped[torch.tensor(ended, device=dev)] = True
        if string_decode is not None:
            tl = tok.tolist()
            flags = live.tolist()
            hits = []
            for r, n in enumerate(alive):
                seq = seqs[n]
                if not seq.stop_strings or not flags[r]:
                    continue
                h = history.setdefault(n, [])
                h.append(tl[r])
                text = string_decode(h[-seq.window :])
                if any(x and x in text for x in seq.stop_strings):
                    hits.append(r)
            if hits:
                stopped[torch.tensor(hits, device=dev)] = True
        stopped &= live
        done = stopped | (live & (max_new <= step + 1))
        finished = done.nonzero().flatten().tolist()
        if finished:
            stop_flags = stopped[finished].tolist()
            for r, st in zip(finished, stop_flags, strict=True):
                seq = seqs[alive[r]]
                seq.length = step + 1
                seq.reason = "stop" if st else "length"
            live &= ~done
            n_live -= len(finished)
            if n_live == 0:
                break
            if len(alive) - n_live >= max(1, len(alive) // 8):
                k_t = live.nonzero().flatten()
                cache = backend.select(cache, k_t)
                key_mask, pad_len, tok = key_mask[k_t], pad_len[k_t], tok[k_t]
                temps, top_k, top_p, alive_t = temps[k_t], top_k[k_t], top_p[k_t], alive_t[k_t]
                max_new, live = max_new[k_t], live[k_t]
                if stop_tab is not None:
                    stop_tab = stop_tab[k_t]
                alive = [alive[r] for r in k_t.tolist()]
                any_random = bool((temps > 0).any())
        key_mask[:, cur] = True
        # a finished row still in the batch may run past the context; its output is unused
        pos = (cur - pad_len).clamp(max=ctx - 1)[:, None]
        last = backend.step(tok[:, None], pos, key_mask[:, : cur + 1], cache)[:, -1]
        cur += 1
        step += 1


def _token_streams(
    jobs: list[SampleJob], seqs: list[_Seq]
) -> dict[int, tuple[Callable[[int, int, int, float], bool], int]]:
    """The streamed sequences (``SampleJob.on_token``) with their sample index in the job."""
    out: dict[int, tuple[Callable[[int, int, int, float], bool], int]] = {}
    counts: dict[int, int] = {}
    for n, s in enumerate(seqs):
        k = counts.get(s.job, 0)
        counts[s.job] = k + 1
        cb = jobs[s.job].on_token
        if cb is not None:
            out[n] = (cb, k)
    return out


def _emit_tokens(
    streams: dict[int, tuple[Callable[[int, int, int, float], bool], int]],
    alive: list[int],
    step: int,
    tok: torch.Tensor,
    lp: torch.Tensor,
    live: torch.Tensor,
) -> list[int]:
    """Hands this step's tokens to the streams; returns the rows whose stream ended."""
    tl, ll, fl = tok.tolist(), lp.tolist(), live.tolist()
    ended = []
    for r, n in enumerate(alive):
        stream = streams.get(n)
        if stream is not None and fl[r] and not stream[0](stream[1], step, tl[r], ll[r]):
            ended.append(r)
    return ended


def _prompt_logprobs(
    out: SampleOutcome, logits: torch.Tensor, prompt: np.ndarray, job: SampleJob
) -> None:
    """Logprobs of prompt[i] given prompt[:i] (NaN at 0), and the top-k alternatives."""
    logp = torch.log_softmax(logits[:-1].float(), dim=-1)  # row i predicts prompt[i + 1]
    target = torch.from_numpy(prompt[1:]).to(logp.device)
    if job.prompt_logprobs:
        lp = logp.gather(-1, target[:, None]).squeeze(-1).cpu().numpy()
        out.prompt_logprobs = np.concatenate([[np.nan], lp]).astype(np.float32)
    k = job.topk_prompt_logprobs
    if k:
        p = prompt.shape[0]
        ids = np.full((p, k), TOPK_SENTINEL[0], dtype=np.int32)
        vals = np.full((p, k), TOPK_SENTINEL[1], dtype=np.float32)
        kk = min(k, logp.shape[-1])
        if p > 1:
            top = logp.topk(kk, dim=-1)
            ids[1:, :kk] = top.indices.cpu().numpy()
            vals[1:, :kk] = top.values.cpu().numpy()
        out.topk_prompt_logprobs = (ids, vals)


# --------------------------------------------------------------------------------------------
# continuous batching


@dataclass(slots=True)
class _Entry:
    """One admitted job: the caller's handle and the sequences still decoding."""

    job: SampleJob
    handle: object
    outcome: SampleOutcome
    seqs: list[SampledSeq | None]
    left: int


@dataclass(slots=True)
class _Row:
    """One sequence in a slot of the running batch."""

    entry: _Entry
    index: int  # sample index within the job
    max_new: int
    stops: frozenset[int]
    stop_strings: tuple[str, ...]
    window: int
    stream: Callable[[int, int, int, float], bool] | None
    tokens: list[int]
    logprobs: list[float]
    active: bool = False  # decoding (its prefill is done)
    random: bool = False  # temperature > 0


@dataclass(slots=True)
class _Prefill:
    """A job admitted since the last step: its prompt goes into ``slots[0]`` (and is copied
    to its other samples' slots)."""

    entry: _Entry
    prompt: np.ndarray
    slots: list[int]
    max_new: int


class ContinuousBatch:
    """A running batch that jobs join and leave at any decode step (continuous batching).

    Every sequence holds a slot (a row of a ``RowCache``) from its prefill to its last token;
    a row's keys sit at positions 0..len-1 of its slot, so rows of any length decode together
    (each at its own position, its mask hiding the rest of the slot). ``admit`` gives new
    jobs their slots; the next ``step`` is one forward (``Backend.forward_rows``) that
    prefills them (right-padded, flattened into the same linear layers as the decode, as
    vLLM's mixed prefill/decode batches do) and decodes one token for every running row, and
    picks the first token of the new rows with the others. A finished sequence frees its
    slot at once, and a job's outcome is returned by the step in which its last sequence
    finished. Freed slots are reused by the next admissions; when many lie below the top, the
    top rows move down (a copy of those rows only), so the forward pass does not carry holes.

    Per-row state (length, temperature, uniforms, last token) lives in tensors indexed by
    slot. Seeds, stops, streams and logprobs behave as in ``sample_batch``: each sequence
    draws its uniforms from its own generator, so its tokens do not depend on its neighbours.

    Thread-confined: one thread at a time calls ``admit``/``step``; ``step`` runs under the
    sampler's weights (``weights`` for ``use_adapter``) and inference mode.
    """

    # per-slot state, made and grown by _grow
    _len: torch.Tensor
    _step: torch.Tensor
    _alive: torch.Tensor
    _tok: torch.Tensor
    _temps: torch.Tensor
    _topk: torch.Tensor
    _topp: torch.Tensor
    _u: torch.Tensor  # [slots, ucap] uniforms

    def __init__(
        self,
        backend: Backend,
        weights: AdapterWeights | None,
        decode: Callable[[list[int]], str] | None,
    ) -> None:
        self.backend = backend
        self._weights = weights
        self._decode = decode
        self._dev = backend.device
        self._cache: RowCache | None = None
        self._plan: Any = None  # backend.rows_plan(weights), made by the first step
        self._rows: list[_Row | None] = []  # by slot; len(self._rows) is the batch height
        self._free: list[int] = []  # free slots below the top
        self._cap = 0
        self._ucap = 0
        self._random = 0  # rows with temperature > 0
        self._active = 0  # rows decoding (prefilled)
        self._pending: list[_Prefill] = []  # admitted, prefilled by the next step
        self.jobs = 0  # admitted jobs not finished

    @property
    def live(self) -> int:
        return len(self._rows) - len(self._free)

    # state ------------------------------------------------------------------------------
    def _grow(self, rows: int, ucap: int) -> None:
        if rows <= self._cap and ucap <= self._ucap:
            return
        cap = self._cap if rows <= self._cap else max(rows, 2 * self._cap, 8)
        ucap = max(ucap, self._ucap)
        dev, old = self._dev, self._cap
        specs = {
            "_len": torch.int64,
            "_step": torch.int64,
            "_alive": torch.int64,
            "_tok": torch.int64,
            "_temps": torch.float32,
            "_topk": torch.int64,
            "_topp": torch.float32,
        }
        for name, dtype in specs.items():
            t = torch.zeros(cap, device=dev, dtype=dtype)
            if old:
                t[:old] = getattr(self, name)
            setattr(self, name, t)
        u = torch.zeros((cap, ucap), device=dev)
        if old:
            u[:old, : self._ucap] = self._u
        self._u = u
        if old:
            self._topk[old:] = self.backend.vocab_size
            self._topp[old:] = 1.0
        else:
            self._topk.fill_(self.backend.vocab_size)
            self._topp.fill_(1.0)
        self._cap, self._ucap = cap, ucap

    def _take_slot(self) -> int:
        if self._free:
            self._free.sort()
            return self._free.pop(0)
        self._rows.append(None)
        return len(self._rows) - 1

    def _release(self, slot: int) -> None:
        row = self._rows[slot]
        if row is not None:
            self._random -= row.random
            self._active -= row.active
        self._rows[slot] = None
        self._alive[slot] = 0
        self._len[slot] = 0
        self._temps[slot] = 0.0
        self._free.append(slot)
        while self._rows and self._rows[-1] is None:
            self._rows.pop()
            self._free.remove(len(self._rows))

    def _compact(self) -> None:
        """Moves the top rows into the holes below them once holes are a quarter of the batch."""
        if len(self._free) * 4 < len(self._rows) or not self._free or self._pending:
            return
        self._free.sort()
        src, dst = [], []
        top = len(self._rows) - 1
        for hole in self._free:
            while top > hole and self._rows[top] is None:
                top -= 1
            if top <= hole:
                break
            src.append(top)
            dst.append(hole)
            self._rows[hole], self._rows[top] = self._rows[top], None
            top -= 1
        if not src:
            return
        s = torch.tensor(src, device=self._dev)
        d = torch.tensor(dst, device=self._dev)
        keys = int(self._len[s].max()) + 1
        assert self._cache is not None  # rows exist: admit made it
        self._cache.move(s, d, min(keys, self._cache.max_len))
        for name in ("_len", "_step", "_alive", "_tok", "_temps", "_topk", "_topp", "_u"):
            t = getattr(self, name)
            t[d] = t[s]
        for name in ("_len", "_alive", "_temps"):
            getattr(self, name)[s] = 0
        while self._rows and self._rows[-1] is None:
            self._rows.pop()
        self._free = [i for i in range(len(self._rows)) if self._rows[i] is None]

    # admission ---------------------------------------------------------------------------
    def admit(self, items: list[tuple[SampleJob, object]]) -> list[tuple[object, object]]:
        """Queues ``items`` (job, handle) for the prefill of the next ``step``, which also
        picks their first tokens. Returns (handle, EngineUserError) for the bad ones."""
        backend, dev = self.backend, self._dev
        vocab, ctx = backend.vocab_size, backend.max_context_length
        done: list[tuple[object, object]] = []
        ok: list[tuple[SampleJob, object, int]] = []
        for i, (job, handle) in enumerate(items):
            try:
                ok.append((job, handle, validate_job(job, vocab, ctx, i)))
            except EngineUserError as exc:
                done.append((handle, exc))
        if not ok:
            return done
        eos = backend.eos_id
        new_rows: list[int] = []
        # each row's uniforms, written into _u with one index assignment per length
        uniforms: dict[int, tuple[list[int], list[torch.Tensor]]] = {}
        for job, handle, max_new in ok:
            prompt = np.asarray(job.prompt, dtype=np.int64)
            e = _Entry(job, handle, SampleOutcome(sequences=[]), [None] * job.num_samples, 0)
            self.jobs += 1
            stops = set(job.stop_tokens)
            if job.stop_at_eos and eos is not None:
                stops.add(int(eos))
            longest = max((len(x.encode()) for x in job.stop_strings), default=0)
            # a job with nothing to generate holds one slot for its prefill only
            slots = [self._take_slot() for _ in range(job.num_samples if max_new else 1)]
            self._grow(len(self._rows), max_new)
            base_seed = secrets.randbits(62) if job.seed is None else int(job.seed)
            for k, slot in enumerate(slots):
                row = _Row(
                    e,
                    k,
                    max_new,
                    frozenset(stops),
                    tuple(job.stop_strings),
                    4 * longest + 8,
                    job.on_token,
                    [],
                    [],
                )
                self._rows[slot] = row
                if max_new:
                    g = torch.Generator().manual_seed((base_seed + k) % (1 << 63))
                    rows_u = uniforms.setdefault(max_new, ([], []))
                    rows_u[0].append(slot)
                    rows_u[1].append(torch.rand(max_new, generator=g))
                    row.random = job.temperature > 0
                    self._random += row.random
                    new_rows.append(slot)
            e.left = job.num_samples if max_new else 0
            self._pending.append(_Prefill(e, prompt, slots, max_new))
        need = max(int(p.prompt.shape[0]) + p.max_new for p in self._pending)
        if self._cache is None:
            cache = backend.new_row_cache(self._cap, min(ctx, _round_up(need)))
            if cache is None:
                raise TypeError(f"{type(backend).__name__} has no continuous batching")
            self._cache = cache
        else:
            cur = self._cache.max_len
            length = cur if need <= cur else min(ctx, max(_round_up(need), 2 * cur))
            self._cache.grow(self._cap, length)
        for max_new, (u_slots, u_rows) in uniforms.items():
            self._u[torch.tensor(u_slots, device=dev), :max_new] = torch.stack(u_rows).to(dev)
        if new_rows:
            s_t = torch.tensor(new_rows, device=dev)
            jobs = [r.entry.job for x in new_rows if (r := self._rows[x]) is not None]
            self._temps[s_t] = torch.tensor([j.temperature for j in jobs], device=dev)
            self._topk[s_t] = torch.tensor(
                [j.top_k if j.top_k > 0 else vocab for j in jobs], device=dev
            )
            self._topp[s_t] = torch.tensor([j.top_p for j in jobs], device=dev)
            self._step[s_t] = 0
        return done

    # decoding ----------------------------------------------------------------------------
    def step(self) -> list[tuple[object, object]]:
        """One forward: the prefill of the jobs admitted since the last step (their first
        tokens) and the next token of every decoding row. Returns (handle, SampleOutcome) of
        the jobs that finished."""
        with torch.inference_mode(), use_adapter(self._weights):
            return self._step_once()

    def _step_once(self) -> list[tuple[object, object]]:
        h = len(self._rows)
        if h == 0:
            return []
        backend, dev, cache = self.backend, self._dev, self._cache
        assert cache is not None  # rows exist: admit made it
        pend, self._pending = self._pending, []
        ids = first = None
        if pend:
            plen = [p.prompt.shape[0] for p in pend]
            arr = np.full((len(pend), max(plen)), backend.pad_id, dtype=np.int64)
            for i, p in enumerate(pend):
                arr[i, : plen[i]] = p.prompt
            ids = torch.from_numpy(arr).to(dev)
            first = torch.tensor([p.slots[0] for p in pend], device=dev)
        b = h if self._active else 0  # the decode part (rows 0..h-1, holes included)
        lens = self._len[:b]
        keys = int(lens.max()) + 1 if b else 1
        key_mask = torch.arange(keys, device=dev)[None] <= lens[:, None]
        if self._plan is None:  # the weights in force for the batch's life, as plain tensors
            self._plan = backend.rows_plan(self._weights)
        dec, pre = backend.forward_rows(
            self._plan, cache, self._tok[:b], lens, key_mask, ids, first
        )
        last = dec if b else torch.zeros((h, backend.vocab_size), device=dev)
        fresh: list[int] = []
        done: list[tuple[object, object]] = []
        if pend:
            assert pre is not None and ids is not None
            src, dst, rows_src, fresh_len = [], [], [], []
            for i, p in enumerate(pend):
                job = p.entry.job
                if job.prompt_logprobs or job.topk_prompt_logprobs:
                    _prompt_logprobs(p.entry.outcome, pre[i, : plen[i]], p.prompt, job)
                if not p.max_new:
                    continue
                for slot in p.slots:
                    fresh.append(slot)
                    rows_src.append(i)
                    fresh_len.append(plen[i])
                    if slot != p.slots[0]:
                        src.append(p.slots[0])
                        dst.append(slot)
            if src:  # the other samples of a job start from its prefill
                cache.move(
                    torch.tensor(src, device=dev), torch.tensor(dst, device=dev), ids.shape[1]
                )
            if fresh:
                f_t = torch.tensor(fresh, device=dev)
                r_t = torch.tensor(rows_src, device=dev)
                last[f_t] = pre[r_t, torch.tensor(fresh_len, device=dev) - 1]
        u = self._u[torch.arange(h, device=dev), self._step[:h].clamp(max=self._ucap - 1)]
        tok, lp = _choose(
            last, self._temps[:h], self._topk[:h], self._topp[:h], u, self._random > 0
        )
        alive = self._alive[:h]
        self._len[:h] += alive
        self._step[:h] += alive
        if fresh:
            self._len[f_t] = torch.tensor(fresh_len, device=dev)
            self._step[f_t] = 1
            self._alive[f_t] = 1
            for slot in fresh:
                fresh_row = self._rows[slot]
                assert fresh_row is not None
                fresh_row.active = True
            self._active += len(fresh)
        self._tok[:h] = tok
        for p in pend:
            if not p.max_new:  # nothing to generate: done with its prefill
                for k in range(p.entry.job.num_samples):
                    p.entry.seqs[k] = _empty_seq()
                self._release(p.slots[0])
                self._finish_entry(p.entry, done)
        live = [x for x in range(len(self._rows)) if (r := self._rows[x]) is not None and r.active]
        self._after(live, tok.tolist(), lp.tolist(), done)
        self._compact()
        return done

    def _after(
        self, slots: list[int], tl: list[int], ll: list[float], done: list[tuple[object, object]]
    ) -> None:
        """Records each row's new token (``tl``/``ll`` are by slot) and retires the rows that
        stop: their slots are free at once, and a job whose last row stopped is done."""
        decode = self._decode
        for slot in slots:
            row = self._rows[slot]
            assert row is not None  # ``slots`` are live rows
            t, lp = tl[slot], ll[slot]
            step = len(row.tokens)
            row.tokens.append(t)
            row.logprobs.append(lp)
            stopped = t in row.stops
            if row.stream is not None and not row.stream(row.index, step, t, lp):
                stopped = True
            if not stopped and row.stop_strings and decode is not None:
                text = decode(row.tokens[-row.window :])
                stopped = any(x and x in text for x in row.stop_strings)
            if stopped or step + 1 >= row.max_new:
                e = row.entry
                e.seqs[row.index] = SampledSeq(
                    tokens=np.asarray(row.tokens, dtype=np.int32),
                    logprobs=np.asarray(row.logprobs, dtype=np.float32),
                    stop_reason="stop" if stopped else "length",
                )
                e.left -= 1
                self._release(slot)
                if e.left == 0:
                    self._finish_entry(e, done)

    def _finish_entry(self, e: _Entry, done: list[tuple[object, object]]) -> None:
        e.outcome.sequences = [s for s in e.seqs if s is not None]
        self.jobs -= 1
        done.append((e.handle, e.outcome))

    def abort(self) -> list[object]:
        """Drops every row; returns the handles of the unfinished jobs."""
        handles = {id(r.entry): r.entry.handle for r in self._rows if r is not None}
        handles.update((id(p.entry), p.entry.handle) for p in self._pending)
        self._rows, self._free, self._pending = [], [], []
        self._random = self._active = self.jobs = 0
        self._cache = None
        self._cap = 0
        self._ucap = 0
        return list(handles.values())


def _round_up(n: int, to: int = 64) -> int:
    return -(-n // to) * to


def _empty_seq() -> SampledSeq:
    return SampledSeq(
        tokens=np.zeros(0, dtype=np.int32),
        logprobs=np.zeros(0, dtype=np.float32),
        stop_reason="length",
    )
