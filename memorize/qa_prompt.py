"""The question-generation prompt, following what worked in practice for memorization data."""
from __future__ import annotations

import math

from memorize.styles import STYLES

PROMPT_VERSION = "qa-v2"  # part of every cache key: changing the prompt regenerates

SYSTEM = "You write question/answer pairs that teach a reader every fact in a text."

TEMPLATE = """Context: {context}

Below is a part of that document, between <document> tags.

<document>
{chunk}
</document>

Write {n} question/answer pairs that together cover every fact in this part of the document.
Rules:
- Every question must be understandable on its own, without the document: begin it with
  "In the {context_short}," and name the person, place, thing or number it asks about; never write
  "What does the rule say?" or "What is mentioned above?".
- Answers keep the meaning of the text but need not copy its wording.
- Vary the style and format: short factual questions, "why" and "how" questions, yes/no questions,
  and some tricky or nuanced questions about exceptions, conditions and numbers.
- In some answers, reverse the order of the statement relative to the text (if the text says
  "A is B", ask about B and answer with A), keeping names and terms exactly as written.
- Use only facts from the document.

Reply with JSON only, in this form, with {n} pairs:
{{"pairs": [{{"question": "...", "answer": "..."}}, ...]}}"""


def pairs_schema(n: int, max_chars: int | None = None) -> dict:
    """The reply's JSON schema (structured output: `response_format`): at most n pairs, so that a small
    model stops. No example pair in the prompt: the schema fixes the form, and small models copied the
    example verbatim instead of writing about the chunk (4 of 9 quick-start replies).

    max_chars bounds every string, for the embedded generator only: SmolLM2-135M at low temperature
    loops inside a string until its token limit (7 of 8 replies unparseable), while hosted endpoints
    may refuse length keywords in a strict schema."""
    text = {"type": "string", **({"maxLength": max_chars} if max_chars else {})}
    pair = {"type": "object", "properties": {"question": text, "answer": text},
            "required": ["question", "answer"], "additionalProperties": False}
    return {"type": "object", "properties": {"pairs": {"type": "array", "items": pair, "minItems": 1, "maxItems": n}},
            "required": ["pairs"], "additionalProperties": False}


def questions_for(tokens: int, per_chunk: int | None = None, tokens_per_question: int = 60) -> int:
    """Default: one question per ~60 tokens of chunk, at least 2."""
    if per_chunk:
        return per_chunk
    return max(2, math.ceil(tokens / tokens_per_question))


def build_messages(chunk_text: str, context: str, n: int, style: str = "mixed") -> list[dict]:
    short = context.strip().rstrip(".")
    prompt = TEMPLATE.format(context=context.strip(), context_short=short, chunk=chunk_text, n=n)
    if STYLES[style]:
        prompt = prompt.replace("- Use only facts", f"- {STYLES[style]}\n- Use only facts")
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]


def temperatures(n: int, low: float = 0.01, high: float = 1.2) -> list[float]:
    """n temperatures evenly spaced from low to high (n=1 gives the low end; n=0 none: no LLM is asked,
    the dataset holds the teacher-free augmentations only)."""
    if n < 0:
        raise ValueError(f"--temperatures must be 0 (no LLM generation) or more, got {n}")
    if n == 1:
        return [low]
    step = (high - low) / (n - 1)
    return [round(low + i * step, 4) for i in range(n)]
