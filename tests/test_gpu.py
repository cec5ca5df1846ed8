"""The Unsloth path, on a CUDA GPU with unsloth installed (``pytest -m gpu``; skipped elsewhere, and CI
never needs them): a padding-free row computes what separate rows compute (no example sees another),
QLoRA trains, ``--from-adapter`` continues an adapter, a bf16 merged export loads.

The model is Qwen3-shaped and small (random weights, the tiny model's tokenizer): what is checked is
how rtrain feeds Unsloth, not what a model learns."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import SAMPLE, chat, last_json, launch

pytestmark = pytest.mark.gpu


def _cuda_and_unsloth() -> str | None:
    import importlib.util

    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "needs a CUDA GPU"
    if importlib.util.find_spec("unsloth") is None:
        return "needs unsloth (pip install -e '.[train,unsloth]')"
    return None


if _cuda_and_unsloth():
    pytest.skip(_cuda_and_unsloth(), allow_module_level=True)


@pytest.fixture(scope="module")
def qwen3_small(tiny_model: Path, tmp_path_factory) -> Path:
    """A small Qwen3 (bf16, random) with the tiny model's tokenizer and chat template."""
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    folder = tmp_path_factory.mktemp("models") / "qwen3-small"
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    torch.manual_seed(0)
    config = Qwen3Config(hidden_size=512, intermediate_size=1024, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=128, vocab_size=len(tokenizer),
                         max_position_embeddings=4096, tie_word_embeddings=True)
    Qwen3ForCausalLM(config).to(torch.bfloat16).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_an_unsloth_padding_free_row_computes_what_separate_rows_do(qwen3_small: Path) -> None:
    os.environ["UNSLOTH_RETURN_LOGITS"] = "1"
    from unsloth import FastLanguageModel  # noqa: I001

    import torch
    from transformers import AutoTokenizer

    from remote.data import PAD_TOKENS, REAL_TOKENS, Sourced, tokenize_all
    from remote.jobconfig import TrainConfig
    from remote.modeling import enable_unsloth_padding_free, unsloth_padding_free_problem
    from remote.trainer import TokenCounts, counting_trainer, plan_batches, training_arguments

    model, _ = FastLanguageModel.from_pretrained(model_name=str(qwen3_small), max_seq_length=512,
                                                 dtype=torch.bfloat16, load_in_4bit=False)
    model = FastLanguageModel.get_peft_model(model, r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                             use_gradient_checkpointing=False)
    assert unsloth_padding_free_problem(model) is None
    tokenizer = AutoTokenizer.from_pretrained(qwen3_small)
    items = tokenize_all(tokenizer, [Sourced("t", i, chat(("user", q), ("assistant", a))) for i, (q, a) in
                                     enumerate([("What is 2 plus 2?", "4."), ("Name a colour.", "Blue."),
                                                ("Say hi to me, please.", "Hi there!")])], 256, {}).items
    cfg = TrainConfig(job_id="gpu", model=str(qwen3_small), datasets=["x"], max_seq_length=256, batch_size=2)
    batches = plan_batches(cfg, "unsloth", tokenizer.pad_token_id, type("D", (), {"items": items})(), None)
    trainer = counting_trainer(TokenCounts(), model=model, args=training_arguments(cfg, "cuda", True, False),
                               train_dataset=batches.train, data_collator=batches.collator)
    enable_unsloth_padding_free(model, trainer)
    batch = batches.collator([[items[0], items[1]], items[2]])
    inputs = {k: v.cuda() if hasattr(v, "cuda") else v for k, v in batch.items() if k not in (REAL_TOKENS, PAD_TOKENS)}
    inputs.pop("labels")
    model.eval()
    with torch.no_grad():
        packed = model(**inputs).logits[0].float()
        at = 0
        for item in items:
            alone = model(input_ids=torch.tensor([item["input_ids"]], device="cuda")).logits[0].float()
            n = len(item["input_ids"])
            scale = alone.abs().mean()
            assert (packed[at:at + n] - alone).abs().max() < 0.05 * scale, f"example at {at} saw its neighbours"
            at += n


def _launch(*args: str) -> dict:
    proc = launch("--local", *args, "--dataset", str(SAMPLE), "--json")
    assert proc.returncode == 0, proc.stderr
    return last_json(proc)


def _metrics(job: dict) -> dict:
    return json.loads((Path(job["output_dir"]) / "metrics.json").read_text())


def test_qlora_trains_with_unsloth(home: Path, qwen3_small: Path) -> None:
    job = _launch("--model", str(qwen3_small), "--load-in-4bit", "--max-steps", "6", "--max-seq-length", "512")
    metrics = _metrics(job)
    assert metrics["engine"] == "unsloth" and metrics["batch_layout"].startswith("one row per step")
    assert metrics["final_loss"] < metrics["first_loss"] and metrics["peak_vram_gb"] > 0


def test_from_adapter_continues_where_the_adapter_left_off(home: Path, qwen3_small: Path) -> None:
    first = _launch("--model", str(qwen3_small), "--max-steps", "20", "--lr", "1e-3", "--max-seq-length", "512")
    second = _launch("--model", str(qwen3_small), "--from-adapter", first["adapter_dir"], "--max-steps", "3",
                     "--lr", "1e-3", "--max-seq-length", "512")
    fresh = _launch("--model", str(qwen3_small), "--max-steps", "3", "--lr", "1e-3", "--max-seq-length", "512")
    # the continued run starts where the first ended, far below a fresh adapter's start
    assert _metrics(second)["first_loss"] < _metrics(fresh)["first_loss"]
    assert _metrics(second)["engine"] == "unsloth"


def test_a_bf16_merged_export_loads_in_bf16(home: Path, qwen3_small: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    job = _launch("--model", str(qwen3_small), "--max-steps", "3", "--merged", "--max-seq-length", "512")
    merged = AutoModelForCausalLM.from_pretrained(Path(job["output_dir"]) / "export" / "merged")
    assert next(merged.parameters()).dtype == torch.bfloat16
