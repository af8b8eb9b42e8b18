"""Closed-book QA before vs after fine-tuning, against an in-context (retrieval) ceiling.

Four systems answer every question: `base` (closed book), `fine_tuned` (base + LoRA adapter,
closed book), `in_context` (base + top-k BM25 chunks) and `fine_tuned_in_context` (the fine-tuned
model given the same chunks); the fine-tuned ones are skipped when there is no adapter.
Question sets: `test_split` (held-out generated pairs from qa.jsonl) and `questions` (the user's
file). A third set, `general` (easy general knowledge), checks that fine-tuning did not make the
model forget what it knew; it is answered closed-book only and kept out of the overall accuracy.
Questions of kind `unanswerable` (the documents do not answer them) are correct when the answer abstains;
each system's summary gives the share it answered and its accuracy among those (selective accuracy).
"""
from __future__ import annotations

import csv
import json
import math
import random
from collections import Counter
from pathlib import Path

from memorize import replacing, write_json, write_text
from memorize.answering import AnswerCache, Answerer
from memorize.coverage import coverage, locate, plot_coverage
from memorize.dataset import read_jsonl
from memorize.evidence import EvidenceIndex
from memorize.filtering import seen_in_training
from memorize.retrieval import ChunkIndex
from memorize.scoring import UNANSWERABLE, score
from memorize.settings import EvalSettings

GENERAL_KNOWLEDGE = Path(__file__).parent / "data" / "general_knowledge.jsonl"
GENERAL_MAX_NEW_TOKENS = 64
SYSTEMS = ("base", "fine_tuned", "in_context", "fine_tuned_in_context")
TUNED = ("fine_tuned", "fine_tuned_in_context")  # the systems that need the adapter
SETS = ("test_split", "questions")
LABELS = {"base": "base", "fine_tuned": "fine-tuned", "in_context": "in-context",
          "fine_tuned_in_context": "fine-tuned + retrieval"}


class QuestionFileError(ValueError):
    pass


def _check_must(must, where: str) -> list[list[str]]:
    groups = [[g] if isinstance(g, str) else g for g in must] if isinstance(must, list) else None
    if not groups or not all(
        isinstance(g, list) and g and all(isinstance(a, str) and a.strip() for a in g) for g in groups
    ):
        raise QuestionFileError(
            f"{where}: 'must' must be a non-empty list of groups, each a string or a list of "
            f'alternative strings, e.g. [["7:40", "seven forty"], ["pm"]]; got {must!r}'
        )
    return groups


def _question_row(raw: dict, where: str) -> dict:
    row = {"kind": str(raw["kind"])} if raw.get("kind") else {}
    unanswerable = row.get("kind") == UNANSWERABLE
    for field in ("question", "answer"):
        if unanswerable and field == "answer":
            if (raw.get("answer") or "").strip() or raw.get("must") not in (None, "", []):
                raise QuestionFileError(f"{where}: a question of kind {UNANSWERABLE!r} has an empty 'answer' and no "
                                        "'must': the documents do not answer it, and abstaining is the right answer")
            row["answer"] = ""
            continue
        if field not in raw or raw[field] is None:
            raise QuestionFileError(f"{where}: missing field {field!r}")
        if not isinstance(raw[field], str) or not raw[field].strip():
            hint = (f'; for a question the documents do not answer, write "kind": "{UNANSWERABLE}"'
                    if field == "answer" else "")
            raise QuestionFileError(f"{where}: field {field!r} is empty or not text{hint}")
        row[field] = raw[field].strip()
    if raw.get("must") not in (None, "", []):
        row["must"] = _check_must(raw["must"], where)
    return row


def _read_jsonl_questions(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as exc:
                raise QuestionFileError(f"{path}, line {n}: invalid JSON ({exc.msg})") from exc
            if not isinstance(raw, dict):
                raise QuestionFileError(f"{path}, line {n}: expected a JSON object, got {type(raw).__name__}")
            rows.append(_question_row(raw, f"{path}, line {n}"))
    return rows


def _read_csv_questions(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: spreadsheets often write a BOM
        reader = csv.DictReader(f)
        missing = [c for c in ("question", "answer") if c not in (reader.fieldnames or [])]
        if missing:
            raise QuestionFileError(f"{path}: missing column(s) {missing}; the header has {reader.fieldnames}")
        for n, raw in enumerate(reader, 2):  # spreadsheet numbering: the header is row 1
            where = f"{path}, row {n}"
            if (raw.get("must") or "").strip():
                try:
                    raw["must"] = json.loads(raw["must"])
                except json.JSONDecodeError as exc:
                    raise QuestionFileError(
                        f'{where}: \'must\' is not valid JSON ({exc.msg}); write e.g. [["paris"]]'
                    ) from exc
            rows.append(_question_row(raw, where))
    return rows


def load_questions(path: str | Path) -> list[dict]:
    """Rows {question, answer, must?, kind?} from a .jsonl or .csv file (`must` as JSON in CSV)."""
    path = Path(path)
    readers = {".jsonl": _read_jsonl_questions, ".csv": _read_csv_questions}
    if path.suffix.lower() not in readers:
        raise QuestionFileError(f"{path}: unsupported question file type; use .jsonl or .csv")
    rows = readers[path.suffix.lower()](path)
    if not rows:
        raise QuestionFileError(f"{path}: no questions")
    return rows


def load_test_split(data_dir: str | Path, max_questions: int | None, seed: int = 0) -> list[dict]:
    """The held-out pairs of qa.jsonl; a seeded sample (in file order) when there are more than max. An
    abstention pair is asked as an unanswerable question."""
    rows = [r for r in read_jsonl(Path(data_dir) / "qa.jsonl") if r.get("split") == "test"]
    if max_questions is not None and len(rows) > max_questions:
        rows = [rows[i] for i in sorted(random.Random(seed).sample(range(len(rows)), max_questions))]
    return [{**r, "answer": "", "kind": UNANSWERABLE} if r.get("origin") == "abstain" else r for r in rows]


def _mean(values: list) -> float | None:
    return sum(values) / len(values) if values else None


def summarize(results: list[dict]) -> dict:
    """Accuracy over the questions that got a verdict (a judge may give none), plus mean overlaps over the
    answerable ones, and how the system abstains: on unanswerable questions (right), on answerable ones
    (wrong), and the selective accuracy — the share of questions it answers and its accuracy among them."""
    verdicts = [r["correct"] for r in results if r["correct"] is not None]
    answerable = [r for r in results if not r.get("unanswerable")]
    unanswerable = [r for r in results if r.get("unanswerable")]
    answered = [r for r in results if not r.get("abstained") and r["correct"] is not None]
    return {
        "n": len(results),
        "n_scored": len(verdicts),
        "accuracy": _mean(verdicts),
        "rouge_l": _mean([r["rouge_l"] for r in answerable]),
        "token_f1": _mean([r["token_f1"] for r in answerable]),
        "methods": dict(Counter(r["method"] for r in results)),
        "answerable": {"n": len(answerable),
                       "accuracy": _mean([r["correct"] for r in answerable if r["correct"] is not None]),
                       "abstained": _mean([bool(r.get("abstained")) for r in answerable])},
        "unanswerable": {"n": len(unanswerable), "abstained": _mean([r["abstained"] for r in unanswerable])},
        "selective": {"answered": _mean([not r.get("abstained") for r in results]),
                      "accuracy": _mean([r["correct"] for r in answered])},
    }


def paired_change(before: list[bool | None], after: list[bool | None]) -> dict:
    """Accuracy change on the same questions, with a 95 % interval for it. A small model's answers churn:
    fine-tuning both loses and gains many general questions, so the net change alone looks precise when it
    is not. Normal approximation of the paired difference (the count behind McNemar's test)."""
    pairs = [(b, a) for b, a in zip(before, after, strict=True) if b is not None and a is not None]
    n = len(pairs)
    lost = sum(b and not a for b, a in pairs)
    gained = sum(a and not b for b, a in pairs)
    if not n:
        return {"n": 0, "lost": 0, "gained": 0, "change": None, "ci95": None}
    change = (gained - lost) / n
    half = 1.96 * math.sqrt(max(gained + lost - (gained - lost) ** 2 / n, 0)) / n
    return {"n": n, "lost": lost, "gained": gained, "change": change, "ci95": [change - half, change + half]}


def _section(records: list[dict], system: str) -> dict:
    rows = [r for r in records if r["set"] in SETS]
    section = summarize([r[system] for r in rows])
    for name in SETS:
        section[name] = summarize([r[system] for r in rows if r["set"] == name])
    kinds = sorted({r["kind"] for r in rows if "kind" in r})
    if kinds:
        section["kinds"] = {k: summarize([r[system] for r in rows if r.get("kind") == k]) for k in kinds}
    return section


def _records(sets: dict[str, list[dict]]) -> list[dict]:
    keep = ("must", "kind", "chunk_id", "source", "heading", "clause")
    return [
        {"set": name, "question": r["question"], "reference": r["answer"], **{k: r[k] for k in keep if k in r}}
        for name, rows in sets.items()
        for r in rows
    ]


def answer_records(answerer: Answerer, records: list[dict], system: str, contexts=None, judge=None, **gen) -> None:
    """Answer and score `records` with one system, storing record[system] = {answer, correct, ...}."""
    answers = answerer.answer(
        [r["question"] for r in records], contexts, use_adapter=system in TUNED, desc=system, **gen
    )
    for r, text in zip(records, answers, strict=True):
        row = {"question": r["question"], "answer": r["reference"], "must": r.get("must"), "kind": r.get("kind")}
        r[system] = {"answer": text, **score(row, text, judge)}


def evaluate(base_model: str, adapter_dir: str | None, data_dir: str | Path, out_dir: str | Path,
             settings: EvalSettings = EvalSettings(), judge=None, progress: bool = True,
             seed: int = 0, chat_template: str | None = None, answer_cache: str | Path | None = None) -> dict:
    """Run all systems, write eval.json, eval.md and accuracy.png to out_dir, return the summary.

    answer_cache: a JSON file keeping the base and in-context answers (see answering.AnswerCache).
    With adapter_dir None only base and in_context run; `fine_tuned` is then null in the summary.
    Without settings.include_general the forgetting check is skipped (forgetting.n == 0)."""
    s = settings
    questions_file, general_file = s.questions, GENERAL_KNOWLEDGE if s.include_general else None
    top_k, max_test_questions, batch_size = s.top_k, s.max_test_questions, s.batch_size
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    records = _records({
        "test_split": load_test_split(data_dir, max_test_questions, seed),
        "questions": load_questions(questions_file) if questions_file else [],
        "general": load_questions(general_file) if general_file else [],
    })
    open_book = [r for r in records if r["set"] in SETS]
    yours = [r for r in records if r["set"] == "questions"]
    qa_file = data_dir / "qa.jsonl"
    trained_on = [r["question"] for r in read_jsonl(qa_file) if r.get("split") == "train"] if qa_file.exists() else []
    for r, seen in zip(yours, seen_in_training([r["question"] for r in yours], trained_on), strict=True):
        r["seen_in_training"] = seen
    if not open_book:
        raise ValueError(
            f"nothing to evaluate: {data_dir / 'qa.jsonl'} has no test pairs and no questions file was given"
        )
    chunks = read_jsonl(data_dir / "chunks.jsonl")
    index = ChunkIndex(chunks)
    retrieved = [index.top_k(r["question"], top_k) for r in open_book]
    for r, found in zip(open_book, retrieved, strict=True):
        r["retrieved"] = [c["chunk_id"] for c in found]

    answerer = Answerer.load(base_model, adapter=adapter_dir, chat_template=chat_template)
    gen = {"batch_size": batch_size, "max_new_tokens": s.max_new_tokens, "progress": progress,
           "cache": AnswerCache(answer_cache, base_model) if answer_cache else None}
    general = [r for r in records if r["set"] == "general"]
    # One-line facts: the answer is in the first sentence, and the 135M model otherwise rambles to the limit.
    short = {**gen, "max_new_tokens": min(s.max_new_tokens, GENERAL_MAX_NEW_TOKENS)}
    for system in ("base", "fine_tuned") if adapter_dir else ("base",):
        answer_records(answerer, open_book, system, None, judge, **gen)
        answer_records(answerer, general, system, None, judge, **short)
    contexts = [index.context(c) for c in retrieved]
    for system in ("in_context", "fine_tuned_in_context") if adapter_dir else ("in_context",):
        answer_records(answerer, open_book, system, contexts, judge, **gen)
    locate(open_book, chunks)
    if adapter_dir:
        evidence = EvidenceIndex(chunks)
        for r in open_book:
            r["fine_tuned"]["evidence"] = evidence.find(r["fine_tuned"]["answer"], r["question"])

    with_source = [r for r in open_book if "chunk_id" in r]
    summary = {
        "base_model": str(base_model),
        "adapter": str(adapter_dir) if adapter_dir else None,
        "base": _section(records, "base"),
        "fine_tuned": _section(records, "fine_tuned") if adapter_dir else None,
        "in_context": _section(records, "in_context"),
        "fine_tuned_in_context": _section(records, "fine_tuned_in_context") if adapter_dir else None,
        "coverage": coverage(open_book, [s for s in SYSTEMS if adapter_dir or s not in TUNED]),
        "evidence": evidence_rates(open_book) if adapter_dir else None,
        "forgetting": {
            "n": len(general),
            "base_accuracy": summarize([r["base"] for r in general])["accuracy"],
            "fine_tuned_accuracy": summarize([r["fine_tuned"] for r in general])["accuracy"] if adapter_dir else None,
            "paired": paired_change([r["base"]["correct"] for r in general],
                                    [r["fine_tuned"]["correct"] for r in general]) if adapter_dir else None,
        },
        # Your questions that a training question rewords: they measure recall of that row, not knowledge.
        "questions_seen_in_training": {"n": sum(r["seen_in_training"] for r in yours), "of": len(yours)},
        # Whether BM25 found the chunk a generated pair came from: separates retrieval misses from reading errors.
        "retrieval": {"top_k": top_k, "n": len(with_source),
                      "hit_rate": _mean([r["chunk_id"] in r["retrieved"] for r in with_source])},
    }
    write_reports(summary, records, out_dir)
    return summary


def evidence_rates(records: list[dict]) -> dict:
    """How often the evidence line finds a supporting passage for the fine-tuned model's right answers and for
    its wrong ones (abstentions left out): the gap says how far a user can trust an answer that has evidence."""
    answered = [r["fine_tuned"] for r in records if r.get("kind") != UNANSWERABLE and not r["fine_tuned"]["abstained"]]
    rate = {}
    for name, verdict in (("right", True), ("wrong", False)):
        group = [a for a in answered if a["correct"] is verdict]
        rate[name] = {"n": len(group), "with_evidence": _mean([a["evidence"] is not None for a in group])}
    return rate


def _accuracy_rows(summary: dict) -> dict[str, dict[str, float | None]]:
    """{row label: {system: accuracy}}: the table in eval.md and the groups of the chart."""
    def acc(system, name=None):
        section = summary[system]
        return None if section is None else (section[name] if name else section)["accuracy"]

    rows = {}
    for name, label in (("test_split", "test split"), ("questions", "your questions")):
        if summary["base"][name]["n"]:
            rows[f"{label} (n={summary['base'][name]['n']})"] = {s: acc(s, name) for s in SYSTEMS}
    for kind, section in summary["base"].get("kinds", {}).items():
        rows[f"kind {kind} (n={section['n']})"] = {
            s: None if summary[s] is None else summary[s]["kinds"][kind]["accuracy"] for s in SYSTEMS}
    rows[f"overall (n={summary['base']['n']})"] = {s: acc(s) for s in SYSTEMS}
    answerable = summary["base"]["answerable"]["n"]
    if answerable < summary["base"]["n"]:  # unanswerable questions asked: the answerable ones alone
        rows[f"answerable (n={answerable})"] = {
            s: None if summary[s] is None else summary[s]["answerable"]["accuracy"] for s in SYSTEMS}
    f = summary["forgetting"]
    if f["n"]:
        rows[f"general knowledge, forgetting (n={f['n']})"] = {"base": f["base_accuracy"], "fine_tuned": f["fine_tuned_accuracy"]}
    return rows


def pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\r\n", "\n").replace("\n", "<br>")


def _verdict(result: dict | None) -> str:
    if result is None:
        return "—"
    mark = {True: "✓", False: "✗", None: "?"}[result["correct"]]
    return f"{mark} {_cell(result['answer'])}"


def example_lines(records: list[dict]) -> list[str]:
    """One of your questions (else a held-out one) as `memorize ask` answers it: the fine-tuned answer and its
    evidence line; a right answer with evidence where there is one."""
    from memorize.evidence import evidence_line

    asked = [r for r in records if r["set"] in SETS and r.get("fine_tuned") and r.get("kind") != UNANSWERABLE]
    if not asked:
        return []
    r = max(asked, key=lambda r: (r["set"] == "questions", bool(r["fine_tuned"]["correct"]),
                                  r["fine_tuned"].get("evidence") is not None))
    mark = "right" if r["fine_tuned"]["correct"] else "wrong"
    return [f"Example: {r['question']}", f"  fine-tuned ({mark}): {r['fine_tuned']['answer']}",
            f"  {evidence_line(r['fine_tuned'].get('evidence'))}"]


def evidence_summary(summary: dict) -> list[str]:
    rate = summary.get("evidence")
    if not rate or not (rate["right"]["n"] or rate["wrong"]["n"]):
        return []
    return [f"Evidence: a supporting passage was found for {pct(rate['right']['with_evidence'])} of the fine-tuned "
            f"model's right answers (n={rate['right']['n']}) and {pct(rate['wrong']['with_evidence'])} of its wrong "
            f"ones (n={rate['wrong']['n']})."]


def abstention_lines(summary: dict) -> list[str]:
    """How each system abstains, when unanswerable questions were asked: right (on those), wrong (on answerable
    ones), and its selective accuracy."""
    if not summary["base"]["unanswerable"]["n"]:
        return []
    lines = ["", "| abstention | " + " | ".join(LABELS.values()) + " |", "|---" * (len(SYSTEMS) + 1) + "|"]
    rows = {
        f"abstains on unanswerable (n={summary['base']['unanswerable']['n']})": lambda s: s["unanswerable"]["abstained"],
        f"abstains on answerable, wrongly (n={summary['base']['answerable']['n']})":
            lambda s: s["answerable"]["abstained"],
        f"answers (of n={summary['base']['n']})": lambda s: s["selective"]["answered"],
        "accuracy among its answers (selective)": lambda s: s["selective"]["accuracy"],
    }
    for label, get in rows.items():
        lines.append(f"| {label} | " + " | ".join(pct(None if summary[s] is None else get(summary[s]))
                                                 for s in SYSTEMS) + " |")
    return lines


def coverage_lines(summary: dict) -> list[str]:
    rows = summary.get("coverage") or []
    if not rows:
        return []
    systems = [s for s in SYSTEMS if s in rows[0]["accuracy"]]
    return ["", "## What the model knows, section by section", "",
            "Accuracy on the answerable questions each section of the documents answers (picture: coverage.png).",
            "", "| section | n | " + " | ".join(LABELS[s] for s in systems) + " |",
            "|---|---" + "|---" * len(systems) + "|",
            *(f"| {_cell(r['where'])} | {r['n']} | " + " | ".join(pct(r["accuracy"][s]) for s in systems) + " |"
              for r in rows)]


def forgetting_line(summary: dict) -> list[str]:
    paired = summary["forgetting"].get("paired")  # absent from summaries of earlier versions
    if not paired or not paired["n"]:
        return []
    lo, hi = (round(100 * x) for x in paired["ci95"])
    verdict = ("not distinguishable from answer-to-answer churn at this n" if paired["ci95"][0] <= 0 <= paired["ci95"][1]
               else "beyond answer-to-answer churn")
    return [f"Forgetting: {round(100 * paired['change']):+d} points on general knowledge (95 % interval {lo:+d} to "
            f"{hi:+d}; {paired['lost']} lost, {paired['gained']} gained of {paired['n']}): {verdict}."]


def seen_warning(summary: dict) -> list[str]:
    seen = summary.get("questions_seen_in_training")  # absent from summaries of earlier versions
    if not seen or not seen["n"]:
        return []
    return [f"Warning: {seen['n']} of your {seen['of']} questions nearly repeat a training question (marked "
            "`seen_in_training` in eval.json): for them, fine-tuned accuracy measures recall of that row."]


def markdown_report(summary: dict, records: list[dict]) -> str:
    lines = ["# Evaluation", "", "| accuracy | " + " | ".join(LABELS.values()) + " |", "|---" * (len(SYSTEMS) + 1) + "|"]
    for label, accs in _accuracy_rows(summary).items():
        lines.append(f"| {label} | " + " | ".join(pct(accs.get(s)) for s in SYSTEMS) + " |")
    lines += [
        "",
        "✓ correct, ✗ wrong, ? no verdict, — not run. "
        "General-knowledge questions check forgetting (closed book only). An unanswerable question is "
        "correct when the answer says the documents do not state it.",
        *forgetting_line(summary),
        *seen_warning(summary),
        *evidence_summary(summary),
        *abstention_lines(summary),
        *coverage_lines(summary),
        "", "| # | set | question | reference | " + " | ".join(LABELS.values()) + " |",
        "|---" * (len(SYSTEMS) + 4) + "|",
    ]
    for i, r in enumerate(records, 1):
        reference = _cell(r["reference"]) or "(not in the documents)"
        cells = [str(i), r["set"], _cell(r["question"]), reference] + [_verdict(r.get(s)) for s in SYSTEMS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_accuracy(summary: dict, path: Path) -> None:
    from matplotlib.figure import Figure  # a bare Figure renders with Agg: no pyplot, no display needed

    rows = _accuracy_rows(summary)
    fig = Figure(figsize=(max(6, 2.2 * len(rows)), 4), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(SYSTEMS)
    for j, system in enumerate(SYSTEMS):
        values = [accs.get(system) for accs in rows.values()]
        bars = ax.bar([i + (j - (len(SYSTEMS) - 1) / 2) * width for i in range(len(rows))],
                      [float("nan") if v is None else v for v in values], width, label=LABELS[system])
        ax.bar_label(bars, labels=["" if v is None else pct(v) for v in values], fontsize=8)
    ax.set_xticks(range(len(rows)), list(rows), fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("accuracy")
    ax.set_title("QA accuracy: base and fine-tuned, closed book and with retrieved chunks")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120, format="png")


def write_reports(summary: dict, records: list[dict], out_dir: Path) -> None:
    write_json(out_dir / "eval.json", {**summary, "records": records}, indent=2)
    write_text(out_dir / "eval.md", markdown_report(summary, records))
    with replacing(out_dir / "accuracy.png") as tmp:
        plot_accuracy(summary, tmp)
    if summary["coverage"]:
        with replacing(out_dir / "coverage.png") as tmp:
            plot_coverage(summary["coverage"], LABELS, tmp)
