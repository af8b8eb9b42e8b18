"""The evaluation node: base vs fine-tuned vs in-context answers, scored and written to reports."""
from __future__ import annotations

from prefect import task

from memorize.evaluation import evaluate
from memorize.llm import client_for
from memorize.scoring import LLMJudge
from memorize.settings import EvalSettings

JUDGE_RETRIES = 6  # per judged answer: one 429 must not lose a whole evaluation


@task(name="evaluate")
def evaluate_task(base_model: str, adapter_dir: str | None, data_dir: str, out: str, settings: EvalSettings,
                  progress: bool, answer_cache: str | None = None, chat_template: str | None = None) -> dict:
    judge = (LLMJudge(client_for(settings.judge_base_url, settings.judge_api_key_env, max_retries=JUDGE_RETRIES),
                      settings.judge_model) if settings.judge_base_url else None)
    return evaluate(base_model, adapter_dir, data_dir, out, settings, judge=judge, progress=progress,
                    answer_cache=answer_cache, chat_template=chat_template)
