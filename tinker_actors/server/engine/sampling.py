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

import numpy as np
import torch

from .base import EngineUserError, SampledSeq, SampleJob, SampleOutcome
from .model import Backend

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
    left = max_context - prompt.shape[0]
    if left <= 0:
        raise EngineUserError(
            f"sample job {i}: prompt of {prompt.shape[0]} tokens leaves no room in the "
            f"context of {max_context}"
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
    cache,
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
    use_strings = decode is not None and any(seqs[n].stop_strings for n in alive)
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
        if use_strings:
            tl = tok.tolist()
            flags = live.tolist()
            hits = []
            for r, n in enumerate(alive):
                seq = seqs[n]
                if not seq.stop_strings or not flags[r]:
                    continue
                h = history.setdefault(n, [])
                h.append(tl[r])
                text = decode(h[-seq.window :])
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
