"""The files people serve with: a GGUF LoRA adapter for llama.cpp, an Ollama Modelfile, the merged
model (in the base's own dtype), ``model_info.json``; and combining two adapters into one.

``python -m remote.export export --adapter DIR --out DIR [--gguf] [--modelfile] [--merged] [--base M]``
``python -m remote.export merge-adapters A B --weights 0.7,0.3 --out C [--base M]``

Refusals (a merge into a 4-bit base, a GGUF of an adapter that carries embedding or lm_head weights)
are exit 2 with one line on stderr; the launcher shows it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from remote.families import GGUF_ARCHS, gguf_refusal
from remote.ollama import TemplateRefused, TurnTemplate, derive, modelfile_text, tokenizer_render

#: PEFT module names a llama.cpp LoRA adapter cannot hold
NOT_IN_GGUF = ("embed_tokens", "lm_head", "wte", "word_embeddings")
class Refused(Exception):
    """An export that would give a wrong or useless file: exit 2, with the reason."""


def adapter_config(adapter: Path) -> dict[str, Any]:
    return dict(json.loads((adapter / "adapter_config.json").read_text()))


def base_of(adapter: Path, base: str | None) -> str:
    found = base or adapter_config(adapter).get("base_model_name_or_path")
    if not found:
        raise Refused(f"{adapter}: adapter_config.json names no base model: give --base")
    return str(found)


def _base_config(base: str) -> dict[str, Any]:
    from transformers import AutoConfig

    return dict(AutoConfig.from_pretrained(base).to_dict())


# GGUF ---------------------------------------------------------------------------------------------


def gguf_adapter(adapter: Path, out: Path, base: str) -> Path:
    """A llama.cpp LoRA adapter (general.type adapter, adapter.lora.alpha) with llama.cpp's tensor
    names, and its q/k ``lora_B`` rows permuted where llama.cpp permutes the base's q/k rows: the same
    tensors llama.cpp's own ``convert_lora_to_gguf.py`` writes (tests/test_gguf_reference.py)."""
    import gguf
    from safetensors.numpy import load_file

    config = adapter_config(adapter)
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    carried = sorted({n for key in tensors for n in NOT_IN_GGUF if f".{n}." in key or key.endswith(f".{n}")})
    if carried or config.get("modules_to_save"):
        raise Refused(f"{adapter}: the adapter carries {', '.join(carried) or 'modules_to_save'} weights, which a "
                      "llama.cpp LoRA adapter cannot hold: export --merged instead")
    base_cfg = _base_config(base)
    refusal = gguf_refusal(base_cfg.get("model_type"), base)
    if refusal:
        raise Refused(refusal)
    family = GGUF_ARCHS[base_cfg["model_type"]]
    arch = next(a for a, name in gguf.MODEL_ARCH_NAMES.items() if name == family.arch)
    heads = {"q_proj": int(base_cfg["num_attention_heads"]),
             "k_proj": int(base_cfg.get("num_key_value_heads") or base_cfg["num_attention_heads"])}
    names = gguf.get_tensor_name_map(arch, int(base_cfg["num_hidden_layers"]))
    writer = gguf.GGUFWriter(str(out), family.arch)
    writer.add_string(gguf.Keys.General.TYPE, gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(config["lora_alpha"]))
    for key in sorted(tensors):
        # base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight -> blk.0.attn_q.weight.lora_a
        module, _, part = key.rpartition(".lora_")
        hf_name = module.removeprefix("base_model.model.") + ".weight"
        mapped = names.get_name(hf_name, try_suffixes=(".weight",))
        if mapped is None:
            raise Refused(f"{adapter}: no llama.cpp name for {hf_name}")
        data = tensors[key].astype("float32")
        projection = module.rsplit(".", 1)[-1]
        if part.startswith("B") and family.permute_qk and projection in heads:
            data = rope_permute_rows(data, heads[projection])
        writer.add_tensor(f"{mapped}.{'lora_a' if part.startswith('A') else 'lora_b'}", data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def rope_permute_rows(rows: Any, heads: int) -> Any:
    """llama.cpp's ``LlamaModel.permute`` on the output rows of a projection (its rotary embedding
    pairs dimensions ``(i, i + d/2)`` as interleaved ``(2i, 2i + 1)``); ``lora_B`` is ``(out, r)``."""
    shape = rows.shape
    return rows.reshape(heads, 2, shape[0] // heads // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def preflight(exports: list[str], base: str, tokenizer: Any, label: str | None = None) -> None:
    """Refuse, before any training, the exports that would be refused after it: a GGUF adapter for
    an architecture llama.cpp cannot take, a Modelfile for a chat template no Ollama template follows."""
    if {"gguf", "modelfile"} & set(exports):
        refusal = gguf_refusal(_base_config(base).get("model_type"), label or base)
        if refusal:
            raise Refused(refusal)
    if "modelfile" in exports:
        ollama_template(tokenizer)


# Ollama -------------------------------------------------------------------------------------------


def ollama_template(tokenizer: Any) -> TurnTemplate:
    """The Ollama turn template read off the tokenizer's chat template (Refused when none can be)."""
    from remote.data import ensure_chat_template

    ensure_chat_template(tokenizer)
    try:
        return derive(tokenizer_render(tokenizer), str(tokenizer.chat_template))
    except TemplateRefused as exc:
        raise Refused(f"--modelfile: {exc}") from None


def modelfile(out_dir: Path, base: str, adapter_gguf: str, adapter: Path) -> Path:
    """An Ollama Modelfile whose TEMPLATE renders turns as the adapter's tokenizer did in training."""
    from transformers import AutoTokenizer

    turns = ollama_template(AutoTokenizer.from_pretrained(str(adapter)))
    path = out_dir / "Modelfile"
    path.write_text(modelfile_text(turns, base, adapter_gguf), encoding="utf-8")
    return path


# merged model -------------------------------------------------------------------------------------


def base_dtype(base: str) -> Any:
    """The dtype the base model's checkpoint is stored in (bf16 for most hub models), float32 when
    its config does not say."""
    import torch

    config = _base_config(base)
    name = config.get("dtype") or config.get("torch_dtype") or "float32"
    dtype = getattr(torch, str(name).removeprefix("torch."), None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


def merged_model(adapter: Path, out: Path, base: str, force: bool = False) -> Path:
    """The base with the adapter merged in, saved in the base's own dtype (a bf16 base stays bf16,
    also when merged on a CPU)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quant = _base_config(base).get("quantization_config") or {}
    if (quant.get("load_in_4bit") or quant.get("bits") == 4) and not force:
        raise Refused(f"{base} is a 4-bit model: merging rounds the adapter into 4-bit weights and loses what it "
                      "learned; merge into the 16-bit base (--base) or pass --force")
    model = AutoModelForCausalLM.from_pretrained(base, dtype=base_dtype(base))
    model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(adapter) if (adapter / "tokenizer_config.json").exists() else base) \
        .save_pretrained(out)
    return out


# combining adapters -------------------------------------------------------------------------------


def merge_adapters(adapters: list[Path], weights: list[float], out: Path, base: str) -> Path:
    """One adapter whose update is exactly sum(w_i * update_i): PEFT's add_weighted_adapter with
    combination_type "cat" (the ranks add up; nothing is approximated)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    if len(adapters) != len(weights):
        raise Refused(f"--weights has {len(weights)} numbers for {len(adapters)} adapters")
    model = AutoModelForCausalLM.from_pretrained(base)
    names = [f"a{i}" for i in range(len(adapters))]
    model = PeftModel.from_pretrained(model, str(adapters[0]), adapter_name=names[0])
    for name, path in zip(names[1:], adapters[1:], strict=True):
        model.load_adapter(str(path), adapter_name=name)
    model.add_weighted_adapter(names, weights, "combined", combination_type="cat")
    staging = out.with_name(out.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(str(staging), selected_adapters=["combined"])
    inner = staging / "combined"  # PEFT saves a non-default adapter in a folder of its name
    shutil.rmtree(out, ignore_errors=True)
    shutil.move(str(inner if inner.is_dir() else staging), str(out))
    shutil.rmtree(staging, ignore_errors=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"):
        if (adapters[0] / name).exists():
            shutil.copy2(adapters[0] / name, out / name)
    return out


def model_info(out_dir: Path, adapter: Path, base: str, files: list[str], metrics: dict[str, Any]) -> Path:
    config = adapter_config(adapter)
    info = {"base_model": base, "adapter": {"rank": config.get("r"), "alpha": config.get("lora_alpha"),
                                            "target_modules": config.get("target_modules")},
            "training": {k: metrics.get(k) for k in ("steps", "final_loss", "eval_loss", "perplexity", "engine")},
            "files": sorted(files), "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    path = out_dir / "model_info.json"
    path.write_text(json.dumps(info, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def export(adapter: Path, out_dir: Path, *, base: str | None, gguf: bool, ollama: bool, merged: bool,
           force: bool = False, metrics: dict[str, Any] | None = None, base_label: str | None = None) -> list[str]:
    """Write the asked exports of ``adapter`` into ``out_dir``; returns the files written.
    ``base_label`` is the base's name for people (the hub id, when ``base`` is a path on a pod)."""
    base_name = base_of(adapter, base)
    label = base_label or base_name
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    if gguf or ollama:
        gguf_adapter(adapter, out_dir / "adapter.gguf", base_name)
        written.append("adapter.gguf")
    if ollama:
        modelfile(out_dir, label, "adapter.gguf", adapter)
        written.append("Modelfile")
    if merged:
        merged_model(adapter, out_dir / "merged", base_name, force)
        written.append("merged/")
    model_info(out_dir, adapter, label, written, metrics or {})
    written.append("model_info.json")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m remote.export", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("export")
    ex.add_argument("--adapter", type=Path, required=True)
    ex.add_argument("--out", type=Path, required=True)
    ex.add_argument("--base")
    ex.add_argument("--gguf", action="store_true")
    ex.add_argument("--modelfile", action="store_true")
    ex.add_argument("--merged", action="store_true")
    ex.add_argument("--force", action="store_true")
    mg = sub.add_parser("merge-adapters")
    mg.add_argument("adapters", type=Path, nargs="+")
    mg.add_argument("--weights", required=True)
    mg.add_argument("--out", type=Path, required=True)
    mg.add_argument("--base")
    args = parser.parse_args(argv)
    try:
        if args.command == "export":
            metrics_path = args.adapter.parent / "metrics.json"
            metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
            files = export(args.adapter, args.out, base=args.base, gguf=args.gguf, ollama=args.modelfile,
                           merged=args.merged, force=args.force, metrics=metrics)
        else:
            weights = [float(w) for w in args.weights.split(",")]
            merge_adapters(args.adapters, weights, args.out, base_of(args.adapters[0], args.base))
            files = sorted(p.name for p in args.out.iterdir())
    except Refused as exc:
        print(exc, file=sys.stderr)
        return 2
    print(json.dumps({"files": files}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
