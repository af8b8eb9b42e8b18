"""Teacher-free augmentation: question/answer pairs built from the document itself.

A weak generator writes few usable pairs, and even a strong one states each fact in few ways. These
pairs need no LLM: each sentence is asked about from several angles, as the literature on teaching
facts by fine-tuning asks (Physics of Language Models 3.1: varied presentations of every fact; the
reversal curse: entity-first questions with names intact). Kinds:

- `passage`: a paragraph's opening words (and its section title) ask for the whole paragraph, so the
  text itself is learned in order (continued pre-training in chat form);
- `span`: a question whose answer is a span of one sentence (number, date, day, colour, name or
  quotation), asked in place ("... keeps how many hives ...?") and, for "X is Y" sentences, as a
  plain question ("Who is the present Treasurer?");
- `reverse`: a name in the sentence asks for the sentence ("Who or what is Ewan Tallowby?");
- `cloze`: the sentence with its span blanked out.

Answers are the document's own sentences: exact, and self-contained once the question names the
document (the `context`).
"""
from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

KINDS = ("passage", "span", "reverse", "cloze")
AUGMENT_VERSION = 2  # part of the cache key: changing the rules rebuilds the pairs

_NUM_WORDS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
              "sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety "
              "hundred thousand million half").split()
_ORDINALS = ("first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth thirteenth "
             "fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth twentieth thirtieth last").split()
_MONTHS = "January February March April May June July August September October November December".split()
_DAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
_COLOURS = "red orange yellow green blue purple violet white black grey gray brown pink silver gold golden amber".split()
_NUM = rf"(?:\d[\d,]*(?:\.\d+)?|(?:{'|'.join(_NUM_WORDS)})(?:[- ](?:and[- ])?(?:{'|'.join(_NUM_WORDS)}))*)(?![\w-])"
_MONTH = rf"(?:{'|'.join(_MONTHS)})"
_ORD = rf"(?:\d{{1,2}}(?:st|nd|rd|th)?|{'|'.join(_ORDINALS)})"
# Ordered by priority: a date beats the number inside it, a quotation beats the names inside it.
_PATTERNS = [
    ("quote", re.compile(r"[\"“]([^\"”]{3,80})[\"”]")),
    ("date", re.compile(rf"\b(?:the )?{_ORD} (?:of )?{_MONTH}(?:,? \d{{4}})?\b|\b{_MONTH} {_ORD}(?:,? \d{{4}})?\b"
                        rf"|\bthe {_ORD} (?:{'|'.join(_DAYS)}|day|night|full moon|week) of {_MONTH}\b")),
    ("year", re.compile(r"\b1[0-9]{3}\b|\b20[0-9]{2}\b")),
    ("percent", re.compile(rf"\b{_NUM}(?: per ?cent|%)", re.IGNORECASE)),
    ("number", re.compile(rf"\b(?P<num>{_NUM})\b(?: (?P<unit>[a-z]+))?", re.IGNORECASE)),
    ("day", re.compile(rf"\b(?:{'|'.join(_DAYS)})s?\b")),
    ("month", re.compile(rf"\b{_MONTH}\b")),
    ("colour", re.compile(rf"\b(?:{'|'.join(_COLOURS)})\b")),
]
_CONNECTORS = {"of", "the", "and", "de", "van", "von", "'s"}
# Capitalised at the start of a sentence without being a name.
_COMMON_STARTERS = set("""a an the this that these those it its if when where while no not all any each every
    one two some many most more only after before during between on in at by for from to with within without
    under over upon once there here his her their our your my we you they he she i as but and or so then
    than also however members member""".split())
_WH = {"quote": "what", "date": "on what date", "year": "in what year", "percent": "what percentage",
       "day": "on which day", "month": "in which month", "colour": "what colour", "name": "what"}


@dataclass(frozen=True)
class Span:
    kind: str
    start: int
    end: int
    text: str
    unit: str | None = None


def _clean(line: str) -> str:
    """Markdown list markers and emphasis out; the words stay."""
    line = re.sub(r"^\s*(?:[-*+•]|\d+[.)])\s+", "", line)
    return re.sub(r"(\*\*|__|\*|`)", "", line).strip()


def _sentences(paragraph: str) -> list[str]:
    parts = re.split(r"(?<=[.!?])\s+(?=[\"“(\[A-Z0-9])", paragraph)
    return [p.strip() for p in parts if len(p.split()) >= 4]


def _names(sentence: str, context: str) -> list[Span]:
    """Runs of capitalised words (joined by of/the/and), not the sentence's plain first word and not
    the document's own subject (a name inside `context`)."""
    spans, tokens = [], list(re.finditer(r"[A-Za-z][\w'’-]*", sentence))
    i = 0
    while i < len(tokens):
        t = tokens[i]
        if not t.group()[0].isupper() or (i == 0 and t.group().lower() in _COMMON_STARTERS) \
                or t.group() in _MONTHS or t.group() in _DAYS:
            i += 1
            continue
        j = i
        while j + 1 < len(tokens):
            nxt = tokens[j + 1]
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
    return sorted(kept, key=lambda s: s.start)


def _wh(span: Span, person: bool) -> str:
    if span.kind == "number":
        return f"how many {span.unit}" if span.unit else "what number"
    if span.kind == "name" and person:
        return "who"
    return _WH[span.kind]


def _looks_like_person(name: str) -> bool:
    words = name.split()
    return 2 <= len(words) <= 3 and all(w[0].isupper() for w in words) and not any(
        w.lower() in _PLACE_WORDS for w in words)


_PLACE_WORDS = set("""barn lane vale meadow ash tree assembly council ledger schoolhouse market quay reach hall house
    street road river hill wood farm mill church school society club cooperative company committee board fund
    article section rule law act court office bell lamp pale reckoning russet wassail hollow""".split())


def _lower_first(text: str) -> str:
    first = text.split(" ", 1)[0]
    return text[0].lower() + text[1:] if first.lower() in _COMMON_STARTERS else text


def _in_document(context: str) -> str:
    """The document as a noun phrase after "In" / "According to": "The charter of X" -> "the charter of X",
    "Rules of X" -> "the rules of X"; a name ("International touch rugby rules") stays as written."""
    context = context.strip().rstrip(".")
    words = context.split()
    if words[0] in ("The", "A", "An"):
        return context[0].lower() + context[1:]
    if len(words) > 1 and words[1] == "of":
        return "the " + context[0].lower() + context[1:]
    return context


def _question(prefix: str, body: str) -> str:
    body = body.rstrip(" .;:!")
    return f"{prefix}, {_lower_first(body)}?"


_COPULA = re.compile(r"^(?P<subj>.+?) (?P<cop>is|was|are|were) (?P<pred>.+?)\.?$")
# "The Harbour Warden, Ilsa Brannock, gives ...": a capitalised title, then a name of two or more words.
_CAP = r"[A-Z][\w'’-]*"
_APPOSITIVE = re.compile(rf"\b(?P<title>[Tt]he (?:{_CAP} )*{_CAP}), (?P<name>{_CAP}(?: {_CAP})+),")


class _Writer:
    def __init__(self, context: str, seed: str):
        self.doc = _in_document(context)
        self.rng = random.Random(hashlib.sha256(seed.encode()).hexdigest())

    def prefix(self) -> str:
        return self.rng.choice([f"In {self.doc}", f"According to {self.doc}", f"Under {self.doc}"])

    def span_pairs(self, sentence: str, spans: list[Span]) -> list[tuple[str, str, str]]:
        pairs = []
        for span in spans:
            person = span.kind == "name" and _looks_like_person(span.text)
            wh = _wh(span, person)
            before = sentence[:span.start]
            if wh.split()[0] in ("on", "in") and re.search(r"\b(on|in|at|by|since|from|until|before|after|during) $", before):
                wh = wh.split(" ", 1)[1]  # "sailed on the second Saturday" -> "sailed on what date", not "on on"
            body = before + wh + sentence[span.end:]
            pairs.append(("span", _question(self.prefix(), body), sentence))
            blank = sentence[:span.start] + "____" + sentence[span.end:]
            pairs.append(("cloze", self.rng.choice([
                f"Fill in the blank in this statement from {self.doc}: \"{blank}\"",
                f"Complete this sentence from {self.doc}: \"{blank}\"",
            ]), sentence))
        m = _COPULA.match(sentence)
        if m and len(m.group("pred").split()) <= 12 and "," not in m.group("subj"):
            subj, cop, pred = m.group("subj"), m.group("cop"), m.group("pred")
            for span in spans:
                person = span.kind == "name" and _looks_like_person(span.text)
                who = "Who" if person else "What"
                if pred.startswith(span.text):  # "The present Treasurer is Marisol Venn."
                    pairs.append(("span", f"{who} {cop} {_lower_first(subj)}, {self.rng.choice(['in', 'according to'])} {self.doc}?", sentence))
                elif subj.endswith(span.text) and span.kind == "name":  # "Thornhollow is the largest apiary"
                    pairs.append(("span", f"{self.prefix()}, what {cop} {pred.rstrip('.')}?", sentence))
        for m in _APPOSITIVE.finditer(sentence):  # the plain fact both ways, which the sentence only implies
            title, name = "the" + m.group("title")[3:], m.group("name")
            who = "Who" if _looks_like_person(name) else "What"
            where = self.rng.choice(["in", "according to"])
            pairs.append(("span", f"{who} is {title}, {where} {self.doc}?", f"T{title[1:]} is {name}."))
            pairs.append(("reverse", f"What role does {name} have in {self.doc}?", f"{name} is {title}."))
        return pairs

    def reverse_pairs(self, sentence: str, spans: list[Span]) -> list[tuple[str, str, str]]:
        pairs = []
        for span in spans:
            if span.kind != "name":
                continue
            name = span.text
            who = "Who" if _looks_like_person(name) else "What"
            pairs.append(("reverse", self.rng.choice([
                f"{who} is {name}, according to {self.doc}?",
                f"What does {self.doc} say about {name}?",
                f"In {self.doc}, what is said of {name}?",
            ]), sentence))
        return pairs


def _paragraphs(chunk_text: str, heading: str | None) -> tuple[list[tuple[str | None, list[str]]], str | None]:
    """[(section title, [lines])] of a chunk; the title carries over from earlier chunks."""
    out: list[tuple[str | None, list[str]]] = []
    for raw in chunk_text.splitlines():
        line = raw.strip()
        if not line:
            continue
        m = re.match(r"^#{1,6}\s+(.*)", line)
        if m:
            heading = _clean(m.group(1))
            continue
        line = _clean(line)
        if out and out[-1][0] == heading and raw.lstrip()[:1] in "-*+•" and out[-1][1]:
            out[-1][1].append(line)  # list items stay with their paragraph
        else:
            out.append((heading, [line]))
    return out, heading


def check_kinds(kinds: list[str] | tuple[str, ...]) -> list[str]:
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown augmentation(s) {unknown}; choose from {', '.join(KINDS)} or none")
    return list(kinds)


def augment_chunks(chunks: list[dict], context: str, kinds: list[str] | tuple[str, ...] = KINDS) -> list[dict]:
    """Pairs {question, answer, kind, chunk_id} for chunks of one or more documents, in order.

    Chunks are dicts with `chunk_id`, `source` and `text` (chunks.jsonl rows); a section title seen in a
    chunk applies to the following chunks of the same source. Exact duplicates (chunk overlaps) are
    dropped."""
    check_kinds(kinds)
    pairs, seen, heading, source = [], set(), None, None
    for chunk in chunks:
        if chunk.get("source") != source:
            heading, source = None, chunk.get("source")
        paragraphs, heading = _paragraphs(chunk["text"], heading)
        for title, lines in paragraphs:
            text = " ".join(lines)
            writer = _Writer(context, f"{AUGMENT_VERSION}\0{text}")
            candidates = []
            words = text.split()
            if len(words) >= 12:
                where = f"the section \"{title}\" of {writer.doc}" if title else writer.doc
                opening = " ".join(words[:8])
                candidates.append(("passage", writer.rng.choice([
                    f"Recite the passage of {where} that begins \"{opening}\".",
                    f"What does {where} say in the paragraph starting \"{opening}\"?",
                ]), text))
            for sentence in (s for line in lines for s in _sentences(line)):
                spans = find_spans(sentence, context)[:4]
                candidates += writer.span_pairs(sentence, spans) + writer.reverse_pairs(sentence, spans)
            for kind, question, answer in candidates:
                if kind in kinds and (question, answer) not in seen:
                    seen.add((question, answer))
                    pairs.append({"question": question, "answer": answer, "kind": kind, "chunk_id": chunk["chunk_id"]})
    return pairs
