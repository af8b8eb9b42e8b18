""""The documents do not say": rows that teach the model to abstain, and the test that it did.

A fine-tuned model answers a question its documents never answer as fluently as one they do. Rows that
answer in-domain questions the documents leave open with one fixed sentence naming the documents teach it
to say so, and evaluation recognises that sentence (or a plain paraphrase of it) as an abstention.

The questions are built teacher-free: attributes the documents never give for their own people, places and
things (an age, a founding year, a telephone number, a colour, a price), each kept only when no sentence of
any chunk that names the entity mentions that attribute.
"""
from __future__ import annotations

import hashlib
import random
import re

from memorize.spans import find_spans
from memorize.text import COLOURS, fact_sentences, in_document, looks_like_person

ABSTAIN_VERSION = 1  # part of the dataset's cache key: changing the rules rebuilds the rows

# What a model says when it abstains: the trained sentence, and the usual ways of putting it.
_ABSTAINS = re.compile(
    r"\bnot (?:stated|mentioned|specified)\b|\b(?:does|do)(?:n't| not) (?:say|state|mention|specify)\b"
    r"|\bno (?:information|mention)\b|\b(?:I|we) (?:do not|don't|cannot|can't) (?:know|say)\b",
    re.IGNORECASE)


def abstention(context: str) -> str:
    """The one sentence abstention rows answer with, naming the documents."""
    return f"That is not stated in {in_document(context)}."


def abstains(answer: str) -> bool:
    return bool(_ABSTAINS.search(answer or ""))


_MONEY = r"\b(?:costs?|price[ds]?|fees?|charges?|euros?|pounds?|dollars?|shillings?|pence|cents?)\b|[$€£]"
# (question, what a sentence naming the entity would mention if the documents answered it)
_AGE = r"\b(?:age[ds]?|aged|years? old|born|birth\w*)\b"  # an age gives the birth year, and the other way round
_PERSON = [
    ("How old is {e}", _AGE),
    ("In what year was {e} born", _AGE),
    ("What is the telephone number of {e}", r"\b(?:tele)?phone|\btel\b|\d{3}[ -]\d{3,}"),
    ("What is the email address of {e}", r"e-?mail|@"),
    ("Where does {e} live", r"\b(?:lives?|living|resident|home|address)\b"),
    ("Who is {e} married to", r"\b(?:married|wife|husband|spouse|partner)\b"),
    ("What salary is {e} paid", _MONEY + r"|\b(?:salary|paid|wage)\b"),
]
# A role's holder may be named elsewhere with an age or a home: only what no rule book gives for a role.
_ROLE = [t for t in _PERSON if "telephone" in t[0] or "email" in t[0] or "salary" in t[0]]
_THING = [
    ("In what year was {e} built", r"\b(?:built|constructed|erected|founded|established|opened|dates?|since)\b|\b1\d{3}\b|\b20\d{2}\b"),
    ("What colour is {e}", r"\b(?:colou?r|" + "|".join(COLOURS) + r")\w*"),
    ("What is the telephone number of {e}", r"\b(?:tele)?phone|\btel\b|\d{3}[ -]\d{3,}"),
    ("What is the website of {e}", r"\b(?:website|www|https?|online|internet)\b"),
    ("How many people work at {e}", r"\b(?:employ\w*|staff\w*|workers?|works|crew\w*|people|members?)\b"),
    ("Who designed {e}", r"\b(?:design\w*|architect\w*|made|built|maker)\b"),
    ("How much does {e} cost", _MONEY + r"|\b(?:free|paid)\b"),
]


def _entity_sentences(chunks: list[dict], context: str) -> dict[str, tuple[str, list[str]]]:
    """{name: (id of the first chunk naming it, every sentence of the documents that names it)}."""
    sentences = [(c["chunk_id"], s) for c in chunks for line in c["text"].splitlines()
                 for s in fact_sentences(line.strip("|#-*• "))]
    names: dict[str, tuple[str, list[str]]] = {}
    for chunk_id, sentence in sentences:
        for span in find_spans(sentence, context):
            if span.kind == "name" and len(span.text) > 3 and span.text not in names:
                names[span.text] = (chunk_id, [])
    for name, (_, found) in names.items():
        pattern = re.compile(rf"\b{re.escape(name)}\b", re.IGNORECASE)
        found += [s for _, s in sentences if pattern.search(s)]
    return names


def candidates(chunks: list[dict], context: str) -> list[dict]:
    """Every question about an attribute that no sentence naming the entity mentions: {question, chunk_id}."""
    doc = in_document(context)
    out = []
    for name, (chunk_id, sentences) in _entity_sentences(chunks, context).items():
        # A capitalised first word ("Touching a buoy ...") is no name; nor is a run across a comma.
        if re.search(r"[,;:]", name) or (" " not in name and all(s.startswith(name) for s in sentences)):
            continue
        rng = random.Random(hashlib.sha256(f"{ABSTAIN_VERSION}\0{name}".encode()).hexdigest())
        # "the Kettle", "the Race Judge" where the documents write it so: a thing or a role, not a person
        article = any(re.search(rf"\bthe {re.escape(name)}\b", s, re.IGNORECASE) for s in sentences)
        person = looks_like_person(name)
        for template, mentions in _ROLE if person and article else _PERSON if person else _THING:
            if any(re.search(mentions, s, re.IGNORECASE) for s in sentences):
                continue  # the documents may answer it: never teach "not stated" for a fact they give
            question = template.format(e=f"the {name}" if article else name)
            out.append({"question": rng.choice([f"{question}, according to {doc}?", f"In {doc}, {question[0].lower()}"
                                                f"{question[1:]}?"]), "chunk_id": chunk_id})
    return out


def abstention_pairs(chunks: list[dict], context: str, share: float, answerable: int) -> list[dict]:
    """Abstention pairs {question, answer, kind: "abstain", chunk_id} making up `share` of all pairs, beside
    `answerable` pairs that answer (as many as there are candidates, if fewer); a seeded sample."""
    if not 0 <= share < 1:
        raise ValueError(f"abstain share must be in [0, 1), got {share}")
    if share == 0 or not answerable:
        return []
    pool = candidates(chunks, context)
    wanted = min(len(pool), round(share / (1 - share) * answerable))
    picked = sorted(random.Random(f"{ABSTAIN_VERSION}\0{context}").sample(range(len(pool)), wanted))
    answer = abstention(context)
    return [{**pool[i], "answer": answer, "kind": "abstain"} for i in picked]
