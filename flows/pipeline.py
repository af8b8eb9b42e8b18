"""Flow `memorize`: build-dataset -> finetune -> evaluate, with the training step optionally sent
to a GPU work pool through its deployment."""
from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, get_client, get_run_logger
from prefect.deployments import run_deployment
from prefect.states import Cancelled
from pydantic import BaseModel

from flows.build_dataset import build_dataset
from flows.evaluate_flow import accuracy_lines, evaluate_flow
from flows.finetune import SharedStorageError, finetune, require_shared_path
from memorize import DEFAULT_CACHE_DIR, checks
from memorize.settings import EvalSettings, GenerationSettings, TrainSettings
from memorize.training import model_dir, saved_model

# How long a training run may wait for a worker of its pool before it is cancelled: long enough for a
# GPU machine to boot or a queue to drain, short enough that a run with no worker does not wait forever.
PICKUP_TIMEOUT_H = 4.0


class PoolTimeoutError(RuntimeError):
    """No worker of the pool took the training run in time."""


def _wait_for_worker_and_end(run, pool: str, pickup_timeout_h: float, poll_s: float):
    """The flow run once finished. Still scheduled (no worker took it) past pickup_timeout_h, it is cancelled
    and PoolTimeoutError raised; once a worker has taken it, training may take as long as it takes."""
    deadline, taken = time.monotonic() + pickup_timeout_h * 3600, False
    with get_client(sync_client=True) as client:
        while not (run.state and run.state.is_final()):
            taken = taken or not (run.state is None or run.state.is_scheduled())
            if not taken and time.monotonic() > deadline:
                client.set_flow_run_state(run.id, Cancelled(message="no worker picked it up"), force=True)
                raise PoolTimeoutError(
                    f"no worker of the {pool!r} pool picked up training run {run.name} within {pickup_timeout_h:g} h; "
                    f"it was cancelled. Start one (`prefect worker start --pool {pool}`), or train in this process "
                    "without --train-on-pool")
            time.sleep(poll_s)
            run = client.read_flow_run(run.id)
    return run


def train_remotely(pool: str, parameters: dict, pickup_timeout_h: float = PICKUP_TIMEOUT_H,
                   poll_s: float = 5.0) -> dict:
    """Run the `finetune/<pool>` deployment and wait; only paths cross between the flows."""
    parameters = {k: v.model_dump() if isinstance(v, BaseModel) else v for k, v in parameters.items()}
    run = run_deployment(f"finetune/{pool}", parameters=parameters, timeout=0)
    run = _wait_for_worker_and_end(run, pool, pickup_timeout_h, poll_s)
    if not run.state or not run.state.is_completed():
        state = run.state.name if run.state else "without a state"
        raise RuntimeError(f"training run {run.name} on pool {pool!r} ended {state}: "
                           f"{run.state.message if run.state else ''}")
    saved = saved_model(parameters["output_dir"])
    try:  # nothing visible here: name what an adapter would have left
        require_shared_path(saved or model_dir(parameters["output_dir"], full=False) / "adapter_config.json",
                            f"model written by the {pool!r} worker:")
    except SharedStorageError as exc:
        raise SharedStorageError(f"{exc} (flow run {run.name})") from None
    return {"adapter_dir": str(saved), "flow_run_id": str(run.id), "pool": pool}


@flow(name="memorize")
def memorize_pipeline(
    documents: list[str],
    context: str,
    out: str,
    base_model: str | None = None,
    train_on_pool: str | None = None,
    generation: GenerationSettings = GenerationSettings(),
    training: TrainSettings = TrainSettings(),
    evaluation: EvalSettings = EvalSettings(),
    cache_dir: str = DEFAULT_CACHE_DIR,
    pickup_timeout_h: float = PICKUP_TIMEOUT_H,
) -> dict:
    """Documents -> QA dataset -> LoRA adapter -> evaluation under OUT/{data,model,eval}.

    Args:
        documents: Files or folders of documents (PDF, text, Markdown, docx, pptx, xlsx, HTML, EPUB), as
            paths the workers can see.
        context: One sentence saying what the documents are, e.g. "International touch rugby rules"; it
            opens every generation prompt and names the documents in teacher-free questions.
        out: Output folder: data/ (the dataset), model/ (the fine-tuned weights), eval/ (the report).
        base_model: Model to fine-tune and evaluate: a local folder or a Hub id (empty: the embedded
            SmolLM2-135M-Instruct).
        train_on_pool: Run training through the `finetune/<pool>` deployment (e.g. "gpu") instead of in
            this process; its workers must see OUT on a shared filesystem.
        generation: Settings of question generation (the build-dataset flow).
        training: Settings of fine-tuning (the finetune flow).
        evaluation: Settings of evaluation (the evaluate flow).
        cache_dir: Folder of cached results (extraction, LLM replies, training), shared by runs that
            should reuse them.
        pickup_timeout_h: Hours the training run may wait for a worker of train_on_pool before the run
            fails.
    """
    # Every input that can be checked now, before the generator or any model is loaded.
    checks.documents(documents)
    checks.scheduler(training.lr_scheduler)
    checks.evaluation(evaluation)
    checks.key_env(generation.api_key_env)
    out_dir = Path(out).resolve()
    data_dir, model_out, eval_dir = out_dir / "data", out_dir / "model", out_dir / "eval"
    dataset = build_dataset(documents=documents, context=context, out=str(data_dir), settings=generation,
                            cache_dir=cache_dir)
    if not dataset["train_rows"]:
        first = next((f"; {f['file']}: {f['reason']}" for f in dataset["failures"]), "")
        raise checks.InputError(f"no training data was generated (see {data_dir / 'report.json'}){first}; "
                                "nothing to fine-tune")
    train_params = dict(data_dir=str(data_dir), output_dir=str(model_out), base_model=base_model, settings=training,
                        cache_dir=cache_dir)
    trained = (train_remotely(train_on_pool, train_params, pickup_timeout_h) if train_on_pool
               else finetune(**train_params))
    summary = evaluate_flow(data_dir=str(data_dir), out=str(eval_dir), adapter_dir=trained["adapter_dir"],
                            base_model=base_model, settings=evaluation, chat_template=training.chat_template)
    logger = get_run_logger()
    for line in accuracy_lines(summary):
        logger.info(line)
    return {"dataset": {k: dataset[k] for k in ("qa_pairs", "train_rows", "test_rows", "llm_calls", "cache_hits")},
            "adapter_dir": trained["adapter_dir"], "evaluation": summary, "out": str(out_dir)}
