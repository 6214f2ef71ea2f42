"""Client instructions per sample, counted by callgrind: a cost that moves far less with
the machine's load than CPU seconds do, where the client's work does not depend on timing.

CPU seconds on a shared 2-core VM wander by 10-20 % between runs of the same code, which is
more than the differences a change to the hot path makes. Valgrind's callgrind counts the
instructions the client process executes instead. Each client runs the sampling scenario
twice under callgrind, with ``n`` and ``2 n`` samples against one null-engine server;
``(I(2n) - I(n)) / n`` is the cost of one sample without the start-up, the imports and the
warm-up. Under callgrind a client runs 20-50 times slower, so the server answers at once:
this measures the client's work, not its latency.

How repeatable it is depends on the client. The floor's count moves by about 2 % (the
garbage collector's timing). Ours at 64 concurrent moves by about 2 % too, which makes it
the measure to judge a hot-path change by. At 1,000 and more in flight ours moved by
-5 % to +50 % between runs: how many results one hand-off between the loops carries, and
how many calls wait for one of the 400 dispatch slots, follow the timing of the replies.
Take those scenarios' counts as samples of a range, not as one number.

    python -m benchmarks --instructions            # floor and tinker_actors, 64 concurrent
    python -m benchmarks --instructions --only sample_c1000 --clients floor,tinker_actors

Needs ``valgrind`` on the PATH (it is not a Python package); takes about 2 minutes per
client and scenario at 1,000 samples. Run it on an otherwise idle machine: a server starved
of CPU answers long polls with ``try_again``, and the extra exchanges count as client work
(the run warns when a sample took other than two HTTP requests).
"""

from __future__ import annotations

import concurrent.futures
import datetime
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from . import __main__ as bench

DEFAULT_CLIENTS = ("floor", "tinker_actors")
#: where ``--instructions`` keeps its last run; docs/benchmarks.md shows it
RESULTS = bench.ROOT / "benchmarks" / "instructions.json"
DEFAULT_SCENARIOS = ("sample_c64",)
#: asample + one retrieve_future long poll, as every client here makes them
EXCHANGES_PER_SAMPLE = 2

_TOTALS = re.compile(rb"^(?:totals|summary):\s*(\d+)", re.MULTILINE)


def collected(callgrind_out: Path) -> int:
    """The instructions a callgrind output file counts in all (its ``totals:`` line)."""
    m = _TOTALS.search(callgrind_out.read_bytes())
    if m is None:
        raise ValueError(f"{callgrind_out}: no totals line; not a callgrind output file?")
    return int(m.group(1))


def per_sample(small: int, large: int, n: int) -> float:
    """Instructions of one sample from runs of ``n`` and ``2 n`` samples."""
    if large <= small:
        raise ValueError(f"the run of {2 * n} samples counted no more than the run of {n}")
    return (large - small) / n


def too_many_exchanges(small: int, large: int, n: int) -> bool:
    """More than two requests per sample beyond a few background ones (heartbeats): a
    starved server answers long polls with try_again, and those exchanges are not the
    client's own cost."""
    return large - small > EXCHANGES_PER_SAMPLE * n * 1.01


def samples_for(spec: bench.Spec) -> int:
    """``n``: one wave of the scenario's concurrency, and at least 1,000 samples."""
    return max(1000, int(spec.params["concurrency"]))


def _count(client: str, spec: bench.Spec, total: int, workdir: Path) -> tuple[int, int]:
    """(instructions, HTTP requests the server counted in the timed region) of one run."""
    server = bench.start_server(spec.engine, workdir)
    try:
        params = dict(spec.params, total=total)
        out = workdir / f"callgrind-{spec.key}-{client}-{total}.out"
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
        cmd += bench.worker_cmd(client, spec, server.base_url, params)
        proc = subprocess.run(
            cmd, cwd=bench.ROOT, env=bench.worker_env(), capture_output=True, timeout=3600
        )
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(b"BENCH_RESULT ")]
        if not lines or not out.exists():
            tail = proc.stderr.decode(errors="replace")[-800:]
            raise RuntimeError(f"{client} on {spec.key} ({total} samples) failed: {tail}")
        result = json.loads(lines[-1][len(b"BENCH_RESULT ") :])
        return collected(out), int(result.get("http_requests", 0))
    finally:
        server.stop()


def run(spec_list: list[bench.Spec], clients: tuple[str, ...], log: Any) -> dict[str, Any]:
    """``{scenario: {client: instructions per sample}}``; two counts run at a time."""
    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind on the PATH (apt install valgrind)")
    workdir = Path(tempfile.mkdtemp(prefix="tinker-instr-"))
    jobs = [
        (spec, client, total)
        for spec in spec_list
        for client in clients
        for total in (samples_for(spec), 2 * samples_for(spec))
    ]
    counts: dict[tuple[str, str, int], tuple[int, int]] = {}
    try:
        with concurrent.futures.ThreadPoolExecutor(max(1, min(2, os.cpu_count() or 1))) as ex:
            futs = {ex.submit(_count, c, s, t, workdir): (s.key, c, t) for s, c, t in jobs}
            for fut in concurrent.futures.as_completed(futs):
                key = futs[fut]
                counts[key] = fut.result()
                instr, http = counts[key]
                log(f"  {key[0]} {key[1]} {key[2]} samples: {instr:,} instructions, {http} HTTP")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    out: dict[str, Any] = {}
    for spec in spec_list:
        n = samples_for(spec)
        out[spec.key] = {}
        for c in clients:
            (i1, h1), (i2, h2) = counts[(spec.key, c, n)], counts[(spec.key, c, 2 * n)]
            out[spec.key][c] = per_sample(i1, i2, n)
            if too_many_exchanges(h1, h2, n):
                log(
                    f"  WARNING {spec.key} {c}: {(h2 - h1) / n:.3f} HTTP requests per sample, "
                    f"not {EXCHANGES_PER_SAMPLE}; was the machine busy?"
                )
    return out


def render(results: dict[str, Any], clients: tuple[str, ...]) -> str:
    """A markdown table: thousands of instructions per sample, and each client's ratio to
    the first client (the floor by default)."""
    ref = clients[0]
    head = "| scenario | " + " | ".join(f"{c} (k instr/sample)" for c in clients)
    head += "".join(f" | {c} / {ref}" for c in clients[1:]) + " |"
    rows = [head, "|" + "---|" * (1 + 2 * len(clients) - 1)]
    for key, per in results.items():
        cells = [f"{per[c] / 1e3:,.0f}" for c in clients]
        cells += [f"{per[c] / per[ref]:.2f}x" for c in clients[1:]]
        rows.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def section(saved: dict[str, Any]) -> list[str]:
    """docs/benchmarks.md's lines for the last ``--instructions`` run."""
    meta = saved["meta"]
    return [
        "## Instructions per sample (callgrind)",
        "",
        "CPU seconds on this shared VM move by 10-20 % between runs of the same code. "
        "`python -m benchmarks --instructions` counts the instructions a client process "
        "executes instead (valgrind's callgrind), from two runs of *n* and *2n* samples: "
        "(I(2n) - I(n)) / n is one sample without start-up and imports. At 64 concurrent "
        "both clients' counts repeat within about 2 %, so this is the measure to judge a "
        "hot-path change by. At 1,000 and more in flight our client's count moved by "
        "-5 % to +50 % between runs (how many results one hand-off between the loops "
        "carries, and how many calls wait for a dispatch slot, follow the replies' timing), "
        "so those scenarios are not run by default. It counts user-space work only: the "
        "kernel's share of each exchange (sockets, epoll), the same for every client, is not "
        "in it, so these ratios run higher than the CPU-second ratios above. Run it on an "
        "otherwise idle machine: a server starved of CPU answers long polls with "
        "`try_again`, which adds exchanges (the run warns when a sample took other than two "
        "requests).",
        "",
        f"Last run: {meta['date']}, commit {meta['commit']}, `{meta['command']}`.",
        "",
        *render(saved["scenarios"], tuple(meta["clients"])).splitlines(),
        "",
    ]


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=bench.ROOT, capture_output=True
        )
        # the code that ran: the package and the benchmark workers (not their result files)
        code = ["tinker_actors", "benchmarks/*.py"]
        diff = subprocess.run(["git", "diff", "--quiet", "HEAD", "--", *code], cwd=bench.ROOT)
        dirty = diff.returncode != 0
        return out.stdout.decode().strip() + ("+changes" if dirty else "")
    except OSError:
        return "unknown"


def main(only: str, clients_arg: str, log: Any, write: bool = True) -> dict[str, Any]:
    spec_list = [s for s in bench.specs(False) if s.scenario == "sample"]
    keys = [k.strip() for k in only.split(",") if k.strip()] or list(DEFAULT_SCENARIOS)
    spec_list = [s for s in spec_list if s.key in keys]
    if not spec_list:
        raise SystemExit(f"--instructions measures the sampling scenarios, not {only!r}")
    clients = tuple(c for c in clients_arg.split(",") if c) or DEFAULT_CLIENTS
    results = run(spec_list, clients, log)
    print(render(results, clients), end="")
    saved = {
        "meta": {
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": _commit(),
            "command": "python -m benchmarks --instructions"
            + (f" --only {only}" if only else "")
            + (f" --clients {clients_arg}" if clients_arg else ""),
            "clients": list(clients),
            "samples": {s.key: samples_for(s) for s in spec_list},
        },
        "scenarios": results,
    }
    if write:
        RESULTS.write_text(json.dumps(saved, indent=1) + "\n")
        log(f"wrote {RESULTS}")
    return saved


def load() -> dict[str, Any] | None:
    """The last ``--instructions`` run, if one was kept."""
    try:
        saved: dict[str, Any] = json.loads(RESULTS.read_text())
    except (OSError, ValueError):
        return None
    return saved
