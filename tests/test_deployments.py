"""Deployments against a real `prefect server start`, real process workers on pools `cpu` and `gpu`,
runs started from the Prefect CLI and by a document-change event."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fake_llm import FakeLLM
from pdfs import write_pdf

from memorize.local_server import free_port
from memorize.settings import TrainSettings

pytestmark = pytest.mark.slow
BIN = Path(sys.executable).parent
CONTEXT = "Timetable rules of the fictional Quillmoor ferry"


def _wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory, small_model):
    """Server, pools, deployments and two workers, as docs/prefect.md tells a new user to start them."""
    root = tmp_path_factory.mktemp("ops")
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(root / "home"), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "PREFECT_LOGGING_LEVEL": "INFO"}
    procs = []

    def start(args, log):
        procs.append(subprocess.Popen([str(BIN / args[0]), *args[1:]], env=env, cwd=root,
                                      stdout=open(root / log, "w"), stderr=subprocess.STDOUT))

    def run(*args, timeout=120):
        done = subprocess.run([str(BIN / args[0]), *args[1:]], env=env, cwd=root, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"{args}: {done.stdout[-3000:]} {done.stderr[-3000:]}"
        return done.stdout

    start(["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)], "server.log")

    def healthy():
        try:
            return httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    _wait(healthy, 120, "prefect server")
    run("prefect", "work-pool", "create", "cpu", "--type", "process")
    run("prefect", "work-pool", "create", "gpu", "--type", "process")
    llm = FakeLLM().__enter__()
    print(run("memorize", "deploy", "--base-url", llm.base_url, "--model", "fake-model"))
    start(["prefect", "worker", "start", "--pool", "cpu", "--limit", "2"], "worker-cpu.log")
    start(["prefect", "worker", "start", "--pool", "gpu", "--limit", "1"], "worker-gpu.log")
    docs = root / "docs"
    docs.mkdir()
    write_pdf(docs / "timetable.pdf", [[f"Page {p} rule {i}: the ferry leaves pier {i} at {i}:{p}5." for i in range(10)]
                                       for p in (1, 2)])
    yield {"env": env, "root": root, "run": run, "llm": llm, "docs": docs, "port": port}
    llm.__exit__(None, None, None)
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
    if os.environ.get("KEEP_OPS_LOGS"):
        shutil.copytree(root, os.environ["KEEP_OPS_LOGS"], dirs_exist_ok=True)


def _api(stack, method, path, body=None):
    r = httpx.request(method, f"http://127.0.0.1:{stack['port']}/api{path}", json=body, timeout=30)
    r.raise_for_status()
    return r.json()


def _flow_runs(stack, flow_name):
    runs = _api(stack, "POST", "/flow_runs/filter", {"flows": {"name": {"any_": [flow_name]}}, "sort": "EXPECTED_START_TIME_DESC"})
    return runs


def _wait_for_new_run(stack, seen):
    return _wait(lambda: next((r for r in _flow_runs(stack, "build-dataset") if r["id"] not in seen
                               and r["state_type"] in ("COMPLETED", "FAILED", "CRASHED")), None), 240,
                 "a build-dataset run triggered by a change event")


def _deployment(stack, name):
    return _api(stack, "GET", f"/deployments/name/{name}")


def test_schedule_exists_and_is_inactive(stack):
    dep = _deployment(stack, "build-dataset/cpu")
    assert dep["work_pool_name"] == "cpu"
    assert [s["active"] for s in dep["schedules"]] == [False]
    assert dep["schedules"][0]["schedule"]["cron"] == "0 3 * * *"
    assert _deployment(stack, "finetune/gpu")["work_pool_name"] == "gpu"
    # typed parameters give the UI a form: every setting a typed field, no free-form dict anywhere
    schema = _deployment(stack, "finetune/gpu")["parameter_openapi_schema"]
    train = schema["definitions"]["TrainSettings"]["properties"]
    assert train["epochs"]["type"] == "number" and train["qlora"]["type"] == "boolean"
    assert train["epochs"]["default"] == TrainSettings().epochs
    assert {t["type"] for t in train["learning_rate"]["anyOf"]} == {"number", "null"}  # none: by LoRA or --full
    for name in ("build-dataset/cpu", "finetune/gpu", "evaluate/cpu", "memorize/cpu"):
        schema = _deployment(stack, name)["parameter_openapi_schema"]
        for model in [schema, *schema.get("definitions", {}).values()]:
            for field, spec in model["properties"].items():
                assert spec.get("type") != "object" or "properties" in spec, f"{name}: {field} is a free-form dict"


def test_cli_deployment_run_and_change_event_regenerates_only_changed_chunks(stack):
    out, cache = stack["root"] / "data", stack["root"] / "cache"
    stack["run"]("prefect", "deployment", "run", "build-dataset/cpu",
                 "--param", f"documents={json.dumps([str(stack['docs'])])}", "--param", f"context={CONTEXT}",
                 "--param", f"out={out}", "--param", f"cache_dir={cache}", "--watch", "--watch-timeout", "240",
                 timeout=300)
    first = json.loads((out / "report.json").read_text())
    assert first["llm_calls"] == first["requests"] > 0 and first["failures"] == []

    # the watcher's first poll announces every document: a run that finds everything cached
    watch = ("memorize", "watch", str(stack["docs"]), "--context", CONTEXT, "--out", str(out),
             "--cache-dir", str(cache), "--once")
    seen = {r["id"] for r in _flow_runs(stack, "build-dataset")}
    assert "created" in stack["run"](*watch)
    run = _wait_for_new_run(stack, seen)
    assert run["state_type"] == "COMPLETED" and json.loads((out / "report.json").read_text())["llm_calls"] == 0

    write_pdf(stack["docs"] / "timetable.pdf", [[f"Page 1 rule {i}: the ferry leaves pier {i} at {i}:15." for i in range(10)],
                                                ["Page 2 was rewritten: the ferry no longer stops at pier 3."]])
    seen = {r["id"] for r in _flow_runs(stack, "build-dataset")}
    printed = stack["run"](*watch)
    assert "modified" in printed and "timetable.pdf" in printed
    run = _wait_for_new_run(stack, seen)
    assert run["state_type"] == "COMPLETED", run["state"]
    assert run["parameters"]["documents"] == [str(stack["docs"].resolve())]
    report = json.loads((out / "report.json").read_text())
    assert report["llm_calls"] == 3  # page 2 is one new chunk, asked at the default three temperatures
    assert report["cache_hits"] == report["requests"] - 3 > 0


def test_end_to_end_flow_sends_training_to_the_gpu_pool(stack):
    out = stack["root"] / "pipeline"
    params = {"documents": [str(stack["docs"])], "context": CONTEXT, "out": str(out), "train_on_pool": "gpu",
              "cache_dir": str(stack["root"] / "cache2"),
              # a section given here replaces the deployment's default one: the endpoint is repeated
              "generation": {"base_url": stack["llm"].base_url, "model": "fake-model", "temperatures": 1,
                             "chunk_tokens": 80, "test_ratio": 0.3},
              "training": {"max_steps": 3, "max_length": 128, "replay_ratio": 0},
              "evaluation": {"max_test_questions": 2, "include_general": False, "batch_size": 2}}
    stack["run"]("prefect", "deployment", "run", "memorize/cpu", "--params", json.dumps(params),
                 "--watch", "--watch-timeout", "500", timeout=560)
    train_runs = _flow_runs(stack, "finetune")
    assert train_runs and train_runs[0]["state_type"] == "COMPLETED"
    assert train_runs[0]["work_pool_name"] == "gpu"
    assert (out / "model" / "adapter" / "adapter_config.json").exists()  # LoRA by default
    summary = json.loads((out / "eval" / "eval.json").read_text())
    held_out = sum(json.loads(line)["split"] == "test" for line in open(out / "data" / "qa.jsonl"))
    for system in ("base", "fine_tuned", "in_context"):  # every system answered every held-out question asked
        assert summary[system]["test_split"]["n"] == summary[system]["test_split"]["n_scored"] == min(2, held_out) > 0
