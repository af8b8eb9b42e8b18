"""The GPU node: LoRA/QLoRA (or full) training. Returns paths and numbers, never model objects, so it can
run in another process or on another machine (a `gpu` work-pool worker)."""
from __future__ import annotations

import hashlib
from pathlib import Path

from memorize import content_key
from memorize.extract import file_sha256
from memorize.training import TrainConfig, resolve, train
from tasks.caching import cached_task


def _file_input(path: str | None) -> str | None:
    """A setting that may name a file (a chat template is a file or the template itself), by its content."""
    return file_sha256(path) if path and Path(path).is_file() else None


def training_key(config: TrainConfig) -> str:
    data = Path(config.data_dir)
    chunks = data / "chunks.jsonl"  # copied beside the model: evidence and --rag read it
    # Resolved (the learning rate): a default that changes in code must not reuse an old run. Files by content:
    # an edited replay list or template under the same path is another run.
    return content_key("train", file_sha256(data / "train.jsonl"), file_sha256(data / "test.jsonl"),
                       file_sha256(chunks) if chunks.exists() else None, resolve(config).model_dump(),
                       _file_input(config.replay_prompts), _file_input(config.chat_template))


def folder_sha256(folder: str | Path) -> str:
    """One hash of every file under `folder`, names included: what a cached training result saved."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(f.relative_to(folder).as_posix().encode() + b"\0")
        with open(f, "rb") as stream:
            digest.update(hashlib.file_digest(stream, "sha256").digest())
    return digest.hexdigest()


def still_on_disk(summary: dict) -> bool:
    """Whether a cached training result's model is the one in its folder now: another run into the same
    folder (other settings, other data) replaces it, and the hit would then stand for that run's model."""
    model = Path(summary["adapter_dir"])
    return model.is_dir() and summary.get("model_sha256") == folder_sha256(model)


def _summary(result) -> dict:
    return {
        "output_dir": str(result.output_dir), "adapter_dir": str(result.adapter_dir),
        "model_sha256": folder_sha256(result.adapter_dir),
        "metrics_path": str(result.metrics_path), "loss_curve_path": str(result.loss_curve_path),
        "merged_dir": str(result.merged_dir) if result.merged_dir else None, "hub_url": result.hub_url,
        "train_losses": result.train_losses, "eval_losses": result.eval_losses,
        "final_train_loss": result.final_train_loss, "final_eval_loss": result.final_eval_loss,
        "runtime_s": result.runtime_s, "tokens_per_s": result.tokens_per_s,
        "qa_by_epoch": result.qa_by_epoch, "selected_epoch": result.selected_epoch,
    }


@cached_task("train", lambda p: training_key(p["config"]))
def train_task(config: TrainConfig, progress: bool = True) -> dict:
    return _summary(train(config, progress=progress))
