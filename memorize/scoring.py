"""Scoring one answer against a reference: required phrases, ROUGE-L, token F1 and an LLM judge."""
from __future__ import annotations

import re
import string
from collections import Counter
from functools import lru_cache

from memorize.abstain import abstains

# Without `must` or a judge, a question counts as correct when answer_f1 >= this (method "f1").
# A rough proxy, for when nothing better is available.
F1_THRESHOLD = 0.5

_APOSTROPHES = re.compile(r"['\u2018\u2019`]")
_POSSESSIVE = re.compile(r"(?<=\w)['\u2019]s\b")  # "Thrupp's" is about Thrupp
_NON_WORD = re.compile(r"[^\w\s]")
_NUMBER_JOINT = re.compile(r"(?<=\d)[.:,](?=\d)")
_ZERO_DECIMALS = re.compile(r"(?<=\d)\.0+(?!\d)")  # "100.0" is 100
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def _normalize(text: str) -> str:
    """Lowercase; drop a possessive "'s" ("Thrupp's" == "Thrupp") and apostrophes ("don't" == "dont"); other
    punctuation becomes a space. A number's
    point, colon or comma stays one joint, so "7:40" and "7.40" both read "7_40", "3.5" does not match "35"
    and a key "4" is not found in "12.4"."""
    text = _NUMBER_JOINT.sub("_", _ZERO_DECIMALS.sub("", _APOSTROPHES.sub("", _POSSESSIVE.sub("", text.lower()))))
    return " ".join(_NON_WORD.sub(" ", text).split())


def _contains(text: str, phrase: str) -> bool:
    return f" {_normalize(phrase)} " in f" {_normalize(text)} "


def _groups(must: list[list[str] | str]) -> list[list[str]]:
    return [[g] if isinstance(g, str) else g for g in must]


def must_satisfied(answer: str, must: list[list[str] | str]) -> bool:
    """True when every group has at least one alternative in the answer, as whole words."""
    return all(any(_contains(answer, alt) for alt in group) for group in _groups(must))


def informative_must(must: list[list[str] | str], question: str) -> tuple[list[list[str]], int]:
    """The `must` groups without the alternatives the question already contains, and how many groups
    that left empty. An answer that merely echoes the question ("the Lantern Regatta ...") must not
    count as knowing the answer; a group with nothing left cannot decide and is left to the fallback."""
    kept, emptied = [], 0
    for group in _groups(must):
        alts = [alt for alt in group if not _contains(question, alt)]
        if alts:
            kept.append(alts)
        else:
            emptied += 1
    return kept, emptied


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


class _Words:
    """rouge-score's own tokenizer keeps only [a-z0-9]: every accented or non-Latin word would vanish."""

    @staticmethod
    def tokenize(text: str) -> list[str]:
        return _words(text)


@lru_cache(maxsize=1)
def _rouge():
    from rouge_score.rouge_scorer import RougeScorer

    return RougeScorer(["rougeL"], tokenizer=_Words())


def _f_measure(overlap: int, n_pred: int, n_ref: int) -> float:
    if n_pred == 0 or n_ref == 0:
        return float(n_pred == n_ref)
    if overlap == 0:
        return 0.0
    precision, recall = overlap / n_pred, overlap / n_ref
    return 2 * precision * recall / (precision + recall)


def rouge_l(pred: str, ref: str) -> float:
    """ROUGE-L F1 (rouge-score): longest common subsequence of lowercase word tokens."""
    if not _words(pred) and not _words(ref):
        return 1.0  # nothing expected, nothing said
    return _rouge().score(ref, pred)["rougeL"].fmeasure


def _squad_tokens(text: str) -> list[str]:
    text = "".join(ch for ch in text.lower() if ch not in string.punctuation)
    return _ARTICLES.sub(" ", text).split()


def _bag_f1(p: list[str], r: list[str]) -> float:
    return _f_measure(sum((Counter(p) & Counter(r)).values()), len(p), len(r))


def token_f1(pred: str, ref: str) -> float:
    """SQuAD token F1: bag-of-words overlap after dropping case, punctuation and articles."""
    return _bag_f1(_squad_tokens(pred), _squad_tokens(ref))


_FUNCTION_WORDS = set("it its is are was were be been of in on at to for from by with and or as this that".split())


def answer_f1(pred: str, ref: str, question: str) -> float:
    """Token F1 over the words that carry the answer: not in the question, not function words.
    Small models echo the question ("The first regatta was sailed in 2018"), which alone gives a
    high token F1 against a full-sentence reference."""
    asked = set(_squad_tokens(question)) | _FUNCTION_WORDS
    r = [t for t in _squad_tokens(ref) if t not in asked]
    if not r:  # the reference only restates the question: nothing better than plain F1
        return token_f1(pred, ref)
    return _bag_f1([t for t in _squad_tokens(pred) if t not in asked], r)


JUDGE_SYSTEM = "You grade answers to questions against a reference answer. Reply with one word: yes or no."


def judge_prompt(question: str, reference: str, answer: str) -> list[dict]:
    user = (
        f"Question: {question}\n"
        f"Reference answer: {reference}\n"
        f"Candidate answer: {answer}\n\n"
        "Is the candidate answer correct given the reference? Extra detail is fine if it does not "
        "contradict the reference. Reply yes or no."
    )
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


_YES = {"yes", "correct", "right", "true"}
_NO = {"no", "incorrect", "wrong", "false"}
_NEGATIONS = {"not", "never", "t"}  # "t" is what remains of "isn't" after splitting on the apostrophe
_LABELS = {"answer", "verdict", "judgment", "judgement", "final"}


def parse_judge(text: str) -> bool | None:
    """Read a yes/no verdict from free text; None when there is none or it contradicts itself."""
    words = re.findall(r"[a-z]+", (text or "").lower())
    while words and words[0] in _LABELS:  # "Answer: yes", "Final verdict: no"
        words = words[1:]
    if words and words[0] in _YES | _NO:  # a leading verdict is decisive: "No, it says 1887 ..."
        return words[0] in _YES
    verdicts = {
        (w in _YES) != (i > 0 and words[i - 1] in _NEGATIONS)  # "not correct" reads as no
        for i, w in enumerate(words)
        if w in _YES | _NO
    }
    return verdicts.pop() if len(verdicts) == 1 else None


class LLMJudge:
    """Asks an OpenAI-compatible chat model whether an answer matches the reference."""

    def __init__(self, client, model: str, retries: int = 2, max_tokens: int = 10):
        self.client, self.model, self.retries, self.max_tokens = client, model, retries, max_tokens

    def __call__(self, question: str, reference: str, answer: str) -> bool | None:
        messages = judge_prompt(question, reference, answer)
        for _ in range(1 + self.retries):
            reply = self.client.chat.completions.create(
                model=self.model, messages=messages, temperature=0, max_tokens=self.max_tokens
            )
            text = reply.choices[0].message.content or ""
            verdict = parse_judge(text)
            if verdict is not None:
                return verdict
            # At temperature 0 the same prompt gives the same reply: push back instead of repeating it.
            messages = messages + [
                {"role": "assistant", "content": text},
                {"role": "user", "content": "Reply with only one word: yes or no."},
            ]
        return None


UNANSWERABLE = "unanswerable"  # the kind of a question the documents do not answer (empty answer, no `must`)


def score(question_row: dict, answer: str, judge=None) -> dict:
    """Verdict by the informative `must` groups (see informative_must) when the row has them; a group
    left empty, or no `must` at all, is decided by the judge, else by answer_f1 (method "must+judge",
    "must+f1", "judge" or "f1"). A question of kind `unanswerable` is correct when the answer abstains
    (method "abstain"); an abstention on any other question is wrong.

    "correct" is None only when the judge gave no usable verdict; such questions are left out of
    accuracy (see evaluation.summarize)."""
    question, reference = question_row["question"], question_row["answer"]
    abstained = abstains(answer)
    if question_row.get("kind") == UNANSWERABLE:
        return {"correct": abstained, "method": "abstain", "abstained": abstained, "unanswerable": True,
                "rouge_l": None, "token_f1": None, "answer_f1": None}
    result = {
        "abstained": abstained,
        "rouge_l": rouge_l(answer, reference),
        "token_f1": token_f1(answer, reference),
        "answer_f1": answer_f1(answer, reference, question),
    }
    if abstained:
        return {"correct": False, "method": "abstain", **result}
    groups, emptied = informative_must(question_row.get("must") or [], question)
    methods = ["must"] if groups else []
    correct = must_satisfied(answer, groups) if groups else True
    if emptied or not groups:
        if judge is not None:
            verdict, fallback = judge(question, reference, answer), "judge"
        else:
            verdict, fallback = result["answer_f1"] >= F1_THRESHOLD, "f1"
        methods.append(fallback)
        # A failed `must` group already decides; an unusable judge verdict leaves the question unscored.
        correct = False if not correct else verdict
    return {"correct": correct, "method": "+".join(methods), **result}
