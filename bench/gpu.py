"""rtrain's trainer against Unsloth's own notebook recipe on a CUDA GPU, in the same run: the same
random-initialised model of a real shape (Qwen3-1.7B's config, built here: no hub), the same synthetic
chats, the same LoRA, batch and step settings. Prints real (non-pad) tokens per second of each and the
ratio, peak VRAM, and first/last loss, for LoRA-16 and QLoRA. The goal: rtrain >= 1.0x the recipe.

    python bench/gpu.py [--steps 40] [--batch-size 2] [--grad-accum 4] [--max-seq-length 2048]

The recipe is Unsloth's Qwen3 notebook: FastLanguageModel + TRL's SFTTrainer on chat-templated text,
``train_on_responses_only``, Unsloth's automatic padding-free batches, adamw_8bit. Each run is its own
process (memory and Unsloth's patches do not carry over). Without CUDA or unsloth it says so and
exits 0: CI never needs a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Qwen3-1.7B's config.json (the shape; the weights here are random)
QWEN3_1_7B = dict(architectures=["Qwen3ForCausalLM"], model_type="qwen3", hidden_size=2048, intermediate_size=6144,
                  num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                  vocab_size=151936, max_position_embeddings=40960, rope_theta=1000000.0, rms_norm_eps=1e-6,
                  tie_word_embeddings=True, hidden_act="silu", attention_bias=False, torch_dtype="bfloat16")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
WORDS = ("model data train token answer question river mountain green quick light system value number paper "
         "window garden music table street morning energy signal market planet memory window story").split()


def why_not_here() -> str | None:
    import importlib.util

    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return "no CUDA GPU"
    if importlib.util.find_spec("unsloth") is None:
        return "unsloth is not installed (pip install -e '.[train,unsloth]')"
    return None


def synthetic_chats(path: Path, count: int, seed: int = 0) -> Path:
    """Conversations of varied length (tens to about a thousand tokens), some multi-turn, some with a
    system prompt: the length spread that makes padding cost something."""
    rng = random.Random(seed)

    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))).capitalize() + "."

    with path.open("w", encoding="utf-8") as fh:
        for _ in range(count):
            messages = [{"role": "system", "content": text(5, 20)}] if rng.random() < 0.3 else []
            for _turn in range(rng.choice((1, 1, 2, 3))):
                messages += [{"role": "user", "content": text(5, 120)},
                             {"role": "assistant", "content": text(10, 400)}]
            fh.write(json.dumps({"messages": messages}) + "\n")
    return path


def build_model(folder: Path, chats: Path) -> Path:
    """Qwen3-1.7B's shape with random bf16 weights and a BPE tokenizer trained on the chats (ChatML)."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from remote.tiny_model import build_tokenizer

    torch.manual_seed(0)
    config = Qwen3Config(**{k: v for k, v in QWEN3_1_7B.items() if k not in ("architectures", "model_type")})
    model = Qwen3ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    tokenizer = build_tokenizer([chats], 8192)
    tokenizer.save_pretrained(folder)  # type: ignore[attr-defined]
    return folder


def run_rtrain(work: Path, model: Path, chats: Path, args: argparse.Namespace, qlora: bool) -> dict:
    folder = work / f"rtrain-{'qlora' if qlora else 'lora16'}"
    folder.mkdir()
    job = {"job_id": "bench", "model": str(model), "datasets": [str(chats)], "max_steps": args.steps,
           "batch_size": args.batch_size, "grad_accum": args.grad_accum, "max_seq_length": args.max_seq_length,
           "lr": 2e-4, "lora_rank": 16, "lora_alpha": 16, "target_modules": TARGETS, "load_in_4bit": qlora,
           "eval_fraction": 0, "warmup_steps": 5, "weight_decay": 0.01, "seed": 3407}
    (folder / "job.json").write_text(json.dumps(job))
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    subprocess.run([sys.executable, "-m", "remote.train", "--config", str(folder / "job.json")], cwd=folder, env=env,
                   check=True)
    m = json.loads((folder / "output" / "metrics.json").read_text())
    return {"tokens": m["tokens_trained"], "runtime_s": m["runtime_s"], "tokens_per_s": m["tokens_per_s"],
            "peak_vram_gb": m["peak_vram_gb"], "first_loss": m["first_loss"], "final_loss": m["final_loss"],
            "engine": m["engine"], "layout": m["batch_layout"]}


def run_recipe(work: Path, model: Path, chats: Path, args: argparse.Namespace, qlora: bool) -> dict:
    spec = {"model": str(model), "chats": str(chats), "steps": args.steps, "batch_size": args.batch_size,
            "grad_accum": args.grad_accum, "max_seq_length": args.max_seq_length, "qlora": qlora,
            "out": str(work / f"recipe-{'qlora' if qlora else 'lora16'}")}
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    done = subprocess.run([sys.executable, __file__, "--recipe", json.dumps(spec)], env=env, check=True,
                          stdout=subprocess.PIPE, text=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def recipe(spec: dict) -> None:
    """Unsloth's Qwen3 notebook, as it is written, on the local model (one process)."""
    from unsloth import FastLanguageModel  # noqa: I001 (unsloth first, as its notebooks do)
    from unsloth.chat_templates import train_on_responses_only

    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=spec["model"], max_seq_length=spec["max_seq_length"], load_in_4bit=spec["qlora"], dtype=None)
    model = FastLanguageModel.get_peft_model(model, r=16, target_modules=TARGETS, lora_alpha=16, lora_dropout=0,
                                             bias="none", use_gradient_checkpointing="unsloth", random_state=3407)
    rows = [json.loads(line) for line in Path(spec["chats"]).read_text().splitlines()]
    texts = [tokenizer.apply_chat_template(r["messages"], tokenize=False) for r in rows]
    trainer = SFTTrainer(model=model, processing_class=tokenizer, train_dataset=Dataset.from_dict({"text": texts}),
                         args=SFTConfig(dataset_text_field="text", per_device_train_batch_size=spec["batch_size"],
                                        gradient_accumulation_steps=spec["grad_accum"], warmup_steps=5,
                                        max_steps=spec["steps"], learning_rate=2e-4, logging_steps=1,
                                        optim="adamw_8bit", weight_decay=0.01, lr_scheduler_type="linear",
                                        seed=3407, report_to="none", max_length=spec["max_seq_length"],
                                        output_dir=spec["out"]))
    trainer = train_on_responses_only(trainer, instruction_part="<|im_start|>user\n",
                                      response_part="<|im_start|>assistant\n")
    counted = {"tokens": 0}
    step = trainer.training_step

    def counting_step(model: object, inputs: dict, *a: object, **kw: object) -> object:
        mask = inputs.get("attention_mask")
        counted["tokens"] += int(mask.sum()) if mask is not None else int(inputs["input_ids"].numel())
        return step(model, inputs, *a, **kw)

    trainer.training_step = counting_step
    t0 = time.monotonic()
    trainer.train()
    runtime = time.monotonic() - t0
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    print(json.dumps({"tokens": counted["tokens"], "runtime_s": round(runtime, 2),
                      "tokens_per_s": round(counted["tokens"] / runtime, 1),
                      "peak_vram_gb": round(torch.cuda.max_memory_reserved() / 2**30, 2),
                      "first_loss": losses[0], "final_loss": losses[-1], "engine": "unsloth (recipe)",
                      "layout": "TRL SFTTrainer, Unsloth's padding-free"}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--grad-accum", type=int, default=4)
    parser.add_argument("--max-seq-length", type=int, default=2048)
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--recipe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.recipe:
        recipe(json.loads(args.recipe))
        return 0
    missing = why_not_here()
    if missing:
        print(f"bench/gpu.py needs a CUDA GPU with unsloth installed: {missing}; nothing measured")
        return 0
    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        chats = synthetic_chats(work / "chats.jsonl", args.examples)
        model = build_model(work / "qwen3-1.7b-random", chats)
        print(f"Qwen3-1.7B shape (random weights), {args.examples} synthetic chats, {args.steps} steps x batch "
              f"{args.batch_size} x accumulation {args.grad_accum}, max_seq_length {args.max_seq_length}")
        print(f"{'':<10} {'run':<16} {'real tok/s':>11} {'x recipe':>9} {'peak VRAM':>10} {'first loss':>11} "
              f"{'last loss':>10}")
        for qlora in (False, True):
            label = "QLoRA" if qlora else "LoRA-16"
            base = run_recipe(work, model, chats, args, qlora)
            ours = run_rtrain(work, model, chats, args, qlora)
            for name, r in (("unsloth recipe", base), ("rtrain", ours)):
                ratio = r["tokens_per_s"] / base["tokens_per_s"]
                print(f"{label:<10} {name:<16} {r['tokens_per_s']:>11,.0f} {ratio:>9.2f} "
                      f"{r['peak_vram_gb']:>8.1f}GB {r['first_loss']:>11.3f} {r['final_loss']:>10.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
