"""The evaluation node: base vs fine-tuned vs in-context answers, scored and written to reports."""
from __future__ import annotations

from prefect import task

from memorize.evaluation import GENERAL_KNOWLEDGE, evaluate
from memorize.llm import client_for
from memorize.scoring import LLMJudge
from memorize.settings import EvalSettings

JUDGE_RETRIES = 6  # per judged answer: one 429 must not lose a whole evaluation


@task(name="evaluate")
def evaluate_task(base_model: str, adapter_dir: str | None, data_dir: str, out: str, settings: EvalSettings,
                  progress: bool, answer_cache: str | None = None, chat_template: str | None = None) -> dict:
    s = settings
    judge = (LLMJudge(client_for(s.judge_base_url, s.judge_api_key_env, max_retries=JUDGE_RETRIES), s.judge_model)
             if s.judge_base_url else None)
    return evaluate(base_model, adapter_dir, data_dir, out, questions_file=s.questions,
                    general_file=GENERAL_KNOWLEDGE if s.include_general else None, judge=judge, top_k=s.top_k,
                    max_test_questions=s.max_test_questions, batch_size=s.batch_size, progress=progress,
                    answer_cache=answer_cache, chat_template=chat_template)
