"""The project's Prefect deployments, registered with the server at PREFECT_API_URL.

    memorize deploy [--cpu-pool cpu] [--gpu-pool gpu] [--cron "0 3 * * *"]

Every deployment runs the flows from this checkout (process workers started from the project's
virtual environment). Training goes to the GPU pool; the rest to the CPU pool.

A run's parameters come from whoever can create flow runs, so a worker's runs read an endpoint's or a
judge's key only from the variables the worker allows: MEMORIZE_ALLOWED_KEY_ENVS in the worker's environment,
comma-separated (default OPENAI_API_KEY), e.g. `MEMORIZE_ALLOWED_KEY_ENVS=OPENAI_API_KEY,JUDGE_API_KEY
prefect worker start --pool cpu`. A run whose api_key_env or judge_api_key_env names another variable fails.
A training run that no worker of its pool picks up within the memorize flow's pickup_timeout_h is cancelled.
"""
from __future__ import annotations

from pathlib import Path

from prefect import Flow
from prefect.events import DeploymentEventTrigger
from prefect.schedules import Cron

from memorize.watch import CHANGE_EVENT  # the watcher emits what the trigger expects

REPO = Path(__file__).resolve().parents[1]

# name -> (entrypoint, pool role)
FLOWS = {
    "build-dataset": ("flows/build_dataset.py:build_dataset", "cpu"),
    "finetune": ("flows/finetune.py:finetune", "gpu"),
    "evaluate": ("flows/evaluate_flow.py:evaluate_flow", "cpu"),
    "memorize": ("flows/pipeline.py:memorize_pipeline", "cpu"),
}


def change_trigger() -> DeploymentEventTrigger:
    """A `memorize watch` event re-runs build-dataset over the watched folder; the content-keyed
    cache makes that regenerate only the chunks whose text changed."""
    return DeploymentEventTrigger(
        name="regenerate-on-document-change",
        expect={CHANGE_EVENT},
        match={"prefect.resource.id": "memorize.document.*"},
        parameters={
            "documents": ["{{ event.payload.folder }}"],
            "context": "{{ event.payload.context }}",
            "out": "{{ event.payload.out }}",
            "cache_dir": "{{ event.payload.cache_dir }}",
        },  # the endpoint (settings.base_url, .model) comes from the deployment's default parameters
    )


def deploy(cpu_pool: str = "cpu", gpu_pool: str = "gpu", cron: str = "0 3 * * *",
           defaults: dict | None = None, endpoint: dict | None = None) -> dict[str, str]:
    """Create or update the four deployments; returns {deployment name: id}. `defaults` (documents,
    context, out) and `endpoint` (the generation settings base_url, model) become default parameters of
    build-dataset and memorize, used by the schedule, the change trigger and the UI form."""
    pools = {"cpu": cpu_pool, "gpu": gpu_pool}
    ids = {}
    for name, (entrypoint, role) in FLOWS.items():
        flow = Flow.from_source(source=str(REPO), entrypoint=entrypoint)
        extra = {}
        if name in ("build-dataset", "memorize"):
            section = "settings" if name == "build-dataset" else "generation"
            extra = dict(parameters={**(defaults or {}), **({section: endpoint} if endpoint else {})})
        if name == "build-dataset":
            # The regeneration schedule is off until someone turns it on in the UI or CLI.
            extra.update(schedules=[Cron(cron, active=False)], triggers=[change_trigger()], concurrency_limit=1)
        ids[f"{name}/{pools[role]}"] = str(flow.deploy(
            name=pools[role], work_pool_name=pools[role], build=False, push=False, print_next_steps=False,
            description=(flow.description or "").strip().splitlines()[0] if flow.description else None,
            tags=["memorize"], **extra))
    return ids
