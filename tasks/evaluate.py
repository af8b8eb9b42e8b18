"""The evaluation node: base vs fine-tuned vs in-context answers, scored and written to reports."""
from __future__ import annotations

from prefect import task

from memorize.evaluation import GENERAL_KNOWLEDGE, evaluate
from memorize.llm import client_for
from memorize.scoring import LLMJudge

JUDGE_RETRIES = 6  # per judged answer: one 429 must not lose a whole evaluation


@task(name="evaluate")
def evaluate_task(base_model: str, adapter_dir: str | None, data_dir: str, out: str, questions: str | None,
                  judge_base_url: str | None, judge_model: str | None, judge_api_key_env: str, top_k: int,
                  max_test_questions: int, batch_size: int, include_general: bool, progress: bool,
                  answer_cache: str | None = None, chat_template: str | None = None) -> dict:
    judge = (LLMJudge(client_for(judge_base_url, judge_api_key_env, max_retries=JUDGE_RETRIES), judge_model)
             if judge_base_url else None)
    return evaluate(base_model, adapter_dir, data_dir, out, questions_file=questions,
                    general_file=GENERAL_KNOWLEDGE if include_general else None, judge=judge, top_k=top_k,
                    max_test_questions=max_test_questions, batch_size=batch_size, progress=progress,
                    answer_cache=answer_cache, chat_template=chat_template)
