"""Loading the tokenizer, the base model, and LoRA on it.

Unsloth's ``FastLanguageModel`` when CUDA is there and unsloth is installed (it is 2x faster and
needs less memory); plain transformers + peft everywhere else. Unsloth is never imported without a
GPU: its import raises there. The tokenizer is loaded on its own first, so that the data can be
checked before gigabytes of weights are.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from typing import Any

from remote.jobconfig import TrainConfig

#: Projections Unsloth patches; "all-linear" means these for it.
UNSLOTH_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class Loaded:
    model: Any
    engine: str  # "unsloth" or "transformers+peft"
    device: str
    bf16: bool
    #: Unsloth only: why its padding-free batches cannot be used with this model (None: they can)
    padding_free_problem: str | None = None


def pick_engine() -> tuple[str, str]:
    import torch

    if torch.cuda.is_available():
        engine = "unsloth" if importlib.util.find_spec("unsloth") is not None else "transformers+peft"
        return engine, f"cuda ({torch.cuda.get_device_name(0)})"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "transformers+peft", "mps"
    return "transformers+peft", "cpu"


def load_tokenizer(cfg: TrainConfig) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(cfg.model)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_for_training(cfg: TrainConfig) -> Loaded:
    engine, device = pick_engine()
    if engine != "unsloth":
        why = "unsloth is not installed" if device.startswith("cuda") else f"no CUDA GPU ({device})"
        print(f"[trainer] using transformers + peft: {why}", file=sys.stderr)
        return _load_peft(cfg, device)
    return _load_unsloth(cfg, device)


def _load_unsloth(cfg: TrainConfig, device: str) -> Loaded:
    from unsloth import FastLanguageModel, is_bfloat16_supported  # noqa: I001 (must precede transformers)

    checkpointing = "unsloth" if cfg.gradient_checkpointing is not False else False
    model, _ = FastLanguageModel.from_pretrained(
        model_name=cfg.model, max_seq_length=cfg.max_seq_length, dtype=None, load_in_4bit=cfg.load_in_4bit
    )
    if cfg.from_adapter:
        from peft import PeftModel

        # What Unsloth's own loader does with an adapter folder (unsloth/models/loader.py): the adapter
        # loaded trainable, then patch_peft_model for its fused LoRA kernels and gradient checkpointing.
        # The base is loaded from cfg.model, not from the adapter's config (which names the user's copy).
        model = PeftModel.from_pretrained(model, cfg.from_adapter, is_trainable=True)
        model = FastLanguageModel.patch_peft_model(model, use_gradient_checkpointing=checkpointing)
    else:
        targets = UNSLOTH_TARGETS if cfg.target_modules == "all-linear" else cfg.target_modules
        model = FastLanguageModel.get_peft_model(
            model, r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
            target_modules=targets, bias="none", use_gradient_checkpointing=checkpointing,
            random_state=cfg.seed, use_rslora=False,  # llama.cpp scales by alpha/rank
        )
    return Loaded(model, "unsloth", device, bool(is_bfloat16_supported()), unsloth_padding_free_problem(model))


def unsloth_padding_free_problem(model: Any) -> str | None:
    """Why Unsloth's padding-free path cannot take this model, asked the way Unsloth's own SFT trainer
    asks it (unsloth/trainer.py: the forward must accept ``packed_seq_lengths``); None when it can."""
    try:
        from unsloth.trainer import _forward_accepts_packing_kwargs
        from unsloth.utils.packing import enable_sample_packing  # noqa: F401 (what enable_... below calls)
    except ImportError as exc:
        return f"this Unsloth lacks its packing utilities ({exc})"
    if not _forward_accepts_packing_kwargs(model):
        return f"{type(model).__name__}.forward does not accept packed_seq_lengths"
    return None


def enable_unsloth_padding_free(model: Any, trainer: Any) -> None:
    """Unsloth's own switch for packed batches (what its SFT trainer calls): lets a row exceed
    max_seq_length and routes attention through its varlen kernels. The collator is rtrain's
    FlatCollator, which already gives ``packed_seq_lengths`` (so Unsloth leaves it unwrapped)."""
    from unsloth.utils.packing import enable_sample_packing

    enable_sample_packing(model, trainer)


def _load_peft(cfg: TrainConfig, device: str) -> Loaded:
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    cuda = device.startswith("cuda")
    bf16 = cuda and torch.cuda.is_bf16_supported()
    kwargs: dict[str, Any] = {"dtype": torch.bfloat16 if bf16 else torch.float32}
    if cfg.load_in_4bit:
        if not cuda:
            raise RuntimeError("load_in_4bit needs a CUDA GPU (bitsandbytes); drop it for CPU runs")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16 if bf16 else torch.float16,
        )
    model = AutoModelForCausalLM.from_pretrained(cfg.model, **kwargs)
    model.config.use_cache = False  # training; and packed rows get their block mask only without a cache
    if cfg.load_in_4bit:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model)
    if cfg.gradient_checkpointing or (cfg.gradient_checkpointing is None and cuda):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    if cfg.from_adapter:
        model = PeftModel.from_pretrained(model, cfg.from_adapter, is_trainable=True)
    else:
        lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=cfg.target_modules, bias="none", task_type="CAUSAL_LM", use_rslora=False)
        model = get_peft_model(model, lora)
    return Loaded(model, "transformers+peft", device, bf16)


def count_parameters(model: Any) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
