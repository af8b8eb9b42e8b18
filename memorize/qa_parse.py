"""Robust parsing of LLM replies into question/answer pairs."""
from __future__ import annotations

import json
import re

_PREFIX = re.compile(
    r"^\s*(?:[-*•]\s*)?(?:\(?\d+[.):]\s*)?(?:\*\*)?\s*(?P<tag>q(?:uestion)?|a(?:nswer)?)\s*(?:\d+)?\s*[:.)]\s*(?:\*\*)?\s*",
    re.IGNORECASE,
)
_NUMBERING = re.compile(r"^\s*(?:[-*•]\s*|\(?\d+[.)]\s+)")


class ParseError(ValueError):
    pass


# One complete {"question": ..., "answer": ...} object (JSON strings with their escapes): what survives of a
# reply cut off by its token limit in the middle of a later pair.
_PAIR_OBJECT = re.compile(r'\{\s*"(?:question|q)"\s*:\s*("(?:[^"\\]|\\.)*")\s*,'
                          r'\s*"(?:answer|a)"\s*:\s*("(?:[^"\\]|\\.)*")\s*\}')


def _from_json(text: str) -> list[tuple[str, str]] | None:
    """A JSON list of pairs, bare or under any key ({"pairs": [...]}); else the complete pair objects of
    a truncated reply. Raw control characters (a tab) inside strings are accepted: small models write them."""
    start, end = text.find("["), text.rfind("]")
    try:
        data = json.loads(text[start : end + 1], strict=False) if 0 <= start < end else None
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, list):
        salvaged = []
        for q, a in _PAIR_OBJECT.findall(text):
            try:
                salvaged.append((json.loads(q, strict=False), json.loads(a, strict=False)))
            except json.JSONDecodeError:  # an invalid escape such as \x
                continue
        return salvaged or None
    pairs = []
    for item in data:
        if isinstance(item, dict):
            q = item.get("question") or item.get("q")
            a = item.get("answer") or item.get("a")
            if isinstance(q, str) and isinstance(a, str):
                pairs.append((q, a))
    return pairs


def _from_lines(text: str) -> list[tuple[str, str]]:
    """Tagged lines (Q:/A:, Question:/Answer:, numbered) or, untagged, alternating lines."""
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("```")]
    tagged = [(_PREFIX.match(line), line) for line in lines]
    pairs: list[tuple[str, str]] = []
    if any(m for m, _ in tagged):
        q, a = None, None
        for m, line in tagged:
            if m:
                body = line[m.end():].strip()
                if m.group("tag")[0].lower() == "q":
                    if q and a:
                        pairs.append((q, a))
                    q, a = body, None
                elif q is not None:
                    a = body if a is None else f"{a} {body}"
            elif q is not None:  # continuation line of a question or answer
                if a is None:
                    q = f"{q} {line}"
                else:
                    a = f"{a} {line}"
        if q and a:
            pairs.append((q, a))
        return pairs
    body = [_NUMBERING.sub("", line) for line in lines]
    body = [line for line in body if not line.endswith(":")]  # preambles like "Here are the pairs:"
    return list(zip(body[0::2], body[1::2]))


def _clean(s: str) -> str:
    return re.sub(r"\s+", " ", s.replace("**", "")).strip().strip('"').strip()


def _question_key(q: str) -> str:
    return re.sub(r"\W+", " ", q.lower()).strip()


def parse_pairs(text: str) -> list[tuple[str, str]]:
    """Pairs in reply order; empty and duplicate ones dropped. Raises ParseError if none is left."""
    raw = _from_json(text)
    if not raw and not text.lstrip().startswith(("{", "[")):  # broken JSON is no list of lines
        raw = _from_lines(text)
    seen, pairs = set(), []
    for q, a in raw or []:
        q, a = _clean(q), _clean(a)
        key = _question_key(q)
        if not key or not a or key in seen:
            continue
        seen.add(key)
        pairs.append((q, a))
    if not pairs:
        raise ParseError(f"no question/answer pairs found in reply: {text[:200]!r}")
    return pairs
