"""Benchmark: how a fine-tuned model answers on a CPU — fp32 with the LoRA adapter on top, fp32 with it merged,
and bf16 merged (`memorize.models.load_tuned`, what evaluation, ask and serve do on a CPU with native bf16) —
and the base model in fp32 against bf16, on the same questions in one run.

MODEL_DIR is the output folder of `memorize train` (or `run`'s model/) with chunks.jsonl beside the adapter;
QUESTIONS a questions file (unanswerable ones are left out). Each variant answers every question closed-book
and the first --in-context of them with the retrieved chunks (top 3), greedy; the base answers the first
--general general-knowledge questions. Prints seconds, right answers and answers identical to the first row's.

    python bench/answer_dtype.py MODEL_DIR QUESTIONS [--in-context 32] [--general 128]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from memorize.answering import Answerer
from memorize.dataset import read_jsonl
from memorize.evaluation import GENERAL_KNOWLEDGE, load_questions
from memorize.models import inference_dtype, load_model, load_tokenizer, load_tuned
from memorize.retrieval import ChunkIndex
from memorize.scoring import UNANSWERABLE, score


def timed(answerer: Answerer, questions: list[dict], contexts: list[str] | None = None) -> tuple[float, list[str]]:
    start = time.perf_counter()
    answers = answerer.answer([q["question"] for q in questions], contexts, max_new_tokens=64, progress=False)
    return time.perf_counter() - start, answers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir")
    ap.add_argument("questions")
    ap.add_argument("--in-context", type=int, default=32)
    ap.add_argument("--general", type=int, default=128)
    args = ap.parse_args()
    adapter = Path(args.model_dir) / "adapter"
    base = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    tokenizer = load_tokenizer(str(adapter))
    questions = [q for q in load_questions(args.questions) if q.get("kind") != UNANSWERABLE]
    index = ChunkIndex(read_jsonl(Path(args.model_dir) / "chunks.jsonl"))
    asked = questions[:args.in_context]
    contexts = [index.context(index.top_k(q["question"], 3)) for q in asked]
    general = load_questions(GENERAL_KNOWLEDGE)[:args.general]

    variants = [("fine-tuned fp32, adapter on top", lambda: load_model(base, adapter=str(adapter),
                                                                       dtype=torch.float32), True),
                ("fine-tuned fp32, merged", lambda: load_tuned(base, str(adapter), torch.float32)[0], False),
                (f"fine-tuned {inference_dtype()}, load_tuned", lambda: load_tuned(base, str(adapter))[0], False)]
    rows, first = [], None
    for name, load, has_adapter in variants:
        answerer = Answerer(load(), tokenizer, has_adapter)
        closed_s, closed = timed(answerer, questions)
        ctx_s, ctx = timed(answerer, asked, contexts)
        answers = closed + ctx
        first = first or answers
        right = sum(bool(score(q, a)["correct"]) for q, a in zip(questions + asked, answers, strict=True))
        rows.append((name, closed_s, ctx_s, f"{right} of {len(answers)}",
                     f"{sum(a == b for a, b in zip(answers, first, strict=True))} of {len(answers)}"))
    first = None
    for dtype in (torch.float32, torch.bfloat16):
        answerer = Answerer(load_model(base, dtype=dtype), tokenizer, False)
        general_s, answers = timed(answerer, general)
        first = first or answers
        right = sum(bool(score(q, a)["correct"]) for q, a in zip(general, answers, strict=True))
        rows.append((f"base {str(dtype).removeprefix('torch.')}, general knowledge", general_s, None,
                     f"{right} of {len(general)}", f"{sum(a == b for a, b in zip(answers, first, strict=True))} of "
                     f"{len(general)}"))
    print(f"\n{Path(base).name}, {torch.get_num_threads()} threads; {len(questions)} questions closed-book, "
          f"{len(asked)} in context")
    print("| model | seconds, closed-book | seconds, in context | right | identical to the first row of its group |")
    print("|---|---|---|---|---|")
    for name, closed_s, ctx_s, right, same in rows:
        print(f"| {name} | {closed_s:.1f} | {'—' if ctx_s is None else f'{ctx_s:.1f}'} | {right} | {same} |")


if __name__ == "__main__":
    main()
