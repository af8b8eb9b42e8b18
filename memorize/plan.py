"""The generation plan: every (chunk, temperature, style) request, and its token/cost estimate."""
from __future__ import annotations

from dataclasses import dataclass

from memorize.chunking import Chunk, count_tokens
from memorize.qa_prompt import build_messages, pairs_schema, questions_for

TOKENS_PER_PAIR = 60  # a typical question + answer, for the completion estimate and max_tokens


@dataclass(frozen=True)
class Request:
    chunk: Chunk
    temperature: float
    style: str
    n: int
    messages: list[dict]
    schema: dict | None = None  # the reply's JSON schema (structured output), or None: plain text

    @property
    def max_tokens(self) -> int:
        # Room for n pairs with a margin; bounded so a runaway reply cannot cost a fortune.
        return min(4096, 2 * TOKENS_PER_PAIR * self.n + 64)


def plan_requests(chunks: list[Chunk], context: str, temperatures: list[float], styles: list[str],
                  questions_per_chunk: int | None = None, structured: bool = True,
                  max_chars: int | None = None) -> list[Request]:
    """Every request; `structured` asks for JSON (`pairs_schema`, its strings bounded by max_chars)."""
    plan = []
    for chunk in chunks:
        n = questions_for(chunk.tokens, questions_per_chunk)
        schema = pairs_schema(n, max_chars) if structured else None
        for style in styles:
            messages = build_messages(chunk.text, context, n, style)
            plan.extend(Request(chunk, t, style, n, messages, schema) for t in temperatures)
    return plan


def estimate(plan: list[Request], price_per_1k: float) -> dict:
    prompt = sum(count_tokens(m["content"]) + 4 for r in plan for m in r.messages)
    completion = sum(r.n * TOKENS_PER_PAIR for r in plan)
    return {
        "requests": len(plan),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "estimated_cost": round((prompt + completion) / 1000 * price_per_1k, 4),
    }
