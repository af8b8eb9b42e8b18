"""Loading a base model (optionally 4-bit, optionally with a LoRA adapter) and its tokenizer."""
from __future__ import annotations

from pathlib import Path

import torch


class ModelLoadError(RuntimeError):
    pass


def has_cuda() -> bool:
    return torch.cuda.is_available()


def best_dtype() -> torch.dtype:
    """bf16 where the hardware supports it, else fp32 (fp16 training on CPU is not supported)."""
    if has_cuda():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def load_tokenizer(model_id: str, chat_template: str | None = None):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(model_id)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"base model {model_id!r} not found or unreadable: {exc}. Pass a local folder with "
            "config.json/tokenizer files, or a Hub id reachable from this machine."
        ) from exc
    if chat_template:
        path = Path(chat_template)
        tok.chat_template = path.read_text() if path.exists() else chat_template
    if not tok.chat_template:
        raise ModelLoadError(
            f"tokenizer of {model_id!r} has no chat template; pass --chat-template FILE_OR_JINJA "
            "(for example the ChatML template) to say how conversations are formatted."
        )
    if tok.pad_token is None:
        # Reuse an existing token rather than growing the vocabulary (which would need resized
        # embeddings saved with the adapter).
        tok.pad_token = tok.unk_token or tok.eos_token
    return tok


def quantization_config(load_in_4bit: bool):
    if not load_in_4bit:
        return None
    if not has_cuda():
        raise ModelLoadError(
            "QLoRA (4-bit) needs a CUDA GPU and bitsandbytes; this machine has no CUDA. "
            "Drop --qlora to train a plain LoRA, or run the training on a GPU worker."
        )
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=best_dtype(),
    )


def load_model(model_id: str, load_in_4bit: bool = False, adapter: str | None = None,
               dtype: torch.dtype | None = None):
    from transformers import AutoModelForCausalLM

    qconf = quantization_config(load_in_4bit)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            model_id,
            dtype=dtype or best_dtype(),
            quantization_config=qconf,
            device_map={"": 0} if has_cuda() else None,
        )
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"base model {model_id!r} could not be loaded: {exc}") from exc
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    return model


def context_length(model_id: str) -> int | None:
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model_id)
    return getattr(cfg, "max_position_embeddings", None)
