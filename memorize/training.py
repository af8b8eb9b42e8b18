"""LoRA / QLoRA (or full) fine-tuning on the QA chat dataset, keeping the epoch that answers held-out questions
best.

The dataset folder holds `train.jsonl` and `test.jsonl`, one {"messages": [...]} conversation per line.
We tokenize conversations ourselves (`tokenize_conversation`) so that the loss covers assistant tokens only
with any chat template; trl's `assistant_only_loss` needs `{% generation %}` markers most templates lack.
"""
from __future__ import annotations

import json
import random
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import TrainerCallback

from memorize import replacing, write_json
from memorize.models import (
    best_dtype,
    context_length,
    has_cuda,
    load_model,
    load_tokenizer,
    quantization_config,
)
from memorize.settings import ANSWER_MAX_NEW_TOKENS, TrainSettings
from memorize.training_report import model_card, plot_losses
from memorize.weights import (
    average,
    free_memory,
    interpolate_toward_base,
    restore_weights,
    save_lora_soup,
    scale_adapter,
    trained_weights,
)

IGNORE_INDEX = -100  # label value the loss skips
SELECT_QUESTIONS = 32  # test-split questions answered at each epoch's end (~1 minute on 2 CPU cores for 135M)


class TrainingInputError(ValueError):
    """A problem with the inputs, found before any training starts."""


class TrainConfig(TrainSettings):
    """The training settings plus where the model, data and outputs are."""

    base_model: str  # local Hugging Face folder or Hub id
    data_dir: str
    output_dir: str


@dataclass
class TrainResult:
    output_dir: Path
    adapter_dir: Path  # the LoRA adapter, or with --full the whole fine-tuned model (see model_dir)
    metrics_path: Path
    loss_curve_path: Path
    merged_dir: Path | None
    hub_url: str | None
    train_losses: list[dict]  # {"step", "epoch", "loss"} per logging step
    eval_losses: list[dict]  # {"step", "epoch", "loss"} per evaluation
    final_train_loss: float
    final_eval_loss: float
    runtime_s: float
    tokens_per_s: float
    qa_by_epoch: list[dict]  # {"epoch", "accuracy", "n"}: closed-book accuracy on test-split questions
    selected_epoch: int | None  # the epoch whose adapter was saved; None: the last state (no selection)


def model_dir(output_dir: str | Path, full: bool) -> Path:
    """Where `train` saves what it trained: OUTPUT_DIR/adapter, or OUTPUT_DIR/full with --full."""
    return Path(output_dir) / ("full" if full else "adapter")


def saved_model(output_dir: str | Path) -> Path | None:
    """What `train` saved under OUTPUT_DIR (adapter/ or full/), once it finished saving; else None."""
    for full, marker in ((False, "adapter_config.json"), (True, "config.json")):
        if (model_dir(output_dir, full) / marker).exists():
            return model_dir(output_dir, full)
    return None


def resolve(config: TrainConfig) -> TrainConfig:
    """The config with `learning_rate` decided: each kind of training at its own rate."""
    return config.resolved()



def tokenize_conversation(tokenizer, messages: list[dict], max_length: int | None = None) -> dict:
    """input_ids of the whole conversation, and labels that keep only the assistant turns' tokens.

    Each assistant turn spans from the end of the rendered prefix with a generation prompt to the end of the
    rendered conversation up to that turn, so the end-of-turn token is learned and any template works
    as long as rendering a prefix gives a prefix of the tokens (true of ChatML, Llama 3, Mistral, Gemma...).
    """
    def ids(msgs, generation_prompt=False):
        return list(tokenizer.apply_chat_template(msgs, tokenize=True, add_generation_prompt=generation_prompt,
                                                  return_dict=True)["input_ids"])

    input_ids = ids(messages)
    labels = [IGNORE_INDEX] * len(input_ids)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start, end = ids(messages[:i], generation_prompt=True), ids(messages[: i + 1])
        if input_ids[: len(start)] != start or input_ids[: len(end)] != end:
            raise TrainingInputError(
                "the chat template does not render a conversation's beginning as a prefix of the whole "
                "conversation (e.g. it rewrites earlier turns), so assistant tokens cannot be located; "
                "pass --chat-template with a template that does (ChatML works)."
            )
        labels[len(start): len(end)] = input_ids[len(start): len(end)]
    if max_length is not None:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    return {"input_ids": input_ids, "labels": labels}


def _read_conversations(path: Path) -> list[list[dict]]:
    if not path.exists():
        raise TrainingInputError(f"dataset file {path} not found; build the dataset first")
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            messages = json.loads(line)["messages"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise TrainingInputError(f"{path}:{lineno}: expected a JSON object with 'messages' ({exc})") from exc
        if not any(m.get("role") == "assistant" for m in messages):
            raise TrainingInputError(f"{path}:{lineno}: conversation has no assistant message to learn")
        rows.append(messages)
    if not rows:
        raise TrainingInputError(f"dataset file {path} is empty: no conversations to train or evaluate on")
    return rows


def _tokenized_split(tokenizer, path: Path, max_length: int, conversations: list[list[dict]] | None = None):
    from datasets import Dataset

    rows = [tokenize_conversation(tokenizer, m, max_length) for m in conversations or _read_conversations(path)]
    kept = [r for r in rows if any(label != IGNORE_INDEX for label in r["labels"])]
    if not kept:
        raise TrainingInputError(f"{path}: no assistant tokens left within max_length={max_length}; raise it")
    if len(kept) < len(rows):
        warnings.warn(f"{path}: dropped {len(rows) - len(kept)} conversations with no answer within max_length")
    if full := sum(len(r["input_ids"]) == max_length for r in kept):
        warnings.warn(f"{path}: {full} conversations reach max_length={max_length} and are likely cut short")
    return Dataset.from_list(kept)


def _checkpointing_args(on: bool) -> dict:
    """Recent Transformers (5.24 here) renamed gradient_checkpointing to activation_checkpointing (the old name warns,
    gone in v6); older releases, which pyproject admits, know only the old name."""
    from transformers import TrainingArguments

    name = ("activation_checkpointing" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__
            else "gradient_checkpointing")
    return {name: on, f"{name}_kwargs": {"use_reentrant": False}}


def _dtype(config: TrainConfig) -> torch.dtype:
    if config.bf16 is None:
        return best_dtype()
    return torch.bfloat16 if config.bf16 else torch.float32


def _test_pairs(conversations: list[list[dict]], limit: int, seed: int) -> list[dict]:
    """The question/answer turns of the test conversations; a seeded sample of at most `limit`."""
    pairs = [{"question": m[i]["content"], "answer": m[i + 1]["content"]}
             for m in conversations for i in range(len(m) - 1)
             if m[i]["role"] == "user" and m[i + 1]["role"] == "assistant"]
    return random.Random(seed).sample(pairs, limit) if len(pairs) > limit else pairs


class EpochSelector(TrainerCallback):
    """At each epoch's end, answers held-out questions closed-book (greedy, scored by memorize.scoring) and
    keeps a copy of the adapter weights when the accuracy beats every earlier epoch; at the end the best
    copy is put back. Validation loss scores the wording of whole answers, not whether the fact is right, so
    the epoch is chosen by what it is for; the loss only breaks ties, which are common with few questions
    (quick start: 10 / 10 / 10 % after epochs 1-3, n=10; the earliest epoch, kept on ties before, then
    answered none of the user's questions). Its time counts in the run's runtime (about a minute per epoch
    for 135M on 2 CPU cores)."""

    def __init__(self, tokenizer, pairs: list[dict], progress: bool):
        self.tokenizer, self.pairs, self.progress = tokenizer, pairs, progress
        self.history: list[dict] = []
        self.best: tuple[float, float, int, dict] | None = None  # accuracy, -validation loss, epoch, adapter weights
        self._candidate: tuple[float, int, dict, int] | None = None  # this epoch (and step), until its validation loss

    def _settle(self, loss: float) -> None:
        accuracy, epoch, weights, _ = self._candidate
        self._candidate = None
        if self.best is None or (accuracy, -loss) > self.best[:2]:
            self.best = (accuracy, -loss, epoch, weights)

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        from memorize.answering import Answerer
        from memorize.scoring import score

        if self._candidate is not None:  # no validation at the last epoch's end (--eval-steps): accuracy alone
            self._settle(float("inf"))
        epoch = round(state.epoch)
        model.eval()
        answers = Answerer(model, self.tokenizer, has_adapter=False).answer(
            [p["question"] for p in self.pairs], max_new_tokens=ANSWER_MAX_NEW_TOKENS, progress=self.progress,
            desc=f"epoch {epoch}: held-out questions")
        model.train()
        right = sum(bool(score(p, a)["correct"]) for p, a in zip(self.pairs, answers, strict=True))
        accuracy = right / len(self.pairs)
        self.history.append({"epoch": epoch, "accuracy": accuracy, "n": len(self.pairs)})
        if self.best is None or accuracy >= self.best[0]:
            self._candidate = (accuracy, epoch, trained_weights(model), state.global_step)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        # The Trainer validates right after on_epoch_end: a loss at the same step is the candidate epoch's.
        if self._candidate is not None and self._candidate[3] == state.global_step and "eval_loss" in (metrics or {}):
            self._settle(metrics["eval_loss"])

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self._candidate is not None:
            self._settle(float("inf"))
        if self.best is not None and self.best[2] != self.history[-1]["epoch"]:
            restore_weights(model, self.best[3])

    @property
    def selected_epoch(self) -> int | None:
        return None if self.best is None else self.best[2]


def check_inputs(config: TrainConfig):
    """The cheap checks, so that a bad request fails in seconds rather than after loading a model or
    generating replay answers; returns (the resolved config, the tokenizer, the training conversations)."""
    quantization_config(config.qlora)  # raises ModelLoadError for QLoRA without CUDA
    if config.hub_repo:
        from memorize.hub import hub_token

        hub_token()  # raises HubError when HF_TOKEN is missing
    tokenizer = load_tokenizer(config.base_model, config.chat_template)  # raises if the model is missing
    config = resolve(config)
    limit = context_length(config.base_model)
    if limit is not None and config.max_length > limit:
        raise TrainingInputError(
            f"max_length={config.max_length} exceeds the context length of {config.base_model} ({limit})"
        )
    return config, tokenizer, _read_conversations(Path(config.data_dir) / "train.jsonl")


def build_trainer(config: TrainConfig, progress: bool = True, callbacks: list | None = None):
    """Check inputs, load the model and data, and return (SFTTrainer with the LoRA or full model, tokenizer).

    Public so that the GPU benchmark measures exactly this set-up.
    """
    from peft import LoraConfig, prepare_model_for_kbit_training
    from transformers import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    config, tokenizer, train_rows = check_inputs(config)
    data_dir = Path(config.data_dir)
    replay = []
    if config.replay_ratio:
        from memorize.replay import replay_conversations

        replay = replay_conversations(config.base_model, train_rows, config.replay_ratio, config.seed,
                                      config.replay_prompts, config.chat_template, progress)
    train_set = _tokenized_split(tokenizer, data_dir / "train.jsonl", config.max_length, train_rows + replay)
    eval_set = _tokenized_split(tokenizer, data_dir / "test.jsonl", config.max_length)

    dtype = _dtype(config)
    model = load_model(config.base_model, load_in_4bit=config.qlora, dtype=dtype)
    if config.qlora:
        # Casts norms to fp32 and enables input gradients, which LoRA on a frozen 4-bit model needs.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    args = SFTConfig(
        output_dir=config.output_dir,
        learning_rate=config.learning_rate,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        lr_scheduler_type=config.lr_scheduler,
        max_length=config.max_length,
        neftune_noise_alpha=config.neftune_alpha,
        # trl turns checkpointing on by default; we make it a choice (it costs ~20-30% speed).
        **_checkpointing_args(config.gradient_checkpointing),
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        use_cpu=dtype == torch.bfloat16 and not has_cuda(),  # else transformers refuses bf16 without a GPU
        # Paged optimizer: absorbs memory spikes on long sequences; 32-bit states cost little for LoRA weights.
        # Fused AdamW: a full fine-tune's step of 135M weights on 2 CPU cores took 0.09 s instead of 0.44 s.
        optim="paged_adamw_32bit" if config.qlora else "adamw_torch_fused",
        seed=config.seed,
        dataloader_pin_memory=torch.cuda.is_available(),  # pinning is for copies to a GPU (warns on a CPU)
        eval_strategy="steps" if config.eval_steps else "epoch",
        eval_steps=config.eval_steps,
        logging_steps=config.logging_steps,
        save_strategy="no",  # we save the final adapter ourselves
        report_to="none",
        disable_tqdm=not progress,
        include_num_input_tokens_seen="non_padding",
        dataset_kwargs={"skip_prepare_dataset": True},  # already tokenized, labelled and truncated
    )
    peft_config = None if config.full else LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules),
        task_type="CAUSAL_LM",
    )
    selector = None
    if config.select_epoch and config.max_steps <= 0:  # a run cut by max_steps has no epochs to choose from
        test_rows = _read_conversations(data_dir / "test.jsonl")
        selector = EpochSelector(tokenizer, _test_pairs(test_rows, SELECT_QUESTIONS, config.seed), progress)
    trainer = SFTTrainer(model=model, args=args, train_dataset=train_set, eval_dataset=eval_set,
                         processing_class=tokenizer, peft_config=peft_config,
                         callbacks=[*(callbacks or []), *([selector] if selector else [])])
    trainer.epoch_selector = selector  # for metrics.json
    if not progress:
        trainer.remove_callback(PrinterCallback)  # transformers prints every log line when tqdm is off
    trainer.row_counts = {"documents": len(train_rows), "replay": len(replay)}  # for metrics.json
    return trainer, tokenizer


def fit(config: TrainConfig, progress: bool):
    """Train; return the trainer (holding the PEFT or fully tuned model), tokenizer and loss history."""
    trainer, tokenizer = build_trainer(config, progress)
    start = time.perf_counter()
    trainer.train()
    runtime = time.perf_counter() - start
    state = trainer.state
    if not any("eval_loss" in e and e["step"] == state.global_step for e in state.log_history):
        trainer.evaluate()  # e.g. max_steps ended mid-epoch: report the loss of what we save
    history = _history(state.log_history)
    selector = trainer.epoch_selector
    history.update(runtime_s=round(runtime, 2), steps=state.global_step, train_rows=trainer.row_counts,
                   tokens_per_s=round(state.num_input_tokens_seen / runtime, 1),
                   qa_by_epoch=selector.history if selector else [],
                   selected_epoch=selector.selected_epoch if selector else None)
    return trainer, tokenizer, history


def _history(log_history: list[dict]) -> dict:
    def points(key):
        return [{"step": e["step"], "epoch": round(e["epoch"], 4), "loss": e[key]} for e in log_history if key in e]

    summary = next(e for e in log_history if "train_loss" in e)  # written once, at the end of training
    return {"train_losses": points("loss"), "eval_losses": points("eval_loss"),
            "mean_train_loss": summary["train_loss"]}


def train(config: TrainConfig, progress: bool = True) -> TrainResult:
    """Train a LoRA adapter (or every weight, --full); save it, metrics.json and loss_curve.png under
    config.output_dir. With `seeds` > 1, train that many times and save the average of the updates.
    The weights are saved beside adapter/ (full/, merged/) and put in its place only once all of them are:
    until then the folder keeps the last good model, whatever stops this run."""
    config = resolve(config)
    out = Path(config.output_dir)
    adapter_dir = model_dir(out, config.full)
    for name in ("adapter", "full", "merged"):  # what a killed run was saving (memorize.replacing)
        for stale in out.glob(f".{name}.*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
    soup = []
    if config.seeds == 1:
        trainer, tokenizer, history = fit(config, progress)
    else:
        from memorize.seeds import soup_history, train_seeds  # memorize.seeds runs `fit`: it imports this module

        soup, runs, runtime = train_seeds(config, progress)
        # A fresh trainer (the base model, an untrained adapter) holds the soup, saves and evaluates it.
        trainer, tokenizer = build_trainer(config, progress=False)
        history = soup_history(runs, runtime)
        if config.full:
            restore_weights(trainer.model, average(soup))
            # The soup's own loss on the test split, unscaled like a single run's (its runs' are theirs).
            history["soup_eval_loss"] = trainer.evaluate()["eval_loss"]
    if config.full and config.adapter_scale != 1:
        interpolate_toward_base(trainer.model, config.base_model, config.adapter_scale)
    merged_dir = out / "merged" if config.merge else None
    with replacing(adapter_dir) as staged:
        trainer.model.save_pretrained(staged)
        tokenizer.save_pretrained(staged)
        if soup and not config.full:
            save_lora_soup(staged, soup)
            trainer.model.load_adapter(str(staged), adapter_name="soup")
            trainer.model.set_adapter("soup")
            history["soup_eval_loss"] = trainer.evaluate()["eval_loss"]
        if not config.full and config.adapter_scale != 1:
            scale_adapter(staged, config.adapter_scale)
        del trainer
        free_memory()  # the merge below reloads the base model
        if merged_dir:
            with replacing(merged_dir) as staged_merged:
                # Reload the base unquantized (bf16 on GPU) so a QLoRA adapter merges into full-precision weights.
                merged = load_model(config.base_model, adapter=str(staged), dtype=_dtype(config)).merge_and_unload()
                merged.save_pretrained(staged_merged)
                tokenizer.save_pretrained(staged_merged)
                del merged
                free_memory()
    # This run's weights are in place: an earlier run's other kind (`ask`/`serve` look for adapter/ before full/)
    # or merged model must not answer for it.
    shutil.rmtree(model_dir(out, not config.full), ignore_errors=True)
    if not merged_dir:
        shutil.rmtree(out / "merged", ignore_errors=True)

    selected = history["selected_epoch"]
    # The losses of what was saved: the selected epoch's when an earlier epoch won; a soup's own.
    saved = [e for e in history["eval_losses"] if selected is not None and round(e["epoch"]) == selected]
    if soup:
        saved = [{"loss": history["soup_eval_loss"]}]
    metrics = {
        "base_model": config.base_model,
        "data_dir": config.data_dir,
        "hyperparameters": config.model_dump(),
        "dtype": str(_dtype(config)).removeprefix("torch."),
        **history,
        # The last logged loss; the run's mean when it ended before the first logging step.
        "final_train_loss": (history["train_losses"] or [{"loss": history["mean_train_loss"]}])[-1]["loss"],
        "final_eval_loss": (saved or history["eval_losses"])[-1]["loss"],
    }
    metrics_path = out / "metrics.json"
    write_json(metrics_path, metrics, indent=2)
    if (chunks := Path(config.data_dir) / "chunks.jsonl").exists():  # what it learned: evidence and --rag (chat.py)
        with replacing(out / "chunks.jsonl") as tmp:
            shutil.copyfile(chunks, tmp)
    loss_curve_path = out / "loss_curve.png"
    plot_losses(loss_curve_path, history)

    hub_url = None
    if config.hub_repo:
        from memorize.hub import push_folder

        hub_url = push_folder(config.hub_repo, adapter_dir, model_card(config, metrics), "model",
                              private=not config.hub_public)
    return TrainResult(
        output_dir=out, adapter_dir=adapter_dir, metrics_path=metrics_path, loss_curve_path=loss_curve_path,
        merged_dir=merged_dir, hub_url=hub_url, train_losses=history["train_losses"],
        eval_losses=history["eval_losses"], final_train_loss=metrics["final_train_loss"],
        final_eval_loss=metrics["final_eval_loss"], runtime_s=history["runtime_s"],
        tokens_per_s=history["tokens_per_s"], qa_by_epoch=history["qa_by_epoch"], selected_epoch=selected,
    )
