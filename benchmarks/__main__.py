"""``python -m benchmarks [--quick]``: tinker_actors vs the official SDK vs the floor.

Every scenario runs each client in a fresh interpreter (so CPU and RSS are per client) against
the same local server, which runs in its own process (``benchmarks.server_launcher``), so the
server's CPU is not charged to the client. Clients of a repetition run one after the other,
rotating the order between repetitions. Results: medians over the repetitions, written to
``docs/benchmarks.md`` (markdown) and ``benchmarks/results.json``.

Options: ``--quick`` (short run), ``--reps N``, ``--only KEY[,KEY...]`` (scenario keys or
prefixes: sample, fwdbwd, train, idle, torch), ``--clients floor,official,tinker_actors``,
``--profile DIR`` (instead of benchmarking: run our client and the official one once per
scenario under py-spy, writing collapsed stacks and a summary to DIR), ``--no-write``.

``--check``: the benchmark gate (``benchmarks/gate.py``). Runs the selected scenarios as the
committed ``benchmarks/results.json`` ran them (its quick flag and repetitions), writes
nothing, compares the ratios (ours vs official, ours vs floor) with the baseline's and exits
1 on a regression beyond the run-to-run spread. ``--current FILE`` compares a saved run
instead of running; ``--save FILE`` keeps the checked run; ``--baseline FILE``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import gate

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
API_KEY = "tml-bench-local-key"
CLIENTS = ("floor", "official", "tinker_actors")
# tinker_actors in its opt-in caller-loop mode (TINKER_ACTORS_LOOP=caller): run beside the
# default in the scenarios where the runtime thread's cost shows, so each run records it.
CALLER = "tinker_actors_caller"
# the floor sending only the headers our server needs, not the protocol's: recorded beside
# the floor in the sampling scenarios, the least any HTTP client could do there
FLOOR_MIN = "floor_min"
NAMES = {
    "floor": "floor (bare aiohttp)",
    FLOOR_MIN: "floor, bare minimum of headers",
    "official": "official tinker 0.38.0",
    "tinker_actors": "tinker_actors",
    CALLER: "tinker_actors, caller loop (opt-in)",
    "bare_torch": "bare torch loop (floor)",
}


# --------------------------------------------------------------------------- specs
@dataclass
class Metric:
    key: str
    label: str
    better: str  # "lo" or "hi"; "info" is shown without a ratio
    fmt: str = "{:.3g}"


@dataclass
class Spec:
    key: str
    group: str
    label: str
    engine: str
    scenario: str
    params: dict[str, Any]
    metrics: list[Metric]
    headline: list[str]
    clients: tuple[str, ...] = CLIENTS
    timeout: float = 120.0
    reps: int | None = None
    prep: dict[str, int] | None = None  # floor forward_backward bodies: datums, tokens
    concurrent: bool = False  # idle: one server per client, clients at the same time
    note: str = ""


SAMPLE_METRICS = [
    Metric("req_per_s", "requests/s", "hi", "{:.0f}"),
    Metric("p50_ms", "p50 latency ms", "lo", "{:.1f}"),
    Metric("p99_ms", "p99 latency ms", "lo", "{:.1f}"),
    Metric("cpu_s", "client CPU s", "lo", "{:.3f}"),
    Metric("proc_maxrss_mb", "peak RSS MB", "lo", "{:.0f}"),
    Metric("rss_growth_mb", "peak RSS - RSS after import, MB", "lo", "{:.0f}"),
    Metric("http_requests", "HTTP requests (server)", "info", "{:.0f}"),
    Metric("server_cpu_s", "server CPU s", "info", "{:.2f}"),
    Metric("gc_s", "client GC CPU s (in client CPU s)", "info", "{:.3f}"),
    Metric("gc_gen0_runs", "young collections (gen 0)", "info", "{:.0f}"),
    Metric("gc_gen2_runs", "full collections (gen 2)", "info", "{:.0f}"),
]


def specs(quick: bool) -> list[Spec]:
    q = quick
    bm = "tinker-actors/byte-1m"
    out: list[Spec] = []
    totals = {1: 100 if q else 300, 64: 640 if q else 1920, 1000: 1000 if q else 3000, 5000: 5000}
    for conc in (1, 64, 1000, 5000):
        out.append(
            Spec(
                key=f"sample_c{conc}",
                group="1. Sampling, null engine",
                label=f"{conc:,} concurrent sample_async",
                engine="null",
                scenario="sample",
                params={
                    "base_model": bm,
                    "prompt_tokens": 16,
                    "max_tokens": 16,
                    "concurrency": conc,
                    "total": totals[conc],
                },
                metrics=SAMPLE_METRICS,
                headline=["req_per_s", "p99_ms", "cpu_s", "proc_maxrss_mb", "rss_growth_mb"],
                clients=(*CLIENTS, FLOOR_MIN, CALLER) if conc >= 1000 else (*CLIENTS, FLOOR_MIN),
                timeout=180,
                note=f"{totals[conc]:,} requests per repetition, {conc:,} in flight "
                "(closed loop); prompt 16 tokens, max_tokens 16, num_samples 1",
            )
        )
    fb = {"datums": 1000, "tokens": 1000}
    out.append(
        Spec(
            key="fwdbwd_1m",
            group="2. forward_backward submission, null engine",
            label="1,000,000 tokens in 1,000 datums",
            engine="null",
            scenario="fwdbwd",
            params={"base_model": bm, **fb},
            prep=fb,
            metrics=[
                Metric("cpu_s", "client CPU s (chunk+encode+send+result)", "lo", "{:.3f}"),
                Metric("wall_s", "wall s", "lo", "{:.3f}"),
                Metric("mb_per_s", "MB/s (request bodies)", "hi", "{:.1f}"),
                Metric("body_mb", "request MB", "info", "{:.2f}"),
                Metric("http_requests", "HTTP requests (server)", "info", "{:.0f}"),
                Metric(
                    "build_datums_cpu_s",
                    "build Datums from lists CPU s (untimed above)",
                    "lo",
                    "{:.3f}",
                ),
                Metric("proc_maxrss_mb", "peak RSS MB", "lo", "{:.0f}"),
                Metric("rss_growth_mb", "peak RSS - RSS after import, MB", "lo", "{:.0f}"),
            ],
            headline=["cpu_s", "mb_per_s", "proc_maxrss_mb", "rss_growth_mb"],
            timeout=180,
            note="Datums are built from Python lists before the timed region (timed separately "
            "as 'build Datums'); the timed region is forward_backward_async() until the result "
            "is decoded. Floor: bodies prebuilt by the official encoder, only sent and polled.",
        )
    )
    tr = {"datums": 8, "tokens": 256}
    out.append(
        Spec(
            key="train_loop",
            group="3. Pipelined training loop, null engine",
            label="forward_backward + optim_step per step",
            engine="null",
            scenario="train",
            params={"base_model": bm, **tr, "steps": 150 if q else 500},
            prep=tr,
            metrics=[
                Metric("steps_per_s", "steps/s", "hi", "{:.0f}"),
                Metric("requests_per_step", "HTTP requests/step (server)", "lo", "{:.2f}"),
                Metric("cpu_s", "client CPU s", "lo", "{:.3f}"),
                Metric("proc_maxrss_mb", "peak RSS MB", "lo", "{:.0f}"),
                Metric("rss_growth_mb", "peak RSS - RSS after import, MB", "lo", "{:.0f}"),
                Metric("server_cpu_s", "server CPU s", "info", "{:.2f}"),
            ],
            headline=["steps_per_s", "requests_per_step", "cpu_s"],
            clients=(*CLIENTS, CALLER),
            timeout=180,
            note=f"{'150' if q else '500'} steps of 8 datums x 256 tokens; step k is submitted "
            "before the results of step k-1 are awaited (one step in flight)",
        )
    )
    idle_s = 10 if q else 60
    out.append(
        Spec(
            key="idle",
            group="4. Idle cost",
            label=f"session + sampling client, {idle_s} s",
            engine="null",
            scenario="idle",
            params={"base_model": bm, "seconds": idle_s},
            metrics=[
                Metric("cpu_s", "client CPU s", "lo", "{:.3f}"),
                Metric("rss_mb", "RSS MB", "lo", "{:.0f}"),
                Metric("http_requests", "HTTP requests (server)", "info", "{:.0f}"),
                Metric("threads", "threads", "info", "{:.0f}"),
            ],
            headline=["cpu_s", "rss_mb"],
            timeout=idle_s + 90,
            reps=1,
            concurrent=True,
            note="one sample first, then nothing; each client has its own server process and "
            "the three run at the same time (they are idle); one repetition",
        )
    )
    t = {"datums": 8, "tokens": 128}
    tsteps = 5 if q else 15
    out.append(
        Spec(
            key="torch_floor",
            group="5. torch engine, tinker-actors/byte-1m on CPU",
            label="bare torch loop and engine in-process",
            engine="none",
            scenario="torch_floor",
            params={
                "base_model": bm,
                **t,
                "steps": tsteps,
                "max_tokens": 64,
                "sample_concurrency": [1, 64],
            },
            metrics=[
                Metric(
                    "bare_train_tokens_per_s", "train tokens/s, bare torch loop", "hi", "{:.0f}"
                ),
                Metric(
                    "engine_train_tokens_per_s", "train tokens/s, engine in-process", "hi", "{:.0f}"
                ),
                Metric(
                    "engine_sample_tok_per_s_1",
                    "sampled tok/s, 1 job, engine in-process",
                    "hi",
                    "{:.0f}",
                ),
                Metric(
                    "engine_sample_tok_per_s_64",
                    "sampled tok/s, 64 jobs, engine in-process",
                    "hi",
                    "{:.0f}",
                ),
            ],
            headline=[],
            clients=("bare_torch",),
            timeout=240,
            note="benchmarks/bench_engine.py's functions, in their own process, server idle",
        )
    )
    out.append(
        Spec(
            key="torch_train",
            group="5. torch engine, tinker-actors/byte-1m on CPU",
            label="training step through the server",
            engine="torch",
            scenario="torch_train",
            params={"base_model": bm, **t, "rank": 32, "steps": tsteps, "warmup": 2},
            metrics=[
                Metric("tokens_per_s", "train tokens/s", "hi", "{:.0f}"),
                Metric("steps_per_s", "steps/s", "hi", "{:.2f}"),
                Metric("cpu_s", "client CPU s", "lo", "{:.3f}"),
            ],
            headline=["tokens_per_s"],
            clients=("official", "tinker_actors"),
            timeout=240,
            note=f"{tsteps} pipelined steps of 8 x 128 tokens, LoRA rank 32 (bench_engine.py's "
            "batch). Compute-bound: the engine is the bottleneck and the client is idle (0.05 s "
            "CPU for ours); on a shared 2-core box the spread between repetitions is larger than "
            "any client difference, so read the min..max ranges, not the ratio",
        )
    )
    prompt = [257, *b"Once upon a time"]
    for conc in (1, 64):
        out.append(
            Spec(
                key=f"torch_sample_c{conc}",
                group="5. torch engine, tinker-actors/byte-1m on CPU",
                label=f"sampling, {conc} concurrent",
                engine="torch",
                scenario="torch_sample",
                params={
                    "base_model": bm,
                    "prompt_ids": prompt,
                    "max_tokens": 64,
                    "concurrency": conc,
                    "total": (4 if q else 8) if conc == 1 else 64 * (1 if q else 2),
                    "warmup": 1,
                },
                metrics=[
                    Metric("sampled_tok_per_s", "sampled tokens/s", "hi", "{:.0f}"),
                    Metric("p50_ms", "p50 latency ms", "lo", "{:.0f}"),
                    Metric("cpu_s", "client CPU s", "lo", "{:.3f}"),
                ],
                headline=["sampled_tok_per_s"],
                # the floor (engine.sample in-process) runs in every repetition, beside the
                # clients: on a shared machine its speed drifts between minutes
                clients=("floor", "official", "tinker_actors"),
                timeout=240,
                note="max_tokens 64, prompt 17 tokens",
            )
        )
    return out


# --------------------------------------------------------------------------- processes
class ServerStartError(RuntimeError):
    pass


def start_server(engine: str, workdir: Path, log: Any = None, tries: int = 3) -> Server:
    """Starts a server, retrying a failed start (the tree may be mid-edit by a colleague)."""
    for attempt in range(tries):
        try:
            return Server(engine, workdir)
        except ServerStartError as exc:
            if attempt == tries - 1:
                raise
            if log is not None:
                log(f"    {exc}; retrying in 15 s")
            time.sleep(15)
    raise AssertionError("unreachable")


class Server:
    def __init__(self, engine: str, workdir: Path) -> None:
        self.engine = engine
        self.data_dir = Path(tempfile.mkdtemp(prefix=f"server-{engine}-", dir=workdir))
        self.log = open(self.data_dir / "server.log", "wb")
        self.proc = subprocess.Popen(
            [
                PY,
                "-m",
                "benchmarks.server_launcher",
                "--engine",
                engine,
                "--api-key",
                API_KEY,
                "--data-dir",
                str(self.data_dir),
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=self.log,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 120
        line = b""
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if r:
                line = self.proc.stdout.readline()
                break
            if self.proc.poll() is not None:
                break
        if not line:
            self.stop()
            text = (self.data_dir / "server.log").read_text(errors="replace").strip()
            last = [ln for ln in text.splitlines() if ln.strip()][-3:]
            raise ServerStartError(f"{engine} server did not start: " + " | ".join(last))
        info = json.loads(line)
        self.base_url: str = info["base_url"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(25)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def worker_cmd(client: str, spec: Spec, base_url: str, params: dict[str, Any]) -> list[str]:
    common = [
        "--scenario",
        spec.scenario,
        "--base-url",
        base_url,
        "--api-key",
        API_KEY,
        "--params",
        json.dumps(params),
    ]
    if client == "bare_torch" or (client == "floor" and spec.scenario == "torch_sample"):
        return [PY, "-m", "benchmarks.torch_floor", *common]
    if client in ("floor", FLOOR_MIN):
        return [PY, "-m", "benchmarks.floor_worker", "--client", client, *common]
    return [PY, "-W", "ignore", "-m", "benchmarks.client_worker", "--client", client, *common]


def worker_env() -> dict[str, str]:
    env = dict(os.environ)
    for k in ("TINKER_BASE_URL", "TINKER_API_KEY", "TINKER_LOG"):
        env.pop(k, None)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


class Proc:
    """A worker subprocess; ``finish()`` reaps it with os.wait4 for its own rusage."""

    def __init__(self, cmd: list[str], timeout: float, logdir: Path, name: str) -> None:
        self.out_path = logdir / f"{name}.out"
        self.err_path = logdir / f"{name}.err"
        self.timeout = timeout
        self.t0 = time.monotonic()
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, stdout=out, stderr=err, env=worker_env(), start_new_session=True
            )

    def finish(self) -> dict[str, Any]:
        deadline = self.t0 + self.timeout
        pid, status, ru = 0, 0, None
        while True:
            pid, status, ru = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                os.killpg(self.proc.pid, signal.SIGKILL)
                pid, status, ru = os.wait4(self.proc.pid, 0)
                self.proc.returncode = -9
                return {"ok": False, "error": f"timed out after {self.timeout:.0f} s"}
            time.sleep(0.02)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        res: dict[str, Any] | None = None
        for line in self.out_path.read_text(errors="replace").splitlines():
            if line.startswith("BENCH_RESULT "):
                res = json.loads(line[len("BENCH_RESULT ") :])
        if res is None:
            tail = self.err_path.read_text(errors="replace")[-600:]
            res = {"ok": False, "error": f"exit {self.proc.returncode}, no result: {tail}"}
        res["proc_cpu_s"] = ru.ru_utime + ru.ru_stime
        res["proc_maxrss_mb"] = ru.ru_maxrss / 1024
        if "rss_after_import_mb" in res:
            res["rss_growth_mb"] = res["proc_maxrss_mb"] - res["rss_after_import_mb"]
        res["proc_wall_s"] = time.monotonic() - self.t0
        if not res.get("ok"):
            res["stderr_tail"] = self.err_path.read_text(errors="replace")[-1500:]
        return res


# --------------------------------------------------------------------------- running
def prep_bodies(prep: dict[str, int], workdir: Path) -> str:
    d = workdir / f"bodies-{prep['datums']}x{prep['tokens']}"
    if not d.exists():
        subprocess.run(
            [
                PY,
                "-m",
                "benchmarks.prep_bodies",
                "--datums",
                str(prep["datums"]),
                "--tokens",
                str(prep["tokens"]),
                "--out",
                str(d),
            ],
            cwd=ROOT,
            check=True,
            env=worker_env(),
            stdout=subprocess.DEVNULL,
            timeout=300,
        )
    return str(d)


def run_spec(
    spec: Spec, reps: int, clients: tuple[str, ...], workdir: Path, log: Any
) -> dict[str, Any]:
    params = dict(spec.params)
    clients = tuple(
        c
        for c in spec.clients
        if c in clients
        or c == "bare_torch"
        or (c == CALLER and "tinker_actors" in clients)
        or (c == FLOOR_MIN and "floor" in clients)
    )
    runs: dict[str, list[dict[str, Any]]] = {c: [] for c in clients}
    logdir = workdir / spec.key
    logdir.mkdir(exist_ok=True)
    t0 = time.monotonic()
    try:
        if spec.prep and "floor" in clients:
            params["bodies_dir"] = prep_bodies(spec.prep, workdir)
        if spec.concurrent:
            servers = {c: start_server(spec.engine, workdir, log) for c in clients}
            try:
                procs = {
                    c: Proc(
                        worker_cmd(c, spec, servers[c].base_url, params),
                        spec.timeout,
                        logdir,
                        f"{c}-0",
                    )
                    for c in clients
                }
                for c, p in procs.items():
                    runs[c].append(p.finish())
            finally:
                for s in servers.values():
                    s.stop()
        else:
            server = start_server(spec.engine, workdir, log) if spec.engine != "none" else None
            try:
                for rep in range(reps):
                    order = clients[rep % len(clients) :] + clients[: rep % len(clients)]
                    for c in order:
                        url = server.base_url if server is not None else ""
                        r = Proc(
                            worker_cmd(c, spec, url, params), spec.timeout, logdir, f"{c}-{rep}"
                        ).finish()
                        runs[c].append(r)
                        log(
                            f"    {spec.key} rep {rep + 1}/{reps} {c}: "
                            + (_brief(spec, r) if r.get("ok") else "FAILED " + r["error"][:160])
                        )
            finally:
                if server is not None:
                    server.stop()
    except Exception as exc:  # a broken server fails the scenario, not the run
        for c in clients:
            if not runs[c]:
                runs[c].append({"ok": False, "error": f"{type(exc).__name__}: {exc}"[-600:]})
    result: dict[str, Any] = {
        "key": spec.key,
        "group": spec.group,
        "label": spec.label,
        "note": spec.note,
        "params": {k: v for k, v in params.items() if k != "bodies_dir"},
        "seconds": time.monotonic() - t0,
        "clients": {},
    }
    for c, rs in runs.items():
        ok = [r for r in rs if r.get("ok")]
        entry: dict[str, Any] = {"runs": rs, "ok_runs": len(ok), "runs_n": len(rs)}
        if ok:
            entry["median"] = {
                m.key: statistics.median([r[m.key] for r in ok])
                for m in spec.metrics
                if all(m.key in r for r in ok)
            }
            for extra in ("requests_by_path", "import_s", "chunks", "rss_after_import_mb"):
                if extra in ok[0]:
                    entry[extra] = ok[0][extra]
        else:
            entry["error"] = rs[0].get("error", "failed") if rs else "not run"
        result["clients"][c] = entry
    result["ratios"] = ratios(spec, result["clients"])
    result["better"] = directions(spec)
    result["spread"] = gate.scenario_spreads(result, result["better"])
    return result


def directions(spec: Spec) -> dict[str, str]:
    """metric -> "hi" / "lo" (the gate needs it to pair the repetitions' ratios)."""
    return {m.key: m.better for m in spec.metrics if m.better in ("hi", "lo")}


def _brief(spec: Spec, r: dict[str, Any]) -> str:
    return ", ".join(
        f"{m.key}={m.fmt.format(r[m.key])}"
        for m in spec.metrics[:4]
        if isinstance(r.get(m.key), (int, float))
    )


def ratio(m: Metric, ours: float, other: float) -> float | None:
    """> 1 means tinker_actors is better (faster, lighter) than ``other``."""
    try:
        if m.better == "lo":
            return other / ours if ours else None
        if m.better == "hi":
            return ours / other if other else None
    except (TypeError, ZeroDivisionError):
        return None
    return None


def ratios(spec: Spec, clients: dict[str, Any]) -> dict[str, Any]:
    ours = clients.get("tinker_actors", {}).get("median")
    out: dict[str, Any] = {}
    if not ours:
        return out
    for m in spec.metrics:
        if m.better == "info" or m.key not in ours:
            continue
        row = {}
        for other, name in (("official", "vs_official"), ("floor", "vs_floor")):
            med = clients.get(other, {}).get("median")
            if med and m.key in med:
                row[name] = ratio(m, ours[m.key], med[m.key])
        out[m.key] = row
    return out


def attach_torch_floor(scenarios: list[dict[str, Any]], spec_list: list[Spec]) -> None:
    """Gives the torch scenarios a floor column: the bare torch loop (training) and one
    in-process ``engine.sample`` call with the same number of jobs (sampling)."""
    floor = next((r for r in scenarios if r["key"] == "torch_floor"), None)
    fm = (floor or {}).get("clients", {}).get("bare_torch", {}).get("median")
    if not fm:
        return
    by_key = {s.key: s for s in spec_list}
    for r in scenarios:
        spec = by_key.get(r["key"])
        if spec is None:
            continue
        med: dict[str, float] = {}
        if spec.scenario == "torch_train" and "bare_train_tokens_per_s" in fm:
            ntok = spec.params["datums"] * spec.params["tokens"]
            med = {
                "tokens_per_s": fm["bare_train_tokens_per_s"],
                "steps_per_s": fm["bare_train_tokens_per_s"] / ntok,
            }
        elif spec.scenario == "torch_sample" and "floor" not in r["clients"]:
            v = fm.get(f"engine_sample_tok_per_s_{spec.params['concurrency']}")
            if v:
                med = {"sampled_tok_per_s": v}
        if med:
            r["clients"] = {
                "floor": {
                    "median": med,
                    "ok_runs": 1,
                    "runs_n": 1,
                    "runs": [],
                    "derived_from": "torch_floor",
                },
                **r["clients"],
            }
            r["ratios"] = ratios(spec, r["clients"])
            r["spread"] = gate.scenario_spreads(r, directions(spec))


# --------------------------------------------------------------------------- reporting
def machine_info() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "mem_gib": mem,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "machine": platform.machine(),
    }


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for pkg in ("tinker", "tinker-actors", "aiohttp", "msgspec", "httpx", "numpy", "torch"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        out["git"] = rev + (" (working tree with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        out["git"] = "unknown"
    return out


def fmt_ratio(x: float | None) -> str:
    if x is None:
        return "-"
    return f"**{x:.2f}x**" if x >= 1 else f"{x:.2f}x"


def _thread_cost(spec: Spec, clients: dict[str, Any]) -> str:
    """One line: the default (runtime on its own thread) against the caller-loop mode."""
    ours = clients.get("tinker_actors", {}).get("median")
    caller = clients.get(CALLER, {}).get("median")
    if not ours or not caller:
        return ""
    parts = []
    for m in spec.metrics:
        a, b = ours.get(m.key), caller.get(m.key)
        if (
            m.better == "info"
            or not a
            or not b
            or m.key not in ("req_per_s", "steps_per_s", "cpu_s", "p99_ms")
        ):
            continue
        r = a / b if m.better == "hi" else b / a
        parts.append(f"{m.label} {r:.2f}x")
    return (
        "*Cost of the runtime thread* (the default, which lets blocking calls work inside "
        "async code) against the opt-in caller-loop mode, as a ratio in this page's sense "
        "(> 1: the default is better; below 1: what the thread costs): " + ", ".join(parts) + "."
    )


def _vs_floor_min(spec: Spec, clients: dict[str, Any]) -> str:
    """One line: tinker_actors against the floor that sends only the headers our server
    needs (the protocol's headers are work every client does; this shows what they cost)."""
    ours = clients.get("tinker_actors", {}).get("median")
    bare = clients.get(FLOOR_MIN, {}).get("median")
    floor = clients.get("floor", {}).get("median")
    if not ours or not bare:
        return ""
    parts = []
    for m in spec.metrics:
        if m.key not in ("req_per_s", "cpu_s") or not ours.get(m.key) or not bare.get(m.key):
            continue
        r = ratio(m, ours[m.key], bare[m.key])
        if r is None:
            continue
        f = ratio(m, floor[m.key], bare[m.key]) if floor and floor.get(m.key) else None
        parts.append(
            f"{m.label} {r:.2f}x" + (f" (the floor itself: {f:.2f}x)" if f is not None else "")
        )
    return (
        "*Against the floor with the bare minimum of headers* (X-API-Key, Content-Type; not "
        "the protocol's exchange), as a ratio in this page's sense: " + ", ".join(parts) + "."
    )


def cell(
    spec_metrics: dict[str, Metric], entry: dict[str, Any] | None, key: str, spread: bool = False
) -> str:
    """The median; with ``spread``, also the range over the repetitions (min..max)."""
    if not entry:
        return "-"
    if "median" not in entry:
        return "FAILED"
    v = entry["median"].get(key)
    if v is None:
        return "-"
    fmt = spec_metrics[key].fmt
    text = fmt.format(v)
    vals = [x[key] for x in entry.get("runs", []) if x.get("ok") and key in x]
    if spread and len(vals) > 1 and spec_metrics[key].better != "info":
        text += f" ({fmt.format(min(vals))}..{fmt.format(max(vals))})"
    return text


def _gc_section(results: dict[str, Any]) -> list[str]:
    """The collector's share of client CPU in the sampling scenarios, and the rest compared
    with the floor (empty for results recorded before the GC was measured)."""
    rows = []
    for r in results["scenarios"]:
        if not r["key"].startswith("sample_c"):
            continue
        per: dict[str, dict[str, float]] = {}
        for client in ("floor", "tinker_actors"):
            runs = [
                x
                for x in r["clients"].get(client, {}).get("runs", [])
                if x.get("ok") and "gc_s" in x
            ]
            if not runs:
                break
            n = r["params"]["total"]
            per[client] = {
                "share": statistics.median(x["gc_s"] / x["cpu_s"] for x in runs),
                "young": statistics.median(1000 * x["gc_gen0_runs"] / n for x in runs),
                "full": statistics.median(1000 * x["gc_gen2_runs"] / n for x in runs),
                "rest": statistics.median(x["cpu_s"] - x["gc_s"] for x in runs),
                "cpu": statistics.median(x["cpu_s"] for x in runs),
            }
        else:
            f, o = per["floor"], per["tinker_actors"]
            rows.append(
                f"| {r['params']['concurrency']:,} | {f['share']:.0%} | {o['share']:.0%} | "
                f"{f['young']:.0f} | {o['young']:.0f} | {f['full']:.1f} | {o['full']:.1f} | "
                f"{fmt_ratio(f['cpu'] / o['cpu'])} | {fmt_ratio(f['rest'] / o['rest'])} |"
            )
    if not rows:
        return []
    return [
        "## Where the client CPU goes: the garbage collector",
        "",
        "With many requests in flight, CPython's cyclic garbage collector takes a large share "
        "of every client's CPU, the floor's included: each request holds dozens of container "
        "objects (coroutines, futures, aiohttp's request and response) while it waits, and "
        "each collection walks the ones alive. The sampling runs time every collection "
        "(`gc.callbacks`, on the thread that ran it); medians over the repetitions of the "
        "tables below, ratios in this page's sense (floor / ours).",
        "",
        "| in flight | GC share of client CPU: floor | tinker_actors | young collections "
        "per 1,000 samples: floor | tinker_actors | full collections per 1,000: floor | "
        "tinker_actors | client CPU vs floor | client CPU without GC vs floor |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "Why ours collects more often (measured on issue 15; CPython 3.11): a young "
        "collection starts when allocations minus deallocations of container objects since "
        "the last one pass 700, and a deallocation while that count is zero is not counted. "
        "Neither client leaks or makes cyclic garbage (`gc.DEBUG_SAVEALL` finds nothing), and "
        "with the collector off their counts grow alike (0.7 to 0.8 per sample at 64 in "
        "flight, about 9 at 1,000), so the difference is in how allocations and "
        "deallocations interleave. Each floor worker frees one "
        "request's objects and allocates the next one's in the same step. Our requests start "
        "in batches (one mailbox hand-off starts every call it carries, each in its own "
        "task) and end in batches, so the count swings wider and crosses 700 more often; "
        "nearly every young collection we traced started inside the asample POST of a "
        "freshly started request. Full collections follow the young ones (one per ~110) and "
        "walk the whole heap, larger for us after start-up (about 50,000 objects against the "
        "floor's 31,000: numpy, protobuf, msgspec, tenacity, structlog, the types package). "
        "What an object held across an await costs: the floor holding 36 more empty lists "
        "per sample while its requests wait used about 15 % more CPU at 1,000 in flight and "
        "none more at 64.",
        "",
    ]


def _instructions_section() -> list[str]:
    from . import instructions

    saved = instructions.load()
    return instructions.section(saved) if saved else []


def render(results: dict[str, Any], spec_list: list[Spec]) -> str:
    by_key = {s.key: s for s in spec_list}
    meta = results["meta"]
    lines = [
        "# Benchmarks: tinker_actors vs the official SDK vs the floor",
        "",
        "<!-- GENERATED by `python -m benchmarks` — do not edit by hand. -->",
        "",
        f"Generated {meta['date']} by `{meta['command']}` "
        f"({'quick run' if meta['quick'] else 'full run'}, {meta['reps']} repetition(s) per "
        f"scenario, medians shown; took {meta['seconds']:.0f} s). Raw numbers, every "
        "repetition and the errors: `benchmarks/results.json`.",
        "",
        "**Ratios: > 1 means tinker_actors is better** (for costs such as CPU seconds, latency "
        "and RSS the ratio is other/ours; for rates such as requests/s it is ours/other). "
        "*vs official* compares with the official `tinker` 0.38.0 SDK running the same script "
        "(only the import differs); *vs floor* with a bare aiohttp loop that sends the same "
        "requests with prebuilt bodies and prebuilt headers (the least work the exchange "
        "needs: the protocol's headers, as 0.38 sends them, with a fresh idempotency key per "
        "request; results read as bytes, not decoded; a value below 1 is the normal case and "
        "says how close to the floor we are). The sampling scenarios also run *floor, bare "
        "minimum of headers* (only X-API-Key and Content-Type, less than the protocol asks: "
        "what the headers cost). In the torch-engine rows the "
        "floor is compute without HTTP: the bare torch loop of `benchmarks/bench_engine.py` "
        "for training, one in-process `engine.sample` call with the same number of jobs for "
        "sampling (run in every repetition beside the clients: the median of three calls on an "
        "engine warmed with the same call).",
        "",
        "## Machine",
        "",
        f"- CPU: {meta['machine']['cpu']}, {meta['machine']['cores']} cores, "
        f"{meta['machine']['mem_gib']} GiB RAM, {meta['machine']['os']}, "
        f"Python {meta['machine']['python']}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        f"- Load average at start / end: {meta['loadavg_start']} / {meta['loadavg_end']}",
        "- **The server and the client share these cores.** The server runs in its own "
        "process (its CPU is not charged to the client, and is shown as *server CPU s*), "
        "but on a 2-core machine a client that burns CPU also slows the server, so "
        "throughput and latency are end-to-end numbers of this box. Client CPU seconds are "
        "the most machine-independent column. Other jobs may have been running on the "
        "machine (see the load average); medians of repetitions damp that, not fully.",
        "",
        "## How to reproduce",
        "",
        "```",
        ".venv/bin/python -m benchmarks            # full run (~10 min), rewrites this file",
        ".venv/bin/python -m benchmarks --quick    # short run (~2 min)",
        ".venv/bin/python -m benchmarks --only sample_c64,train --reps 5 --no-write",
        ".venv/bin/python -m benchmarks --only train --profile /tmp/prof   # py-spy profiles",
        ".venv/bin/python -m benchmarks --instructions   # callgrind counts (needs valgrind)",
        "```",
        "",
        "Each client runs in a fresh interpreter (`benchmarks/client_worker.py`: the same "
        "script for both SDKs, `import tinker` or `import tinker_actors as tinker`; "
        "`benchmarks/floor_worker.py`: the floor), against a server started by "
        "`benchmarks/server_launcher.py` (`tinker_actors.server.LocalServer` in its own "
        "process, plus a request counter). Client CPU seconds and latencies cover the timed "
        "region only (after imports, session start-up and warm-up requests); peak RSS is the "
        "whole worker process (`wait4` rusage), imports included. **The official SDK imports "
        "torch when it is installed** (it is here, for the torch engine): about 280 MB of its "
        "RSS is that import, so also compare *peak RSS - RSS after import* (the memory the "
        "exchange itself costs).",
        "",
        "## How to use the gate",
        "",
        "Before merging a change that could cost performance, run the gate on the same kind "
        "of machine that recorded this page:",
        "",
        "```",
        ".venv/bin/python -m benchmarks --check                      # every scenario",
        ".venv/bin/python -m benchmarks --check --only sample_c64,train --save /tmp/run.json",
        ".venv/bin/python -m benchmarks --check --current /tmp/run.json --verbose  # re-check",
        "```",
        "",
        "`--check` runs the selected scenarios as `benchmarks/results.json` ran them (its "
        "`--quick` flag and repetitions; a torch scenario brings `torch_floor` along, its "
        "floor), writes no files, and compares **ratios**, not times: tinker_actors vs the "
        "official SDK and vs the floor, per scenario and measure, as in the tables here. A "
        "ratio that fell by more than its tolerance fails the gate (exit status 1) with a line "
        "naming the scenario, the measure and the comparison, e.g. `REGRESSION  sample_c64 "
        "cpu_s vs_official: 8.15x -> 6.90x (-15.3%; tolerance 10.0%, ...)`; so does our "
        "client failing a scenario. The tolerance is `max(2 x spread, 10%)`, where the spread "
        "is the relative range (max - min) / median of the per-repetition ratios (each "
        "repetition of ours against the other client's run next to it), the larger of the "
        "baseline's and this run's; with a single repetition on both sides (the idle "
        "scenario) it is 25%. Ratios that improved beyond the tolerance are listed too: "
        "commit a new baseline (a full `python -m benchmarks`) when a change is meant to "
        "move them. Exit status 2: nothing comparable (no baseline, or other parameters, "
        "e.g. `--quick` against a full baseline). `--spread-factor` and `--tolerance-floor` "
        "change the rule; `benchmarks/gate.py` holds it.",
        "",
        "The gate is **not in CI**: CI machines are shared and noisy, and a noisy run widens "
        "the tolerance instead of failing, so a CI run would gate little. Run it by hand, on "
        "an otherwise idle machine, before a merge; a failure on a busy machine is worth one "
        "rerun before it is believed.",
        "",
        *_instructions_section(),
        *_gc_section(results),
        "## Headline",
        "",
        "| scenario | measure | floor | official | tinker_actors | vs official | vs floor |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results["scenarios"]:
        spec = by_key.get(r["key"])
        if spec is None:
            continue
        mets = {m.key: m for m in spec.metrics}
        for key in spec.headline:
            rr = r["ratios"].get(key, {})
            cl = r["clients"]
            lines.append(
                f"| {spec.group.split(',')[0]}: {spec.label} | {mets[key].label} | "
                f"{cell(mets, cl.get('floor'), key)} | {cell(mets, cl.get('official'), key)} | "
                f"{cell(mets, cl.get('tinker_actors'), key)} | "
                f"{fmt_ratio(rr.get('vs_official'))} | {fmt_ratio(rr.get('vs_floor'))} |"
            )
    lines += [
        "",
        "## Scenarios",
        "",
        "Cells: median (min..max over the repetitions).",
        "",
    ]
    group = None
    for r in results["scenarios"]:
        spec = by_key.get(r["key"])
        if spec is None:
            continue
        if spec.group != group:
            group = spec.group
            lines += [f"### {group}", ""]
        lines += [f"**{spec.label}.** {spec.note.rstrip('.')}.", ""]
        clients = list(r["clients"])
        names = dict(NAMES)
        if spec.engine == "torch":
            names["floor"] = (
                "bare torch loop (floor)"
                if spec.scenario == "torch_train"
                else "engine.sample in-process (floor)"
            )
        lines.append(
            "| measure | "
            + " | ".join(names.get(c, c) for c in clients)
            + (" | vs official | vs floor |" if r["ratios"] else " |")
        )
        lines.append("|---|" + "---:|" * len(clients) + ("---:|---:|" if r["ratios"] else ""))
        mets = {m.key: m for m in spec.metrics}
        for m in spec.metrics:
            row = [cell(mets, r["clients"][c], m.key, spread=True) for c in clients]
            if all(x == "-" for x in row):
                continue
            extra = ""
            if r["ratios"]:
                rr = r["ratios"].get(m.key, {})
                extra = f" {fmt_ratio(rr.get('vs_official'))} | {fmt_ratio(rr.get('vs_floor'))} |"
            lines.append(f"| {m.label} | " + " | ".join(row) + " |" + extra)
        thread_cost = _thread_cost(spec, r["clients"])
        if thread_cost:
            lines += ["", thread_cost]
        bare = _vs_floor_min(spec, r["clients"])
        if bare:
            lines += ["", bare]
        fails = [(c, e) for c, e in r["clients"].items() if e["ok_runs"] < e["runs_n"]]
        for c, e in fails:
            errs = sorted({x.get("error", "?")[:300] for x in e["runs"] if not x.get("ok")})
            lines.append("")
            lines.append(
                f"- **{names.get(c, c)} failed** {e['runs_n'] - e['ok_runs']} of "
                f"{e['runs_n']} run(s): " + "; ".join(f"`{x}`" for x in errs)
            )
        rbp = {
            c: e.get("requests_by_path")
            for c, e in r["clients"].items()
            if e.get("requests_by_path")
        }
        if rbp and spec.scenario in ("train", "idle", "fwdbwd"):
            lines.append("")
            for c, d in rbp.items():
                per = " per step" if spec.scenario == "train" else ""
                lines.append(
                    f"- {names.get(c, c)} requests{per}: "
                    + ", ".join(f"`{k.removeprefix('/api/v1/')}` {v}" for k, v in sorted(d.items()))
                )
        lines.append("")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- profiling
def profile(
    spec_list: list[Spec], clients: tuple[str, ...], outdir: Path, workdir: Path, log: Any
) -> None:
    """One run per scenario of each SDK client under ``py-spy record`` (collapsed stacks)."""
    outdir.mkdir(parents=True, exist_ok=True)
    pyspy = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
    for spec in spec_list:
        if spec.scenario == "torch_floor":
            continue
        params = dict(spec.params)
        if spec.prep:
            params["bodies_dir"] = prep_bodies(spec.prep, workdir)
        server = start_server(spec.engine, workdir)
        try:
            for c in clients:
                if c not in ("official", "tinker_actors"):
                    continue
                raw = outdir / f"{spec.key}-{c}.txt"
                cmd = [
                    pyspy,
                    "record",
                    "--format",
                    "raw",
                    "--rate",
                    "250",
                    "--nonblocking",
                    "--threads",
                    "-o",
                    str(raw),
                    "--",
                    *worker_cmd(c, spec, server.base_url, params),
                ]
                r = Proc(cmd, spec.timeout + 60, outdir, f"{spec.key}-{c}").finish()
                log(f"  profiled {spec.key} {c}: ok={r.get('ok')} -> {raw}")
                if raw.exists():
                    (outdir / f"{spec.key}-{c}.summary.txt").write_text(summarize(raw))
        finally:
            server.stop()


def summarize(raw: Path, top: int = 25) -> str:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    self_c: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        frames = stack.split(";")
        if frames and frames[0].startswith("thread"):
            frames = frames[1:]
        frames = [f for f in frames if f]
        if not frames:
            continue
        total += count
        self_c[frames[-1]] = self_c.get(frames[-1], 0) + count
        for f in set(frames):
            incl[f] = incl.get(f, 0) + count
    out = [f"{raw.name}: {total} samples", "", "self %  function"]
    for f, n in sorted(self_c.items(), key=lambda x: -x[1])[:top]:
        out.append(f"{100 * n / max(total, 1):6.1f}  {f}")
    out += ["", "incl %  function"]
    for f, n in sorted(incl.items(), key=lambda x: -x[1])[: top * 2]:
        out.append(f"{100 * n / max(total, 1):6.1f}  {f}")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- main
def run_all(
    spec_list: list[Spec],
    reps: int,
    clients: tuple[str, ...],
    quick: bool,
    command: str,
    log: Any,
    partial: Path | None = None,
) -> dict[str, Any]:
    """Runs the scenarios; returns the results document (``meta`` and ``scenarios``)."""
    workdir = Path(tempfile.mkdtemp(prefix="tinker-bench-"))
    t0 = time.monotonic()
    load0 = " ".join(f"{x:.2f}" for x in os.getloadavg())
    scenarios = []
    try:
        for spec in spec_list:
            log(f"== {spec.key}: {spec.group}: {spec.label}")
            r = run_spec(spec, spec.reps or reps, clients, workdir, log)
            scenarios.append(r)
            if partial is not None:  # partial results survive a crash of a later scenario
                partial.write_text(json.dumps(scenarios, default=str))
            for key, rr in r["ratios"].items():
                if key in spec.headline:
                    log(
                        f"   {key}: vs official {fmt_ratio(rr.get('vs_official'))}, "
                        f"vs floor {fmt_ratio(rr.get('vs_floor'))}"
                    )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    try:
        attach_torch_floor(scenarios, spec_list)
    except Exception as exc:  # never lose a run to a reporting bug
        log(f"could not attach the torch floor: {type(exc).__name__}: {exc}")
    return {
        "meta": {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "command": command,
            "quick": quick,
            "reps": reps,
            "seconds": time.monotonic() - t0,
            "machine": machine_info(),
            "versions": versions(),
            "loadavg_start": load0,
            "loadavg_end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "reproduce": ".venv/bin/python -m benchmarks" + (" --quick" if quick else ""),
        },
        "scenarios": scenarios,
    }


def check(a: argparse.Namespace, clients: tuple[str, ...], log: Any) -> int:
    """``--check``: this run (or ``--current``) against the baseline; the exit status."""
    base_path = Path(a.baseline)
    if not base_path.exists():
        log(f"benchmark gate: no baseline at {base_path} (a full `python -m benchmarks` writes it)")
        return 2
    baseline = json.loads(base_path.read_text())
    only = [k.strip() for k in a.only.split(",") if k.strip()]
    if a.current:
        current = json.loads(Path(a.current).read_text())
    else:
        quick = a.quick or bool(baseline.get("meta", {}).get("quick"))
        reps = a.reps or int(baseline.get("meta", {}).get("reps") or 3)
        known = [s.key for s in specs(quick)]
        spec_list = [s for s in specs(quick) if gate.selected(s.key, only, known)]
        if any(s.engine == "torch" for s in spec_list) and not any(
            s.key == "torch_floor" for s in spec_list
        ):  # the torch rows' floor comes from it
            spec_list.insert(0, next(s for s in specs(quick) if s.key == "torch_floor"))
        if not spec_list:
            log(f"benchmark gate: --only {a.only!r} selects no scenario")
            return 2
        cmd = "python -m benchmarks --check" + (f" --only {a.only}" if a.only else "")
        log(
            f"benchmark gate: {len(spec_list)} scenario(s), {reps} repetition(s), against {base_path}"
        )
        current = run_all(spec_list, reps, clients, quick, cmd, log)
        if a.save:
            Path(a.save).write_text(json.dumps(current, indent=1, default=str) + "\n")
            log(f"this run: {a.save}")
    fallback = {s.key: directions(s) for s in specs(False)}
    report = gate.compare(
        baseline,
        current,
        only=only,
        better_fallback=fallback,
        factor=a.spread_factor,
        floor=a.tolerance_floor,
    )
    print(report.render(verbose=a.verbose))
    return report.exit_code()


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short run (about 2 minutes)")
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 3; quick 1)")
    ap.add_argument("--only", default="", help="comma-separated scenario keys or prefixes")
    ap.add_argument("--clients", default=",".join(CLIENTS))
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results.json"))
    ap.add_argument("--no-write", action="store_true", help="print only; write no files")
    ap.add_argument(
        "--profile",
        default=None,
        metavar="DIR",
        help="profile our and the official client with py-spy instead",
    )
    ap.add_argument(
        "--render", action="store_true", help="only re-render the markdown from the existing JSON"
    )
    ap.add_argument(
        "--instructions",
        action="store_true",
        help="count client instructions per sample under callgrind (needs valgrind), a "
        "measure that moves far less with the machine's load than CPU seconds (default: "
        "sample_c64; floor,tinker_actors)",
    )
    g = ap.add_argument_group("the benchmark gate (--check)")
    g.add_argument(
        "--check",
        action="store_true",
        help="run (as the baseline ran: its --quick and repetitions), write nothing, and exit 1 "
        "on a ratio that regressed beyond the run-to-run spread",
    )
    g.add_argument("--baseline", default=str(ROOT / "benchmarks" / "results.json"))
    g.add_argument("--current", default=None, metavar="FILE", help="check a saved run instead")
    g.add_argument("--save", default=None, metavar="FILE", help="keep the checked run's JSON")
    g.add_argument("--spread-factor", type=float, default=gate.FACTOR)
    g.add_argument("--tolerance-floor", type=float, default=gate.FLOOR)
    g.add_argument("--verbose", action="store_true", help="list the ratios within tolerance too")
    a = ap.parse_args()
    clients = tuple(c for c in a.clients.split(",") if c)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if a.check:
        sys.exit(check(a, clients, log))

    if a.instructions:
        from . import instructions

        given = "" if a.clients == ",".join(CLIENTS) else a.clients
        instructions.main(a.only, given, log, write=not a.no_write)
        if not a.no_write and Path(a.json).exists():  # show it on the page
            results = json.loads(Path(a.json).read_text())
            Path(a.out).write_text(render(results, specs(bool(results["meta"]["quick"]))))
            log(f"re-rendered {a.out}")
        return

    reps = a.reps or (1 if a.quick else 3)
    spec_list = specs(a.quick)
    if a.only:
        keys = [k.strip() for k in a.only.split(",") if k.strip()]
        known = [s.key for s in spec_list]
        spec_list = [s for s in spec_list if gate.selected(s.key, keys, known)]

    if a.render:
        results = json.loads(Path(a.json).read_text())
        spec_list = specs(bool(results["meta"]["quick"]))
        Path(a.out).write_text(render(results, spec_list))
        log(f"re-rendered {a.out} from {a.json}")
        return

    if a.profile:
        workdir = Path(tempfile.mkdtemp(prefix="tinker-bench-"))
        profile(spec_list, clients, Path(a.profile), workdir, log)
        shutil.rmtree(workdir, ignore_errors=True)
        return

    t0 = time.monotonic()
    cmd = (
        "python -m benchmarks"
        + (" --quick" if a.quick else "")
        + (f" --reps {a.reps}" if a.reps else "")
        + (f" --only {a.only}" if a.only else "")
    )
    partial = None if a.no_write else Path(a.json + ".partial")
    results = run_all(spec_list, reps, clients, a.quick, cmd, log, partial)
    try:
        md = render(results, spec_list)
    except Exception as exc:  # keep the JSON; the markdown can be re-rendered with --render
        log(f"could not render the markdown: {type(exc).__name__}: {exc}")
        md = f"# Benchmarks\n\nRendering failed ({exc}); see benchmarks/results.json.\n"
    if a.no_write:
        print(md)
    else:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(results, indent=1, default=str) + "\n")
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(md)
        Path(a.json + ".partial").unlink(missing_ok=True)
        log(f"wrote {a.out} and {a.json} ({time.monotonic() - t0:.0f} s)")


if __name__ == "__main__":
    main()
