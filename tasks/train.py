"""The GPU node: LoRA/QLoRA (or full) training. Returns paths and numbers, never model objects, so it can
run in another process or on another machine (a `gpu` work-pool worker)."""
from __future__ import annotations

from pathlib import Path

from prefect import task

from memorize.extract import file_sha256
from memorize.training import TrainConfig, resolve, train
from memorize import content_key


def training_key(config: TrainConfig) -> str:
    data = Path(config.data_dir)
    # Resolved (the learning rate): a default that changes in code must not reuse an old run.
    return content_key("train", file_sha256(data / "train.jsonl"), file_sha256(data / "test.jsonl"),
                       resolve(config).model_dump())


def _summary(result) -> dict:
    return {
        "output_dir": str(result.output_dir), "adapter_dir": str(result.adapter_dir),
        "metrics_path": str(result.metrics_path), "loss_curve_path": str(result.loss_curve_path),
        "merged_dir": str(result.merged_dir) if result.merged_dir else None, "hub_url": result.hub_url,
        "train_losses": result.train_losses, "eval_losses": result.eval_losses,
        "final_train_loss": result.final_train_loss, "final_eval_loss": result.final_eval_loss,
        "runtime_s": result.runtime_s, "tokens_per_s": result.tokens_per_s,
        "qa_by_epoch": result.qa_by_epoch, "selected_epoch": result.selected_epoch,
    }


@task(name="train", persist_result=True,
      cache_key_fn=lambda ctx, p: training_key(p["config"]))
def train_task(config: TrainConfig, progress: bool = True) -> dict:
    return _summary(train(config, progress=progress))
