"""``sample``: sample a base model or a checkpoint from the command line.

A prompt file holding a JSON list of token ids (or ``{"tokens": [...]}``) is sent as those
ids; any other prompt is text, encoded with the model's tokenizer. Progress notes go to
stderr, so stdout carries only the samples (or their JSON).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from .core import CliError, cli_context, handle_errors, parse_path, service_client


def read_prompt(prompt: str | None, prompt_file: str | None) -> list[int] | str:
    """Token ids from a token file, else the prompt text."""
    if (prompt is None) == (prompt_file is None):
        raise CliError("Give exactly one of --prompt or --prompt-file")
    if prompt is not None:
        return prompt
    try:
        text = Path(prompt_file).read_text(encoding="utf-8")  # type: ignore[arg-type]
    except OSError as exc:
        raise CliError(f"Cannot read the prompt file: {exc}") from exc
    try:
        data = json.loads(text)
    except ValueError:
        return text
    if isinstance(data, dict) and "tokens" in data:
        data = data["tokens"]
    if isinstance(data, list):
        if not data or not all(isinstance(t, int) and not isinstance(t, bool) for t in data):
            raise CliError(
                f"Prompt file {prompt_file} holds a list that is not token ids",
                'A token file is a non-empty JSON list of integers, or {"tokens": [...]}.',
            )
        return data
    return text


@click.command()
@click.option("--base-model", default=None, help="Sample this base model")
@click.option("--model-path", default=None, help="Sample this tinker:// sampler checkpoint")
@click.option("--prompt", default=None, help="Prompt text")
@click.option(
    "--prompt-file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help='A file of prompt text, or of token ids as a JSON list (or {"tokens": [...]})',
)
@click.option("--max-tokens", type=int, default=64, show_default=True)
@click.option("--temperature", type=float, default=1.0, show_default=True)
@click.option("--top-k", type=int, default=-1, show_default=True)
@click.option("--top-p", type=float, default=1.0, show_default=True)
@click.option("--num-samples", type=int, default=1, show_default=True)
@click.option("--seed", type=int, default=None, help="Sampling seed")
@click.option("--json", "as_json", is_flag=True, help="Print the SampleResponse as JSON")
@click.option("--output", type=click.Path(), default=None, help="Write to this file, not stdout")
@click.option("--base-url", default=None, help="Server URL (default: $TINKER_BASE_URL)")
@click.option("--api-key", default=None, help="API key (default: $TINKER_API_KEY)")
@handle_errors
def cli(
    base_model: str | None,
    model_path: str | None,
    prompt: str | None,
    prompt_file: str | None,
    max_tokens: int,
    temperature: float,
    top_k: int,
    top_p: float,
    num_samples: int,
    seed: int | None,
    as_json: bool,
    output: str | None,
    base_url: str | None,
    api_key: str | None,
) -> None:
    """Sample from a base model (--base-model) or a checkpoint (--model-path)."""
    from tinker_actors import types

    if (base_model is None) == (model_path is None):
        raise CliError("Give exactly one of --base-model or --model-path")
    if model_path is not None:
        parse_path(model_path)
    if num_samples < 1 or max_tokens < 1:
        raise CliError("--num-samples and --max-tokens must be at least 1")
    source = read_prompt(prompt, prompt_file)
    click.echo("Starting sampling...", err=True)
    sc = service_client(base_url, api_key)
    try:
        sampler = sc.create_sampling_client(model_path=model_path, base_model=base_model).result()
        tokenizer: Any = None
        if isinstance(source, str):
            tokenizer = sampler.get_tokenizer()
            ids = list(tokenizer.encode(source, add_special_tokens=False))
        else:
            ids = source
        params = types.SamplingParams(
            max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed
        )
        resp = sampler.sample(types.ModelInput.from_ints(ids), num_samples, params).result()
        if not (as_json or cli_context().format == "json") and tokenizer is None:
            try:
                tokenizer = sampler.get_tokenizer()
            except Exception:  # no tokenizer: show the token ids instead
                tokenizer = None
    finally:
        sc.close().result()
    if as_json or cli_context().format == "json":
        from .render import jsonable

        text = json.dumps(jsonable(resp), indent=2)
    else:
        blocks = []
        for i, seq in enumerate(resp.sequences, 1):
            body = tokenizer.decode(seq.tokens) if tokenizer is not None else str(seq.tokens)
            lps = seq.logprobs or []
            avg = sum(lps) / len(lps) if lps else float("nan")
            blocks.append(
                f"Sample {i}:\n{body}\nstop_reason={seq.stop_reason} | avg_logprob={avg:.3f}"
            )
        text = "\n\n".join(blocks)
    if output:
        Path(output).write_text(text + "\n", encoding="utf-8")
    else:
        click.echo(text)
    click.echo(f"Sampling complete ({len(resp.sequences)} sequences)", err=True)
