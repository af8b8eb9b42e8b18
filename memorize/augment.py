"""Teacher-free augmentation: question/answer pairs built from the document itself.

A weak generator writes few usable pairs, and even a strong one states each fact in few ways. These
pairs need no LLM: each sentence is asked about from several angles, as the literature on teaching
facts by fine-tuning asks (Physics of Language Models 3.1: varied presentations of every fact; the
reversal curse: entity-first questions with names intact). Kinds:

- `passage`: a paragraph's opening words (and its section title) ask for the whole paragraph, so the
  text itself is learned in order (continued pre-training in chat form);
- `span`: a question whose answer is a span of one sentence (number, date, day, colour, name or
  quotation, found by memorize.spans), asked in place ("... keeps how many hives ...?") and, for "X is Y"
  sentences, as a plain question ("Who is the present Treasurer?");
- `reverse`: a name in the sentence asks for the sentence ("Who or what is Ewan Tallowby?");
- `cloze`: the sentence with its span blanked out;
- `clause`: a numbered clause ("5.2 ...") asked for by its number ("What does rule 5.2 of ... say?");
- `list`: a list with its lead-in ("What does ... list under ...?"), and each "term: description" item;
- `steps`: numbered steps in order ("What is the first step of starting the mill ...?", "What comes after
  step 3 ...?"), each step as users ask of it ("how do you release the brake?", "why do you ring the bell?",
  "what is done when the wheel reaches 8 revolutions?") and which procedure it belongs to;
- `table`: one fact per cell with its row and column headers (from both sides), each row and each column
  whole, and a unique value asked back.

Answers are the document's own sentences: exact, and self-contained once the question names the
document (the `context`). Clause numbers, list markers and step numbers are structure: they are taken off
the text before any pair is made, so no answer starts with one and no span question asks for one.
"""
from __future__ import annotations

import hashlib
import random
import re
from collections import Counter

from memorize.spans import Span, find_spans
from memorize.text import CLAUSE, COMMON_STARTERS, fact_sentences, in_document, looks_like_person, prose_names

KINDS = ("passage", "span", "reverse", "cloze", "clause", "list", "steps", "table")
AUGMENT_VERSION = 3  # part of the pairs' seed and of the cache key (as is the rules' source, tasks/augment.py)

_WH = {"quote": "what", "date": "on what date", "year": "in what year", "percent": "what percentage",
       "day": "on which day", "month": "in which month", "colour": "what colour", "name": "what"}


def _clean(line: str) -> str:
    """Markdown list markers and emphasis out; the words stay."""
    line = re.sub(r"^\s*(?:[-*+•]|\d+[.)])\s+", "", line)
    return re.sub(r"(\*\*|__|\*|`)", "", line).strip()


def _wh(span: Span, person: bool) -> str:
    if span.kind == "number":
        return f"how many {span.unit}" if span.unit else "what number"
    if span.kind == "name" and person:
        return "who"
    return _WH[span.kind]


def _lower_first(text: str) -> str:
    first = text.split(" ", 1)[0]
    return text[0].lower() + text[1:] if first.lower() in COMMON_STARTERS else text


def _question(prefix: str, body: str) -> str:
    body = body.rstrip(" .;:!")
    return f"{prefix}, {_lower_first(body)}?"


_COPULA = re.compile(r"^(?P<subj>.+?) (?P<cop>is|was|are|were) (?P<pred>.+?)\.?$")
# "The Harbour Warden, Ilsa Brannock, gives ...": a capitalised title, then a name of two or more words.
_CAP = r"[A-Z][\w'’-]*"
_APPOSITIVE = re.compile(rf"\b(?P<title>[Tt]he (?:{_CAP} )*{_CAP}), (?P<name>{_CAP}(?: {_CAP})+),")


class _Writer:
    def __init__(self, context: str, seed: str):
        self.doc = in_document(context)
        self.rng = random.Random(hashlib.sha256(seed.encode()).hexdigest())

    def prefix(self) -> str:
        return self.rng.choice([f"In {self.doc}", f"According to {self.doc}", f"Under {self.doc}"])

    def span_pairs(self, sentence: str, spans: list[Span]) -> list[tuple[str, str, str]]:
        pairs = []
        for span in spans:
            person = span.kind == "name" and looks_like_person(span.text)
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
                person = span.kind == "name" and looks_like_person(span.text)
                who = "Who" if person else "What"
                if pred.startswith(span.text):  # "The present Treasurer is Marisol Venn."
                    pairs.append(("span", f"{who} {cop} {_lower_first(subj)}, {self.rng.choice(['in', 'according to'])} {self.doc}?", sentence))
                elif subj.endswith(span.text) and span.kind == "name":  # "Thornhollow is the largest apiary"
                    pairs.append(("span", f"{self.prefix()}, what {cop} {pred.rstrip('.')}?", sentence))
        for m in _APPOSITIVE.finditer(sentence):  # the plain fact both ways, which the sentence only implies
            title, name = "the" + m.group("title")[3:], m.group("name")
            who = "Who" if looks_like_person(name) else "What"
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
            who = "Who" if looks_like_person(name) else "What"
            pairs.append(("reverse", self.rng.choice([
                f"{who} is {name}, according to {self.doc}?",
                f"What does {self.doc} say about {name}?",
                f"In {self.doc}, what is said of {name}?",
            ]), sentence))
        return pairs


class _Block:
    """A run of lines of one shape: a prose line, a numbered clause, a list, numbered steps or a table."""

    def __init__(self, shape: str, heading: str | None, lead: str | None = None, label: str | None = None):
        self.shape, self.heading, self.lead, self.label = shape, heading, lead, label
        self.items: list[str] = []  # prose: the line; clause: its text; list/steps: the items; table: unused
        self.numbers: list[int] = []  # steps: their numbers
        self.header: list[str] = []  # table: column headers
        self.rows: list[list[str]] = []  # table: cells
        self.closed = False  # steps: followed by another line of the same chunk (the last step is known)
        self.parent: _Block | None = None  # list: the clause that leads into it


# Structure, not content: clause numbers (memorize.text.CLAUSE), list markers and step numbers say where a fact
# stands. Kept in an answer, a clause number is learned as part of the fact and later takes the place of a real figure.
_ORDERED = re.compile(r"^(?P<num>\d{1,2})[.)]\s+(?=\S)")
_BULLET = re.compile(r"^(?:[-*+•]|\(?(?:[a-h]|i{1,3}|iv|v|vi{1,3})\))\s+(?=\S)")
_HEADING = re.compile(r"^#{1,6}\s+(.*)")
_HEADING_NUMBER = re.compile(r"^(?:(?:part|chapter|section|schedule)\s+)?(?:\d+(?:\.\d+)*|[IVX]+)[.:)]?\s*[—–-]?\s+(?=\w)",
                             re.IGNORECASE)
_TABLE_SEPARATOR = re.compile(r"^\|?[\s:|-]*-{3,}[\s:|-]*\|?$")
_EMPTY_CELL = re.compile(r"^(?:|-+|—|–|nan|none|unnamed: \d+)$", re.IGNORECASE)
_TERM = re.compile(r"^(?P<term>[^:.;]{2,60}?)(?::| — | – | - )\s*(?P<desc>\S.*)$")


def _cells(line: str) -> list[str]:
    return [_clean(c) for c in line.strip().strip("|").split("|")]


class _Reader:
    """Splits a source's chunks into blocks. What is open at a chunk's end (the heading, a table's header)
    carries over to the source's next chunk."""

    def __init__(self):
        self.heading: str | None = None
        self.header: list[str] | None = None

    def blocks(self, text: str, final: bool = False) -> list[_Block]:
        """`final`: the source's last chunk, so steps that end it end their procedure."""
        out: list[_Block] = []
        for line in (raw.strip() for raw in text.splitlines()):
            if not line:
                continue
            last = out[-1] if out else None
            if last is not None and last.shape == "steps":
                last.closed = not _ORDERED.match(line)
            if m := _HEADING.match(line):
                self.heading, self.header = _HEADING_NUMBER.sub("", _clean(m.group(1))) or None, None
            elif line.startswith("|") and line.count("|") >= 2:
                if _TABLE_SEPARATOR.match(line):
                    continue
                cells = _cells(line)
                if last is not None and last.shape == "table":
                    if cells != last.header:  # a header repeated by the chunk overlap
                        last.rows.append(cells)
                else:  # a new table, or the rest of one the previous chunk began (its header carried over)
                    block = _Block("table", self.heading)
                    if self.header and len(cells) == len(self.header) and not out:
                        block.header = self.header
                        if cells != self.header:
                            block.rows.append(cells)
                    else:
                        block.header = cells
                    out.append(block)
                self.header = out[-1].header
            elif m := CLAUSE.match(line):
                self.header = None
                block = _Block("clause", self.heading, label=m.group("num") or m.group("single"))
                block.items.append(_clean(line[m.end():]))
                out.append(block)
            elif (m := _ORDERED.match(line)) or _BULLET.match(line):
                self.header = None
                shape = "steps" if m else "list"
                item = _clean(line[m.end():] if m else _BULLET.sub("", line, count=1))
                if last is None or last.shape != shape or last.heading != self.heading:
                    lead = last.items[-1] if last is not None and last.items and last.items[-1].endswith(":") else None
                    out.append(_Block(shape, self.heading, lead, last.label if lead and last.shape == "clause" else None))
                    out[-1].parent = last if lead and last.shape == "clause" else None
                out[-1].items.append(item)
                if out[-1].parent is not None:  # "4.3 A boat retires when:" and its items are one clause
                    parent = out[-1].parent
                    parent.items[0] += (" " if parent.items[0].endswith(":") else "; ") + item.rstrip(".;")
                if m:
                    out[-1].numbers.append(int(m.group("num")))
            else:
                self.header = None
                block = _Block("prose", self.heading)
                block.items.append(_clean(line))
                out.append(block)
        if final and out and out[-1].shape == "steps":
            out[-1].closed = True
        return out


def check_kinds(kinds: list[str] | tuple[str, ...]) -> list[str]:
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown augmentation(s) {unknown}; choose from {', '.join(KINDS)} or none")
    return list(kinds)


def _lower_header(text: str, names: set[str]) -> str:
    """A column header inside a sentence: "Half day" -> "half day"; "GPS", and a name of the documents' prose
    ("Skellin single", where the prose says "the islands of Skellin and ..."), as written."""
    first = text.split(" ", 1)[0]
    return text if (first.isupper() and len(first) > 1) or first in names else text[0].lower() + text[1:]


def _decap(text: str) -> str:
    """A list item or step inside a sentence: "Open the gate" -> "open the gate"; "GPS ..." as written."""
    first = text.split(" ", 1)[0]
    return text[0].lower() + text[1:] if first[:1].isupper() and first[1:].islower() else text


def _sentence(text: str) -> str:
    text = text.rstrip(" ;:,")
    return text if text.endswith((".", "!", "?")) else text + "."


# An imperative step read for what users ask of it: "When X, do Y" (what is done when X?), "Do Y by Z-ing" or "with
# the Z" (how is Y done?), "Do Y to W" (how is W done? why is Y done?) and its object (what is done with it?).
_TRIGGER = re.compile(r"^(?P<when>When|Once|If|As soon as|After|Before) (?P<cond>[^,]{3,80}), (?P<rest>\S.*)$")
_MEANS = re.compile(r"^(?P<act>\S+ [^,;]+?) (?:(?:by|by means of) (?=\w+ing\b)|(?:with|using) (?=(?:the|a|an) ))")
_PURPOSE = re.compile(r"^(?!(?:ask|tell|help|allow|remind|instruct|get|want|need|expect|invite|advise|warn|let)\b)"
                      r"(?P<act>\S+ [^,;]+?),? (?:so as |in order )?to (?P<goal>[a-z]+ (?:the|a|an|anyone|everyone|all|"
                      r"their|its|your)\b[^,;]*?)(?=[,;]| then | and |$)")
_OBJECT = re.compile(r"^\S+ (?P<obj>(?:the|a|an|both)(?: [a-z][a-z-]*)+?)(?= (?:to|by|with|from|in|into|on|onto|at|for|"
                     r"until|so|and|or|then|twice|again|back|down|up|forward|off|out|over|away|once|you|that|which|who|"
                     r"it|them|fully|firmly|gently|slowly|carefully|completely|quickly|tightly|securely|clockwise|"
                     r"anticlockwise|counterclockwise)\b|[,;:]|$)")
_NOT_ACTIONS = {"make", "check", "ensure", "be", "let", "see", "note", "remember", "keep", "do", "if", "when"}


def _step_questions(step: str) -> list[str]:
    """What users ask of an imperative step ("how do you release the wheel brake"), from its own words."""
    text = step.rstrip(".")
    if ". " in text:  # a step of two sentences is asked about by its first
        text = text.split(". ", 1)[0]
    asks = []
    if m := _TRIGGER.match(text):
        asks.append(f"what is done {m.group('when').lower()} {m.group('cond')}")
        text = m.group("rest")
    words = text.split()
    if not words or not words[0].isalpha() or words[0].lower() in _NOT_ACTIONS or words[0].lower() in COMMON_STARTERS:
        return asks
    if len(words) > 2 and words[1].endswith("s") and words[2] in ("the", "a", "an"):  # "Operator opens the valve"
        return asks
    text = _decap(text)
    if m := _MEANS.match(text):
        asks.append(f"how do you {m.group('act')}")
    if m := _PURPOSE.match(text):
        asks += [f"how do you {m.group('goal')}", f"why do you {m.group('act')}"]
    if m := _OBJECT.match(text):
        asks.append(f"what is done with {m.group('obj')}")
    return asks


class _Pairs(_Writer):
    """The pairs of one block, by its shape; every block's sentences also get the prose pairs."""

    def __init__(self, context: str, block: _Block, names: set[str]):
        super().__init__(context, f"{AUGMENT_VERSION}\0{block.shape}\0{block.items}\0{block.rows}")
        self.context, self.block, self.names = context, block, names
        self.word = next((w for w in ("rule", "article", "section") if w in context.lower()), "clause")

    def prose(self, text: str, answer: str | None = None, passage: bool = True,
              item: bool = False) -> list[tuple[str, str, str]]:
        """Passage, span, cloze and reverse pairs of a paragraph; `answer` replaces each sentence as the answer
        (a list item with its lead-in). An `item` (list item, step) starts with a capitalised verb, not a name."""
        out = []
        words = text.split()
        if passage and len(words) >= 12:
            title = self.block.heading
            where = f"the section \"{title}\" of {self.doc}" if title else self.doc
            opening = " ".join(words[:8])
            out.append(("passage", self.rng.choice([
                f"Recite the passage of {where} that begins \"{opening}\".",
                f"What does {where} say in the paragraph starting \"{opening}\"?",
            ]), text))
        for sentence in fact_sentences(text):
            spans = find_spans(sentence, self.context)
            if item and spans and spans[0].kind == "name" and spans[0].start == 0 and " " not in spans[0].text:
                spans = spans[1:]
            spans = spans[:4]
            out += [(k, q, answer or a) for k, q, a in self.span_pairs(sentence, spans) + self.reverse_pairs(sentence, spans)]
        return out

    def clause(self) -> list[tuple[str, str, str]]:
        text = _sentence(self.block.items[0])
        return [("clause", self.rng.choice([f"What does {self.word} {self.block.label} of {self.doc} say?",
                                            f"What is {self.word} {self.block.label} of {self.doc}?"]), text),
                *self.prose(text, passage=False)]

    def items(self) -> list[tuple[str, str, str]]:
        b = self.block
        lead = b.lead.rstrip(": ") if b.lead else None
        out = []
        if lead and 2 <= len(b.items) <= 12:
            out.append(("list", self.rng.choice([f"In {self.doc}, what is listed under \"{lead}\"?",
                                                 f"{self.prefix()}, what follows \"{lead}\"?"]),
                        _sentence(f"{lead}: " + "; ".join(_decap(i).rstrip(".;") for i in b.items))))
        for item in b.items:
            fact = _sentence(f"{lead}: {_decap(item)}" if lead else item)
            if m := _TERM.match(item):
                term = _decap(m.group("term").strip())
                out.append(("list", self.rng.choice([f"In {self.doc}, what is said about {term}?",
                                                     f"{self.prefix()}, what applies to {term}?"]), fact))
            # A fragment ("they argue with the referee") is asked about with its lead-in.
            fragment = lead is not None and item[:1].islower()
            out += self.prose(fact[:-1] if fragment else item, answer=fact, passage=False, item=not fragment)
        return out

    def steps(self) -> list[tuple[str, str, str]]:
        b = self.block
        name = b.heading or (b.lead.rstrip(": ") if b.lead else None)
        if name is None:
            return [p for item in b.items for p in self.prose(item, passage=False)]
        proc = f"the procedure \"{name}\" in {self.doc}"
        # The procedure as users name it, where its heading is a task ("Starting the mill", "The morning check"):
        # "What is the first step of starting the mill?"
        task = _decap(name) if re.match(r"^(?:[A-Z][a-z]+ing|The) \w", name) else None
        steps = [_sentence(s) for s in b.items]
        asks = [_step_questions(s) for s in steps]
        once = {a for a, n in Counter(a for ask in asks for a in ask).items() if n == 1}  # a question with one answer
        out = []
        for k, (n, step) in enumerate(zip(b.numbers, steps)):
            out.append(("steps", f"What is step {n} of {proc}?", step))
            if n == 1:
                out.append(("steps", f"What is the first step of {proc}?", step))
                if task:
                    out.append(("steps", f"What is the first step of {task}, according to {self.doc}?", step))
            out += [("steps", f"In {proc}, {ask}?", step) for ask in asks[k] if ask in once]
            out.append(("steps", f"In which procedure of {self.doc} is this a step: \"{step[:-1]}\"?",
                        f"It is step {n} of \"{name}\"."))
            if k + 1 < len(steps):
                nxt = steps[k + 1]
                out.append(("steps", self.rng.choice([f"What comes after step {n} of {proc}?",
                                                      f"In {proc}, what is done after \"{step[:-1]}\"?"]), nxt))
                out.append(("steps", f"In {proc}, what is done just before \"{nxt[:-1]}\"?", step))
            out += self.prose(b.items[k], answer=step, passage=False, item=True)
        if b.closed:  # the last step is known even where a chunk boundary cut the procedure's start off
            out.append(("steps", f"What is the last step of {proc}?", steps[-1]))
            if task:
                out.append(("steps", f"What is the last step of {task}, according to {self.doc}?", steps[-1]))
            if b.numbers[:1] == [1] and len(steps) <= 12:
                order = [f"{'First' if k == 0 else 'Finally' if k == len(steps) - 1 else 'Then'}, {_decap(s)}"
                         for k, s in enumerate(steps)]
                out.append(("steps", f"What are the steps of {proc}, in order?", " ".join(order)))
        return out

    def table(self) -> list[tuple[str, str, str]]:
        b = self.block
        header = [_lower_header(h, self.names) if not _EMPTY_CELL.match(h) else "" for h in b.header]
        where = f"the \"{b.heading}\" table of {self.doc}" if b.heading else f"the table of {self.doc}"
        entity = header[0] or "row"
        whole = [r for r in b.rows if len(r) == len(header)]
        columns = [[r[c] for r in whole] for c in range(len(header))]  # a value unique in its column names its row
        rows = [r for r in whole if not _EMPTY_CELL.match(r[0])]
        out = []
        for row in rows:
            label, cells = row[0], [(h, v) for h, v in zip(header[1:], row[1:]) if h and not _EMPTY_CELL.match(v)]
            if cells:
                out.append(("table", f"What does {where} give for {label}?",
                            _sentence(f"{label}: " + "; ".join(f"{h} {v}" for h, v in cells))))
            for h, v in cells:
                out.append(("table", f"In {where}, what is the {h} for {label}?", f"The {h} for {label} is {v}."))
                # The same cell from the row's side, worded apart and without the table's name, as users ask.
                out.append(("table", f"{self.prefix()}, what {h} is given for {label}?", f"For {label}, the {h} is {v}."))
                column = columns[header.index(h)]
                if column.count(v) == 1 and len(column) > 1:
                    a = "an" if h[:1].lower() in "aeiou" else "a"
                    out.append(("table", f"In {where}, which {entity} has {a} {h} of {v}?", f"{label} has {a} {h} of {v}."))
        for c, h in enumerate(header[1:], 1):  # each column whole, as each row is: every cell read a second way
            cells = [(r[0], r[c]) for r in rows if not _EMPTY_CELL.match(r[c])]
            if h and header.count(h) == 1 and 1 < len(cells) <= 12:  # a longer column is no answer anyone asks for
                out.append(("table", f"In {where}, what is the {h} for each {entity}?",
                            _sentence(f"For each {entity}, the {h} is: " + "; ".join(f"{label}, {v}" for label, v in cells))))
        return out

    def pairs(self) -> list[tuple[str, str, str]]:
        shape = self.block.shape
        if shape == "prose":
            return self.prose(self.block.items[0])
        return {"clause": self.clause, "list": self.items, "steps": self.steps, "table": self.table}[shape]()


def augment_chunks(chunks: list[dict], context: str, kinds: list[str] | tuple[str, ...] = KINDS) -> list[dict]:
    """Pairs {question, answer, kind, chunk_id, heading?, clause?} for chunks of one or more documents, in order.

    Chunks are dicts with `chunk_id`, `source` and `text` (chunks.jsonl rows); a section title or a table's
    header seen in a chunk applies to the following chunks of the same source. `heading` is the section a pair
    comes from, `clause` the number of its clause. Exact duplicates (chunk overlaps) are dropped."""
    check_kinds(kinds)
    names: dict[str | None, set[str]] = {}
    for chunk in chunks:
        names.setdefault(chunk.get("source"), set()).update(prose_names(chunk["text"]))
    pairs, seen, reader, source = [], set(), _Reader(), None
    for i, chunk in enumerate(chunks):
        if chunk.get("source") != source:
            reader, source = _Reader(), chunk.get("source")
        final = i + 1 == len(chunks) or chunks[i + 1].get("source") != source
        for block in reader.blocks(chunk["text"], final):
            where = {**({"heading": block.heading} if block.heading else {}),
                     **({"clause": block.label} if block.label else {})}
            for kind, question, answer in _Pairs(context, block, names[source]).pairs():
                if kind in kinds and (question, answer) not in seen:
                    seen.add((question, answer))
                    pairs.append({"question": question, "answer": answer, "kind": kind, "chunk_id": chunk["chunk_id"],
                                  **where})
    # A step or table question has one answer. A chunk boundary can cut a step after one of its sentences: the
    # whole step is kept. Two answers otherwise (a step written twice, a column cut in two) teach neither. (A prose
    # question may have several: "What is said of X?" is answered by each sentence about X.)
    answers: dict[str, list[str]] = {}
    for p in pairs:
        if p["kind"] in ("steps", "table"):
            answers.setdefault(p["question"], []).append(p["answer"])
    keep = {}
    for question, found in answers.items():
        whole = max(found, key=len)
        keep[question] = whole if all(whole.startswith(a.rstrip(".")) for a in found) else None
    return [p for p in pairs if p["question"] not in keep or keep[p["question"]] == p["answer"]]
