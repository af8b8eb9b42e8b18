"""Benchmark: does the fine-tuned model know the document, and does it say when the document is silent?
Fictional documents no model can know, each with held-out hand-written questions (direct, paraphrased,
reversed, multi-fact, and unanswerable: in-domain questions the document does not answer), and a set of
configurations, each trained and asked the same questions closed-book and with retrieval.

Documents (--documents): `charter` (prose, 94 answerable + 39 unanswerable questions, and a hand-written
reference set of pairs), `harbor` (the quick start's rule book), and the shapes of bench/data/shapes.json:
`rulebook_kestlewick` (numbered clauses), `pricelist_gullhaven` (Markdown tables), `procedure_ebbcombe`
(numbered steps and checklists).

    python bench/memorization.py [--documents charter ...] [--configs strong augment ...] [--out DIR]
    python bench/memorization.py --documents rulebook_kestlewick --configs augment --data abstain_share=0.2
    python bench/memorization.py --eval-only --configs strong+augment --train adapter_scale=1
                                  # re-ask the questions of a model trained before (here rescaled to x1)

Configurations (data -> training):
  strong-old          the hand-written reference set (a stand-in for a GPT-4-class teacher: 251 varied
                      pairs covering every fact) with the old `memorize train` defaults (lr 1e-4, 1 epoch,
                      LoRA r16, no replay)
  strong              the reference set with the `memorize train` defaults
  strong-no-replay    ... without replay;  strong-batch8: ... at batch size 8
  strong-ppr5         ... five question/answer pairs per training row (the old default; now 1)
  strong-no-select    ... keeping the last epoch, not the best on held-out QA
  strong-e5           ... 5 epochs (the epoch kept is chosen by held-out QA accuracy, as always)
  strong+augment      the reference set plus the charter's teacher-free augmentations, as `memorize dataset`
                      adds them to a strong teacher's pairs by default
  --train KEY=VALUE   any training setting for the configurations of one run, e.g. `--configs strong
                      --train epochs=4 replay_ratio=0.4`: the row is named "strong epochs=4 replay_ratio=0.4"
  augment             no LLM at all: the teacher-free augmentations only (`memorize dataset --temperatures 0`)
  augment-no-KIND     ... without one default augmentation kind (passage, span, reverse); augment+cloze: with cloze
  embedded            `memorize run` defaults: the embedded SmolLM2-135M generator (1 temperature) +
                      augmentations, then the `memorize train` defaults
  embedded-t3         ... at 3 temperatures;  embedded-no-augment: generator pairs only

  --data KEY=VALUE    any generation setting (memorize.settings.GenerationSettings), e.g. abstain_share=0.2

Any training pair whose question is a near-duplicate of a held-out question (rapidfuzz ratio >= 85, memorize.filtering.seen_in_training) is
removed first and counted, so the questions are truly unseen. The base and in-context answers are the
same for every configuration (same base model, questions and chunks): computed once and reused through
the evaluation's answer cache. Answers are greedy, at most 64 new tokens. Accuracy is over the answerable
questions; the unanswerable ones give the abstention columns. "Opens with a marker" is the share of the
fine-tuned model's answers that begin with a clause number or list marker. Prints one table and writes
OUT/summary.json.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import get_origin

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")  # see flows.cli.main

from memorize.dataset import DEFAULT_TEST_RATIO, assign_split, ensure_test_pair, read_jsonl, write_dataset  # noqa: E402
from memorize.evaluation import SYSTEMS, evaluate, load_questions  # noqa: E402
from memorize.filtering import seen_in_training  # noqa: E402
from memorize.local_model import resolve_model  # noqa: E402
from memorize.scoring import UNANSWERABLE  # noqa: E402
from memorize.settings import EvalSettings, GenerationSettings, TrainSettings  # noqa: E402
from memorize.training import TrainConfig, resolve, train  # noqa: E402

HERE = Path(__file__).parent
REFERENCE = HERE / "data" / "moonwell_reference_pairs.jsonl"  # the charter's hand-written pairs
DOCUMENTS = {  # name -> (document, questions, context)
    "charter": (HERE / "data" / "moonwell_charter.md", HERE / "data" / "moonwell_questions.jsonl",
                "The charter of the Moonwell Honey and Cider Cooperative"),
    "harbor": (HERE.parent / "examples" / "harbor_rules.md", HERE.parent / "examples" / "harbor_questions.jsonl",
               "Rules of the Saltmere Lantern Regatta"),
    **{name: (HERE / "data" / d["document"], HERE / "data" / d["questions"], d["context"])
       for name, d in json.loads((HERE / "data" / "shapes.json").read_text()).items()},
}
# An answer that opens with a clause number or list marker: structure learned as if it were content.
MARKER = re.compile(r"^\s*(?:\d+(?:\.\d+)+\.?|\d+[.)]|[-*+•]|\([a-z]\))\s")
DEFAULTS = GenerationSettings()
OLD_DEFAULTS = {"full": False, "learning_rate": 1e-4, "epochs": 1.0, "lora_r": 16, "lora_alpha": 32,
                "replay_ratio": 0.0, "select_epoch": False}


def decontaminate(qa: list[dict], held_out: list[str]) -> tuple[list[dict], int]:
    seen = seen_in_training([p["question"] for p in qa], held_out)  # a training pair that rewords a held-out one
    kept = [p for p, s in zip(qa, seen, strict=True) if not s]
    return kept, len(qa) - len(kept)


def _pairs_per_row(name: str) -> int:
    return 5 if name in ("strong-old", "strong-ppr5") else DEFAULTS.pairs_per_row


def _build(name: str, document: str, data: Path, args, held_out: list[str]) -> dict:
    """The dataset folder of a configuration; returns {pairs, removed, minutes}."""
    from flows.build_dataset import build_dataset

    started = time.perf_counter()
    doc, _, context = DOCUMENTS[document]
    settings = GenerationSettings(**args.data)
    if name.startswith("strong"):  # the reference pairs stand in for a strong teacher's: the rest as `dataset` adds it
        from memorize.abstain import abstention_pairs
        from memorize.augment import augment_chunks

        if document != "charter":
            sys.exit(f"{name}: the reference pairs are the charter's; run it with --documents charter")
        chunks = [c.to_dict() for c in _chunks(document)]
        qa = [{**r, "origin": r.get("origin", "llm")} for r in read_jsonl(REFERENCE)]
        if name == "strong+augment":
            qa += [{**p, "origin": f"augment:{p['kind']}"} for p in augment_chunks(chunks, context, settings.augment)]
        qa += [{**p, "origin": "abstain"} for p in abstention_pairs(chunks, context, settings.abstain_share, len(qa))]
        qa = [{**p, "split": assign_split(p["question"], p["answer"], DEFAULT_TEST_RATIO)} for p in qa]
    else:
        generate = name.startswith("embedded")
        kinds = [] if name == "embedded-no-augment" else [k for k in settings.augment if name != f"augment-no-{k}"]
        kinds += ["cloze"] if name == "augment+cloze" else []
        settings = settings.model_copy(update=dict(base_url=args.base_url, model=args.model, augment=kinds,
                                                   temperatures=(3 if name == "embedded-t3" else None) if generate else 0))
        build_dataset(documents=[str(doc)], context=context, out=str(data), settings=settings,
                      cache_dir=str(Path(args.out) / "cache"), progress=False)
        qa = read_jsonl(data / "qa.jsonl")
    qa, removed = decontaminate(qa, held_out)
    ensure_test_pair(qa, DEFAULT_TEST_RATIO)
    write_dataset(data, qa, _pairs_per_row(name))
    return {"pairs": len(qa), "removed_near_duplicates": removed, "data_minutes": (time.perf_counter() - started) / 60}


def _chunks(document: str) -> list:
    from memorize.chunking import chunk_document
    from memorize.extract import extract

    return chunk_document(extract(DOCUMENTS[document][0]), DEFAULTS.chunk_tokens, DEFAULTS.chunk_overlap)


def _chunks_for_in_context(document: str, data: Path) -> None:
    """The strong configurations have no chunks.jsonl; the in-context ceiling reads the document's chunks."""
    if not (data / "chunks.jsonl").exists():
        with open(data / "chunks.jsonl", "w", encoding="utf-8") as f:
            for c in _chunks(document):
                f.write(json.dumps(c.to_dict(), ensure_ascii=False) + "\n")


def _accuracy(section: dict | None, kind: str | None = None):
    """(accuracy, n) on the answerable questions, or on one kind."""
    if section is None:
        return None
    s = section["questions"]["answerable"] if kind is None else section["kinds"].get(kind)
    return None if s is None else (s["accuracy"], s["n"])


def _label(name: str, args, document: str = "charter") -> str:
    """The configuration's name in the table, with its document (unless the charter) and any overrides."""
    overrides = {**args.data, **args.train}
    return (f"{document}: " if document != "charter" else "") + name + "".join(
        f" {k}={','.join(v) if isinstance(v, list) else v}" for k, v in overrides.items())


def _folder(args, label: str) -> Path:
    return Path(args.out) / label.replace(" ", "_")


def reuse(name: str, document: str, args, base_model: str, previous: dict[str, dict]) -> tuple[dict, Path, Path]:
    """--eval-only: the earlier row, its data and its model; with `--train adapter_scale=X`, a copy of the
    configuration's model rescaled to X (what training with that setting saves), under its own label."""
    import shutil

    from memorize.models import load_model, load_tokenizer
    from memorize.training import saved_model
    from memorize.weights import interpolate_toward_base, scale_adapter

    label = _label(name, args, document)

    def without_scale(row: str) -> str:
        return " ".join(t for t in row.split(" ") if not t.startswith("adapter_scale="))

    unscaled = without_scale(label)
    # the row trained with these settings, also when it was trained with an explicit adapter_scale
    source = unscaled if unscaled in previous else next(
        (k for k in previous if without_scale(k) == unscaled and (_folder(args, k) / "data").is_dir()), unscaled)
    adapter = saved_model(_folder(args, source) / "model")
    if source not in previous or adapter is None:
        sys.exit(f"--eval-only: no trained configuration {source!r} in {args.out} (train it first)")
    saved = previous[source]["hyperparameters"].get("adapter_scale", 1)  # the scale training already applied
    factor = float(args.train.get("adapter_scale", saved))
    if factor != saved:
        scaled = _folder(args, label) / "model" / adapter.name
        shutil.rmtree(scaled, ignore_errors=True)
        if adapter.name == "full":  # saved = base + saved x delta, so base + factor x delta is a step toward base
            model = load_model(str(adapter))
            interpolate_toward_base(model, base_model, factor / saved)
            model.save_pretrained(scaled)
            load_tokenizer(str(adapter)).save_pretrained(scaled)
            del model
        else:
            shutil.copytree(adapter, scaled)
            scale_adapter(scaled, factor / saved)
        adapter = scaled
    row = {**previous[source], "config": label}
    row["hyperparameters"] = {**row["hyperparameters"], "adapter_scale": factor}
    return row, _folder(args, source) / "data", adapter


def run(name: str, document: str, args, base_model: str, previous: dict[str, dict]) -> dict:
    label = _label(name, args, document)
    out = _folder(args, label)
    if args.eval_only:
        row, data, adapter = reuse(name, document, args, base_model, previous)
        return {**row, **evaluate_row(args, document, base_model, data, out, adapter)}
    data = out / "data"
    held_out = [q["question"] for q in load_questions(DOCUMENTS[document][1])]
    row = {"config": label, "document": document, **_build(name, document, data, args, held_out)}
    _chunks_for_in_context(document, data)
    overrides = dict(OLD_DEFAULTS) if name == "strong-old" else {}
    if name == "strong-no-replay":
        overrides["replay_ratio"] = 0.0
    if name == "strong-no-select":
        overrides["select_epoch"] = False
    if name == "strong-e5":
        overrides["epochs"] = 5.0
    if name == "strong-batch8":
        overrides["batch_size"] = 8
    overrides.update(args.train)
    config = TrainConfig(base_model=base_model, data_dir=str(data), output_dir=str(out / "model"), **overrides)
    started = time.perf_counter()
    result = train(config, progress=False)
    row["train_minutes"] = (time.perf_counter() - started) / 60
    # CPU times depend on these as much as on the recipe: OMP_WAIT_POLICY=PASSIVE trains 1.4x slower.
    row["tokens_per_s"], row["threads"] = result.tokens_per_s, torch_threads()
    row["final_train_loss"] = result.final_train_loss
    row["qa_by_epoch"], row["selected_epoch"] = result.qa_by_epoch, result.selected_epoch
    resolved = resolve(config)  # the learning rate, as training decided it
    row["hyperparameters"] = {**{k: getattr(resolved, k) for k in ("full", "learning_rate", "epochs", "lora_r",
                                                                   "lora_alpha", "batch_size", "replay_ratio",
                                                                   "select_epoch", "adapter_scale", "seeds")},
                              "pairs_per_row": _pairs_per_row(name)}
    return {**row, **evaluate_row(args, document, base_model, data, out, result.adapter_dir)}


def evaluate_row(args, document: str, base_model: str, data: Path, out: Path, adapter: Path) -> dict:
    """The held-out questions (per kind, paraphrased+reversed, abstentions) and general knowledge, closed-book
    and with retrieval."""
    started = time.perf_counter()
    summary = evaluate(base_model, str(adapter), data, out / "eval",
                       EvalSettings(questions=str(DOCUMENTS[document][1]), max_test_questions=0), progress=False,
                       answer_cache=Path(args.out) / "answer-cache.json")
    row = {"eval_minutes": (time.perf_counter() - started) / 60}
    records = [r for r in json.loads((out / "eval" / "eval.json").read_text())["records"] if r["set"] == "questions"]
    hard = [r for r in records if r.get("kind") in ("paraphrased", "reversed")]
    for system in SYSTEMS:
        row[system] = _accuracy(summary[system])
        row[f"{system}_kinds"] = {k: _accuracy(summary[system], k) for k in summary[system]["kinds"]}
        row[f"{system}_paraphrased_reversed"] = (sum(bool(r[system]["correct"]) for r in hard) / len(hard), len(hard))
        asked = summary[system]["questions"]
        row[f"{system}_abstains"] = {"unanswerable": (asked["unanswerable"]["abstained"], asked["unanswerable"]["n"]),
                                     "answerable": (asked["answerable"]["abstained"], asked["answerable"]["n"]),
                                     "selective": asked["selective"]}
    row["fine_tuned_markers"] = (sum(bool(MARKER.match(r["fine_tuned"]["answer"])) for r in records) / len(records),
                                 len(records))
    row["general"] = {k: summary["forgetting"][k] for k in ("n", "base_accuracy", "fine_tuned_accuracy", "paired")}
    return row


def _pct(value) -> str:
    if value is None:
        return "—"
    return f"{value[0]:.0%}" if isinstance(value, (tuple, list)) else f"{value:.0%}"  # (accuracy, n) pairs


def _general(g: dict) -> str:
    """base → fine-tuned, with the paired change's 95 % interval in points (rows of older runs have none)."""
    cell = f"{_pct(g['base_accuracy'])} → {_pct(g['fine_tuned_accuracy'])}"
    paired = g.get("paired")
    if paired and paired["n"]:
        lo, hi = (round(100 * x) for x in paired["ci95"])
        cell += f" ({round(100 * paired['change']):+d}; {lo:+d} to {hi:+d})"
    return cell


def _setting(h: dict) -> str:
    return (f"{'full' if h.get('full') else 'LoRA'}, lr {h['learning_rate']:g}, {h['epochs']:g} ep, "
            f"{h['pairs_per_row']} pair/row, batch {h['batch_size']}, "
            f"replay {h['replay_ratio']:g}, {'best epoch' if h['select_epoch'] else 'last epoch'}"
            + (f", adapter ×{h['adapter_scale']:g}" if h.get("adapter_scale", 1) != 1 else ""))


def _abstains(a: dict | None) -> str:
    """abstains on unanswerable / wrongly on answerable (answered share, accuracy among answers)."""
    if not a:
        return "—"
    s = a["selective"]
    return (f"{_pct(a['unanswerable'][0])} / {_pct(a['answerable'][0])} "
            f"({_pct(s['answered'])}, {_pct(s['accuracy'])})")


def table(rows: list[dict]) -> str:
    head = ("| config | training setting | pairs | base | fine-tuned | in-context | fine-tuned + retrieval "
            "| fine-tuned: direct / paraphrased / reversed / multi | paraphrased+reversed: base → fine-tuned "
            "(in-context) | fine-tuned abstains: unanswerable / answerable (answers, their accuracy) "
            "| opens with a marker | general knowledge base → fine-tuned (change; 95 % interval, points) "
            "| minutes (data + train + eval) |")
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        kinds = " / ".join(_pct(r["fine_tuned_kinds"].get(k)) for k in ("direct", "paraphrased", "reversed", "multi"))
        g = r["general"]
        kept = f" (kept epoch {r['selected_epoch']})" if r.get("selected_epoch") else ""
        lines.append(
            f"| {r['config']} | {_setting(r['hyperparameters'])}{kept} | {r['pairs']} | {_pct(r['base'])} "
            f"| **{_pct(r['fine_tuned'])}** | {_pct(r['in_context'])} | {_pct(r.get('fine_tuned_in_context'))} "
            f"| {kinds} | {_pct(r['base_paraphrased_reversed'])} → **{_pct(r['fine_tuned_paraphrased_reversed'])}** "
            f"({_pct(r['in_context_paraphrased_reversed'])}) | {_abstains(r.get('fine_tuned_abstains'))} "
            f"| {_pct(r.get('fine_tuned_markers'))} | {_general(g)} "
            f"| {r['data_minutes']:.1f} + {r['train_minutes']:.1f} + {r['eval_minutes']:.1f} |")
    # Rows of other documents (or question sets) keep their own n.
    sizes = {(r.get("document", "charter"), r["fine_tuned"][1], r["general"]["n"]): r for r in rows}
    for (document, held_out, general), r in sizes.items():
        unanswerable = (r.get("fine_tuned_abstains") or {}).get("unanswerable", (None, 0))[1]
        lines.append(f"\nn ({document}): {held_out} answerable held-out questions "
                     f"({', '.join(f'{k} {v[1]}' for k, v in r['fine_tuned_kinds'].items() if k != UNANSWERABLE)}); "
                     f"{unanswerable} unanswerable; paraphrased+reversed {r['fine_tuned_paraphrased_reversed'][1]}; "
                     f"general knowledge {general}.")
    return "\n".join(lines)


CONFIGS = ["strong-old", "strong", "strong-no-replay", "strong-batch8", "strong-ppr5", "strong-no-select", "strong-e5",
           "strong+augment", "augment", "augment+cloze",
           *[f"augment-no-{k}" for k in DEFAULTS.augment], "embedded", "embedded-t3", "embedded-no-augment"]


def torch_threads() -> str:
    import torch

    return f"{torch.get_num_threads()}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="out/bench-memorization")
    ap.add_argument("--documents", nargs="+", choices=list(DOCUMENTS), default=["charter"])
    ap.add_argument("--configs", nargs="+", choices=CONFIGS, default=["strong-old", "strong", "augment", "embedded"])
    ap.add_argument("--base-model", help="model to fine-tune (default: the embedded SmolLM2-135M-Instruct)")
    ap.add_argument("--base-url", help="generator endpoint for the embedded-* configurations (default: embedded model)")
    ap.add_argument("--model", help="generator model name at --base-url")
    ap.add_argument("--train", nargs="+", default=[], metavar="KEY=VALUE",
                    help="training settings for every configuration of this run, e.g. epochs=4 replay_ratio=0.4 "
                         "target_modules=gate_proj,up_proj,down_proj (memorize.settings.TrainSettings; lists "
                         "comma-separated); the table names them beside the configuration")
    ap.add_argument("--data", nargs="+", default=[], metavar="KEY=VALUE",
                    help="generation settings for every configuration of this run, e.g. abstain_share=0.2 "
                         "(memorize.settings.GenerationSettings)")
    ap.add_argument("--eval-only", action="store_true",
                    help="re-evaluate the adapters an earlier run saved in OUT (e.g. after the questions changed); "
                         "with --train adapter_scale=X, a scaled copy of each")
    args = ap.parse_args()
    try:
        args.train = dict(kv.split("=", 1) for kv in args.train)
        args.train = {k: v.split(",") if k in TrainSettings.model_fields
                      and get_origin(TrainSettings.model_fields[k].annotation) is list else v
                      for k, v in args.train.items()}
        TrainSettings(**args.train)  # names and values checked before hours of training
    except ValueError as exc:
        ap.error(f"--train: {exc}")
    try:
        args.data = dict(kv.split("=", 1) for kv in args.data)
        GenerationSettings(**args.data)
    except ValueError as exc:
        ap.error(f"--data: {exc}")
    base_model = resolve_model(args.base_model)
    summary_path = Path(args.out) / "summary.json"
    runs = [(name, document) for document in args.documents for name in args.configs]
    # Configurations measured by an earlier run into the same OUT stay in the table unless re-run.
    rows = [r for r in (json.loads(summary_path.read_text()) if summary_path.exists() else [])
            if r["config"] not in {_label(n, args, d) for n, d in runs}]
    previous = {r["config"]: r for r in json.loads(summary_path.read_text())} if summary_path.exists() else {}
    for name, document in runs:
        started = time.perf_counter()
        rows.append({**run(name, document, args, base_model, previous), "minutes": (time.perf_counter() - started) / 60})
        summary_path.write_text(json.dumps(rows, indent=2))  # a long run keeps what it has measured
        print(table(rows[-1:]).splitlines()[2], flush=True)
    print("\n" + table(rows))
    print(f"(figures in {summary_path})")


if __name__ == "__main__":
    main()
