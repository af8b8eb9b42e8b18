"""The evidence behind an answer: the sentence of the documents that best supports what the answer says.

Only the answer's own content counts: its content words that the question does not already hold (an
answer that repeats the question proves nothing). BM25 over the documents' sentences finds candidates; a
candidate supports the answer when it holds at least SUPPORT of those words' weight (their IDF, so a rare
name counts more than a common verb, and a word found nowhere in the documents counts most) and some of the
question's; a number of the answer that no candidate contains means the answer is not supported at all. A
fluent wrong answer ("the wax is yellow" where the charter says blue) then gets no evidence."""
from __future__ import annotations

import math
import re
from collections import Counter
from functools import lru_cache
from pathlib import PurePath

from rank_bm25 import BM25Okapi

from memorize.chunking import split_sentences
from memorize.coverage import sections
from memorize.text import clause_label, content_words

# Measured on the charter (bench/data/moonwell_*): 286 of 345 right answers are supported, 14 of 92 with an
# invented name or number, 42 of 86 with another word of the documents swapped in (a lexical limit).
SUPPORT = 0.5  # share of the answer's content-word weight that one sentence must hold
TOPIC = 0.1  # share of the question's content-word weight it must hold too
ABSENT = 2  # weight of a word the documents never use, in words used once: the surest sign of an invented claim
CANDIDATES = 5  # best BM25 sentences looked at (the answer's numbers must appear in one of them)
QUOTE_CHARS = 300  # a longer sentence (a table row dump) is shortened in the evidence line
_NUMBER = re.compile(r"\d+(?:[.,:]\d+)*")


_UNITS = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen " \
         "seventeen eighteen nineteen".split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_NUMBER_WORD = re.compile(rf"\b(?:({'|'.join(_TENS)})(?:[- ]({'|'.join(_UNITS[1:10])}))?|({'|'.join(_UNITS)}))\b",
                          re.IGNORECASE)


def _spelled_to_digits(text: str) -> str:
    """"forty-eight hours" -> "48 hours": documents spell out the numbers that answers give as digits, and
    the other way round."""
    def digits(m: re.Match) -> str:
        if m.group(3):
            return str(_UNITS.index(m.group(3).lower()))
        units = _UNITS.index(m.group(2).lower()) if m.group(2) else 0
        return str(10 * (_TENS.index(m.group(1).lower()) + 2) + units)

    return _NUMBER_WORD.sub(digits, text)


@lru_cache(maxsize=1)
def _porter():
    from nltk.stem.porter import PorterStemmer  # rouge-score's dependency; needs no data files

    return PorterStemmer()


@lru_cache(maxsize=None)
def _stem(word: str) -> str:
    """"fees"/"fee", "sealed"/"seals": the answer's words meet the document's in any form."""
    return _porter().stem(word)


def _terms(text: str) -> set[str]:
    return {_stem(w) for w in content_words(_spelled_to_digits(text)) if len(w) > 1 or w.isdigit()}


def _numbers(text: str) -> set[str]:
    return {n.replace(",", "") for n in _NUMBER.findall(_spelled_to_digits(text))}


class EvidenceIndex:
    """BM25 over the sentences of the chunks (chunks.jsonl rows), each with its file, its section as the
    coverage map names it (heading in effect, slide, sheet or PDF page: coverage.sections) and the clause
    number its line starts with. Built once per process (a fraction of a second for a book); `find` takes
    about a millisecond."""

    def __init__(self, chunks: list[dict]):
        self.sentences: list[dict] = []
        seen: set[tuple[str, str]] = set()  # overlapping chunks repeat their boundary sentences
        for part in sections(chunks):
            name = PurePath(part["source"] or "").name
            for line in part["text"].splitlines():
                clause = clause_label(line)
                for sentence in split_sentences(line):
                    if (part["source"], sentence) not in seen:
                        seen.add((part["source"], sentence))
                        self.sentences.append({"source": name, "section": part["label"] or None, "clause": clause,
                                               "sentence": sentence})
        if not self.sentences:
            raise ValueError("no sentences to index")
        self._terms = [_terms(s["sentence"]) for s in self.sentences]
        self._bm25 = BM25Okapi([sorted(t) for t in self._terms])
        # Weights: the always-positive IDF (rank_bm25's own turns negative in a corpus of a few sentences).
        n, df = len(self._terms), Counter(t for terms in self._terms for t in terms)
        self._idf = {t: math.log(1 + (n - k + 0.5) / (k + 0.5)) for t, k in df.items()}
        self._absent = ABSENT * math.log(1 + (n - 0.5) / 1.5)  # in weights of a word used once

    def find(self, answer: str, question: str = "") -> dict | None:
        """{source, section, clause, sentence, score} of the sentence that best supports the
        answer (score: the share of the answer's content weight it holds), or None when none does."""
        asked = _terms(question)
        # An answer that only restates the question ("Yes, the fee is 65 euros"): its words are its content.
        content = (_terms(answer) - asked) or _terms(answer)
        if not content:
            return None
        scores = self._bm25.get_scores(sorted(content))
        candidates = [i for i in sorted(range(len(scores)), key=lambda i: -scores[i])[:CANDIDATES]
                      if content & self._terms[i]]
        found = set().union(*(_numbers(self.sentences[i]["sentence"]) for i in candidates))
        if not candidates or _numbers(answer) - _numbers(question) - found:
            return None
        support = {i: (self._share(content, i), self._share(asked, i)) for i in candidates}
        # A sentence that holds the answer's words but none of the question's is about something else
        # (a "yellow label" for the colour of the wax).
        held = [i for i in candidates if support[i][0] >= SUPPORT and (not asked or support[i][1] >= TOPIC)]
        if not held:
            return None
        best = max(held, key=lambda i: support[i])  # max keeps the first of equals: the better BM25
        return {**self.sentences[best], "score": round(support[best][0], 3)}

    def _share(self, terms: set[str], i: int) -> float:
        """The share of the terms' weight (IDF) that sentence i holds."""
        weight = {t: self._idf.get(t, self._absent) for t in terms}
        # fsum is exact, so the share (and a tie between sentences) does not hang on the set's order (PYTHONHASHSEED)
        return math.fsum(weight[t] for t in terms & self._terms[i]) / math.fsum(weight.values()) if terms else 0.0


def evidence_line(evidence: dict | None) -> str:
    """`evidence: rules.md, section "Penalties", clause 4.2: "..."`, or the plain statement that nothing
    supports the answer."""
    if evidence is None:
        return "evidence: none — no passage of the documents supports this answer"
    where = [evidence["source"]]
    if label := evidence.get("section"):  # pages, slides and sheets are named as such; headings are quoted
        where.append(label if re.match(r"(page|slide|sheet) ", label) else f'section "{label}"')
    if evidence.get("clause"):
        where.append(f"clause {evidence['clause']}")
    sentence = evidence["sentence"]
    if len(sentence) > QUOTE_CHARS:
        sentence = sentence[:QUOTE_CHARS].rstrip() + "…"
    return f'evidence: {", ".join(where)}: "{sentence}"'
