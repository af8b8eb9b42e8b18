"""The `memorize` command line: dataset, train, eval, run, watch and deploy run Prefect flows; ask and serve
use the trained model directly."""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from pathlib import Path

from pydantic import ValidationError

from flows.cli_options import (
    SECTIONS,
    ConfigError,
    add_settings,
    effective_config,
    option,
    parse_args,
    settings_from,
)
from flows.known_errors import QUIET_KNOWN_ERRORS, known_error_status
from memorize import (
    API_KEY_ENV,
    DEFAULT_CACHE_DIR,
    DEFAULT_MAX_QUEUE,
    STATUS_FILE,
    read_run_status,
    recorded_run,
    run_status_line,
    write_text,
)
from memorize.settings import EvalSettings

EPILOG = """Keys come from the environment only: the LLM endpoint's key from the variable named by
--api-key-env (default OPENAI_API_KEY), the Hugging Face token from HF_TOKEN.
Without PREFECT_API_URL each command starts a temporary local Prefect server (~15 s);
point PREFECT_API_URL at `prefect server start` to see runs in the UI."""


def _add_paths(p: argparse.ArgumentParser, out_help: str, documents: bool = False, cache: bool = True) -> None:
    if documents:
        p.add_argument("documents", nargs="+", metavar="DOC_OR_DIR",
                       help="PDF, text, Markdown, office (docx pptx xlsx), HTML or EPUB files, or folders of them")
        p.add_argument("--context", required=True,
                       help='one sentence saying what the documents are, e.g. "International touch rugby rules"')
    p.add_argument("--out", required=True, help=out_help)
    if cache:
        p.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR,
                       help="where cached results live (default %(default)s)")


def _add_base_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base-model", help="model to fine-tune: local folder or Hub id (default: the embedded "
                   "SmolLM2-135M-Instruct)")


def cmd_dataset(a: argparse.Namespace) -> int:
    from flows.build_dataset import build_dataset

    report = build_dataset(documents=a.documents, context=a.context, out=a.out,
                           settings=settings_from(a, "generation"), cache_dir=a.cache_dir, dry_run=a.dry_run)
    print(json.dumps({k: v for k, v in report.items() if k != "settings"}, indent=2))
    for f in report["failures"]:  # what did not make it into the dataset: a document, a request, a push
        print(f"error: {f['file']}: {f['reason']}", file=sys.stderr)
    return 1 if report["failures"] else 0


def _print_summary(summary: dict) -> None:
    from flows.evaluate_flow import accuracy_lines

    print("\n".join(accuracy_lines(summary)))


def cmd_train(a: argparse.Namespace) -> int:
    from flows.finetune import finetune
    from flows.pipeline import train_remotely

    params = dict(data_dir=a.data_dir, output_dir=a.out, base_model=a.base_model,
                  settings=settings_from(a, "training"), cache_dir=a.cache_dir)
    result = train_remotely(a.train_on_pool, params) if a.train_on_pool else finetune(**params)
    print(json.dumps({k: v for k, v in result.items() if not k.endswith("losses")}, indent=2))
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    from flows.evaluate_flow import evaluate_flow

    summary = evaluate_flow(data_dir=a.data_dir, out=a.out, adapter_dir=a.adapter, base_model=a.base_model,
                            settings=settings_from(a, "evaluation"), chat_template=a.chat_template)
    _print_summary(summary)
    return 0


def cmd_run(a: argparse.Namespace) -> int:
    from flows.pipeline import memorize_pipeline

    result = memorize_pipeline(documents=a.documents, context=a.context, out=a.out, base_model=a.base_model,
                               train_on_pool=a.train_on_pool, generation=settings_from(a, "generation"),
                               training=settings_from(a, "training"), evaluation=settings_from(a, "evaluation"),
                               cache_dir=a.cache_dir)
    from memorize.evaluation import example_lines

    tuned = Path(result["adapter_dir"]).relative_to(result["out"])
    print(f"\nOutputs in {result['out']}: data/ (dataset), {tuned} (the fine-tuned weights), eval/eval.md, "
          "eval/accuracy.png and eval/coverage.png")
    _print_summary(result["evaluation"])
    records = json.loads((Path(result["out"]) / "eval" / "eval.json").read_text(encoding="utf-8"))["records"]
    print("\n".join(example_lines(records)))
    return 0


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of at least 1")
    return int(value)


def _chunks_file(path: str) -> str:
    if not Path(path).is_file():
        raise argparse.ArgumentTypeError(f"{path}: no such file (the chunks.jsonl of the dataset folder)")
    return path


def _chat(a: argparse.Namespace):
    """The model of `ask` and `serve`, with the chunks it was trained on (--chunks overrides)."""
    from memorize.chat import ChatModel

    chat = ChatModel(a.model_dir, a.chunks)
    if a.rag:
        chat.require_documents()
    elif not chat.chunks:
        print(f"note: no chunks.jsonl beside {a.model_dir}: answers come without their evidence "
              "(pass --chunks DATA/chunks.jsonl, DATA: the dataset folder the model was trained on)", file=sys.stderr)
    return chat


def cmd_ask(a: argparse.Namespace) -> int:
    from memorize.chat import chat_loop
    from memorize.evidence import evidence_line

    chat = _chat(a)
    top_k = a.top_k if a.rag else None
    if a.question is None:
        chat_loop(chat, max_new_tokens=a.max_new_tokens, temperature=a.temperature, system=a.system, top_k=top_k)
        return 0
    messages = ([{"role": "system", "content": a.system}] if a.system else []) + [
        {"role": "user", "content": a.question}]
    if a.base and chat.base_name is None:
        print("--base needs the output folder of `memorize train` (an adapter, or full/ with its metrics.json): a "
              "merged model has no base model beside it", file=sys.stderr)
        return 2
    if top_k:
        messages = chat.with_documents(messages, top_k)
    for label, use_adapter in [("fine-tuned", True)] + ([("base", False)] if a.base else []):
        if a.base:
            print(f"{label}: ", end="", flush=True)
        text, _, _ = chat.reply(messages, a.max_new_tokens, a.temperature, use_adapter,
                                on_text=lambda p: print(p, end="", flush=True))
        print()
        if chat.evidence_index:
            print(evidence_line(chat.evidence(a.question, text)))
    return 0


def cmd_serve(a: argparse.Namespace) -> int:
    from memorize.serve import exposure_warning, serve_forever

    key = os.environ.get(a.api_key_env) or None
    try:  # before the model is loaded
        warning = exposure_warning(a.host, key, a.api_key_env, a.insecure_no_auth)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if warning:
        print(warning, file=sys.stderr)
    serve_forever(_chat(a), a.host, a.port, a.log_level, max_batch=a.max_batch, api_key=key, max_queue=a.max_queue,
                  max_prompt_tokens=a.max_prompt_tokens, rag=a.rag, top_k=a.top_k)
    return 0


def cmd_watch(a: argparse.Namespace) -> int:
    from memorize.watch import Watcher

    if not os.environ.get("PREFECT_API_URL"):
        print("memorize watch sends events to a Prefect server: start one (`prefect server start`) and set "
              "PREFECT_API_URL, e.g. export PREFECT_API_URL=http://127.0.0.1:4200/api", file=sys.stderr)
        return 2
    folder = Path(a.folder)
    if not folder.is_dir():
        print(f"{folder}: not a folder", file=sys.stderr)
        return 2
    payload = {"context": a.context, "out": str(Path(a.out).resolve()), "cache_dir": str(Path(a.cache_dir).resolve())}
    state = Path(a.state or Path(a.cache_dir) / "watch" / (folder.resolve().name + ".json"))
    Watcher(folder, state, payload).run(a.interval, once=a.once)
    return 0


def cmd_deploy(a: argparse.Namespace) -> int:
    from deployments.deploy import deploy

    defaults = {k: v for k, v in {"documents": a.documents, "context": a.context, "out": a.out}.items() if v}
    endpoint = {k: v for k, v in {"base_url": a.base_url, "model": a.model}.items() if v}
    for name, ident in deploy(a.cpu_pool, a.gpu_pool, a.cron, defaults, endpoint).items():
        print(f"deployed {name} ({ident})")
    return 0


CONFIGURABLE = ("dataset", "train", "eval", "run")  # the commands with settings: --config, and config.yaml written


def _write_config(path: Path, config: dict) -> None:
    import yaml

    write_text(path, yaml.safe_dump(config, sort_keys=False))


def _recorded(args: argparse.Namespace) -> int:
    """The command, its run's state kept in OUT/status.json (memorize.recorded_run): a run into OUT that did not
    finish is named before, and this one's state after."""
    out = Path(args.out)
    if (previous := read_run_status(out)) and previous.get("state") != "finished":
        print(f"note: the last run: {run_status_line(out)}", file=sys.stderr)
    status = {}
    try:
        with recorded_run(out, args.command) as status:
            status["exit_code"] = args.func(args)
            return status["exit_code"]
    finally:
        if status:  # an error is printed once, by main()
            print(f"status: {status['state']} ({out / STATUS_FILE})", file=sys.stderr)


def _check_inputs(args: argparse.Namespace) -> None:
    """What a command can check before it starts (memorize.checks): a bad input fails here, before
    config.yaml is written and before any model is loaded or LLM asked."""
    from memorize import checks

    if args.command in ("dataset", "run"):
        checks.documents(args.documents)
    if args.command == "train":
        checks.training_data(args.data_dir)
    if args.command in ("train", "run"):
        checks.scheduler(settings_from(args, "training").lr_scheduler)
    if args.command in ("eval", "run"):
        checks.evaluation(settings_from(args, "evaluation"))


def build_parser() -> argparse.ArgumentParser:
    # No abbreviated flags: `train --seed 3` would silently mean --seeds 3 (three trainings).
    parser = argparse.ArgumentParser(prog="memorize", description="Make an open LLM memorize your documents.",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=summary, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                              allow_abbrev=False)

    p = command("dataset", "documents -> synthetic QA chat dataset (flow build-dataset)")
    _add_paths(p, "output folder", documents=True)
    p.add_argument("--dry-run", action="store_true", help="print the request count and cost estimate, call nothing")
    add_settings(p, "generation")
    p.set_defaults(func=cmd_dataset)

    p = command("train", "dataset folder -> LoRA adapter or full fine-tune (flow finetune)")
    p.add_argument("data_dir", help="output folder of `memorize dataset` (train.jsonl, test.jsonl)")
    _add_paths(p, "output folder (adapter/ or full/, metrics.json, loss_curve.png)")
    _add_base_model(p)
    p.add_argument("--train-on-pool", metavar="POOL",
                   help="run training through the finetune/POOL deployment (e.g. gpu)")
    add_settings(p, "training")
    p.set_defaults(func=cmd_train)

    p = command("eval", "base vs fine-tuned vs in-context, closed-book (flow evaluate)")
    p.add_argument("data_dir", help="output folder of `memorize dataset` (qa.jsonl, chunks.jsonl)")
    p.add_argument("--adapter", help="LoRA adapter folder, or the full/ folder of `train --full` (omit to evaluate "
                   "the base model only)")
    p.add_argument("--base-model", help="the adapter's base model (default: the embedded SmolLM2-135M-Instruct)")
    # Its only cache, the base model's answers, lives with the model under $MEMORIZE_HOME
    # (answering.answer_cache_file).
    _add_paths(p, "output folder (eval.json, eval.md, accuracy.png)", cache=False)
    p.add_argument("--chat-template", help="the --chat-template the adapter was trained with (models without one)")
    add_settings(p, "evaluation")
    p.set_defaults(func=cmd_eval)

    p = command("run", "the whole pipeline: dataset -> fine-tune -> evaluate (flow memorize)")
    _add_paths(p, "output folder (data/, model/, eval/)", documents=True)
    _add_base_model(p)
    p.add_argument("--train-on-pool", metavar="POOL",
                   help="run training through the finetune/POOL deployment (e.g. gpu)")
    add_settings(p, *SECTIONS)
    p.set_defaults(func=cmd_run)

    def model_parser(name: str, summary: str, details: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=summary, allow_abbrev=False,
                           description=f"{summary[0].upper()}{summary[1:]}. {details} MODEL_DIR "
                           "is the output folder of `memorize train` (or `run`'s model/ folder), its adapter/ or a "
                           "merged/ model; an adapter's base model is read from its config.")
        p.add_argument("model_dir", help="output folder of `memorize train`, an adapter folder or a merged model")
        p.add_argument("--chunks", type=_chunks_file, metavar="FILE", help="the chunks.jsonl of the dataset the model "
                       "was trained on (default: the copy `train` wrote beside the model), for evidence and --rag")
        p.add_argument("--top-k", type=_positive, default=EvalSettings.model_fields["top_k"].default,
                       help="chunks retrieved with --rag (default %(default)s, as evaluation's in-context system)")
        return p

    p = model_parser("ask", "ask the fine-tuned model; with no question, chat in the terminal",
                     "Greedy by default: the memorized answer.")
    p.add_argument("question", nargs="?", help="the question (omit for an interactive chat)")
    p.add_argument("--base", action="store_true", help="also show the base model's answer, for comparison")
    p.add_argument("--max-new-tokens", type=int, default=256, help="(default %(default)s)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 answers greedily (default %(default)s)")
    p.add_argument("--system", help="a system prompt (the training rows have none)")
    p.add_argument("--rag", action="store_true", help="answer with the top-k chunks retrieved for the question in "
                   "the prompt (evaluation's fine-tuned + retrieval system)")
    p.set_defaults(func=cmd_ask)

    p = model_parser("serve", "serve the fine-tuned model on an OpenAI-compatible endpoint",
                     "POST /v1/chat/completions (streaming too), GET /v1/models and /health. The fine-tuned model "
                     "is served under MODEL_DIR's folder name and, for an adapter, the base model under its own "
                     "name; with --rag, each also as NAME+rag, answering with the retrieved chunks. With the chunks "
                     "the model was trained on, every response carries `evidence`: the passage that supports the "
                     "answer, or null. Any OpenAI client, Open WebUI or agent framework can use it.")
    p.add_argument("--host", default="127.0.0.1", help="(default %(default)s; 0.0.0.0 to serve other machines, "
                   "which needs an API key)")
    p.add_argument("--port", type=int, default=8000, help="(default %(default)s)")
    p.add_argument("--api-key-env", default=API_KEY_ENV, metavar="NAME", help="environment variable holding the key "
                   "that every request but /health must send as `Authorization: Bearer KEY` (default %(default)s; "
                   "unset: no key, loopback only)")
    p.add_argument("--insecure-no-auth", action="store_true", help="serve a non-loopback --host without a key")
    p.add_argument("--max-batch", type=int, default=8, help="requests answered together in one batch, when they "
                   "arrive together (default %(default)s; 1: one at a time)")
    p.add_argument("--max-queue", type=_positive, default=DEFAULT_MAX_QUEUE, help="requests waiting or generating at "
                   "once; more are answered 429 (default %(default)s)")
    p.add_argument("--max-prompt-tokens", type=_positive,
                   help="longest prompt accepted (default: the model's context)")
    p.add_argument("--rag", action="store_true", help="also serve each model as NAME+rag: answers with the top-k "
                   "chunks retrieved for the last user message in the prompt")
    p.add_argument("--log-level", default="warning", help="uvicorn's; `info` logs every request (default %(default)s)")
    p.set_defaults(func=cmd_serve)

    p = command("watch", "poll a folder and emit a Prefect event per changed document (triggers build-dataset)")
    p.add_argument("folder", help="folder of documents to watch")
    p.add_argument("--context", required=True, help="passed to the triggered build-dataset run")
    p.add_argument("--out", required=True, help="output folder of the triggered build-dataset run")
    p.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR, help="cache folder shared with the triggered run")
    p.add_argument("--interval", type=float, default=30.0, help="seconds between polls (default %(default)s)")
    p.add_argument("--state", help="file remembering the last seen hashes (default: under the cache folder)")
    p.add_argument("--once", action="store_true", help="poll once and exit (for cron or tests)")
    p.set_defaults(func=cmd_watch)

    p = command("deploy", "register the Prefect deployments (build-dataset, finetune, evaluate, memorize)")
    p.add_argument("--cpu-pool", default="cpu", help="work pool for dataset and evaluation runs (default %(default)s)")
    p.add_argument("--gpu-pool", default="gpu", help="work pool for training runs (default %(default)s)")
    p.add_argument("--cron", default="0 3 * * *",
                   help="regeneration schedule of build-dataset, created inactive (default %(default)r)")
    p.add_argument("--documents", nargs="+", help="default documents for the build-dataset and memorize forms")
    p.add_argument("--context", help="default context for those forms")
    p.add_argument("--out", help="default output folder for those forms")
    p.add_argument("--base-url", help="default LLM endpoint for those runs, also used by change-triggered runs")
    p.add_argument("--model", help="default model name at --base-url")
    p.set_defaults(func=cmd_deploy)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse_args(parser, argv)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # The temporary Prefect server would try to send telemetry, which fails (and logs errors) offline.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The temporary server takes 13-18 s to start on an idle 2-core machine; Prefect gives up after 20 s,
    # which a busy machine exceeds (seen: "Timed out while attempting to connect to ephemeral Prefect API").
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logging.getLogger(name).addFilter(QUIET_KNOWN_ERRORS)

    def stop(signum, frame):
        """Ctrl-C and SIGTERM: stop local generator servers and retries at once, then unwind (caches kept).
        Stopping first matters: a KeyboardInterrupt landing inside Prefect's waiting code can be absorbed,
        and the run would then wait for requests in flight."""
        from memorize.local_server import STOPPING, stop_servers

        STOPPING.set()
        stop_servers()
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if args.command in CONFIGURABLE:
            config = effective_config(parser, args)  # validates the settings: none is written if one is bad
            _check_inputs(args)
            if not getattr(args, "dry_run", False):  # train and eval have no dry run
                _write_config(Path(args.out) / "config.yaml", config)
                return _recorded(args)
        return args.func(args)
    except ValidationError as exc:  # a setting out of range, an unknown style or augmentation kind
        # The flag of the section that failed: `seed`, `batch_size` and `hub_repo` are fields of two sections.
        model = next((m for m, _ in SECTIONS.values() if m.__name__ == exc.title), None)
        flags = {n: option(f, n) for n, f in (model.model_fields.items() if model else ())}
        for e in exc.errors():
            name = str(e["loc"][0]) if e["loc"] else ""  # none: settings that conflict (full with merge)
            flag = f"{flags.get(name, '--' + name.replace('_', '-'))}: " if name else ""
            print(f"error: {flag}{e['msg']}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; what was finished is kept (cached LLM calls, written files): re-run the same command to "
              "continue", file=sys.stderr)
        return 130
    except Exception as exc:
        status = known_error_status(exc)
        if status is None:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return status
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


if __name__ == "__main__":
    sys.exit(main())
