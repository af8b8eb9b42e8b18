"""Benchmark: in-context answering with the retrieved documents' prefix computed once per batch
(`memorize.answering.complete`, the default) vs computed for every question, on the same prompts.

For each document: its chunks, the BM25 top-k chunks of every question in document order (the
evaluation's in-context prompts), then `Answerer.answer` over all questions twice in one run — prefix
shared, then apart — with the default model. Prints minutes, the speed-up and how many answers are
identical (greedy decoding: they should all be).

    python bench/answer_speed.py [--docs DOC:QUESTIONS ...] [--top-k 3]
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import time
from pathlib import Path

import torch

from memorize import answering
from memorize.chunking import chunk_document
from memorize.evaluation import load_questions
from memorize.extract import extract
from memorize.local_model import ensure_default_model
from memorize.retrieval import ChunkIndex
from memorize.settings import EvalSettings

ROOT = Path(__file__).resolve().parent.parent
DOCS = [f"{ROOT}/examples/harbor_rules.md:{ROOT}/examples/harbor_questions.jsonl",
        f"{ROOT}/bench/data/moonwell_charter.md:{ROOT}/bench/data/moonwell_questions.jsonl"]


def timed_answers(answerer, questions, contexts, share_prefix: bool) -> tuple[float, list[str]]:
    shared = answering.complete
    answering.complete = functools.partial(shared, share_prefix=share_prefix)
    try:
        start = time.perf_counter()
        answers = answerer.answer(questions, contexts, max_new_tokens=EvalSettings().max_new_tokens,
                                  desc="shared" if share_prefix else "apart")
        return time.perf_counter() - start, answers
    finally:
        answering.complete = shared


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", nargs="+", default=DOCS, help="DOCUMENT:QUESTIONS.jsonl pairs")
    ap.add_argument("--top-k", type=int, default=EvalSettings().top_k)
    args = ap.parse_args()
    model = ensure_default_model()
    answerer = answering.Answerer.load(str(model))
    rows = []
    for pair in args.docs:
        doc, questions_file = pair.split(":")
        index = ChunkIndex([dataclasses.asdict(c) for c in chunk_document(extract(doc))])
        questions = [q["question"] for q in load_questions(questions_file)]
        contexts = [index.context(index.top_k(q, args.top_k)) for q in questions]
        shared_s, shared = timed_answers(answerer, questions, contexts, True)
        apart_s, apart = timed_answers(answerer, questions, contexts, False)
        rows.append((Path(doc).name, len(index.chunks), len(questions), len(set(contexts)), apart_s / 60,
                     shared_s / 60, apart_s / shared_s, sum(a == b for a, b in zip(shared, apart, strict=True))))
    print(f"\nin-context answering, {model.name}, top-{args.top_k} chunks, "
          f"{torch.get_num_threads()} threads")
    print("| document | chunks | questions | distinct contexts | minutes, prefix apart | minutes, prefix shared "
          "| speed-up | identical answers |")
    print("|---|---|---|---|---|---|---|---|")
    for name, chunks, n, distinct, apart_m, shared_m, ratio, same in rows:
        print(f"| {name} | {chunks} | {n} | {distinct} | {apart_m:.1f} | {shared_m:.1f} | {ratio:.1f}x "
              f"| {same} of {n} |")


if __name__ == "__main__":
    main()
