"""Checkpoint files: training state (adapter + AdamW + metadata) and PEFT sampler weights.

Training state directory:
    adapter_model.safetensors   LoRA tensors, PEFT key names
    optimizer.safetensors       ``<peft key>.exp_avg`` / ``.exp_avg_sq`` / ``.step`` per tensor
    training_state.json         format, base model, LoraSpec, lora_alpha, optimizer step count

Sampler weights directory (the PEFT adapter layout, loads with ``PeftModel.from_pretrained``):
    adapter_config.json         peft_type LORA, r, lora_alpha, target_modules, base model
    adapter_model.safetensors   ``base_model.model.<module path>.lora_A.weight`` [r, in] and
                                ``...lora_B.weight`` [out, r], float32
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .base import EngineUserError, LoraSpec
from .lora import Adapter, LoraPair, parse_peft_key, peft_key

STATE_FORMAT = "tinker-actors-train-v1"
ADAPTER_FILE = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "training_state.json"
GRADIENTS_FILE = "gradients.safetensors"  # live state only: never in a user checkpoint


def _tensors(adapter: Adapter) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in adapter.named_tensors().items()}


def _size(directory: Path, names: list[str]) -> int:
    return sum((directory / n).stat().st_size for n in names)


def save_training_state(
    directory: Path,
    adapter: Adapter,
    optimizer: torch.optim.Optimizer,
    lora: LoraSpec,
    base_model: str,
    steps: int,
) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    save_file(_tensors(adapter), str(directory / ADAPTER_FILE))
    opt: dict[str, torch.Tensor] = {}
    for key, pair in sorted(adapter.pairs.items()):
        for which, p in (("A", pair.a), ("B", pair.b)):
            state = optimizer.state.get(p)
            if not state:
                continue
            name = peft_key(key, which)
            opt[f"{name}.exp_avg"] = state["exp_avg"].detach().cpu().contiguous()
            opt[f"{name}.exp_avg_sq"] = state["exp_avg_sq"].detach().cpu().contiguous()
            opt[f"{name}.step"] = torch.as_tensor(state["step"], dtype=torch.float32).reshape(1)
    save_file(opt, str(directory / OPTIMIZER_FILE))
    meta = {
        "format": STATE_FORMAT,
        "base_model": base_model,
        "lora": {
            "rank": lora.rank,
            "seed": lora.seed,
            "train_attn": lora.train_attn,
            "train_mlp": lora.train_mlp,
            "train_unembed": lora.train_unembed,
        },
        "lora_alpha": adapter.alpha,
        "target_modules": adapter.target_modules(),
        "optimizer_steps": steps,
    }
    (directory / STATE_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
    return _size(directory, [ADAPTER_FILE, OPTIMIZER_FILE, STATE_FILE])


def read_state_meta(directory: Path) -> dict[str, Any]:
    path = directory / STATE_FILE
    if not path.is_file():
        raise EngineUserError(f"{directory} is not a training state checkpoint (no {STATE_FILE})")
    meta: dict[str, Any] = json.loads(path.read_text())
    if meta.get("format") != STATE_FORMAT:
        raise EngineUserError(f"unknown training state format {meta.get('format')!r}")
    return meta


def lora_spec_from_meta(meta: dict[str, Any]) -> LoraSpec:
    return LoraSpec(**meta["lora"])


def load_adapter_into(adapter: Adapter, directory: Path) -> None:
    """Copies saved adapter tensors into ``adapter`` (same targets and shapes required)."""
    saved = load_file(str(directory / ADAPTER_FILE))
    mine = adapter.named_tensors()
    if set(saved) != set(mine):
        raise EngineUserError("checkpoint adapter tensors do not match this model's LoRA targets")
    with torch.no_grad():
        for k, t in mine.items():
            if saved[k].shape != t.shape:
                raise EngineUserError(f"checkpoint tensor {k} has shape {tuple(saved[k].shape)}")
            t.copy_(saved[k])


def load_optimizer_into(
    optimizer: torch.optim.Optimizer, adapter: Adapter, directory: Path
) -> None:
    saved = load_file(str(directory / OPTIMIZER_FILE))
    for key, pair in adapter.pairs.items():
        for which, p in (("A", pair.a), ("B", pair.b)):
            name = peft_key(key, which)
            if f"{name}.exp_avg" not in saved:
                continue
            optimizer.state[p] = {
                "step": saved[f"{name}.step"].reshape(()).clone(),
                "exp_avg": saved[f"{name}.exp_avg"].to(p.device),
                "exp_avg_sq": saved[f"{name}.exp_avg_sq"].to(p.device),
            }


def save_gradients(directory: Path, adapter: Adapter, pending: int) -> int:
    """The adapter's accumulated ``.grad`` tensors (PEFT key names) and how many
    forward_backward calls they sum; nothing is written when there are none."""
    grads = {
        k: t.grad.detach().cpu().contiguous()
        for k, t in adapter.named_tensors().items()
        if t.grad is not None
    }
    if not grads:
        return 0
    directory.mkdir(parents=True, exist_ok=True)
    save_file(grads, str(directory / GRADIENTS_FILE), metadata={"pending": str(pending)})
    return _size(directory, [GRADIENTS_FILE])


def load_gradients_into(adapter: Adapter, directory: Path) -> int:
    """Sets the adapter's ``.grad`` from ``save_gradients``; returns the pending count."""
    path = directory / GRADIENTS_FILE
    if not path.is_file():
        return 0
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        pending = int((f.metadata() or {}).get("pending", "1"))
    saved = load_file(str(path))
    mine = adapter.named_tensors()
    for k, g in saved.items():
        t = mine.get(k)
        if t is None or t.shape != g.shape:
            raise EngineUserError(f"saved gradient {k} does not match this model's LoRA")
        t.grad = g.to(t.device)
    return pending


def save_peft_adapter(directory: Path, adapter: Adapter, base_model: str) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    save_file(_tensors(adapter), str(directory / ADAPTER_FILE), metadata={"format": "pt"})
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": adapter.rank,
        "lora_alpha": adapter.alpha,
        "target_modules": adapter.target_modules(),
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "use_rslora": False,
        "use_dora": False,
        "modules_to_save": None,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "revision": None,
    }
    (directory / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True))
    return _size(directory, [ADAPTER_FILE, ADAPTER_CONFIG])


def load_peft_adapter(
    directory: Path, targets: dict[str, tuple[int, int]], device: torch.device
) -> dict[str, LoraPair]:
    """Immutable LoRA pairs from a PEFT adapter directory, checked against the base model."""
    cfg_path, w_path = directory / ADAPTER_CONFIG, directory / ADAPTER_FILE
    if not cfg_path.is_file() or not w_path.is_file():
        raise EngineUserError(f"{directory} is not a PEFT adapter directory")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("peft_type", "LORA") != "LORA":
        raise EngineUserError(f"unsupported peft_type {cfg.get('peft_type')!r}")
    r = int(cfg["r"])
    alpha = float(cfg.get("lora_alpha", r))
    scale = alpha / (r**0.5) if cfg.get("use_rslora") else alpha / r
    halves: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in load_file(str(w_path)).items():
        parsed = parse_peft_key(key)
        if parsed is None:
            continue
        path, which = parsed
        path = path.replace(".default", "")
        halves.setdefault(path, {})[which] = t
    pairs: dict[str, LoraPair] = {}
    for path, ab in halves.items():
        if path not in targets or set(ab) != {"A", "B"}:
            raise EngineUserError(f"adapter module {path!r} does not match the base model")
        fan_in, fan_out = targets[path]
        a, b = ab["A"], ab["B"]
        if a.shape[1] != fan_in or b.shape[0] != fan_out or a.shape[0] != b.shape[1]:
            raise EngineUserError(f"adapter tensors for {path!r} have the wrong shapes")
        pairs[path] = LoraPair(a.float().to(device), b.float().to(device), scale)
    return pairs
