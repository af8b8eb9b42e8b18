"""Answer-bearing spans of a sentence: a number (with its unit), a date, a year, a percentage, a day, a month,
a colour, a quotation or a name. The teacher-free pairs (memorize.augment) ask for them; the abstention rows
(memorize.abstain) ask about the names."""
from __future__ import annotations

import re
from dataclasses import dataclass

from memorize.text import COLOURS, COMMON_STARTERS

_NUM_WORDS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
              "sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety "
              "hundred thousand million half").split()
_ORDINALS = ("first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth thirteenth "
             "fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth twentieth thirtieth last").split()
_MONTHS = "January February March April May June July August September October November December".split()
_DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
_NUM = rf"(?:\d[\d,]*(?:\.\d+)?|(?:{'|'.join(_NUM_WORDS)})(?:[- ](?:and[- ])?(?:{'|'.join(_NUM_WORDS)}))*)(?![\w-])"
_MONTH = rf"(?:{'|'.join(_MONTHS)})"
_ORD = rf"(?:\d{{1,2}}(?:st|nd|rd|th)?|{'|'.join(_ORDINALS)})"
# Ordered by priority: a date beats the number inside it, a quotation beats the names inside it. A reference
# to a clause or step ("as set out in rule 4.2") is structure: found first, so that no span is taken from it.
_PATTERNS = [
    ("ref", re.compile(r"\b(?:rules?|clauses?|sections?|articles?|parts?|steps?|paragraphs?|items?|§) ?"
                       r"\d+(?:\.\d+)*(?:\([a-z]\))?", re.IGNORECASE)),
    ("quote", re.compile(r"[\"“]([^\"”]{3,80})[\"”]")),
    ("date", re.compile(rf"\b(?:the )?{_ORD} (?:of )?{_MONTH}(?:,? \d{{4}})?\b|\b{_MONTH} {_ORD}(?:,? \d{{4}})?\b"
                        rf"|\bthe {_ORD} (?:{'|'.join(_DAYS)}|day|night|full moon|week) of {_MONTH}\b")),
    ("year", re.compile(r"\b1[0-9]{3}\b|\b20[0-9]{2}\b")),
    ("percent", re.compile(rf"\b{_NUM}(?: per ?cent|%)", re.IGNORECASE)),
    ("number", re.compile(rf"\b(?P<num>{_NUM})\b(?: (?P<unit>[a-z]+))?", re.IGNORECASE)),
    ("day", re.compile(rf"\b(?:{'|'.join(_DAYS)})s?\b")),
    ("month", re.compile(rf"\b{_MONTH}\b")),
    ("colour", re.compile(rf"\b(?:{'|'.join(COLOURS)})\b")),
]
_CONNECTORS = {"of", "the", "and", "de", "van", "von", "'s"}


@dataclass(frozen=True)
class Span:
    kind: str
    start: int
    end: int
    text: str
    unit: str | None = None


def _names(sentence: str, context: str) -> list[Span]:
    """Runs of capitalised words (joined by of/the/and), not the sentence's plain first word and not
    the document's own subject (a name inside `context`)."""
    spans, tokens = [], list(re.finditer(r"[A-Za-z][\w'’-]*", sentence))
    i = 0
    while i < len(tokens):
        t = tokens[i]
        if not t.group()[0].isupper() or (i == 0 and t.group().lower() in COMMON_STARTERS) \
                or t.group() in _MONTHS or t.group() in _DAYS:
            i += 1
            continue
        j = i
        while j + 1 < len(tokens):
            nxt = tokens[j + 1]
            if sentence[tokens[j].end():nxt.start()] != " ":  # "The Race Judge, Corwin Ashgrove": two names
                break
            if nxt.group()[0].isupper() and nxt.group() not in _MONTHS and nxt.group() not in _DAYS:
                j += 1
            else:  # "Keeper of the Hives", "Wassail of the Hollow"
                k = j + 1
                while k < len(tokens) and tokens[k].group().lower() in _CONNECTORS:
                    k += 1
                if k == j + 1 or k >= len(tokens) or not tokens[k].group()[0].isupper():
                    break
                j = k
        text = re.sub(r"['’]s$", "", sentence[t.start():tokens[j].end()])
        if text.lower() not in context.lower() and not re.fullmatch(r"Article \d+", text):
            spans.append(Span("name", t.start(), t.start() + len(text), text))
        i = j + 1
    return spans


def find_spans(sentence: str, context: str = "") -> list[Span]:
    """Answer-bearing spans of a sentence, without overlaps, in sentence order."""
    found: list[Span] = []
    for kind, pattern in _PATTERNS:
        for m in pattern.finditer(sentence):
            if kind == "colour" and m.group()[0].isupper() and m.start() > 0:
                continue  # "Green Ledger": part of a name
            unit = m.groupdict().get("unit")
            # "312 hives" asks "how many hives"; "one third" or "one vote" keeps just the number.
            if unit and not unit.endswith("s"):
                unit = None
            end = m.end("unit") if unit else (m.end("num") if kind == "number" else m.end())
            found.append(Span(kind, m.start(), end, sentence[m.start():end], unit))
    found.extend(_names(sentence, context))
    kept: list[Span] = []
    for s in found:  # earlier patterns win; names come last
        if not any(s.start < k.end and k.start < s.end for k in kept):
            kept.append(s)
    return sorted((s for s in kept if s.kind != "ref"), key=lambda s: s.start)
