"""What rtrain knows of model architectures, where they matter for serving (standard library only:
the launcher refuses impossible exports with it before anything is rented).

``GGUF_ARCHS`` lists the transformers ``model_type`` values whose LoRA adapters rtrain writes as
llama.cpp GGUF adapters, each tested tensor by tensor against llama.cpp's own
``convert_lora_to_gguf.py`` (tests/test_gguf_reference.py). llama.cpp's converter permutes the q/k
projection rows of Llama-family checkpoints (its rotary embedding pairs dimensions differently from
transformers'), and an adapter's ``lora_B`` must be permuted the same way, or its effect is garbage.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GGUFArch:
    #: llama.cpp's architecture name (``general.architecture``)
    arch: str
    #: llama.cpp's converter permutes q_proj/k_proj rows (``LlamaModel.permute``) for this family
    permute_qk: bool = False


GGUF_ARCHS: dict[str, GGUFArch] = {
    "llama": GGUFArch("llama", permute_qk=True),
    "mistral": GGUFArch("llama", permute_qk=True),  # llama.cpp converts HF Mistral as LLAMA
    "qwen2": GGUFArch("qwen2"),
    "qwen3": GGUFArch("qwen3"),
    "gemma2": GGUFArch("gemma2"),
}


def gguf_refusal(model_type: str | None, model: str) -> str | None:
    """Why a GGUF adapter cannot be made for a base of ``model_type`` (None: it can)."""
    if model_type is None or model_type in GGUF_ARCHS:
        return None
    return (f"--gguf/--modelfile: {model} is a {model_type!r} model, and rtrain writes llama.cpp adapters only for "
            f"{', '.join(sorted(GGUF_ARCHS))} (each checked against llama.cpp's own converter)")
