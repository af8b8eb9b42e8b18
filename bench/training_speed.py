"""Benchmark: how close LoRA training comes to this machine's own limit.

The limit: the matrix products a training step is made of — the model's projections (attention, MLP and
the vocabulary head, read from its config) at the rows' mean length — timed with torch on all threads, in
fp32 and in bf16, and weighted by their share of the step's FLOPs. A LoRA step costs about 4 x the linear
weights' count per token (forward, and the backward pass to the inputs; the frozen weights get no
gradient) plus the adapters' own small products. The trainer: `memorize.training.build_trainer` at the
defaults (batch 1, replay off so the rows are the dataset's own), timed over --steps optimizer steps
after --warmup. Prints the limit, the trainer's tokens/s and FLOP/s and its share of the limit.

    python bench/training_speed.py [--data DATASET_DIR] [--steps 40] [--bf16]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoConfig, TrainerCallback

from memorize import training
from memorize.local_model import ensure_default_model

ROOT = Path(__file__).resolve().parent.parent


def linear_shapes(model_id: str) -> list[tuple[int, int, int]]:
    """(in, out, count) of every linear layer of a Llama-style decoder, the vocabulary head included."""
    c = AutoConfig.from_pretrained(model_id)
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    kv = c.num_key_value_heads * head_dim
    q = c.num_attention_heads * head_dim
    n = c.num_hidden_layers
    return [(c.hidden_size, q, n), (c.hidden_size, kv, 2 * n), (q, c.hidden_size, n),
            (c.hidden_size, c.intermediate_size, 2 * n), (c.intermediate_size, c.hidden_size, n),
            (c.hidden_size, c.vocab_size, 1)]


def matmul_limit(shapes: list[tuple[int, int, int]], tokens: int, dtype: torch.dtype, repeat: int = 10) -> float:
    """GFLOP/s of the shapes' products at `tokens` rows, weighted by their FLOPs (the time the set takes)."""
    flops = seconds = 0.0
    for k, n, count in shapes:
        a, w = torch.randn(tokens, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        for _ in range(3):
            a @ w
        start = time.perf_counter()
        for _ in range(repeat):
            a @ w
        seconds += (time.perf_counter() - start) / repeat * count
        flops += 2 * tokens * k * n * count
    return flops / seconds / 1e9


class StepClock(TrainerCallback):
    def __init__(self):
        self.ends: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(time.perf_counter())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="a dataset folder (train.jsonl, test.jsonl); default: the quick start's rows")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--bf16", action="store_true", help="train with bf16 autocast (default: what the trainer picks)")
    args = ap.parse_args()
    model = str(ensure_default_model())
    with tempfile.TemporaryDirectory() as tmp:
        if args.data:
            data = Path(args.data)
        else:
            from seeds_speed import quick_start_rows  # a script beside this one
            data = quick_start_rows(Path(tmp) / "data")
        config = training.TrainConfig(base_model=model, data_dir=str(data), output_dir=str(Path(tmp) / "run"),
                                      max_steps=args.warmup + args.steps, replay_ratio=0,
                                      bf16=True if args.bf16 else None, eval_steps=10**6, logging_steps=10**6)
        clock = StepClock()
        trainer, _ = training.build_trainer(config, progress=False, callbacks=[clock])
        trainer.train()
        lengths = [len(r["input_ids"]) for r in trainer.train_dataset]
        timed = clock.ends[args.warmup:]
        step_s = (timed[-1] - timed[0]) / (len(timed) - 1)
        lora = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    shapes = linear_shapes(model)
    linear = sum(k * n * count for k, n, count in shapes)
    tokens = round(statistics.mean(lengths))
    # Per token: forward 2 x weights, backward to the inputs 2 x weights; the adapters: forward, both grads.
    flop_per_token = 4 * linear + 6 * lora
    achieved = flop_per_token * tokens / step_s / 1e9
    print(f"model {model}: {linear / 1e6:.1f} M linear weights, {lora / 1e6:.2f} M trained; "
          f"{torch.get_num_threads()} threads; rows of {tokens} tokens on average ({len(lengths)} rows)")
    print(f"trainer ({'bf16 autocast' if args.bf16 else 'shipped dtype'}): {step_s * 1000:.0f} ms a step, "
          f"{tokens / step_s:.1f} tokens/s, {achieved:.1f} GFLOP/s")
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        limit = matmul_limit(shapes, tokens, dtype)
        print(f"matmul limit {name} at {tokens} rows: {limit:.0f} GFLOP/s -> the trainer reaches "
              f"{achieved / limit:.0%} of it ({limit * 1e9 / flop_per_token:.0f} tokens/s at the limit)")


if __name__ == "__main__":
    main()
