"""A model's trained weights as data: a CPU copy of what training changed and putting it back (epoch selection,
soups), the average of several runs' updates (a model soup), and an update scaled toward the base model
(adapter_scale)."""
from __future__ import annotations

import gc
import json
from pathlib import Path

import torch

from memorize.models import load_model


def trained_weights(model) -> dict:
    """A CPU copy of what training changes: the adapter's weights, or every weight of a full fine-tune."""
    from peft import PeftModel, get_peft_model_state_dict

    state = get_peft_model_state_dict(model) if isinstance(model, PeftModel) else model.state_dict()
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def restore_weights(model, weights: dict) -> None:
    """Put a copy made by trained_weights back into the model."""
    from peft import PeftModel, set_peft_model_state_dict

    if isinstance(model, PeftModel):
        set_peft_model_state_dict(model, weights)
    else:
        model.load_state_dict(weights)


def _mean(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The element-wise mean, computed in fp32 (bf16 sums lose digits) and returned in the tensors' dtype."""
    return torch.stack([t.float() for t in tensors]).mean(0).to(tensors[0].dtype)


def average(soup: list[dict]) -> dict:
    """The element-wise mean of several runs' weights: a full fine-tune's soup."""
    return {k: _mean([w[k] for w in soup]) for k in soup[0]}


def save_lora_soup(adapter_dir: Path, soup: list[dict]) -> None:
    """Overwrite the saved adapter with the average of the runs' LoRA updates, exactly: stacking the A matrices
    (rows) and B matrices (columns) of N rank-r adapters gives one rank N*r adapter whose B @ A is the sum of
    theirs, and the same alpha over N*r ranks divides that sum by N."""
    from safetensors.torch import save_file

    def combine(key: str) -> torch.Tensor:
        parts = [w[key] for w in soup]
        if ".lora_A." in key or key.endswith("lora_embedding_A"):
            return torch.cat(parts, dim=0)
        if ".lora_B." in key or key.endswith("lora_embedding_B"):
            return torch.cat(parts, dim=1)
        return _mean(parts)  # e.g. modules_to_save

    save_file({k: combine(k).contiguous() for k in soup[0]}, Path(adapter_dir) / "adapter_model.safetensors",
              metadata={"format": "pt"})
    path = Path(adapter_dir) / "adapter_config.json"
    cfg = json.loads(path.read_text())
    n = len(soup)
    cfg["r"] = cfg["r"] * n
    cfg["rank_pattern"] = {k: v * n for k, v in (cfg.get("rank_pattern") or {}).items()}
    path.write_text(json.dumps(cfg, indent=2))


def scale_adapter(adapter_dir: Path, factor: float) -> None:
    """Multiply a saved LoRA adapter's update by `factor` through its alpha, which peft, vLLM and the merge
    read from adapter_config.json (scaling = alpha / r)."""
    path = Path(adapter_dir) / "adapter_config.json"
    cfg = json.loads(path.read_text())
    cfg["lora_alpha"] = cfg["lora_alpha"] * factor
    cfg["alpha_pattern"] = {k: v * factor for k, v in (cfg.get("alpha_pattern") or {}).items()}
    path.write_text(json.dumps(cfg, indent=2))


def interpolate_toward_base(model, base_model: str, factor: float) -> None:
    """Weights of a full fine-tune moved to base + factor x (tuned - base), in place (WiSE-FT)."""
    base = dict(load_model(base_model, dtype=next(model.parameters()).dtype).named_parameters())
    with torch.no_grad():
        for name, weight in model.named_parameters():  # tied weights once
            weight.mul_(factor).add_(base[name].to(weight.device), alpha=1 - factor)
    del base
    free_memory()


def free_memory() -> None:
    """Give back what dropped models and weights held, on the GPU too."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
