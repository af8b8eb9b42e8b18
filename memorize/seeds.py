"""A model soup's runs: the same training from several seeds, one after another on a GPU and side by side in
worker processes on a CPU, and one history for them all. Their updates are averaged by memorize.weights."""
from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import torch

from memorize.training import TrainConfig, check_inputs, fit
from memorize.weights import free_memory, trained_weights


def train_seed(config: TrainConfig, progress: bool, threads: int | None = None) -> tuple[dict, dict]:
    """One seed's run: (the weights it trained, on the CPU; its history). On a CPU soup it runs in a worker
    process (`_train_seed_in_worker`)."""
    if threads:
        torch.set_num_threads(threads)
    trainer, _, history = fit(config, progress)
    weights = trained_weights(trainer.model)
    del trainer
    free_memory()
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


def soup_history(runs: list[dict], runtime: float) -> dict:
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
