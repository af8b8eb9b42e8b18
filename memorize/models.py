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


def inference_dtype() -> torch.dtype:
    """The dtype models answer in: as training on a GPU; on a CPU, bf16 where its cores multiply bf16 natively
    (AMX or AVX512-BF16: greedy answers came 2-2.5x faster than fp32 with the same accuracy, see
    docs/results.md), else fp32."""
    # torch's own CPU feature probes (private, hence looked up: a torch without them answers in fp32).
    native = any(getattr(torch.cpu, probe, lambda: False)() for probe in ("_is_amx_tile_supported",
                                                                         "_is_avx512_bf16_supported"))
    return torch.bfloat16 if native and not has_cuda() else best_dtype()


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
            dtype=dtype or inference_dtype(),
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


def load_tuned(model_id: str, adapter: str, dtype: torch.dtype | None = None) -> tuple:
    """(the fine-tuned model to answer with, whether the adapter was merged into it), in `dtype` (none:
    inference_dtype()).
    On a GPU: the base with the LoRA adapter on top, switched off (`disable_adapter`) for the base's own
    answers, one copy of the weights. On a CPU the adapter is merged into its own copy of the weights (on top,
    its many small products made fp32 answers 14-24 % slower); the base's own answers then need the base
    loaded beside it."""
    if has_cuda():
        return load_model(model_id, adapter=adapter, dtype=dtype), False
    merged = load_model(model_id, adapter=adapter, dtype=dtype).merge_and_unload()
    # peft froze these weights; frozen, torch multiplies the [batch, 1, hidden] last position by the
    # vocabulary head as a batched product that copies the head for every row (2.7x slower a token in bf16).
    merged.requires_grad_(True)
    return merged, True


def context_length(model_id: str) -> int | None:
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(model_id)
    return getattr(cfg, "max_position_embeddings", None)
