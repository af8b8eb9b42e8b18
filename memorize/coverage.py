"""A map of what the model knows: accuracy per section of the documents, with n.

Each answerable question is placed in the section of the documents whose text best matches the question
and its reference answer (BM25, within the question's own document when it has one): a held-out pair and a
hand-written question alike. A section is the heading in effect (Markdown headings, also those of converted
office and web files), else the chunk's page label (slide, sheet) or its PDF page.
"""
from __future__ import annotations

from pathlib import Path, PurePath

from rank_bm25 import BM25Okapi

from memorize.retrieval import tokens
from memorize.scoring import UNANSWERABLE

_HEADING_PREFIX = "#"


def sections(chunks: list[dict]) -> list[dict]:
    """[{source, label, text}] in document order; chunk overlaps only repeat text inside a section."""
    out: dict[tuple[str, str], list[str]] = {}
    heading, source = None, None
    for c in chunks:
        if c.get("source") != source:
            heading, source = None, c.get("source")
        pages = c.get("page_start") != c.get("page_end") or c.get("page_start", 1) != 1
        for line in c["text"].splitlines():
            if line.startswith(_HEADING_PREFIX):
                heading = line.lstrip("#").strip() or heading
                continue
            label = heading or c.get("section") or (f"page {c['page_start']}" if pages else "")
            out.setdefault((source, label), []).append(line)
    return [{"source": s, "label": label, "text": "\n".join(lines)} for (s, label), lines in out.items()]


def where(section: dict) -> str:
    name = PurePath(section["source"] or "").name
    return f"{name} — {section['label']}" if section["label"] else name


def locate(records: list[dict], chunks: list[dict]) -> None:
    """Set record["where"] for every answerable record: the section that answers it."""
    parts = sections(chunks)
    if not parts:
        return
    bm25 = BM25Okapi([tokens(p["text"]) for p in parts])
    for r in records:
        if r.get("kind") == UNANSWERABLE:
            continue
        scores = bm25.get_scores(tokens(f"{r['question']} {r['reference']}"))
        own = [i for i, p in enumerate(parts) if p["source"] == r.get("source")] or range(len(parts))
        r["where"] = where(parts[max(own, key=lambda i: scores[i])])  # max() keeps the first of equals


def coverage(records: list[dict], systems: list[str]) -> list[dict]:
    """[{where, n, accuracy: {system: share correct}}] per section, in document order."""
    rows: dict[str, list[dict]] = {}
    for r in records:
        if "where" in r:
            rows.setdefault(r["where"], []).append(r)
    out = []
    for place, rs in rows.items():
        accuracy = {}
        for s in systems:
            verdicts = [r[s]["correct"] for r in rs if r[s]["correct"] is not None]
            accuracy[s] = sum(verdicts) / len(verdicts) if verdicts else None
        out.append({"where": place, "n": len(rs), "accuracy": accuracy})
    return out


def plot_coverage(rows: list[dict], labels: dict[str, str], path: Path) -> None:
    """Horizontal bars, one group per section: the closed-book fine-tuned model (else the base) beside the
    same with retrieval (else the base in context), n on each label."""
    from matplotlib.figure import Figure

    tuned = any(r["accuracy"].get("fine_tuned") is not None for r in rows)
    systems = ["fine_tuned", "fine_tuned_in_context"] if tuned else ["base", "in_context"]
    fig = Figure(figsize=(8, 1.2 + 0.45 * len(rows) * len(systems)), layout="constrained")
    ax = fig.subplots()
    height = 0.8 / len(systems)
    for j, s in enumerate(systems):
        values = [r["accuracy"].get(s) for r in rows]
        bars = ax.barh([i + j * height for i in range(len(rows))], [0 if v is None else v for v in values], height,
                       label=labels[s])
        ax.bar_label(bars, labels=["—" if v is None else f"{v:.0%}" for v in values], fontsize=8, padding=2)
    ax.set_yticks([i + height * (len(systems) - 1) / 2 for i in range(len(rows))],
                  [f"{r['where']} (n={r['n']})" for r in rows], fontsize=8)
    ax.invert_yaxis()  # document order, top to bottom
    ax.set_xlim(0, 1.15)
    ax.set_xlabel("accuracy on the questions this section answers")
    ax.set_title("What the model knows, section by section")
    ax.legend(fontsize=8, loc="lower right")
    fig.savefig(path, dpi=120, format="png")
