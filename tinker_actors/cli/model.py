"""``model list [SUBSTRING]``: generated from the capabilities route, filtered by name."""

from __future__ import annotations

from typing import Any

import click

from .core import CliError, rest_client
from .generated import RestSpec, build
from .render import Output, format_bool


def present(caps: Any, params: dict[str, Any]) -> Output:
    models = list(caps.supported_models)
    sub = params.get("substring")
    if sub is not None:
        models = [m for m in models if m.model_name and sub.lower() in m.model_name.lower()]
        if not models:
            raise CliError(
                f"No model name contains '{sub}'{_org()}",
                "Run 'tinker-actors model list' to see every model this server offers.",
            )
    rows = [
        [
            "N/A" if m.model_name is None else m.model_name,
            "N/A" if m.max_context_length is None else str(m.max_context_length),
            format_bool(m.trainable),
            format_bool(m.sampleable),
        ]
        for m in models
    ]
    return Output({"models": models}, ["Model", "Max Context", "Trainable", "Sampleable"], rows)


def _org() -> str:
    try:
        return f" for organization {rest_client().whoami().result().org_urn}"
    except Exception:  # whoami needs a JWT; the message stands without it
        return ""


@click.group()
def cli() -> None:
    """List available models."""


cli.add_command(
    build(
        RestSpec(
            "list",
            "get_server_capabilities",
            "List the models the server offers.\n\nSUBSTRING keeps only the models whose "
            "name contains it, ignoring case. Pass the name in the Model column as base_model.",
            params=(click.Argument(["substring"], required=False),),
            present=present,
        )
    )
)
