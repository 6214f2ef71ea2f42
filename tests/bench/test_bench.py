"""``tinker-actors bench``: against the real local server (null engine), a few seconds in all.

The figures are checked for consistency (counts add up, the server saw what the report says,
the JSON matches its schema), never for the size of a timing.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from click.testing import CliRunner

from tinker_actors.bench import report
from tinker_actors.bench.workload import LengthDist, Workload, schedule

pytestmark = pytest.mark.e2e
MODEL = "tinker-actors/byte-1m"  # null engine: context 512


def bench(server: Any, *args: str) -> Any:
    from tinker_actors.cli import cli

    env = {
        "TINKER_BASE_URL": server.base_url,
        "TINKER_API_KEY": server.api_key,
        "NO_COLOR": "1",
        "TINKER_TELEMETRY": "0",
    }
    return CliRunner().invoke(cli, ["bench", *args], env=env, catch_exceptions=False)


def run_json(server: Any, tmp_path: Path, *args: str, kind: str = "sample") -> dict[str, Any]:
    out = tmp_path / f"{kind}.json"
    r = bench(server, kind, "--model", MODEL, "--warmup", "0", "--json", str(out), *args)
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    jsonschema.validate(doc, report.schema(kind, doc["config"]["percentiles"]))
    return doc


def asample_count(server: Any, route: str = "asample") -> int:
    return int(server.stats()["requests"].get(route, 0))


def check_counts(point: dict[str, Any]) -> None:
    """sent = completed + failed; tokens are the sums over completed requests."""
    assert point["num_requests"] == point["completed"] + point["failed"]
    assert point["failed"] == sum(point["errors"]["by_type"].values())
    ok = [i for i, e in enumerate(point["errors_list"]) if e == ""]
    assert len(ok) == point["completed"]
    assert point["total_output_tokens"] == sum(point["output_lens"][i] for i in ok)
    assert point["total_input_tokens"] == sum(point["input_lens"][i] for i in ok)
    assert all(point["e2els"][i] is not None for i in ok)


# ------------------------------------------------------------------------------ sampling
def test_closed_loop_report_matches_the_server(local_server: Any, tmp_path: Path) -> None:
    doc = run_json(
        local_server, tmp_path, "-c", "4", "-n", "30", "--prompt-len", "uniform:4,40",
        "--output-len", "8",
    )  # fmt: skip
    (point,) = doc["results"]
    check_counts(point)
    assert point["completed"] == 30 and point["failed"] == 0
    assert asample_count(local_server) == point["num_requests"] == 30
    assert point["total_output_tokens"] == 30 * 8  # the null engine returns max_tokens tokens
    assert point["input_lens"] == [
        len(Workload(LengthDist.parse("uniform:4,40"), LengthDist.parse("8")).spec(i).prompt)
        for i in range(30)
    ]
    assert 1 <= point["max_concurrent_requests"] <= 4
    assert point["events"]["http_429"] == 0 and point["errors"]["retries"] == 0
    assert point["ttfts"] is None and point["mean_ttft_ms"] is None  # no --stream
    assert doc["endpoint"]["embedded"] is False and doc["endpoint"]["client"] == "tinker_actors"
    assert doc["versions"]["tinker_actors"] and doc["machine"]["cpu_count"]
    assert local_server.api_key not in (tmp_path / "sample.json").read_text()


def test_sweep_gives_one_result_per_concurrency(local_server: Any, tmp_path: Path) -> None:
    doc = run_json(local_server, tmp_path, "-c", "1,3,5", "-n", "6", "--output-len", "4")
    assert [p["max_concurrency"] for p in doc["results"]] == [1, 3, 5]
    for p in doc["results"]:
        check_counts(p)
        assert p["mode"] == "closed" and p["completed"] == 6
        assert p["max_concurrent_requests"] <= p["max_concurrency"]
    assert asample_count(local_server) == 18


def test_stream_reports_ttft_within_each_request(local_server: Any, tmp_path: Path) -> None:
    doc = run_json(
        local_server, tmp_path, "--stream", "-r", "400", "-n", "12", "--output-len", "6",
        "--num-samples", "2",
    )  # fmt: skip
    (point,) = doc["results"]
    check_counts(point)
    assert point["completed"] == 12
    assert asample_count(local_server, "stream_sample") == 12
    assert asample_count(local_server) == 0
    for ttft, e2el, itls, n in zip(
        point["ttfts"], point["e2els"], point["itls"], point["output_lens"], strict=True
    ):
        assert 0 <= ttft <= e2el
        assert n == 2 * 6  # tokens of both sequences, from the token events
        assert len(itls) == 2 * (6 - 1)  # gaps within each sequence
    for key in ("median_ttft_ms", "p99_ttft_ms", "mean_tpot_ms", "median_itl_ms"):
        assert point[key] is not None


def test_open_loop_uses_the_seeded_schedule(local_server: Any, tmp_path: Path) -> None:
    doc = run_json(local_server, tmp_path, "-r", "1000", "-n", "15", "--seed", "7")
    (point,) = doc["results"]
    assert point["mode"] == "open" and point["arrival"] == "poisson"
    assert point["scheduled_times"] == schedule(1000, seed=7, requests=15)
    check_counts(point)
    assert asample_count(local_server) == 15


def test_endpoint_errors_are_counted_not_raised(local_server: Any, tmp_path: Path) -> None:
    # max_tokens beyond the model's 512-token context fails server-side, request by request
    dist = "uniform:400,700"
    doc = run_json(local_server, tmp_path, "-c", "1", "-n", "20", "--output-len", dist)
    (point,) = doc["results"]
    check_counts(point)
    work = Workload(LengthDist.parse("8"), LengthDist.parse(dist))
    too_long = sum(work.spec(i).max_tokens > 512 for i in range(20))
    assert 0 < too_long < 20
    assert point["failed"] == too_long
    assert set(point["errors"]["by_type"]) == {"BadRequestError"}  # a 400 at submission
    assert point["errors"]["examples"] and "context length" in point["errors"]["examples"][0]
    assert point["median_e2el_ms"] is not None  # latencies of the completed ones only
    assert sum(1 for e in point["e2els"] if e is not None) == point["completed"]


def test_a_run_where_nothing_completes_exits_1_after_writing(
    local_server: Any, tmp_path: Path
) -> None:
    out = tmp_path / "fail.json"
    r = bench(local_server, "sample", "--warmup", "0", "-n", "3", "--output-len", "600",
              "--json", str(out))  # fmt: skip
    assert r.exit_code == 1
    assert "no request completed" in r.output
    point = json.loads(out.read_text())["results"][0]
    assert point["failed"] == 3 and point["completed"] == 0


def test_official_client_runs_the_same_load(local_server: Any, tmp_path: Path) -> None:
    pytest.importorskip("tinker")
    doc = run_json(local_server, tmp_path, "--client", "official", "-c", "2", "-n", "8")
    (point,) = doc["results"]
    check_counts(point)
    assert point["completed"] == 8 and asample_count(local_server) == 8
    assert doc["endpoint"]["client"] == "official" and doc["versions"]["client"] == "0.38.0"
    assert point["events"] is None and point["errors"]["http_429"] is None  # not observable


def test_json_format_prints_the_document(local_server: Any) -> None:
    from tinker_actors.cli import cli

    env = {"TINKER_BASE_URL": local_server.base_url, "TINKER_API_KEY": local_server.api_key}
    r = CliRunner().invoke(cli, ["-f", "json", "bench", "sample", "-n", "3"], env=env)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["kind"] == "sample" and doc["results"][0]["completed"] == 3
    assert doc["model"] == "tinker-actors/byte-1m"  # the server's first model by default


def test_summary_table_on_stdout(local_server: Any) -> None:
    r = bench(local_server, "sample", "-c", "1,2", "-n", "2", "--warmup", "0")
    assert r.exit_code == 0, r.output
    lines = r.stdout.strip().splitlines()
    assert lines[0].split("\t")[:4] == ["load", "requests", "completed", "failed"]
    assert [ln.split("\t")[0] for ln in lines[1:]] == ["c=1", "c=2"]


# ------------------------------------------------------------------------------ training
def test_train_steps_and_tokens_add_up(local_server: Any, tmp_path: Path) -> None:
    doc = run_json(
        local_server, tmp_path, "-d", "1,3", "-n", "5", "-b", "2", "--seq-len", "16",
        kind="train",
    )  # fmt: skip
    assert [p["depth"] for p in doc["results"]] == [1, 3]
    for p in doc["results"]:
        assert p["num_steps"] == p["completed"] + p["failed"] == 5
        assert p["total_tokens"] == p["completed"] * 2 * 16
        assert len(p["step_latencies_ms"]) == p["completed"]
        assert p["queue_wait_s"] is not None and p["queue_wait_s"] >= 0
    stats = local_server.stats()["requests"]
    assert stats["forward_backward"] == stats["optim_step"] == 10


# ------------------------------------------------------------------------------ arguments
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sample", "-c", "2", "-r", "5"], "not both"),
        (["sample", "-c", "0"], "must be positive"),
        (["sample", "-c", "two"], "is not a whole number"),
        (["sample", "-c", "2,2"], "repeats a value"),
        (["sample", "-r", "inf"], "must be positive and finite"),
        (["sample", "--prompt-len", "uniform:5"], "uniform takes 2 parameter(s)"),
        (["sample", "--prompt-len", "uniform:9,3"], "1 <= LOW <= HIGH"),
        (["sample", "--output-len", "gamma:3"], "unknown distribution"),
        (["sample", "--output-len", "0"], "1 or more"),
        (["sample", "--percentiles", "50,150"], "not a percentile"),
        (["sample", "--model", "m", "--model-path", "tinker://x/sampler_weights/y"], "not both"),
        (["sample", "--stream", "--client", "official"], "sample_stream"),
        (["sample", "--max-concurrency", "4"], "with --request-rate"),
        (["sample", "--engine", "null"], "--engine picks the embedded server"),
        (["train", "-d", "0"], "must be positive"),
        (["train", "--batch-size", "0"], "0 is not in the range"),
    ],
)
def test_bad_arguments_are_usage_errors(local_server: Any, args: list[str], message: str) -> None:
    r = bench(local_server, *args)
    assert r.exit_code == 2, r.output
    assert message in r.output
    assert asample_count(local_server) == 0  # nothing was sent


# ------------------------------------------------------------------------------ plot
def test_plot_is_written_for_a_sweep(local_server: Any, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "sweep.png"
    r = bench(local_server, "sample", "-c", "1,2", "-n", "3", "--stream", "--plot", str(png))
    assert r.exit_code == 0, r.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_is_a_clear_error(
    local_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    r = bench(local_server, "sample", "-n", "2", "--plot", str(tmp_path / "p.png"))
    assert r.exit_code == 2
    assert "pip install 'tinker-actors[plot]'" in r.output
    assert not (tmp_path / "p.png").exists() and asample_count(local_server) == 0


# ------------------------------------------------------------------------------ no server
def test_arrival_schedule_is_seeded_and_poisson() -> None:
    rate, n = 50.0, 4000
    times = schedule(rate, seed=3, requests=n)
    assert times == schedule(rate, seed=3, requests=n)
    assert times != schedule(rate, seed=4, requests=n)
    gaps = np.diff([0.0, *times])
    assert (gaps > 0).all()
    # the mean gap is 1/rate within 4 standard errors (fixed seed: deterministic)
    assert abs(gaps.mean() - 1 / rate) < 4 * (1 / rate) / math.sqrt(n)
    # Kolmogorov-Smirnov against Exp(rate), at the 1% level
    xs = np.sort(gaps)
    cdf = 1 - np.exp(-rate * xs)
    k = np.arange(1, n + 1)
    d = max(float((k / n - cdf).max()), float((cdf - (k - 1) / n).max()))
    assert d < 1.63 / math.sqrt(n)
    # a duration cut keeps the same prefix
    cut = schedule(rate, seed=3, duration=10.0)
    assert cut == [t for t in times if t < 10.0]
    assert schedule(4, process="fixed", requests=4) == [0.0, 0.25, 0.5, 0.75]


def test_workload_is_a_function_of_seed_and_index() -> None:
    w = Workload(LengthDist.parse("normal:20,5"), LengthDist.parse("exponential:10"), seed=1)
    assert w.spec(5) == w.spec(5)
    assert w.spec(5) != Workload(w.prompt_len, w.output_len, seed=2).spec(5)
    assert all(len(w.spec(i).prompt) >= 1 and w.spec(i).max_tokens >= 1 for i in range(50))
    assert all(0 <= t < 256 for i in range(10) for t in w.spec(i).prompt)
    for text in ("7", "uniform:3,9", "normal:20,5", "exponential:10"):
        assert str(LengthDist.parse(text)) == text


def test_queue_wait_comes_from_queue_state_events() -> None:
    from tinker_actors import events
    from tinker_actors.bench.measure import EventTally

    now = [0.0]
    with EventTally(clock=lambda: now[0]) as tally:

        def state(rid: str, s: str, reason: str | None) -> None:
            meta = {"request_id": rid, "request_type": "ForwardBackward", "queue_state": s,
                    "queue_state_reason": reason}  # fmt: skip
            events.emit(events.QUEUE_STATE_CHANGE, {}, meta)

        state("a", "paused_rate_limit", None)  # waiting from 0
        now[0] = 2.0
        state("a", "active", "running")  # running from 2
        state("b", "active", "queued behind 3 request(s) of model m")  # waiting from 2
        now[0] = 3.5
        events.emit(events.FUTURE_RESOLVED, {"elapsed_time": 1.0}, {"request_id": "b"})
        events.emit(events.FUTURE_RESOLVED, {"elapsed_time": 1.0}, {"request_id": "a"})
        events.emit(events.HTTP_STOP, {"status": 429, "retry_count": 0}, {})
        events.emit(events.RETRY_RETRY, {"duration": 0.1}, {"attempt": 1})
    snap = tally.snapshot()
    assert snap["queue_wait_s"] == pytest.approx(2.0 + 1.5)
    assert snap["queue_state_changes"] == {"paused_rate_limit": 1, "active": 2}
    assert snap["http_429"] == 1 and snap["retries"] == 1


def test_root_help_does_not_import_bench_and_the_module_runs() -> None:
    import subprocess

    code = (
        "import sys\nfrom tinker_actors.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('LOADED' if 'tinker_actors.bench.cli' in sys.modules else 'LAZY')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "bench" in out.stdout and out.stdout.strip().endswith("LAZY"), out
    out = subprocess.run(
        [sys.executable, "-m", "tinker_actors.bench", "sample", "-c", "x"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2 and "is not a whole number" in out.stderr, out


@pytest.mark.parametrize("load", [["-c", "2"], ["-r", "300", "--max-concurrency", "2"]])
def test_duration_bounded_points_still_add_up(
    local_server: Any, tmp_path: Path, load: list[str]
) -> None:
    doc = run_json(local_server, tmp_path, "--duration", "0.3", *load)
    (point,) = doc["results"]
    check_counts(point)
    assert point["num_requests"] >= 1 and asample_count(local_server) == point["num_requests"]
    assert point["max_concurrent_requests"] <= 2


def test_model_path_samples_from_a_checkpoint(local_server: Any, tmp_path: Path) -> None:
    import tinker_actors as tinker

    service = tinker.ServiceClient(base_url=local_server.base_url, api_key=local_server.api_key)
    try:
        training = service.create_lora_training_client(base_model=MODEL, rank=4).result()
        path = training.save_weights_for_sampler("bench").result().path
    finally:
        service.close().result()
    out = tmp_path / "ckpt.json"
    r = bench(local_server, "sample", "--model-path", path, "-n", "4", "--json", str(out))
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert doc["config"]["model_path"] == path and doc["results"][0]["completed"] == 4


def test_plot_command_overlays_runs(local_server: Any, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    docs = []
    for client in ("tinker_actors", "official"):
        out = tmp_path / f"{client}.json"
        r = bench(local_server, "sample", "--client", client, "-c", "1,2", "-n", "2",
                  "--json", str(out))  # fmt: skip
        assert r.exit_code == 0, r.output
        docs.append(str(out))
    png = tmp_path / "cmp.png"
    r = bench(local_server, "plot", *docs, "-o", str(png))
    assert r.exit_code == 0, r.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    train = tmp_path / "train.json"
    assert bench(local_server, "train", "-n", "1", "--json", str(train)).exit_code == 0
    r = bench(local_server, "plot", docs[0], str(train), "-o", str(tmp_path / "x.png"))
    assert r.exit_code == 2 and "cannot share axes" in r.output
    (tmp_path / "junk.json").write_text("{}")
    r = bench(local_server, "plot", str(tmp_path / "junk.json"), "-o", str(tmp_path / "y.png"))
    assert r.exit_code == 2 and "not a tinker-actors-bench/1 document" in r.output
