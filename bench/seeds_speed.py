"""Benchmark: the runs of a model soup (`memorize train --seeds N`) on a CPU, one after another on all cores
(how they ran until 2026-12-02) vs side by side, one process per seed on its share of the cores (what
`memorize.seeds.train_seeds` does on a CPU), on the same rows in one run.

The rows: the quick start's document (`examples/harbor_rules.md`) as `memorize dataset --temperatures 0`
builds them (teacher-free pairs), or any dataset folder (`--data`). Each run: the `memorize train` defaults
with `--epochs` (epoch selection included) and the replay answers generated beforehand. Prints the minutes
of each way, the tokens/s of all runs together, the speed-up, and how far apart the two ways' weights are.

    python bench/seeds_speed.py [--data DATASET_DIR] [--seeds 2] [--epochs 1]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from memorize import seeds, training
from memorize.dataset import read_jsonl
from memorize.local_model import ensure_default_model
from memorize.replay import replay_conversations
from memorize.settings import GenerationSettings

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no network: its telemetry only errs
os.environ.setdefault("DO_NOT_TRACK", "1")


def quick_start_rows(out: Path) -> Path:
    from flows.build_dataset import build_dataset

    build_dataset(documents=[str(ROOT / "examples" / "harbor_rules.md")], context="Harbor racing rules",
                  out=str(out), settings=GenerationSettings(temperatures=0), cache_dir=str(out / "cache"),
                  progress=False)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="a dataset folder (train.jsonl, test.jsonl); default: the quick start's rows")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--epochs", type=float, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(args.data) if args.data else quick_start_rows(Path(tmp) / "data")
        config = training.resolve(training.TrainConfig(
            base_model=str(ensure_default_model()), data_dir=str(data), output_dir=str(Path(tmp) / "run"),
            seeds=args.seeds, epochs=args.epochs))
        configs = seeds.seed_configs(config)
        rows = [r["messages"] for r in read_jsonl(data / "train.jsonl")]
        for c in configs:  # generated once, outside both timings
            replay_conversations(c.base_model, rows, c.replay_ratio, c.seed, progress=False)
        cores = torch.get_num_threads()
        start = time.perf_counter()
        apart = [seeds.train_seed(c, progress=False) for c in configs]
        apart_s = time.perf_counter() - start
        side_weights, side_runs, side_s = seeds.train_seeds(config, progress=False)

    def tokens(runs):
        return sum(r["tokens_per_s"] * r["runtime_s"] for r in runs)

    gap = max((w[k] - a[k]).abs().max().item() for (a, _), w in zip(apart, side_weights, strict=True) for k in w)
    print(f"{args.seeds} seeds x {args.epochs:g} epoch(s) of {len(rows)} rows (+ replay), {cores} cores")
    print("| way | minutes | tokens/s of all runs | threads per run |")
    print("|---|---|---|---|")
    print(f"| one after another | {apart_s / 60:.1f} | {tokens([h for _, h in apart]) / apart_s:.1f} | {cores} |")
    print(f"| side by side | {side_s / 60:.1f} | {tokens(side_runs) / side_s:.1f} | {side_runs[0]['threads']} |")
    print(f"speed-up {apart_s / side_s:.2f}x; largest difference between the two ways' trained weights {gap:.2g}")


if __name__ == "__main__":
    main()
