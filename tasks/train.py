"""The GPU node: LoRA/QLoRA training. Returns paths and numbers, never model objects, so it can
run in another process or on another machine (a `gpu` work-pool worker)."""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from prefect import task

from memorize.extract import file_sha256
from memorize.training import TrainConfig, find_epochs, train
from tasks.caching import content_key


def training_key(config: TrainConfig, find_epochs_max: int | None) -> str:
    data = Path(config.data_dir)
    return content_key("train", file_sha256(data / "train.jsonl"), file_sha256(data / "test.jsonl"),
                       asdict(config), find_epochs_max)


def _summary(result, best_epoch: int | None = None) -> dict:
    return {
        "output_dir": str(result.output_dir), "adapter_dir": str(result.adapter_dir),
        "metrics_path": str(result.metrics_path), "loss_curve_path": str(result.loss_curve_path),
        "merged_dir": str(result.merged_dir) if result.merged_dir else None, "hub_url": result.hub_url,
        "train_losses": result.train_losses, "eval_losses": result.eval_losses,
        "final_train_loss": result.final_train_loss, "final_eval_loss": result.final_eval_loss,
        "runtime_s": result.runtime_s, "tokens_per_s": result.tokens_per_s, "best_epoch": best_epoch,
    }


@task(name="train-lora", persist_result=True,
      cache_key_fn=lambda ctx, p: training_key(p["config"], p["find_epochs_max"]))
def train_task(config: TrainConfig, find_epochs_max: int | None = None, progress: bool = True) -> dict:
    if find_epochs_max:
        search = find_epochs(config, find_epochs_max, progress=progress)
        return _summary(search.final, search.best_epoch)
    return _summary(train(config, progress=progress))
