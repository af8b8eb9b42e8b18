"""The generation stage as plain functions: plan the LLM requests of a set of chunks (taking what a cache
already holds), turn the replies and the teacher-free pairs into the dataset's records, and write the
dataset folder. The flow `build-dataset` adds task submission, retries, progress and artifacts."""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from memorize import content_key
from memorize.abstain import abstention_pairs
from memorize.chunking import Chunk
from memorize.dataset import assign_split, ensure_test_pair, write_dataset, write_jsonl
from memorize.filtering import filter_pairs
from memorize.llm import Generation
from memorize.local_model import DEFAULT_MODEL_NAME
from memorize.plan import Request, plan_requests
from memorize.qa_prompt import PROMPT_VERSION, temperatures as temperature_range
from memorize.settings import GenerationSettings

EMBEDDED_MAX_CHARS = 300  # per question or answer of the embedded generator (see qa_prompt.pairs_schema)


def generation_key(messages: list[dict], model: str, temperature: float, max_tokens: int,
                   schema: dict | None = None) -> str:
    """The rendered prompt holds the chunk text, the context, the style and the pair count."""
    return content_key("generate", PROMPT_VERSION, model, temperature, max_tokens, messages, schema)


@dataclass
class GenerationJob:
    """Every request of a run, its cache key, and the replies known so far (cached ones at first)."""

    requests: list[Request]
    keys: list[str]
    model_name: str  # the model's name in the cache keys
    temperatures: list[float]
    results: dict[int, Generation] = field(default_factory=dict)  # request index -> reply
    failures: list[dict] = field(default_factory=list)
    failed_calls: int = 0

    @property
    def todo(self) -> list[int]:
        return [i for i in range(len(self.requests)) if i not in self.results]

    def fail(self, i: int, reason: str, calls: int) -> None:
        """Request i ended without a usable reply after `calls` LLM calls."""
        r = self.requests[i]
        self.failed_calls += calls
        self.failures.append({"file": r.chunk.source, "chunk": r.chunk.chunk_id, "temperature": r.temperature,
                              "style": r.style, "stage": "generate", "reason": reason})


def plan(chunks: list[Chunk], context: str, settings: GenerationSettings,
         lookup: Callable[[str], Generation | None]) -> GenerationJob:
    """The run's requests; `lookup(key)` returns a cached reply or None."""
    # The embedded model is keyed by its name, not its per-machine path.
    model_name = settings.model or (DEFAULT_MODEL_NAME if settings.base_url is None else None)
    if not model_name:
        raise ValueError("--model is required with --base-url (the model name the endpoint serves)")
    temps = temperature_range(settings.resolved().temperatures)
    requests = plan_requests(chunks, context, temps, settings.styles, settings.questions_per_chunk,
                             settings.structured, EMBEDDED_MAX_CHARS if settings.base_url is None else None)
    job = GenerationJob(requests, [generation_key(r.messages, model_name, r.temperature, r.max_tokens, r.schema)
                                   for r in requests], model_name, temps)
    for i, key in enumerate(job.keys):
        if (hit := lookup(key)) is not None:
            job.results[i] = hit
    return job


def batches(todo: list[int], concurrency: int) -> list[list[int]]:
    """About two batches per worker: few task runs, yet no worker idles long at the end. A
    batch keeps a chunk's requests together where it can (todo is in chunk order)."""
    size = max(1, -(-len(todo) // (2 * max(1, concurrency))))
    return [todo[k : k + size] for k in range(0, len(todo), size)]


def record(question: str, answer: str, chunk: Chunk, origin: str, settings: GenerationSettings, **extra) -> dict:
    """One pair with its provenance; `origin` is "llm" or "augment:<kind>"."""
    return {"question": question, "answer": answer, "chunk_id": chunk.chunk_id, "chunk_sha256": chunk.sha256,
            "source": chunk.source, "page_start": chunk.page_start, "page_end": chunk.page_end,
            **({"section": chunk.section} if chunk.section else {}), "origin": origin,
            **extra, "split": assign_split(question, answer, settings.test_ratio, settings.seed)}


def assemble(job: GenerationJob, chunks: list[Chunk], augmented: list[dict], settings: GenerationSettings,
             context: str) -> tuple[list[dict], Counter]:
    """The dataset's pairs: the generated ones that pass the filters, then the teacher-free ones
    ({question, answer, kind, chunk_id}), then the abstention pairs (`settings.abstain_share` of them all);
    returns them and the drops per reason."""
    generated = [record(q, a, r.chunk, "llm", settings, temperature=r.temperature, style=r.style)
                 for i in sorted(job.results) for r in [job.requests[i]] for q, a in job.results[i].pairs]
    qa, dropped = filter_pairs(generated, {c.chunk_id: c.text for c in chunks})
    by_id = {c.chunk_id: c for c in chunks}
    qa += [record(p["question"], p["answer"], by_id[p["chunk_id"]], f"augment:{p['kind']}", settings,
                  **{k: p[k] for k in ("heading", "clause") if k in p})
           for p in augmented]
    qa += [record(p["question"], p["answer"], by_id[p["chunk_id"]], "abstain", settings)
           for p in abstention_pairs([c.to_dict() for c in chunks], context, settings.abstain_share, len(qa))]
    ensure_test_pair(qa, settings.test_ratio, settings.seed)
    return qa, dropped


def write(out_dir: Path, qa: list[dict], chunks: list[Chunk], context: str, job: GenerationJob,
          settings: GenerationSettings) -> dict:
    """Write the dataset folder (qa.jsonl, train/test, dataset/, chunks.jsonl); return the report's figures."""
    figures = write_dataset(out_dir, qa, settings.pairs_per_row, settings.seed)
    write_jsonl(out_dir / "chunks.jsonl", [c.to_dict() for c in chunks])
    s = settings
    return {**figures, "qa_pairs": len(qa), "pairs_by_origin": dict(Counter(p["origin"] for p in qa)),
            "settings": {"context": context, "model": job.model_name, "temperatures": job.temperatures,
                         "styles": s.styles, "chunk_tokens": s.chunk_tokens, "chunk_overlap": s.chunk_overlap,
                         "questions_per_chunk": s.questions_per_chunk or "1 per 60 tokens", "structured": s.structured,
                         "augment": s.augment, "abstain_share": s.abstain_share,
                         "pairs_per_row": s.pairs_per_row, "test_ratio": round(s.test_ratio, 4), "seed": s.seed}}


def summary_markdown(report: dict) -> str:
    rows = "\n".join(f"| {k} | {report[k]} |" for k in
                     ("chunks", "requests", "llm_calls", "cache_hits", "qa_pairs", "pairs_by_origin", "dropped",
                      "train_rows", "test_rows"))
    fails = "\n".join(f"- `{f.get('file')}` {f.get('chunk', '')}: {f['reason']}" for f in report["failures"]) or "none"
    docs = "\n".join(f"- `{d}`" for d in report["documents"])
    skipped = "\n".join(f"- `{f['file']}`: {f['reason']}" for f in report["skipped"]) or "none"
    return (f"# Dataset summary\n\nDocuments:\n{docs}\n\nSkipped:\n{skipped}\n\n| figure | value |\n|---|---|\n{rows}"
            f"\n\nFailures:\n{fails}\n")
