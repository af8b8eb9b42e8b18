"""Replay: the base model's own answers to varied general instructions, mixed into fine-tuning.

Training hard enough to learn new facts pulls a small model away from everything else it knew. Mixing
a share of rows that hold the base model's *own* answers to general requests (self-distillation, no
download needed) anchors its behaviour outside the documents. The answers are generated once per base
model and prompt list, greedy, and cached under $MEMORIZE_HOME/replay.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from memorize import read_json_cache, write_json

REPLAY_PROMPTS = Path(__file__).parent / "data" / "replay_prompts.jsonl"
MAX_NEW_TOKENS = 160


def read_prompts(path: str | Path = REPLAY_PROMPTS) -> list[str]:
    path = Path(path)
    prompts = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            prompts.append(json.loads(line)["prompt"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}, line {n}: expected a JSON object with a 'prompt' field ({exc})") from exc
    if not prompts:
        raise ValueError(f"{path}: no replay prompts")
    return prompts


def _cache_file(base_model: str, chat_template: str | None) -> Path:
    from memorize.answering import model_cache_file

    return model_cache_file("replay", base_model, chat_template, MAX_NEW_TOKENS)


def _whole_sentences(answer: str) -> str:
    """An answer cut by the token limit ends mid-sentence; learning that would teach stopping mid-sentence."""
    if answer.rstrip().endswith((".", "!", "?", '"', ")")) or "." not in answer:
        return answer
    return answer[: answer.rindex(".") + 1]


def base_answers(base_model: str, prompts: list[str], chat_template: str | None = None,
                 progress: bool = True) -> dict[str, str]:
    """{prompt: answer} from the base model; each answer is generated once per model and cached."""
    cache = _cache_file(base_model, chat_template)
    known = read_json_cache(cache)
    todo = sorted(set(prompts) - set(known))
    if todo:
        from memorize.answering import Answerer

        answerer = Answerer.load(base_model, chat_template=chat_template)
        answers = answerer.answer(todo, max_new_tokens=MAX_NEW_TOKENS, progress=progress,
                                  desc="replay: base answers")
        known.update(zip(todo, map(_whole_sentences, answers), strict=True))
        del answerer
        write_json(cache, known)
    return {p: known[p] for p in prompts}


def plan_replay(prompts: list[str], train: list[list[dict]], ratio: float, seed: int = 0) -> list[list[str]]:
    """Rows of replay prompts making up `ratio` of all assistant turns once added to `train`, grouped like
    the training rows (same mean number of turns per row); the prompts cycle in a seeded order."""
    if not 0 <= ratio < 1:
        raise ValueError(f"replay_ratio must be in [0, 1), got {ratio}")
    turns = sum(m["role"] == "assistant" for row in train for m in row)
    wanted = round(ratio / (1 - ratio) * turns)
    if not wanted or not prompts:
        return []
    per_row = max(1, round(turns / len(train)))
    rng = random.Random(seed)
    picked: list[str] = []
    while len(picked) < wanted:  # each prompt used about equally often
        batch = list(prompts)
        rng.shuffle(batch)
        picked.extend(batch[: wanted - len(picked)])
    return [picked[i: i + per_row] for i in range(0, len(picked), per_row)]


def replay_conversations(base_model: str, train: list[list[dict]], ratio: float, seed: int = 0,
                         prompts_file: str | Path | None = None, chat_template: str | None = None,
                         progress: bool = True) -> list[list[dict]]:
    """The replay rows for `train`: planned prompts with the base model's answers (empty answers skipped)."""
    plan = plan_replay(read_prompts(prompts_file or REPLAY_PROMPTS), train, ratio, seed)
    answers = base_answers(base_model, sorted({p for row in plan for p in row}), chat_template, progress)
    rows = [[m for p in row if answers[p].strip()
             for m in ({"role": "user", "content": p}, {"role": "assistant", "content": answers[p]})] for row in plan]
    return [r for r in rows if r]
