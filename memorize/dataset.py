"""Train/test split and conversion of QA pairs to chat rows and files (CSV, JSONL, DatasetDict)."""
from __future__ import annotations

import csv
import hashlib
import json
import random
from pathlib import Path

from memorize import replacing

DEFAULT_TEST_RATIO = 1 / 11  # about 10:1


def assign_split(question: str, answer: str, test_ratio: float, seed: int = 0) -> str:
    """Stable per pair: adding or regenerating other pairs never moves this one."""
    if not 0 <= test_ratio < 1:
        raise ValueError(f"--test-ratio must be in [0, 1), got {test_ratio}")
    return "test" if _split_score(question, answer, seed) < test_ratio else "train"


def _split_score(question: str, answer: str, seed: int) -> float:
    return int(hashlib.sha256(f"{seed}\0{question}\0{answer}".encode()).hexdigest()[:12], 16) / 16**12


def ensure_test_pair(pairs: list[dict], test_ratio: float, seed: int = 0) -> None:
    """A small dataset can draw no test pair at all, leaving nothing to measure held-out loss on;
    then the pair nearest to the test side moves there (deterministic)."""
    if test_ratio > 0 and len(pairs) >= 2 and not any(p["split"] == "test" for p in pairs):
        min(pairs, key=lambda p: _split_score(p["question"], p["answer"], seed))["split"] = "test"


def chat_rows(pairs: list[dict], pairs_per_row: int, seed: int = 0) -> list[dict]:
    """Group K pairs per row as alternating user/assistant turns, in a seeded shuffled order."""
    if pairs_per_row < 1:
        raise ValueError(f"--pairs-per-row must be at least 1, got {pairs_per_row}")
    order = list(pairs)
    random.Random(seed).shuffle(order)
    rows = []
    for i in range(0, len(order), pairs_per_row):
        messages = []
        for p in order[i : i + pairs_per_row]:
            messages += [{"role": "user", "content": p["question"]}, {"role": "assistant", "content": p["answer"]}]
        rows.append({"messages": messages})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with replacing(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _write_csv(path: Path, rows: list[dict]) -> None:
    with replacing(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["messages"])
        for row in rows:
            w.writerow([json.dumps(row["messages"], ensure_ascii=False)])


def write_dataset(out_dir: Path, qa: list[dict], pairs_per_row: int, seed: int = 0) -> dict[str, int]:
    """Write qa.jsonl, {train,test}.{jsonl,csv} and dataset/ (a DatasetDict), each in place of the old one at
    once (memorize.replacing); return row counts."""
    from datasets import Dataset, DatasetDict, Features, List, Value
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()  # one bar per split for a few rows is noise

    out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(out_dir / "qa.jsonl", qa)
    splits = {}
    for split in ("train", "test"):
        rows = chat_rows([p for p in qa if p["split"] == split], pairs_per_row, seed)
        write_jsonl(out_dir / f"{split}.jsonl", rows)
        _write_csv(out_dir / f"{split}.csv", rows)
        splits[split] = rows
    features = Features({"messages": List({"role": Value("string"), "content": Value("string")})})
    # An empty split is left out: datasets writes no shard for it and cannot load it back.
    with replacing(out_dir / "dataset") as tmp:
        DatasetDict(
            {k: Dataset.from_dict({"messages": [r["messages"] for r in v]}, features=features)
             for k, v in splits.items() if v}
        ).save_to_disk(str(tmp))
    return {"train_rows": len(splits["train"]), "test_rows": len(splits["test"])}
