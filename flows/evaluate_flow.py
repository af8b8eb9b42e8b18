"""Flow `evaluate`: closed-book QA of the base and fine-tuned models against an in-context ceiling, and the
fine-tuned model with retrieval."""
from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from memorize import checks
from memorize.answering import answer_cache_file
from memorize.evaluation import LABELS, SYSTEMS, evidence_summary, forgetting_line, pct, seen_warning
from memorize.local_model import resolve_model
from memorize.settings import EvalSettings
from tasks.evaluate import evaluate_task


def accuracy_lines(summary: dict) -> list[str]:
    """The before/after/in-context figures, one line each, for the terminal and the run's log."""
    lines = []
    for s in SYSTEMS:
        section = summary[s]
        kinds = "" if section is None or not section.get("kinds") else " — " + ", ".join(
            f"{k} {pct(v['accuracy'])} (n={v['n']})" for k, v in section["kinds"].items())
        lines.append(f"{LABELS[s]:>22}: " + ("not run" if section is None else
                                            f"{pct(section['accuracy'])} accuracy (n={section['n']}){kinds}"))
        if section is not None and section.get("unanswerable", {}).get("n"):
            lines.append(f"{'':>24}abstains on {pct(section['unanswerable']['abstained'])} of "
                         f"{section['unanswerable']['n']} unanswerable and wrongly on "
                         f"{pct(section['answerable']['abstained'])} of {section['answerable']['n']} answerable; "
                         f"answers {pct(section['selective']['answered'])}, "
                         f"{pct(section['selective']['accuracy'])} of them right")
    f = summary["forgetting"]
    if f["n"]:
        lines.append(f" forgetting: general knowledge base {pct(f['base_accuracy'])} -> "
                     f"fine-tuned {pct(f['fine_tuned_accuracy'])} (n={f['n']})")
    return lines + forgetting_line(summary) + seen_warning(summary) + evidence_summary(summary)


@flow(name="evaluate")
def evaluate_flow(
    data_dir: str,
    out: str,
    adapter_dir: str | None = None,
    base_model: str | None = None,
    settings: EvalSettings = EvalSettings(),
    chat_template: str | None = None,
    progress: bool = True,
) -> dict:
    """Answer the held-out generated questions and your question file with the base model, the
    fine-tuned adapter, and both given the top-k retrieved chunks; write eval.json, eval.md, accuracy.png
    and coverage.png to OUT.

    Args:
        data_dir: Output folder of build-dataset (qa.jsonl, chunks.jsonl).
        out: Output folder of the report: eval.json, eval.md, accuracy.png, coverage.png.
        adapter_dir: The fine-tuned weights: an adapter/ folder or the full/ folder of a full fine-tune
            (empty: evaluate the base model only).
        base_model: The base model the adapter was trained on: a local folder or a Hub id (empty: the
            embedded SmolLM2-135M-Instruct).
        settings: Settings of evaluation.
        chat_template: The chat template training used, for models without one.
        progress: Show progress bars in the terminal.
    """
    checks.evaluation(settings)  # before any model is loaded
    base_model = resolve_model(base_model)
    summary = evaluate_task(base_model, adapter_dir, data_dir, out, settings, progress,
                            str(answer_cache_file(base_model)), chat_template)
    table = [{"system": LABELS[s], "accuracy": pct(summary[s] and summary[s]["accuracy"]),
              "n": summary[s] and summary[s]["n"],
              "abstains on unanswerable": pct(summary[s] and summary[s]["unanswerable"]["abstained"]),
              "answered (selective accuracy)": "—" if summary[s] is None else
              f"{pct(summary[s]['selective']['answered'])} ({pct(summary[s]['selective']['accuracy'])})"}
             for s in SYSTEMS]
    create_table_artifact(key="evaluation-accuracy", table=table, description="closed-book accuracy")
    report = (Path(out) / "eval.md").read_text(encoding="utf-8")
    create_markdown_artifact(key="evaluation-report", markdown=report[:60000])
    for line in accuracy_lines(summary):
        get_run_logger().info(line)
    return summary
