"""``checkpoint push-hf``: a checkpoint to the Hugging Face Hub as a PEFT adapter.

The checkpoint is downloaded (archives safely extracted) into a temporary directory; the
adapter config gets the base model when it has none; a model card is written when the
checkpoint has no README; then ``huggingface_hub.HfApi`` creates the repo and uploads.
A repo whose README names a different ``tinker://`` checkpoint is refused.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .core import CliError, parse_path
from .download import download_checkpoint

_TINKER_PATH_RE = re.compile(r"tinker://[^\s`'\"<>)]+")


def sanitize(value: str) -> str:
    """Hub-safe name: ``[A-Za-z0-9_.-]``, other characters to ``-``, runs collapsed, trimmed."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", value)
    name = re.sub(r"-{2,}", "-", name)
    return name.strip("-_ .")


def patch_adapter_config(path: Path, base_model: str) -> bool:
    """Sets ``base_model_name_or_path`` when it is not already a string; True if changed."""
    config = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(config.get("base_model_name_or_path"), str):
        return False
    config["base_model_name_or_path"] = base_model
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return True


def render_model_card(tinker_path: str, repo_id: str, base_model: str, info: Any) -> str:
    tags = ["tinker", "peft", "lora"]
    if base_model != "unknown":
        tags.append(f"base_model:adapter:{base_model}")
    lines = ["---", f"base_model: {base_model}", "library_name: peft", "tags:"]
    lines += [f"- {t}" for t in tags]
    lines += [
        f"tinker_path: {tinker_path}",
        "---",
        "",
        "# Tinker LoRA adapter",
        "",
        "A LoRA adapter trained with the Tinker API and exported with `tinker-actors`.",
        "",
        "## Usage",
        "",
        "```python",
        "from peft import PeftModel",
        "from transformers import AutoModelForCausalLM",
        "",
        f'base = AutoModelForCausalLM.from_pretrained("{base_model}")',
        f'model = PeftModel.from_pretrained(base, "{repo_id}")',
        "```",
        "",
        "## Source",
        "",
        "```",
        tinker_path,
        "```",
        "",
        "## Details",
        "",
        f"- Base model: {base_model}",
    ]
    if info is not None and info.lora_rank is not None:
        lines.append(f"- LoRA rank: {info.lora_rank}")
    if info is not None and any(
        v is not None for v in (info.train_attn, info.train_mlp, info.train_unembed)
    ):
        lines.append(
            f"- Trained modules: attn={info.train_attn}, mlp={info.train_mlp}, "
            f"unembed={info.train_unembed}"
        )
    return "\n".join([*lines, ""])


def _hf_api() -> Any:
    try:
        from huggingface_hub import HfApi
    except ImportError as exc:
        raise CliError(
            "huggingface_hub is required for push-hf",
            "Install it with: pip install 'tinker-actors[hub]' (or pip install huggingface_hub)",
        ) from exc
    return HfApi()


def push_checkpoint(
    rest: Any,
    tinker_path: str,
    repo_id: str | None,
    *,
    public: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    create_pr: bool = False,
    allow_patterns: list[str] | None = None,
    ignore_patterns: list[str] | None = None,
    model_card: bool = True,
    show: bool = False,
    api_factory: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """Uploads the checkpoint; returns ``{repo_id, revision, public}``."""
    parsed = parse_path(tinker_path)
    api = (api_factory or _hf_api)()
    try:
        api.whoami()
    except Exception as exc:
        raise CliError(
            "Not logged in to Hugging Face",
            "Run `hf auth login`, or set HF_TOKEN.",
        ) from exc

    with tempfile.TemporaryDirectory(prefix="tinker-actors-hf-") as tmp:
        folder = Path(tmp)
        download_checkpoint(rest, tinker_path, folder, show=show)
        config = folder / "adapter_config.json"
        if not config.exists() or not (
            (folder / "adapter_model.safetensors").exists()
            or (folder / "adapter_model.bin").exists()
        ):
            raise CliError(
                "Checkpoint does not contain a PEFT adapter",
                "Expected adapter_config.json and adapter_model.safetensors (or .bin).",
            )
        try:
            info = rest.get_weights_info_by_tinker_path(tinker_path).result()
            base_model = info.base_model or "unknown"
        except Exception:
            info, base_model = None, "unknown"
        patch_adapter_config(config, base_model)

        if repo_id is None:
            short = base_model.split("/")[-1] if base_model != "unknown" else "adapter"
            repo_id = sanitize(f"tinker-{short}-{parsed.training_run_id}")
            if revision is None:
                revision = sanitize(parsed.checkpoint_id.replace("/", "-"))
        readme = folder / "README.md"
        if model_card and not readme.exists():
            readme.write_text(render_model_card(tinker_path, repo_id, base_model, info), "utf-8")

        api.create_repo(repo_id=repo_id, private=not public, exist_ok=True)
        existing = _remote_tinker_path(api, repo_id, revision)
        if existing and existing != tinker_path:
            raise CliError(
                "Repo ID appears to contain a different Tinker checkpoint",
                f"Found {existing}, expected {tinker_path}. Choose another --repo.",
            )
        ignore = list(ignore_patterns or [])
        if not allow_patterns and "checkpoint_complete" not in ignore:
            ignore.append("checkpoint_complete")
        api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            path_in_repo="",
            revision=revision,
            commit_message=commit_message or f"Upload adapter from {tinker_path}",
            create_pr=create_pr,
            allow_patterns=allow_patterns or None,
            ignore_patterns=ignore or None,
        )
    return {"repo_id": repo_id, "revision": revision, "public": public}


def _remote_tinker_path(api: Any, repo_id: str, revision: str | None) -> str | None:
    """The ``tinker://`` path named in the repo's README at ``revision``, if any."""
    try:
        local = api.hf_hub_download(repo_id=repo_id, filename="README.md", revision=revision)
        text = Path(local).read_text(encoding="utf-8", errors="ignore")
    except Exception:  # no README (or no such revision yet): nothing to compare
        return None
    m = _TINKER_PATH_RE.search(text)
    return m.group(0) if m else None
