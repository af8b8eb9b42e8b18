"""What a training run reports besides metrics.json: the loss curve (loss_curve.png) and the model card
pushed to the Hub with the model."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from memorize import replacing

if TYPE_CHECKING:  # memorize.training writes its report with this module
    from memorize.training import TrainConfig


def plot_losses(path: Path, history: dict) -> None:
    """Train and eval loss against epochs; held-out QA accuracy per epoch on a second axis."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and workers
    import matplotlib.pyplot as plt

    def by_seed(points: list[dict]) -> dict:  # a soup's runs as separate lines
        runs = {}
        for p in points:
            runs.setdefault(p.get("seed"), []).append(p)
        return {("" if seed is None else f", seed {seed}"): run for seed, run in runs.items()}

    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label, style in (("train_losses", "train loss", "-"), ("eval_losses", "eval loss (test split)", "o-")):
        for seed, points in by_seed(history[key]).items():
            ax.plot([p["epoch"] for p in points], [p["loss"] for p in points], style, label=label + seed)
    ax.set(xlabel="epoch", ylabel="loss")
    handles = ax.get_legend_handles_labels()
    if history["qa_by_epoch"]:
        qa = ax.twinx()
        for seed, points in by_seed(history["qa_by_epoch"]).items():
            qa.plot([e["epoch"] for e in points], [e["accuracy"] for e in points], "s--",
                    label=f"held-out QA accuracy (n={points[0]['n']}){seed}")
        qa.set(ylabel="accuracy", ylim=(0, 1))
        if history["selected_epoch"] is not None:
            qa.axvline(history["selected_epoch"], color="gray", linestyle=":",
                       label=f"kept: epoch {history['selected_epoch']}")
        handles = [a + b for a, b in zip(handles, qa.get_legend_handles_labels())]
    ax.legend(*handles, loc="upper right")
    fig.tight_layout()
    with replacing(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def model_card(config: TrainConfig, metrics: dict, eval_results: dict | None = None) -> str:
    """README.md for the Hub: base model, data, hyperparameters, losses and optional evaluation results."""
    from huggingface_hub import ModelCardData

    from memorize.publish import public_name

    base = public_name(config.base_model)
    # The Hub checks that base_model names a Hub repo: a local folder is left out.
    data = ModelCardData(library_name="transformers" if config.full else "peft",
                         tags=["memorize", "sft", "trl", *([] if config.full else ["lora"])],
                         base_model=config.base_model if base == config.base_model else None)
    front = ["---", data.to_yaml(), "---"]
    hp = metrics["hyperparameters"]
    keys = (*(() if config.full else ("lora_r", "lora_alpha", "lora_dropout", "target_modules", "qlora")),
            "full", "learning_rate", "epochs", "batch_size", "grad_accum", "lr_scheduler", "max_length",
            "neftune_alpha", "replay_ratio", "adapter_scale", "seed", "seeds")
    what = "A full fine-tune of" if config.full else f"A {'QLoRA' if config.qlora else 'LoRA'} adapter for"
    lines = [
        *front,
        f"# {config.hub_repo or 'memorize ' + ('model' if config.full else 'adapter')}",
        "",
        f"{what} `{base}` trained with memorize to memorize a document set (closed-book question "
        "answering).",
        "",
        "## Training data",
        f"Synthetic question/answer conversations from `{public_name(config.data_dir)}`; loss on assistant tokens "
        "only.",
        "",
        "## Hyperparameters",
        "| name | value |", "|---|---|",
        *(f"| {k} | {hp[k]} |" for k in keys),
        "",
        "## Results",
        f"- final train loss: {metrics['final_train_loss']:.4f}",
        f"- final eval loss (held-out questions): {metrics['final_eval_loss']:.4f}",
    ]
    if metrics["selected_epoch"] is not None:
        qa = {e["epoch"]: e for e in metrics["qa_by_epoch"]}[metrics["selected_epoch"]]
        lines.append(f"- kept epoch {metrics['selected_epoch']}: held-out QA accuracy {qa['accuracy']:.0%} "
                     f"(n={qa['n']})")
    if "runs" in metrics:
        lines.append("- the average of the updates of runs from seeds "
                     + ", ".join(f"{r['seed']}" + ("" if r["selected_epoch"] is None
                                                   else f" (epoch {r['selected_epoch']})")
                                 for r in metrics["runs"]))
    if eval_results:
        lines += ["", "## Evaluation", "| metric | value |", "|---|---|",
                  *(f"| {k} | {v} |" for k, v in eval_results.items())]
    usage = [f"model = AutoModelForCausalLM.from_pretrained({config.hub_repo or 'MODEL_DIR'!r})"] if config.full else [
        "from peft import PeftModel",
        f"base = AutoModelForCausalLM.from_pretrained({base!r})",
        f"model = PeftModel.from_pretrained(base, {config.hub_repo or 'ADAPTER_DIR'!r})"]
    lines += ["", "## Usage", "```python", "from transformers import AutoModelForCausalLM", *usage, "```", ""]
    return "\n".join(lines)
