"""Serving files from a real adapter on the tiny model: GGUF read back with gguf's own reader, an
Ollama Modelfile, a merged model that computes what base + adapter computes, exact adapter sums."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")
transformers = pytest.importorskip("transformers")


def make_adapter(base: Path, out: Path, seed: int, targets: list[str] | str = "all-linear", rank: int = 4) -> Path:
    """A LoRA adapter with random (non-zero) A and B, as training would leave it."""
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_pretrained(base)
    config = peft.LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets, init_lora_weights=False,
                             task_type="CAUSAL_LM")
    peft.get_peft_model(model, config).save_pretrained(out)
    transformers.AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapter(tiny_model: Path, tmp_path_factory) -> Path:
    return make_adapter(tiny_model, tmp_path_factory.mktemp("adapters") / "a", seed=1)


def test_gguf_adapter_reads_back_with_llama_cpp_names_shapes_and_alpha(adapter: Path, tiny_model: Path,
                                                                       tmp_path: Path, cli) -> None:
    from gguf import GGUFReader

    result = cli("export", str(adapter), "--gguf", "--base", str(tiny_model), "--out", str(tmp_path / "x"))
    assert result.code == 0, result.err
    reader = GGUFReader(str(tmp_path / "x" / "adapter.gguf"))
    field = lambda name: reader.fields[name]  # noqa: E731
    assert bytes(field("general.type").parts[-1]).decode() == "adapter"
    assert bytes(field("adapter.type").parts[-1]).decode() == "lora"
    assert float(field("adapter.lora.alpha").parts[-1][0]) == 8.0
    assert bytes(field("general.architecture").parts[-1]).decode() == "qwen2"
    tensors = {t.name: t for t in reader.tensors}
    assert len(tensors) == 2 * 7 * 2  # 2 layers x 7 projections x (A, B)
    q_a, q_b = tensors["blk.0.attn_q.weight.lora_a"], tensors["blk.0.attn_q.weight.lora_b"]
    down_a = tensors["blk.1.ffn_down.weight.lora_a"]
    assert tuple(q_a.data.shape) == (4, 64) and tuple(q_b.data.shape) == (64, 4)  # (r, in), (out, r)
    assert tuple(down_a.data.shape) == (4, 176)
    from safetensors.numpy import load_file

    original = load_file(str(adapter / "adapter_model.safetensors"))
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    assert (q_a.data == original[key]).all()


def test_modelfile_and_model_info(adapter: Path, tiny_model: Path, tmp_path: Path, cli) -> None:
    result = cli("export", str(adapter), "--modelfile", "--base", str(tiny_model), "--out", str(tmp_path / "o"))
    assert result.code == 0, result.err
    text = (tmp_path / "o" / "Modelfile").read_text()
    assert "ADAPTER ./adapter.gguf" in text and "FROM ./base.gguf" in text
    assert 'PARAMETER stop "<|im_end|>"' in text and '{{ "<|im_end|>\\n<|im_start|>assistant\\n" }}' in text
    assert "PARAMETER temperature 0.7" in text and "PARAMETER top_p 0.9" in text
    info = json.loads((tmp_path / "o" / "model_info.json").read_text())
    assert info["adapter"]["rank"] == 4 and info["adapter"]["alpha"] == 8
    assert info["files"] == ["Modelfile", "adapter.gguf"]


def test_a_known_base_gets_its_ollama_name(adapter: Path) -> None:
    from remote.export import ollama_template
    from remote.ollama import modelfile_text

    turns = ollama_template(transformers.AutoTokenizer.from_pretrained(adapter))
    assert "FROM qwen3:14b" in modelfile_text(turns, "unsloth/Qwen3-14B", "adapter.gguf")
    assert "FROM llama3.1:8b" in modelfile_text(turns, "unsloth/Meta-Llama-3.1-8B-Instruct", "a.gguf")
    assert "FROM ./base.gguf" in modelfile_text(turns, "my-org/my-model", "a.gguf")


def test_gguf_refuses_an_adapter_with_embedding_weights(tiny_model: Path, tmp_path: Path, cli) -> None:
    embed = make_adapter(tiny_model, tmp_path / "embed", seed=2, targets=["q_proj", "embed_tokens"])
    result = cli("export", str(embed), "--gguf", "--base", str(tiny_model))
    assert result.code == 2
    assert "carries embed_tokens weights, which a llama.cpp LoRA adapter cannot hold" in result.err


def test_merged_model_computes_what_base_plus_adapter_computes(adapter: Path, tiny_model: Path,
                                                                tmp_path: Path, cli) -> None:
    result = cli("export", str(adapter), "--merged", "--base", str(tiny_model), "--out", str(tmp_path / "m"))
    assert result.code == 0, result.err
    merged = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "m" / "merged")
    with_adapter = peft.PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_pretrained(tiny_model),
                                                  adapter)
    ids = torch.tensor([[5, 17, 99, 3, 42]])
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, with_adapter(ids).logits, atol=1e-4)
    assert (tmp_path / "m" / "merged" / "tokenizer.json").is_file()


def test_merge_into_a_4bit_base_is_refused_unless_forced(adapter: Path, tiny_model: Path, tmp_path: Path,
                                                        cli) -> None:
    four_bit = tmp_path / "tiny-4bit"
    shutil.copytree(tiny_model, four_bit)
    config = json.loads((four_bit / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (four_bit / "config.json").write_text(json.dumps(config))
    result = cli("export", str(adapter), "--merged", "--base", str(four_bit))
    assert result.code == 2 and "is a 4-bit model: merging rounds the adapter into 4-bit weights" in result.err


def test_merge_adapters_is_the_exact_weighted_sum(tiny_model: Path, tmp_path: Path, cli) -> None:
    a = make_adapter(tiny_model, tmp_path / "a", seed=3)
    b = make_adapter(tiny_model, tmp_path / "b", seed=4)
    out = tmp_path / "c"
    result = cli("merge-adapters", str(a), str(b), "--weights", "0.7,0.3", "--out", str(out),
                 "--base", str(tiny_model))
    assert result.code == 0, result.err
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()

    def q_weight(adapter_dir: Path | None) -> torch.Tensor:
        model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model)
        if adapter_dir is not None:
            model = peft.PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
        return model.model.layers[0].self_attn.q_proj.weight.detach().clone()

    base, wa, wb, wc = q_weight(None), q_weight(a), q_weight(b), q_weight(out)
    assert torch.allclose(wc - base, 0.7 * (wa - base) + 0.3 * (wb - base), atol=1e-5)
    bad = cli("merge-adapters", str(a), str(b), "--weights", "0.7", "--out", str(tmp_path / "d"))
    assert bad.code == 2 and "1 weights for 2 adapters" in bad.err


def test_merged_keeps_the_bases_bf16_on_a_cpu(tiny_model: Path, tmp_path: Path, cli) -> None:
    from safetensors import safe_open

    bf16_base = tmp_path / "tiny-bf16"
    transformers.AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.bfloat16).save_pretrained(bf16_base)
    transformers.AutoTokenizer.from_pretrained(tiny_model).save_pretrained(bf16_base)
    adapter = make_adapter(bf16_base, tmp_path / "a", seed=6)
    result = cli("export", str(adapter), "--merged", "--base", str(bf16_base), "--out", str(tmp_path / "m"))
    assert result.code == 0, result.err
    with safe_open(str(tmp_path / "m" / "merged" / "model.safetensors"), "pt") as f:
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}
    assert dtypes == {torch.bfloat16}
    config = json.loads((tmp_path / "m" / "merged" / "config.json").read_text())
    assert (config.get("dtype") or config.get("torch_dtype")) == "bfloat16"
