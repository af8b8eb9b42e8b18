"""GPU training benchmark: peak memory and tokens/s on a 7B-class model, for three set-ups.

    python bench/train_gpu.py --out results.json [--steps 20] [--warmup 3]
    python bench/train_gpu.py --tiny --out /tmp/tg.json     # seconds-long smoke test of the same code (CPU ok)
    python bench/train_gpu.py --check --out /tmp/check.json  # the whole `memorize train` path on the GPU

--check runs memorize.training.train end to end, as `memorize train` does, on a small random Llama: replay
rows from the base model's own answers, epoch selection by held-out answers, the adapter saved and merged
into bf16 weights, the merged model and the adapter reloaded — once as LoRA bf16 and once as QLoRA. It is
the GPU half of the test suite, which CI (CPU only) skips and whose real model cannot travel to a GPU here.

1. lora:          memorize's own trainer (memorize.training.build_trainer) with its defaults: LoRA r=16 on all
                  attention+MLP projections, bf16 weights, AdamW, no gradient checkpointing.
2. qlora:         the same trainer with qlora=True (4-bit NF4 base, paged AdamW) and gradient checkpointing.
3. trl-default:   SFTTrainer(model=<folder>, train_dataset=<same chat data>) with a default SFTConfig (only
                  output_dir, max_steps, batch size 1, logging and saving changed): a FULL fine-tune, weights
                  loaded in fp32 (trl's default when given a path), bf16 autocast, gradient checkpointing, and
                  transformers' default AdamW on all 6.7B parameters: 100.5 GiB peak on an H200 (2026-11-29),
                  so it fails on an 80 GB card; an out-of-memory error is reported as OOM.

The model is Llama-2-7B-shaped (hidden 4096, 32 layers, 32 heads, MLP 11008, vocab 32000) with random weights:
compute and memory do not depend on the values, and nothing can be downloaded. It is built once with
`from_config` in bf16 and saved with a word-level tokenizer (vocab = model vocab) to a temporary folder, so that
every set-up loads it the ordinary way, and QLoRA quantizes it at load time with its BitsAndBytesConfig.
The data: synthetic one-turn chats of exactly --seq-len tokens (half question, half answer), batch size 1.
Each set-up runs in its own subprocess, so peak memory (torch.cuda.max_memory_allocated) is per set-up and an
out-of-memory error is reported as OOM. Timing covers the steps after --warmup (CUDA synchronized).
"""
from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing it
SETUPS = ("lora", "qlora", "trl-default")
LLAMA2_7B = dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                 intermediate_size=11008, vocab_size=32000, max_position_embeddings=4096)
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
            intermediate_size=128, vocab_size=512, max_position_embeddings=512)
# Message contents joined by spaces: token counts are word counts, and prefixes render as prefixes.
CHAT_TEMPLATE = "{% for m in messages %}{{ m['content'] }} {% endfor %}"


def build_model_folder(folder: Path, shapes: dict) -> None:
    """Random-weight Llama of the given shapes, in bf16, plus a matching word-level tokenizer with a chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

    words = Tokenizer(models.WordLevel({f"w{i}": i for i in range(shapes["vocab_size"])}, unk_token="w0"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=words, unk_token="w0", pad_token="w0", eos_token="w1")
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)
    config = LlamaConfig(**shapes, pad_token_id=0, bos_token_id=1, eos_token_id=1)
    # Initialising 6.7B parameters is much faster on the GPU; the bf16 copy is then written to disk.
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(folder)


def write_chat_data(folder: Path, rows: int, seq_len: int, vocab: int) -> None:
    rng = random.Random(0)

    def text(n):  # w0 and w1 are the pad and eos tokens
        return " ".join(f"w{rng.randrange(2, vocab)}" for _ in range(n))

    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train.jsonl", rows), ("test.jsonl", 2)):
        lines = [json.dumps({"messages": [{"role": "user", "content": text(seq_len // 2)},
                                          {"role": "assistant", "content": text(seq_len - seq_len // 2)}]})
                 for _ in range(n)]
        (folder / name).write_text("\n".join(lines) + "\n")


def check_train(setup: str, model_dir: Path, work: Path) -> dict:
    """memorize.training.train end to end (replay, epoch selection, merge), then reload what it wrote."""
    from memorize.models import load_model
    from memorize.training import TrainConfig, train

    data = work / f"data-{setup}"
    write_chat_data(data, rows=24, seq_len=48, vocab=TINY["vocab_size"])
    config = TrainConfig(base_model=str(model_dir), data_dir=str(data), output_dir=str(work / setup),
                         qlora=setup == "qlora", gradient_checkpointing=setup == "qlora", epochs=2, max_length=64,
                         merge=True)  # replay and epoch selection at their defaults
    start = time.perf_counter()
    result = train(config, progress=False)
    metrics = json.loads(result.metrics_path.read_text())
    merged = load_model(str(result.merged_dir), dtype=torch.bfloat16)
    adapted = load_model(str(model_dir), adapter=str(result.adapter_dir), dtype=torch.bfloat16)
    return {"status": "ok", "seconds": round(time.perf_counter() - start, 1), "dtype": metrics["dtype"],
            "rows": metrics["train_rows"], "selected_epoch": result.selected_epoch,
            "first_loss": result.train_losses[0]["loss"], "last_loss": result.train_losses[-1]["loss"],
            "merged_on": str(next(merged.parameters()).device), "adapter_on": str(next(adapted.parameters()).device)}


def make_timer(warmup: int):
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        """Wall time of the steps after the warm-up ones."""

        def __init__(self):
            self.start = self.end = None
            self.timed_steps = 0

        def on_step_end(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            if state.global_step == warmup:
                self.start = time.perf_counter()
            elif state.global_step > warmup:
                self.end, self.timed_steps = time.perf_counter(), state.global_step - warmup

    return StepTimer()


def run_setup(setup: str, model_dir: Path, data_dir: Path, work: Path, steps: int, warmup: int,
              seq_len: int) -> dict:
    """Train one set-up in this process and measure it."""
    from memorize.training import TrainConfig, build_trainer

    timer = make_timer(warmup)
    if setup == "trl-default":
        from datasets import load_dataset
        from trl import SFTConfig, SFTTrainer

        # use_cpu only for the --tiny smoke test on CPU: trl's default bf16 refuses the CPU otherwise.
        # Batch size 1 like the other set-ups (the default, 8, would not compare like for like).
        args = SFTConfig(output_dir=str(work / setup), max_steps=warmup + steps, per_device_train_batch_size=1,
                         report_to="none", save_strategy="no", disable_tqdm=True,
                         use_cpu=not torch.cuda.is_available())
        trainer = SFTTrainer(model=str(model_dir), args=args, callbacks=[timer],
                             train_dataset=load_dataset("json", data_files=str(data_dir / "train.jsonl"))["train"])
    else:
        config = TrainConfig(base_model=str(model_dir), data_dir=str(data_dir), output_dir=str(work / setup),
                             max_length=seq_len, max_steps=warmup + steps, logging_steps=steps,
                             qlora=setup == "qlora", gradient_checkpointing=setup == "qlora",
                             # speed and memory of training itself: random weights have no answers to replay or
                             # select by
                             replay_ratio=0, select_epoch=False)
        trainer, _ = build_trainer(config, progress=False, callbacks=[timer])
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    trainer.train()
    seconds = timer.end - timer.start
    return {
        "status": "ok",
        "trainable_params": trainable,
        "tokens_per_s": round(timer.timed_steps * seq_len / seconds, 1),  # batch 1, every row is seq_len tokens
        "s_per_step": round(seconds / timer.timed_steps, 4),
    }


def child(a) -> None:
    """Build the model, or train one set-up, in a fresh process (own CUDA memory); write JSON to --result."""
    work = Path(a.work)
    if a.child == "build":
        t0 = time.perf_counter()
        build_model_folder(work / "model", TINY if a.tiny else LLAMA2_7B)
        result = {"status": "ok", "seconds": round(time.perf_counter() - t0, 1)}
    else:
        try:
            if a.check:
                result = check_train(a.child, work / "model", work)
            else:
                result = run_setup(a.child, work / "model", work / "data", work, a.steps, a.warmup, a.seq_len)
        except torch.OutOfMemoryError as exc:
            result = {"status": "OOM", "error": str(exc).splitlines()[0]}
        except Exception as exc:  # reported per set-up (e.g. QLoRA without CUDA) instead of ending the benchmark
            result = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
        if torch.cuda.is_available():
            result["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
            result["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
    (work / f"{a.child}.json").write_text(json.dumps(result))


def in_subprocess(what: str, a, work: Path) -> dict:
    cmd = [sys.executable, __file__, "--out", a.out, "--child", what, "--work", str(work), "--steps", str(a.steps),
           "--warmup", str(a.warmup), "--seq-len", str(a.seq_len), *(["--tiny"] if a.tiny else []),
           *(["--check"] if a.check else [])]
    proc = subprocess.run(cmd)
    path = work / f"{what}.json"
    return json.loads(path.read_text()) if path.exists() else {"status": f"crashed (exit code {proc.returncode})"}


def check(a) -> None:
    a.tiny = True  # the check's model: the tiny shapes
    results = {}
    with tempfile.TemporaryDirectory(dir=a.workdir) as tmp:
        work = Path(tmp)
        if in_subprocess("build", a, work)["status"] != "ok":
            sys.exit("train_gpu.py: building the model failed")
        for setup in ("lora", "qlora"):
            results[setup] = in_subprocess(setup, a, work)
            print(f"check {setup}: {results[setup]}", flush=True)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    Path(a.out).write_text(json.dumps({"device": device, "check": results}, indent=2))
    if any(r["status"] != "ok" for r in results.values()):
        sys.exit(1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="where to write the results JSON")
    p.add_argument("--steps", type=int, default=20, help="timed training steps per set-up")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--setups", nargs="+", choices=SETUPS, default=list(SETUPS))
    p.add_argument("--tiny", action="store_true", help="tiny model, 3 steps of 64 tokens: a smoke test, CPU ok")
    p.add_argument("--check", action="store_true",
                   help="run `memorize train` end to end (replay, epoch selection, merge) as LoRA and QLoRA on a "
                        "small random model: the GPU paths CI cannot test")
    p.add_argument("--workdir", help="parent of the temporary folder holding the model (13 GB for 7B)")
    p.add_argument("--child", help=argparse.SUPPRESS)  # set by main() for its subprocesses
    p.add_argument("--work", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        return child(a)
    if a.check:
        return check(a)
    if not a.tiny and not torch.cuda.is_available():
        sys.exit("train_gpu.py: the real measurement needs a CUDA GPU (none here). "
                 "Use --tiny for a CPU smoke test of the benchmark code.")
    if a.tiny:
        a.steps, a.warmup, a.seq_len = min(a.steps, 3), 1, 64
    shapes = TINY if a.tiny else LLAMA2_7B

    results = {}
    with tempfile.TemporaryDirectory(dir=a.workdir) as tmp:
        work = Path(tmp)
        built = in_subprocess("build", a, work)
        if built["status"] != "ok":
            sys.exit(f"train_gpu.py: building the model failed: {built['status']}")
        print(f"built the {'tiny' if a.tiny else 'Llama-2-7B-shaped'} model in {built['seconds']} s", flush=True)
        write_chat_data(work / "data", rows=2 * (a.warmup + a.steps), seq_len=a.seq_len, vocab=shapes["vocab_size"])
        for setup in a.setups:
            results[setup] = in_subprocess(setup, a, work)
            print(f"{setup}: {results[setup]}", flush=True)

    report = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "model": "tiny Llama (smoke test)" if a.tiny else "Llama-2-7B shapes, random weights",
        "shapes": shapes, "seq_len": a.seq_len, "batch_size": 1, "steps_timed": a.steps, "warmup_steps": a.warmup,
        "setups": {
            "lora": "memorize defaults: LoRA r=16 alpha=32 on q,k,v,o,gate,up,down; bf16; AdamW; no grad. ckpt",
            "qlora": "memorize qlora=True: 4-bit NF4 (double quant), paged AdamW 32-bit, gradient checkpointing",
            "trl-default": "SFTTrainer(model=path) + default SFTConfig except batch size 1: full fine-tune, "
                           "fp32 weights, bf16 autocast, gradient checkpointing, default AdamW",
        },
        "versions": {m: __import__(m).__version__ for m in ("torch", "transformers", "trl", "peft")},
        "results": results,
    }
    Path(a.out).write_text(json.dumps(report, indent=2))
    print(f"\n{'set-up':<12} {'status':<8} {'peak GiB':>9} {'tokens/s':>9} {'s/step':>8} {'trainable':>14}")
    for setup, r in results.items():
        trainable = f"{r['trainable_params']:,}" if "trainable_params" in r else "-"
        print(f"{setup:<12} {r['status'][:8]:<8} {r.get('peak_gib', '-'):>9} {r.get('tokens_per_s', '-'):>9} "
              f"{r.get('s_per_step', '-'):>8} {trainable:>14}")
    for setup, r in results.items():
        if "error" in r:
            print(f"{setup}: {r['error'][:300]}")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
