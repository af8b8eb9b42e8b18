"""The `memorize` command line: each subcommand runs one Prefect flow."""
from __future__ import annotations

import argparse
import json
import sys

EPILOG = """Keys come from the environment only: the LLM endpoint's key from the variable named by
--api-key-env (default OPENAI_API_KEY), the Hugging Face token from HF_TOKEN.
Without PREFECT_API_URL each command starts a temporary local Prefect server (~15 s);
point PREFECT_API_URL at `prefect server start` to see runs in the UI."""


def _add_generation_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("question generation")
    g.add_argument("documents", nargs="+", metavar="DOC_OR_DIR", help="PDF, text or Markdown files, or folders of them")
    g.add_argument("--context", required=True, help='one sentence saying what the documents are, e.g. "International touch rugby rules"')
    g.add_argument("--base-url", help="OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, llama.cpp, transformers serve). "
                   "Default: serve a small local model on loopback")
    g.add_argument("--model", help="model name at the endpoint (required with --base-url)")
    g.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the endpoint's key (default %(default)s)")
    g.add_argument("--temperatures", type=int, default=3, help="number of sampling temperatures, evenly spaced 0.01..1.2 (default %(default)s; practice used 9)")
    g.add_argument("--questions-per-chunk", type=int, help="pairs asked per request (default: one per 60 tokens of chunk)")
    g.add_argument("--styles", nargs="+", default=["mixed"], help="question styles, one request each: mixed simple nuanced reversed (default mixed)")
    g.add_argument("--chunk-tokens", type=int, default=500, help="chunk size in tokens (default %(default)s)")
    g.add_argument("--chunk-overlap", type=int, default=40, help="overlap between chunks in tokens (default %(default)s)")
    g.add_argument("--pairs-per-row", type=int, default=5, help="question/answer pairs per chat row (default %(default)s)")
    g.add_argument("--test-ratio", type=float, default=1 / 11, help="share of pairs held out for testing (default 1/11, about 10:1)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--concurrency", type=int, default=8, help="LLM requests in flight at once (default %(default)s)")
    g.add_argument("--concurrency-limit", help="name of a Prefect global concurrency limit to share with other runs (opt-in)")
    g.add_argument("--timeout", type=float, default=120.0, help="seconds per LLM request (default %(default)s)")
    g.add_argument("--retries", type=int, default=4, help="retries on 429/5xx/timeouts/connection errors (default %(default)s)")
    g.add_argument("--price-per-1k", type=float, default=0.0, help="price per 1K tokens for the cost estimate (default %(default)s)")
    g.add_argument("--cache-dir", default=".memorize/cache", help="where cached results live (default %(default)s)")
    g.add_argument("--hub-repo", help="push the dataset to this Hugging Face dataset repo (token from HF_TOKEN)")
    g.add_argument("--public", action="store_true", help="make the pushed dataset public (default private)")
    g.add_argument("--dry-run", action="store_true", help="print the request count and cost estimate, call nothing")


def _dataset_params(a: argparse.Namespace, out: str) -> dict:
    return dict(documents=a.documents, context=a.context, out=out, base_url=a.base_url, model=a.model,
                api_key_env=a.api_key_env, temperatures=a.temperatures, questions_per_chunk=a.questions_per_chunk,
                styles=a.styles, chunk_tokens=a.chunk_tokens, chunk_overlap=a.chunk_overlap,
                pairs_per_row=a.pairs_per_row, test_ratio=a.test_ratio, seed=a.seed, concurrency=a.concurrency,
                concurrency_limit=a.concurrency_limit, request_timeout=a.timeout, retries=a.retries,
                price_per_1k=a.price_per_1k, cache_dir=a.cache_dir, hub_repo=a.hub_repo, public=a.public,
                dry_run=a.dry_run)


def cmd_dataset(a: argparse.Namespace) -> int:
    from flows.build_dataset import build_dataset

    report = build_dataset(**_dataset_params(a, a.out))
    print(json.dumps({k: v for k, v in report.items() if k != "settings"}, indent=2))
    return 1 if report["failures"] else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="memorize", description="Make an open LLM memorize your documents.",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("dataset", help="documents -> synthetic QA chat dataset (flow build-dataset)", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_generation_args(p)
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_dataset)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted; completed LLM calls are cached, re-run the same command to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
