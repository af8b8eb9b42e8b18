"""Filters for generated question/answer pairs: a weak teacher's mistakes are learned too.

Each dropped pair gets a reason, counted in report.json:
- `not_a_question`: no question mark (Latin, full-width or Arabic): a small generator that rewrites the
  chunk as alternating lines ("## Date and Course" / "The race is sailed ...") parses as pairs that ask nothing;
- `off_topic`: none of the question's content words occurs in the chunk ("What is the penalty for a late
  start?" copied from the prompt, "How is it done?"): it names nothing the chunk is about;
- `answer_in_question`: the answer's words are all in the question (nothing to learn, it teaches echoing);
- `repetitive`: a run of three words comes back three times in the question or the answer: the generator
  looped ("... is to be returned to the old t1, and that the old t1 is to be returned to the old t1, and ..."),
  and every word of such a loop can still be in the chunk;
- `unsupported`: under half of the answer's content words occur in the chunk it was written from
  (a cheap lexical check for invented facts);
- `duplicate`: nearly the same question and answer (rapidfuzz ratio >= NEAR_DUPLICATE, same numbers) as a
  pair kept before it, e.g. the same pair written again at another temperature. "Rule 12" and "rule 13"
  differ by one character but are different facts: their numbers differ, so both stay.
"""
from __future__ import annotations

import re
from collections import Counter

from rapidfuzz import fuzz, process

from memorize.text import content_words

NEAR_DUPLICATE = 92  # rapidfuzz ratio (0-100) of two normalised question + answer texts
SEEN_QUESTION = 85  # ratio at which a training question counts as a rewording of an evaluation question
QUESTION_MARKS = ("?", "？", "؟")  # Latin, full-width (Chinese, Japanese), Arabic
LOOP_REPEATS = 3  # times one word trigram may occur in a question or answer before it counts as a loop
MIN_SUPPORT = 0.5  # share of the answer's new content words that must occur in the chunk
# Words a question uses about any document: they do not tie it to this chunk.
_GENERIC = set("document documents text passage part section rule rules say says said state states stated "
               "mention mentioned above below described".split())


def _norm(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


_CJK_PAIR = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]{2}")  # scripts written without spaces


def _names_the_chunk(question: str, q_words: set[str], chunk_text: str, chunk_words: set[str]) -> bool:
    if (q_words - _GENERIC) & chunk_words:
        return True
    # Chinese, Japanese, Korean: a "word" is a whole clause; two characters shared with the chunk will do.
    return any(_CJK_PAIR.fullmatch(question[i:i + 2]) and question[i:i + 2] in chunk_text
               for i in range(len(question) - 1))


def _loops(text: str) -> bool:
    words = re.findall(r"\w+", text.lower())
    return max(Counter(zip(words, words[1:], words[2:])).values(), default=0) >= LOOP_REPEATS


def drop_reason(question: str, answer: str, chunk_text: str) -> str | None:
    """Why a single pair is unusable, or None."""
    if not any(mark in question for mark in QUESTION_MARKS):
        return "not_a_question"
    q_words, a_words, chunk_words = content_words(question), content_words(answer), content_words(chunk_text)
    if not _names_the_chunk(question, q_words, chunk_text, chunk_words):
        return "off_topic"
    if not a_words - q_words or _norm(answer) in _norm(question):
        return "answer_in_question"
    if _loops(question) or _loops(answer):
        return "repetitive"
    new = a_words - q_words
    if len(new & chunk_words) < MIN_SUPPORT * len(new):
        return "unsupported"
    return None


def seen_in_training(questions: list[str], training_questions: list[str]) -> list[bool]:
    """For each evaluation question, whether a training question is (nearly) the same text: a question the
    model was trained on measures recall of that row, not knowledge, and must be reported or removed."""
    if not questions or not training_questions:
        return [False] * len(questions)
    scores = process.cdist([_norm(q) for q in questions], [_norm(t) for t in training_questions],
                           scorer=fuzz.ratio, score_cutoff=SEEN_QUESTION, workers=1)
    return [bool(row.any()) for row in scores]


def filter_pairs(pairs: list[dict], chunk_texts: dict[str, str]) -> tuple[list[dict], Counter]:
    """Keep the usable pairs in order; return them and the count of drops per reason.

    pairs carry `question`, `answer` and `chunk_id`; chunk_texts maps chunk_id to its text."""
    dropped: Counter = Counter()
    kept: list[dict] = []
    seen: dict[tuple[str, ...], list[str]] = {}  # numbers in the pair -> texts of the kept pairs
    for p in pairs:
        reason = drop_reason(p["question"], p["answer"], chunk_texts.get(p["chunk_id"], ""))
        if reason is None:
            text = f"{_norm(p['question'])} | {_norm(p['answer'])}"
            same_numbers = seen.setdefault(tuple(re.findall(r"\d+", text)), [])
            if process.extractOne(text, same_numbers, scorer=fuzz.ratio, score_cutoff=NEAR_DUPLICATE) is not None:
                reason = "duplicate"
            else:
                same_numbers.append(text)
        if reason:
            dropped[reason] += 1
        else:
            kept.append(p)
    return kept, dropped
