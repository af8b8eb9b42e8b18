"""Checks of a run's inputs at start-up, before any model is loaded, any LLM asked or anything written: a bad
input then fails in seconds with one message naming the file or setting, instead of a traceback minutes in.
The CLI runs them before a command starts; the flows run them too, for runs started from a deployment."""
from __future__ import annotations

import os
from pathlib import Path

from memorize.extract import find_documents
from memorize.settings import DEFAULT_API_KEY_ENV, EvalSettings

# Key variables a run started by a worker may name (comma-separated, in the worker's environment).
ALLOWED_KEY_ENVS = "MEMORIZE_ALLOWED_KEY_ENVS"


class InputError(ValueError):
    """A bad input, named with the reason (the CLI prints it as one `error:` line)."""


def documents(inputs: list[str]) -> tuple[list[Path], list[dict]]:
    """find_documents, with a missing path and a set without one supported document as errors."""
    try:
        found, skipped = find_documents(inputs)
    except FileNotFoundError as exc:
        raise InputError(str(exc)) from None
    if not found:
        why = (f"{len(skipped)} other file(s) skipped, e.g. {skipped[0]['file']}: {skipped[0]['reason']}"
               if skipped else "the folder is empty")
        raise InputError(f"{', '.join(map(str, inputs))}: no document to read ({why})")
    return found, skipped


def training_data(data_dir: str) -> None:
    if not (Path(data_dir) / "train.jsonl").is_file():
        raise InputError(f"{data_dir}: no train.jsonl; pass the output folder of `memorize dataset` "
                         "(or the data/ folder of `memorize run`)")


def scheduler(name: str) -> None:
    from transformers import SchedulerType

    names = [s.value for s in SchedulerType]
    if name not in names:
        raise InputError(f"--lr-scheduler: {name!r} is not a learning-rate schedule of transformers "
                         f"(one of: {', '.join(names)})")


def key_env(name: str) -> None:
    """A run started by a worker (which sets PREFECT__FLOW_RUN_ID) takes its parameters from whoever can create
    flow runs: it may read a key only from a variable the worker allows in MEMORIZE_ALLOWED_KEY_ENVS (default:
    OPENAI_API_KEY), never any other secret of the worker's environment."""
    if not os.environ.get("PREFECT__FLOW_RUN_ID"):
        return
    allowed = {n.strip() for n in os.environ.get(ALLOWED_KEY_ENVS, DEFAULT_API_KEY_ENV).split(",") if n.strip()}
    if name not in allowed:
        raise InputError(f"key variable {name!r} is not allowed on this worker (allowed: "
                         f"{', '.join(sorted(allowed))}); add it to {ALLOWED_KEY_ENVS} in the worker's environment")


def evaluation(settings: EvalSettings) -> None:
    """The questions file reads (every row valid) and the judge is fully named, its key allowed."""
    from memorize.evaluation import QuestionFileError, load_questions
    from memorize.llm import redact

    if settings.questions:
        try:
            load_questions(settings.questions)
        except QuestionFileError as exc:
            raise InputError(str(exc)) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{settings.questions}: cannot read the questions file "
                             f"({getattr(exc, 'strerror', None) or exc})") from None
    if bool(settings.judge_base_url) != bool(settings.judge_model):
        raise InputError("--judge-base-url and --judge-model go together: the judge's endpoint and the model "
                         "name it serves")
    if settings.judge_base_url and not settings.judge_base_url.startswith(("http://", "https://")):
        raise InputError(f"--judge-base-url: expected an http:// or https:// URL, got "
                         f"{redact(settings.judge_base_url)!r}")
    if settings.judge_base_url:
        key_env(settings.judge_api_key_env)
