"""Benchmark: does the model memorize? The whole pipeline on a fictional charter (so no model can
know it) with 30 hand-written questions (direct, paraphrased, reversed), and two ablations from
practice: 1 temperature instead of 3, and batch size 8 instead of 1.

    python bench/memorization.py [--base-url URL --model NAME] [--base-model ID] [--epochs 3] [--configs default temperatures-1 batch-8]

Prints base / fine-tuned / in-context accuracy and the forgetting check per configuration, and
writes them to OUT/summary.json. With no --base-url the embedded SmolLM2-135M-Instruct generates
the questions on the CPU (slow, and weak questions: the figures say what *this* model achieves).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

from flows.pipeline import memorize_pipeline  # noqa: E402

HERE = Path(__file__).parent
DOC = HERE / "data" / "moonwell_charter.md"
QUESTIONS = HERE / "data" / "moonwell_questions.jsonl"
CONTEXT = "The charter of the Moonwell Honey and Cider Cooperative"


def run(name: str, out: Path, args, temperatures: int, batch_size: int) -> dict:
    started = time.perf_counter()
    try:
        result = memorize_pipeline(
            documents=[str(DOC)], context=CONTEXT, out=str(out / name), questions=str(QUESTIONS),
            base_model=args.base_model, base_url=args.base_url, model=args.model, temperatures=temperatures,
            epochs=args.epochs, dataset_options={"cache_dir": str(out / "cache"), "parse_attempts": args.parse_attempts,
                                                 "questions_per_chunk": args.questions_per_chunk},
            train_options={"batch_size": batch_size}, eval_options={"max_test_questions": args.max_test_questions})
    except ValueError as exc:  # e.g. a weak generator produced no usable pair at this setting
        return {"config": name, "temperatures": temperatures, "batch_size": batch_size, "error": str(exc),
                "minutes": round((time.perf_counter() - started) / 60, 1)}
    ev = result["evaluation"]
    by_kind = ev["fine_tuned"].get("kinds", {})
    return {
        "config": name, "temperatures": temperatures, "batch_size": batch_size, "qa_pairs": result["dataset"]["qa_pairs"],
        "base": ev["base"]["questions"]["accuracy"], "fine_tuned": ev["fine_tuned"]["questions"]["accuracy"],
        "in_context": ev["in_context"]["questions"]["accuracy"],
        "test_split_base": ev["base"]["test_split"]["accuracy"], "test_split_fine_tuned": ev["fine_tuned"]["test_split"]["accuracy"],
        "fine_tuned_by_kind": {k: v["accuracy"] for k, v in by_kind.items()},
        "forgetting_base": ev["forgetting"]["base_accuracy"], "forgetting_fine_tuned": ev["forgetting"]["fine_tuned_accuracy"],
        "minutes": round((time.perf_counter() - started) / 60, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="out/bench-memorization")
    ap.add_argument("--base-url")
    ap.add_argument("--model")
    ap.add_argument("--base-model")
    ap.add_argument("--temperatures", type=int, default=3)
    ap.add_argument("--questions-per-chunk", type=int)
    ap.add_argument("--parse-attempts", type=int, default=3)
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--max-test-questions", type=int, default=30)
    ap.add_argument("--configs", nargs="+", choices=["default", "temperatures-1", "batch-8"],
                    default=["default", "temperatures-1", "batch-8"], help="which configurations to run")
    args = ap.parse_args()
    out = Path(args.out)
    configs = {"default": (args.temperatures, 1), "temperatures-1": (1, 1), "batch-8": (args.temperatures, 8)}
    rows = [run(name, out, args, *configs[name]) for name in args.configs]
    (out / "summary.json").write_text(json.dumps(rows, indent=2))
    pct = lambda v: "  —  " if v is None else f"{v:5.0%}"  # noqa: E731
    print(f"\n{'config':<16}{'pairs':>6}  {'base':>5}  {'tuned':>5}  {'in-ctx':>6}  {'forget b->t':>12}  {'min':>5}")
    for r in rows:
        if "error" in r:
            print(f"{r['config']:<16}  failed: {r['error']}")
            continue
        print(f"{r['config']:<16}{r['qa_pairs']:>6}  {pct(r['base'])}  {pct(r['fine_tuned'])}  {pct(r['in_context']):>6}  "
              f"{pct(r['forgetting_base'])}->{pct(r['forgetting_fine_tuned'])}  {r['minutes']:>5}")
    print(f"(accuracy on the {QUESTIONS.name} questions; `must` keys scored; figures in {out / 'summary.json'})")


if __name__ == "__main__":
    main()
