"""LoRA / QLoRA (or full) fine-tuning on the QA chat dataset, keeping the epoch that answers held-out questions
best.

The dataset folder holds `train.jsonl` and `test.jsonl`, one {"messages": [...]} conversation per line.
We tokenize conversations ourselves (`tokenize_conversation`) so that the loss covers assistant tokens only
with any chat template; trl's `assistant_only_loss` needs `{% generation %}` markers most templates lack.
"""
from __future__ import annotations

import gc
import json
import multiprocessing
import random
import shutil
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import TrainerCallback

from memorize import replacing, write_json
from memorize.models import (
    best_dtype,
    context_length,
    load_model,
    load_tokenizer,
    quantization_config,
)
from memorize.settings import ANSWER_MAX_NEW_TOKENS, TrainSettings

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


def _trained_weights(model) -> dict:
    """A CPU copy of what training changes: the adapter's weights, or every weight of a full fine-tune."""
    from peft import PeftModel, get_peft_model_state_dict

    state = get_peft_model_state_dict(model) if isinstance(model, PeftModel) else model.state_dict()
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


def _restore_weights(model, weights: dict) -> None:
    from peft import PeftModel, set_peft_model_state_dict

    if isinstance(model, PeftModel):
        set_peft_model_state_dict(model, weights)
    else:
        model.load_state_dict(weights)


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
            self._candidate = (accuracy, epoch, _trained_weights(model), state.global_step)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        # The Trainer validates right after on_epoch_end: a loss at the same step is the candidate epoch's.
        if self._candidate is not None and self._candidate[3] == state.global_step and "eval_loss" in (metrics or {}):
            self._settle(metrics["eval_loss"])

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if self._candidate is not None:
            self._settle(float("inf"))
        if self.best is not None and self.best[2] != self.history[-1]["epoch"]:
            _restore_weights(model, self.best[3])

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


def _fit(config: TrainConfig, progress: bool):
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
        trainer, tokenizer, history = _fit(config, progress)
    else:
        soup, runs, runtime = train_seeds(config, progress)
        # A fresh trainer (the base model, an untrained adapter) holds the soup, saves and evaluates it.
        trainer, tokenizer = build_trainer(config, progress=False)
        history = _soup_history(runs, runtime)
        if config.full:
            _restore_weights(trainer.model, {k: _mean([w[k] for w in soup]) for k in soup[0]})
            # The soup's own loss on the test split, unscaled like a single run's (its runs' are theirs).
            history["soup_eval_loss"] = trainer.evaluate()["eval_loss"]
    if config.full and config.adapter_scale != 1:
        interpolate_toward_base(trainer.model, config.base_model, config.adapter_scale)
    merged_dir = out / "merged" if config.merge else None
    with replacing(adapter_dir) as staged:
        trainer.model.save_pretrained(staged)
        tokenizer.save_pretrained(staged)
        if soup and not config.full:
            _save_lora_soup(staged, soup)
            trainer.model.load_adapter(str(staged), adapter_name="soup")
            trainer.model.set_adapter("soup")
            history["soup_eval_loss"] = trainer.evaluate()["eval_loss"]
        if not config.full and config.adapter_scale != 1:
            scale_adapter(staged, config.adapter_scale)
        del trainer
        _free_memory()  # the merge below reloads the base model
        if merged_dir:
            with replacing(merged_dir) as staged_merged:
                # Reload the base unquantized (bf16 on GPU) so a QLoRA adapter merges into full-precision weights.
                merged = load_model(config.base_model, adapter=str(staged), dtype=_dtype(config)).merge_and_unload()
                merged.save_pretrained(staged_merged)
                tokenizer.save_pretrained(staged_merged)
                del merged
                _free_memory()
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
    _plot(loss_curve_path, history)

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


def train_seed(config: TrainConfig, progress: bool, threads: int | None = None) -> tuple[dict, dict]:
    """One seed's run: (the weights it trained, on the CPU; its history). On a CPU soup it runs in a worker
    process (`_train_seed_in_worker`)."""
    if threads:
        torch.set_num_threads(threads)
    trainer, _, history = _fit(config, progress)
    weights = _trained_weights(trainer.model)
    del trainer
    _free_memory()
    return weights, {"seed": config.seed, "threads": torch.get_num_threads(), **history}


def seed_configs(config: TrainConfig) -> list[TrainConfig]:
    """The configurations of a soup's runs: seeds config.seed, +1, ..."""
    return [config.model_copy(update={"seed": seed}) for seed in range(config.seed, config.seed + config.seeds)]


def train_seeds(config: TrainConfig, progress: bool) -> tuple[list[dict], list[dict], float]:
    """The runs of a soup, one per seed. On a GPU one after another. On a CPU all at once, each in its own
    process on its share of the cores: a LoRA step of a small model keeps two cores only partly busy, so on 2
    cores two one-thread runs side by side finish 1.55x sooner than one after another, with the same weights
    (bench/seeds_speed.py). Returns the weights and histories of the runs, and the seconds they took together."""
    start = time.perf_counter()
    configs = seed_configs(config)
    cores = torch.get_num_threads()  # torch's intra-op threads: the physical cores, unless OMP_NUM_THREADS says
    if torch.cuda.is_available() or cores < 2:
        results = [train_seed(c, progress) for c in configs]
    else:
        results = _train_side_by_side(configs, cores, progress)
    return [w for w, _ in results], [h for _, h in results], time.perf_counter() - start


def _train_side_by_side(configs: list[TrainConfig], cores: int, progress: bool) -> list[tuple[dict, dict]]:
    _, _, train_rows = check_inputs(configs[0])  # before the replay answers below, not in every worker
    if configs[0].replay_ratio:  # generate each seed's replay answers here, once, rather than in every worker
        from memorize.replay import replay_conversations

        for c in configs:
            replay_conversations(c.base_model, train_rows, c.replay_ratio, c.seed, c.replay_prompts,
                                 c.chat_template, progress)
    threads = max(1, cores // len(configs))
    if progress:
        print(f"training {len(configs)} seeds side by side ({threads} thread(s) each); "
              f"showing the progress of seed {configs[0].seed}", flush=True)
    context = multiprocessing.get_context("spawn")  # a forked torch with live threads can deadlock
    with ProcessPoolExecutor(len(configs), mp_context=context) as pool:
        futures = [pool.submit(_train_seed_in_worker, c, progress and i == 0, threads) for i, c in enumerate(configs)]
        try:
            return [f.result() for f in futures]
        except BrokenProcessPool as exc:
            raise RuntimeError(
                f"a worker training one of {len(configs)} seeds died (out of memory?); "
                "train fewer seeds at once (--seeds) or on a machine with more memory") from exc


def _train_seed_in_worker(config: TrainConfig, progress: bool, threads: int) -> tuple[dict, dict]:
    if not progress:  # the first run's bars stand for all; the others' "Loading weights" bars only interleave
        from transformers.utils.logging import disable_progress_bar

        disable_progress_bar()
    return train_seed(config, progress, threads)


def _soup_history(runs: list[dict], runtime: float) -> dict:
    """One history for several runs: their points tagged with the seed, their tokens added up over the
    `runtime` seconds they took together (side by side on a CPU, so not the sum of theirs)."""
    tagged = {key: [{**point, "seed": run["seed"]} for run in runs for point in run[key]]
              for key in ("train_losses", "eval_losses", "qa_by_epoch")}
    tokens = sum(run["tokens_per_s"] * run["runtime_s"] for run in runs)
    return {**tagged, "runtime_s": round(runtime, 2), "tokens_per_s": round(tokens / runtime, 1),
            "steps": sum(run["steps"] for run in runs), "train_rows": runs[0]["train_rows"],
            "mean_train_loss": sum(run["mean_train_loss"] for run in runs) / len(runs),
            "selected_epoch": None,
            "runs": [{k: run[k] for k in ("seed", "threads", "runtime_s", "steps", "tokens_per_s", "selected_epoch")}
                     for run in runs]}


def _mean(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The element-wise mean, computed in fp32 (bf16 sums lose digits) and returned in the tensors' dtype."""
    return torch.stack([t.float() for t in tensors]).mean(0).to(tensors[0].dtype)


def _save_lora_soup(adapter_dir: Path, soup: list[dict]) -> None:
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
    _free_memory()


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _plot(path: Path, history: dict) -> None:
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
