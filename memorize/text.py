"""Reading the documents' text: the helpers that the teacher-free pairs (augment, spans), the abstention rows
(abstain), the pair filters (filtering) and the evidence lines (evidence) share: sentences, content words,
clause numbers, names and how a question names the documents."""
from __future__ import annotations

import re

COLOURS = ("red orange yellow green blue purple violet white black grey gray brown pink silver gold golden "
           "amber").split()

# Capitalised at the start of a sentence without being a name.
COMMON_STARTERS = set("""a an the this that these those it its if when where while no not all any each every
    one two some many most more only after before during between on in at by for from to with within without
    under over upon once there here his her their our your my we you they he she i as but and or so then
    than also however members member""".split())

_STOP = set("""a an the and or but of in on at to for from by with as is are was were be been being it its this that
    these those there their they them he she his her we you i do does did not no yes can may must will would should
    shall could has have had what which who whom whose when where why how than then so such also only any each every
    all some more most into out up down over under about after before if because while""".split())

_PLACE_WORDS = set("""barn lane vale meadow ash tree assembly council ledger schoolhouse market quay reach hall house
    street road river hill wood farm mill church school society club cooperative company committee board fund
    article section rule law act court office bell lamp pale reckoning russet wassail hollow""".split())

# A numbered clause that opens a line ("4.2 A player ...", "Rule 5.1 The ...", "Section 3 The ..."): a block of its
# own in the teacher-free pairs, its number taken off the text (structure, not content: kept in an answer, a clause
# number is learned as part of the fact and later takes the place of a real figure).
CLAUSE = re.compile(r"^(?:(?:rule|clause|section|article|§)\s*)?(?P<num>\d{1,3}(?:\.\d{1,3})+)\.?\s+(?=[A-Z(\"“'])"
                    r"|^(?:rule|clause|section|article|§)\s*(?P<single>\d{1,3})[.:]?\s+(?=[A-Z(\"“'])",
                    re.IGNORECASE)
# The clause number an evidence line names: looser about what follows the number ("4.2: ...", "4.2 a player"), but
# only a dotted number and no "section" (an evidence line's section is its heading). One pattern with CLAUSE would
# change some evidence labels.
_CLAUSE_LABEL = re.compile(r"^(?:(?:rule|clause|article|§)\s*)?(\d{1,3}(?:\.\d{1,3})+)\.?:?\s", re.IGNORECASE)


def fact_sentences(paragraph: str) -> list[str]:
    """The sentences of a paragraph that can carry a fact: four words or more. (Chunks are cut at
    memorize.chunking.split_sentences instead, which keeps every sentence.)"""
    parts = re.split(r"(?<=[.!?])\s+(?=[\"“(\[A-Z0-9])", paragraph)
    return [p.strip() for p in parts if len(p.split()) >= 4]


def content_words(text: str) -> set[str]:
    """The words of a text less the stop words, lower-cased."""
    return {w for w in re.findall(r"\w+", text.lower()) if w not in _STOP}


def clause_label(line: str) -> str | None:
    """The clause number a line starts with ("4.2 A player ...", "Rule 5.1: ..."), or None."""
    return m.group(1) if (m := _CLAUSE_LABEL.match(line)) else None


def looks_like_person(name: str) -> bool:
    """A name of two or three capitalised words without a place word ("Marisol Venn", not "Tansy Lane")."""
    words = name.split()
    return 2 <= len(words) <= 3 and all(w[0].isupper() for w in words) and not any(
        w.lower() in _PLACE_WORDS for w in words)


def in_document(context: str) -> str:
    """The document as a noun phrase after "In" / "According to": "The charter of X" -> "the charter of X",
    "Rules of X" -> "the rules of X"; a name ("International touch rugby rules") stays as written."""
    context = context.strip().rstrip(".")
    words = context.split()
    if words[0] in ("The", "A", "An"):
        return context[0].lower() + context[1:]
    if len(words) > 1 and words[1] == "of":
        return "the " + context[0].lower() + context[1:]
    return context


def prose_names(text: str) -> set[str]:
    """Words the documents' running text capitalises inside a sentence ("the islands of Skellin and Tollan Holm"):
    names, to keep as written where a header or item is lower-cased. Headings and table rows are title case, so
    they are not read."""
    names = set()
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(("#", "|")):
            continue
        for m in re.finditer(r"(?<=[\w,;:)] )[A-Z][\w'’-]*", line):
            names.add(m.group())
    return names
