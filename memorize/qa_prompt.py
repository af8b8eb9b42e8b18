"""The question-generation prompt, following what worked in practice for memorization data."""
from __future__ import annotations

import math

from memorize.styles import STYLES

PROMPT_VERSION = "qa-v1"  # part of every cache key: changing the prompt regenerates

SYSTEM = "You write question/answer pairs that teach a reader every fact in a text."

TEMPLATE = """Context: {context}

Below is a part of that document, between <document> tags.

<document>
{chunk}
</document>

Write {n} question/answer pairs that together cover every fact in this part of the document.
Rules:
- Every question must be understandable on its own, without the document: name the subject
  explicitly (write "In the {context_short}, what is the penalty for a late start?", never
  "What does the rule say?" or "What is mentioned above?").
- Answers keep the meaning of the text but need not copy its wording.
- Vary the style and format: short factual questions, "why" and "how" questions, yes/no questions,
  and some tricky or nuanced questions about exceptions, conditions and numbers.
- In some answers, reverse the order of the statement relative to the text (if the text says
  "A is B", ask about B and answer with A), keeping names and terms exactly as written.
- Use only facts from the document.

Write each pair as two lines, like this example:
Q: {example_q}
A: {example_a}

Now write the {n} pairs."""


# The one-shot example; small models sometimes copy it, so the flow drops pairs equal to it.
EXAMPLE_QUESTION = "In the Example Club rules, how long is a standard match?"
EXAMPLE_ANSWER = "A standard match in the Example Club lasts 40 minutes, in two halves of 20 minutes."


def questions_for(tokens: int, per_chunk: int | None = None, tokens_per_question: int = 60) -> int:
    """Default: one question per ~60 tokens of chunk, at least 2."""
    if per_chunk:
        return per_chunk
    return max(2, math.ceil(tokens / tokens_per_question))


def build_messages(chunk_text: str, context: str, n: int, style: str = "mixed") -> list[dict]:
    short = context.strip().rstrip(".")
    prompt = TEMPLATE.format(context=context.strip(), context_short=short, chunk=chunk_text, n=n,
                             example_q=EXAMPLE_QUESTION, example_a=EXAMPLE_ANSWER)
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
