"""GGUF LoRA adapters against llama.cpp's own ``convert_lora_to_gguf.py``, tensor by tensor, for every
architecture rtrain exports (remote/families.py): same names, shapes, types and values, same adapter
metadata. Llama and Mistral are the ones that matter most: llama.cpp permutes their q/k rows, and an
adapter whose ``lora_B`` is not permuted the same way computes garbage there."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from references import llama_cpp

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

SHAPE = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=300)
CONFIGS = {
    "llama": lambda: transformers.LlamaConfig(**SHAPE),
    "mistral": lambda: transformers.MistralConfig(**SHAPE),
    "qwen2": lambda: transformers.Qwen2Config(**SHAPE),
    "qwen3": lambda: transformers.Qwen3Config(**SHAPE, head_dim=16),
    "gemma2": lambda: transformers.Gemma2Config(**SHAPE, head_dim=16),
}


def base_and_adapter(folder: Path, model_type: str) -> tuple[Path, Path]:
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(CONFIGS[model_type]())
    base, adapter = folder / model_type, folder / f"{model_type}-lora"
    model.save_pretrained(base)
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    peft.get_peft_model(model, lora).save_pretrained(adapter)
    return base, adapter


def read(path: Path) -> tuple[dict[str, object], dict[str, object]]:
    reader = gguf.GGUFReader(str(path))
    wanted = ("general.architecture", "general.type", "adapter.type", "adapter.lora.alpha")
    meta = {}
    for key in wanted:
        part = reader.fields[key].parts[reader.fields[key].data[0]]
        meta[key] = bytes(part).decode() if part.dtype == "uint8" else float(part[0])
    return meta, {t.name: t for t in reader.tensors}


@pytest.mark.parametrize("model_type", sorted(CONFIGS))
def test_the_gguf_adapter_is_the_one_llama_cpp_writes(model_type: str, tmp_path: Path, cli) -> None:
    reference_dir = llama_cpp()
    base, adapter = base_and_adapter(tmp_path, model_type)
    ours = cli("export", str(adapter), "--gguf", "--base", str(base), "--out", str(tmp_path / "ours"))
    assert ours.code == 0, ours.err
    theirs = tmp_path / "llama.cpp.gguf"
    converted = subprocess.run([sys.executable, str(reference_dir / "convert_lora_to_gguf.py"), "--base", str(base),
                                "--outfile", str(theirs), str(adapter)], capture_output=True, text=True)
    assert converted.returncode == 0, converted.stderr[-2000:]

    our_meta, our_tensors = read(tmp_path / "ours" / "adapter.gguf")
    their_meta, their_tensors = read(theirs)
    assert our_meta == their_meta
    assert sorted(our_tensors) == sorted(their_tensors) and len(our_tensors) == 2 * 7 * 2
    for name, theirs_t in their_tensors.items():
        ours_t = our_tensors[name]
        assert ours_t.tensor_type == theirs_t.tensor_type, name
        assert tuple(ours_t.shape) == tuple(theirs_t.shape), name
        assert (ours_t.data == theirs_t.data).all(), f"{name} differs from llama.cpp's"


def test_the_permutation_is_what_makes_llama_right(tmp_path: Path) -> None:
    # without llama.cpp's q/k permutation a Llama adapter's q and k lora_b differ from the converter's
    import numpy as np
    from safetensors.numpy import load_file

    from remote.export import rope_permute_rows

    _, adapter = base_and_adapter(tmp_path, "llama")
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    b = tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"]
    permuted = rope_permute_rows(b, 4)
    assert not np.array_equal(permuted, b) and sorted(permuted.ravel()) == sorted(b.ravel())


def test_an_architecture_llama_cpp_cannot_take_is_refused_before_training(home: Path, tmp_path: Path) -> None:
    from conftest import SAMPLE, launch

    model = transformers.AutoModelForCausalLM.from_config(
        transformers.GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=100))
    model.save_pretrained(tmp_path / "gpt2-tiny")
    proc = launch("--local", "--model", str(tmp_path / "gpt2-tiny"), "--dataset", str(SAMPLE), "--gguf")
    assert proc.returncode == 2
    assert "is a 'gpt2' model, and rtrain writes llama.cpp adapters only for" in proc.stderr
    assert not (home / "local" / "jobs").exists() or not any((home / "local" / "jobs").iterdir())
