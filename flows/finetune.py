"""Flow `finetune`: a chat QA dataset folder -> LoRA/QLoRA adapter (or a full fine-tune), metrics and loss curves."""
from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact

from memorize import DEFAULT_CACHE_DIR, status_note
from memorize.local_model import resolve_model
from memorize.settings import TrainSettings
from memorize.training import TrainConfig
from tasks.caching import cached, result_storage
from tasks.train import still_on_disk, train_task, training_key


class SharedStorageError(RuntimeError):
    pass


def require_shared_path(path: str | Path, what: str) -> Path:
    """Flows on different workers exchange paths: a path this worker cannot see is a set-up error."""
    p = Path(path)
    if not p.exists():
        raise SharedStorageError(
            f"{what} {p} does not exist on this worker. Workers of the `gpu` pool must see the same "
            "filesystem paths as the rest of the pipeline (a shared mount such as NFS), or the dataset "
            "must come from the Hugging Face Hub; see docs/prefect.md, 'Shared storage'.")
    return p


def _losses_markdown(summary: dict) -> str:
    def epoch(e: dict) -> str:  # a soup's points carry the seed of their run
        return f"{e['epoch']}" + (f" (seed {e['seed']})" if "seed" in e else "")

    rows = "\n".join(f"| {epoch(e)} | {e['step']} | {e['loss']:.4f} |" for e in summary["eval_losses"])
    train = summary["train_losses"]
    first, last = (train[0]["loss"], train[-1]["loss"]) if train else (float("nan"), float("nan"))
    qa = "".join(f"\n| {epoch(e)} | {e['accuracy']:.0%} (n={e['n']}) |" for e in summary["qa_by_epoch"])
    seeds = sorted({e["seed"] for e in summary["qa_by_epoch"] if "seed" in e})
    kept = (f"Kept epoch {summary['selected_epoch']}, the best on held-out questions (closed-book):"
            if summary["selected_epoch"] is not None else
            f"Averaged the runs of seeds {', '.join(map(str, seeds))}, each at its best epoch on held-out "
            "questions (closed-book):" if seeds else "")
    kept = f"\n\n{kept}\n\n| epoch | accuracy |\n|---|---|{qa}" if kept else ""
    return (f"# Training\n\nTrain loss {first:.4f} -> {last:.4f}; final eval loss {summary['final_eval_loss']:.4f}; "
            f"{summary['runtime_s']:.0f} s, {summary['tokens_per_s']:.0f} tokens/s.{kept}\n\n"
            f"| epoch | step | eval loss |\n|---|---|---|\n{rows}\n\nCurves: `{summary['loss_curve_path']}`\n")


@flow(name="finetune")
def finetune(
    data_dir: str,
    output_dir: str,
    base_model: str | None = None,
    settings: TrainSettings = TrainSettings(),
    cache_dir: str = DEFAULT_CACHE_DIR,
    progress: bool = True,
) -> dict:
    """Fine-tune a LoRA adapter (or every weight) on DATA_DIR/{train,test}.jsonl. With settings.select_epoch, the
    weights kept are the epoch's that answers the test split's questions best.

    Args:
        data_dir: Output folder of build-dataset (train.jsonl, test.jsonl), on a path this worker can see.
        output_dir: Output folder: adapter/ (or full/), metrics.json, loss_curve.png.
        base_model: Model to fine-tune: a local folder or a Hub id (empty: the embedded SmolLM2-135M-Instruct).
        settings: Settings of fine-tuning.
        cache_dir: Folder of cached results; an unchanged dataset with unchanged settings is not trained again.
        progress: Show progress bars in the terminal.
    """
    require_shared_path(Path(data_dir) / "train.jsonl", "training data")
    config = TrainConfig(base_model=resolve_model(base_model), data_dir=data_dir, output_dir=output_dir,
                         **settings.model_dump())
    storage = result_storage(cache_dir)
    # A cached result is only good while the model it saved is still the one on disk.
    hit = cached(storage, training_key(config))
    refresh = hit is not None and not still_on_disk(hit)
    if refresh:
        get_run_logger().info(f"{hit['adapter_dir']} no longer holds the model of the cached run with these "
                              "settings (another run replaced it): training again")
    summary = train_task.with_options(result_storage=storage, refresh_cache=refresh)(config, progress)
    create_markdown_artifact(key="finetune-curves", markdown=_losses_markdown(summary) + status_note(output_dir))
    if summary["hub_url"]:
        create_link_artifact(key="finetune-adapter", link=summary["hub_url"], description="adapter on the Hub")
    get_run_logger().info(f"fine-tuned weights saved to {summary['adapter_dir']}")
    return summary
