"""``tinker-actors bench sample`` and ``bench train`` (also ``python -m tinker_actors.bench``).

Options are checked before anything starts, so a bad one is a usage error (exit 2) with the
option named, never a half-run benchmark. See docs/bench.md.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from tinker_actors.bench.workload import DIST_HELP, LengthDist

_CONTEXT = {"help_option_names": ["-h", "--help"]}


# ------------------------------------------------------------------------------ parameter types
if TYPE_CHECKING:  # generic in click's newer stubs; not subscriptable at runtime in older clicks
    _ParamType = click.ParamType[Any]
else:
    _ParamType = click.ParamType


class _Dist(_ParamType):
    name = "LENGTH"

    def convert(self, value: Any, param: Any, ctx: Any) -> LengthDist:
        if isinstance(value, LengthDist):
            return value
        try:
            return LengthDist.parse(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class _List(_ParamType):
    """A comma-separated list of positive numbers: ``1,16,64``."""

    def __init__(self, kind: type, name: str) -> None:
        self.kind, self.name = kind, name

    def convert(self, value: Any, param: Any, ctx: Any) -> list[Any]:
        if isinstance(value, list):
            return value
        out = []
        for part in str(value).split(","):
            part = part.strip()
            try:
                v = self.kind(part)
            except ValueError:
                self.fail(
                    f"{part!r} is not a {'whole ' if self.kind is int else ''}number "
                    "(use a list like 1,16,64)",
                    param,
                    ctx,
                )
            if not (v > 0 and math.isfinite(v)):
                self.fail(f"{part!r} must be positive and finite", param, ctx)
            out.append(v)
        if len(set(out)) != len(out):
            self.fail(f"{value!r} repeats a value", param, ctx)
        return out


def _percentiles(ctx: Any, param: Any, value: str) -> list[float]:
    out = []
    for part in value.split(","):
        try:
            p = float(part)
        except ValueError:
            raise click.BadParameter(f"{part!r} is not a number") from None
        if not 0 < p <= 100:
            raise click.BadParameter(f"{p:g} is not a percentile in (0, 100]")
        out.append(p)
    return sorted(set(out))


def _common(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options both commands take (applied bottom-up, so they list in this order)."""
    options = [
        click.option(
            "--base-url",
            envvar="TINKER_BASE_URL",
            default=None,
            help="Endpoint to load (env TINKER_BASE_URL). Default: an embedded local server.",
        ),
        click.option(
            "--api-key",
            envvar="TINKER_API_KEY",
            default=None,
            help="API key (env TINKER_API_KEY). Never written to the report.",
        ),
        click.option(
            "--engine",
            type=click.Choice(["torch", "null"]),
            default=None,
            help="Engine of the embedded server (default torch; null does no compute).",
        ),
        click.option(
            "--client",
            "client",
            type=click.Choice(["tinker_actors", "official"]),
            default="tinker_actors",
            show_default=True,
            help="Client that sends the load: ours, or the official tinker SDK.",
        ),
        click.option("--model", default=None, help="Base model (default: the server's first)."),
        click.option(
            "--duration",
            type=click.FloatRange(min=0, min_open=True),
            default=None,
            help="Seconds per sweep point (with --requests/--steps: whichever ends first).",
        ),
        click.option(
            "--warmup",
            type=click.IntRange(min=0),
            default=1,
            show_default=True,
            help="Requests/steps sent first and left out of the figures.",
        ),
        click.option(
            "--seed",
            type=int,
            default=0,
            show_default=True,
            help="Seed of lengths, prompts, sampling and arrivals.",
        ),
        click.option(
            "--percentiles",
            default="50,90,99",
            show_default=True,
            callback=_percentiles,
            help="Latency percentiles to report.",
        ),
        click.option(
            "--vocab-size",
            type=click.IntRange(min=2),
            default=256,
            show_default=True,
            help="Random token ids are drawn from [0, N).",
        ),
        click.option(
            "--json",
            "json_path",
            type=click.Path(dir_okay=False, writable=True),
            default=None,
            help="Write every figure, the config, versions and machine here.",
        ),
        click.option(
            "--plot",
            "plot_path",
            type=click.Path(dir_okay=False, writable=True),
            default=None,
            help="Write latency percentiles against the sweep (needs [plot]).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


# ------------------------------------------------------------------------------ commands
@click.group(name="bench", context_settings=_CONTEXT)
def cli() -> None:
    """Load-test a Tinker-compatible endpoint: sampling (vLLM benchmark_serving's figures)
    and training steps. With no --base-url, an embedded local server is the target."""


@cli.command(context_settings=_CONTEXT)
@_common
@click.option("--model-path", default=None, help="Sample from a tinker:// checkpoint instead.")
@click.option(
    "--prompt-len",
    type=_Dist(),
    default="32",
    show_default=True,
    help=f"Prompt tokens: {DIST_HELP}.",
)
@click.option(
    "--output-len",
    type=_Dist(),
    default="32",
    show_default=True,
    help="max_tokens per request, same forms as --prompt-len.",
)
@click.option("--num-samples", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--concurrency",
    "-c",
    type=_List(int, "N[,N...]"),
    default=None,
    help="Closed loop: requests in flight (a list runs a sweep). Default 1.",
)
@click.option(
    "--request-rate",
    "-r",
    type=_List(float, "R[,R...]"),
    default=None,
    help="Open loop: requests per second (a list runs a sweep).",
)
@click.option(
    "--arrival",
    type=click.Choice(["poisson", "fixed"]),
    default="poisson",
    show_default=True,
    help="Open-loop arrivals: Poisson or a fixed interval.",
)
@click.option(
    "--max-concurrency",
    type=click.IntRange(min=1),
    default=None,
    help="Open loop: cap on requests in flight (later arrivals wait).",
)
@click.option(
    "--requests",
    "-n",
    type=click.IntRange(min=1),
    default=None,
    help="Requests per sweep point (default 100 unless --duration).",
)
@click.option("--stream", is_flag=True, help="Use sample_stream: TTFT, TPOT and ITL.")
@click.option("--temperature", type=click.FloatRange(min=0), default=1.0, show_default=True)
def sample(**opts: Any) -> int:
    """Sampling load: request throughput, tokens/s, TTFT / TPOT / ITL / E2E percentiles."""
    from tinker_actors.bench.runner import SampleConfig, run_sample

    target = _target(opts)
    if opts["concurrency"] and opts["request_rate"]:
        raise click.UsageError(
            "give --concurrency (closed loop) or --request-rate (open loop), not both"
        )
    if opts["max_concurrency"] and not opts["request_rate"]:
        raise click.UsageError("--max-concurrency caps an open loop: use it with --request-rate")
    if opts["model"] and opts["model_path"]:
        raise click.UsageError("give --model or --model-path, not both")
    if opts["stream"] and opts["client"] == "official":
        raise click.UsageError("--stream needs sample_stream, which the official SDK does not have")
    requests = opts["requests"]
    if requests is None and opts["duration"] is None:
        requests = 100
    cfg = SampleConfig(
        model=opts["model"],
        model_path=opts["model_path"],
        prompt_len=opts["prompt_len"],
        output_len=opts["output_len"],
        num_samples=opts["num_samples"],
        concurrency=opts["concurrency"],
        request_rate=opts["request_rate"],
        arrival=opts["arrival"],
        max_concurrency=opts["max_concurrency"],
        requests=requests,
        duration=opts["duration"],
        warmup=opts["warmup"],
        seed=opts["seed"],
        stream=opts["stream"],
        temperature=opts["temperature"],
        vocab_size=opts["vocab_size"],
        percentiles=opts["percentiles"],
    )
    return _execute("sample", target, cfg, run_sample, opts)


@cli.command(context_settings=_CONTEXT)
@_common
@click.option(
    "--batch-size",
    "-b",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Datums per forward_backward.",
)
@click.option(
    "--seq-len",
    type=click.IntRange(min=1),
    default=128,
    show_default=True,
    help="Tokens per datum.",
)
@click.option(
    "--depth",
    "-d",
    type=_List(int, "D[,D...]"),
    default="1",
    show_default=True,
    help="Steps in flight (pipelining; a list runs a sweep).",
)
@click.option(
    "--steps",
    "-n",
    type=click.IntRange(min=1),
    default=None,
    help="Steps per sweep point (default 20 unless --duration).",
)
@click.option(
    "--rank", type=click.IntRange(min=1), default=16, show_default=True, help="LoRA rank."
)
@click.option("--learning-rate", type=click.FloatRange(min=0), default=1e-4, show_default=True)
def train(**opts: Any) -> int:
    """Training load: forward_backward + optim_step steps; steps/s, tokens/s, step latency,
    time waiting in queue."""
    from tinker_actors.bench.runner import TrainConfig, run_train

    target = _target(opts)
    steps = opts["steps"]
    if steps is None and opts["duration"] is None:
        steps = 20
    cfg = TrainConfig(
        model=opts["model"],
        rank=opts["rank"],
        batch_size=opts["batch_size"],
        seq_len=opts["seq_len"],
        depth=opts["depth"],
        steps=steps,
        duration=opts["duration"],
        warmup=opts["warmup"],
        seed=opts["seed"],
        learning_rate=opts["learning_rate"],
        vocab_size=opts["vocab_size"],
        percentiles=opts["percentiles"],
    )
    return _execute("train", target, cfg, run_train, opts)


@cli.command(name="plot", context_settings=_CONTEXT)
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, writable=True),
    required=True,
    help="The image to write (PNG, SVG, PDF: by its extension).",
)
def plot_cmd(runs: tuple[str, ...], output: str) -> int:
    """Plot the --json documents of one or more runs on shared axes (say, the same sweep
    through tinker_actors and through --client official)."""
    from tinker_actors.bench import report

    try:
        report.check_plot_support()
    except ImportError as exc:
        raise click.UsageError(str(exc)) from None
    docs = []
    for path in runs:
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise click.BadParameter(f"{path}: not a JSON document ({exc})") from None
        if not isinstance(doc, dict) or doc.get("schema") != report.SCHEMA_ID:
            raise click.BadParameter(f"{path}: not a {report.SCHEMA_ID} document (bench --json)")
        docs.append(doc)
    try:
        report.plot(docs, output)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"wrote {output}", err=True)
    return 0


# ------------------------------------------------------------------------------ shared
def _target(opts: dict[str, Any]) -> Any:
    from tinker_actors.bench.drivers import load_client
    from tinker_actors.bench.report import check_plot_support
    from tinker_actors.bench.runner import Target
    from tinker_actors.errors import DriverError

    if opts["base_url"] and opts["engine"]:
        raise click.UsageError(
            "--engine picks the embedded server's engine: drop it with --base-url"
        )
    if opts["plot_path"]:
        try:
            check_plot_support()
        except ImportError as exc:
            raise click.UsageError(str(exc)) from None
    try:
        load_client(opts["client"])
    except DriverError as exc:
        raise click.UsageError(str(exc)) from None
    return Target(
        base_url=opts["base_url"],
        api_key=opts["api_key"],
        engine=opts["engine"] or "torch",
        client=opts["client"],
    )


def _execute(kind: str, target: Any, cfg: Any, runner: Any, opts: dict[str, Any]) -> int:
    from tinker_actors.bench import report
    from tinker_actors.bench.drivers import load_client
    from tinker_actors.cli.core import CliError, cli_context, handle_errors

    progress = report.live_progress("req" if kind == "sample" else "step")

    def go() -> Any:
        from tinker_actors.errors import APIConnectionError

        try:
            return asyncio.run(runner(target, cfg, progress))
        except APIConnectionError as exc:
            raise CliError(
                f"Connection failed: could not reach {target.base_url}",
                f"Is the server running? Check --base-url / TINKER_BASE_URL.\nDetails: {exc}",
            ) from exc

    run = handle_errors(go)()
    doc = report.document(kind, cfg.as_json(), run, load_client(target.client))
    if opts["json_path"]:
        Path(opts["json_path"]).write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    if opts["plot_path"]:
        report.plot(doc, opts["plot_path"])
    if cli_context().format == "json":
        sys.stdout.write(json.dumps(doc, indent=1) + "\n")
    else:
        report.print_summary(doc)
    if not any(p["completed"] for p in doc["results"]):
        raise CliError(
            f"no {'request' if kind == 'sample' else 'step'} completed",
            "See the errors above; the figures were still written.",
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m tinker_actors.bench``: the same commands outside the root CLI."""
    from tinker_actors.cli.core import show_error
    from tinker_actors.errors import CliError

    try:
        rv = cli.main(args=argv, prog_name="python -m tinker_actors.bench", standalone_mode=False)
    except CliError as exc:
        show_error(exc)
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:
        click.echo("Aborted!", err=True)
        return 130
    return int(rv or 0)
