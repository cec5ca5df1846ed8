"""The trainer: ``python -m remote.train --config job.json``.

Reads like a recipe: config, data (checked before any weights load), model, loop, evaluation, save.
Progress goes out as JSON lines (remote/events.py); the adapter, tokenizer, ``metrics.json``,
``samples.jsonl`` and ``manifest.json`` land in the job's output folder, atomically. Checkpoints go to
``checkpoints/`` beside it, and a restarted trainer resumes from the newest (same data order,
optimizer and scheduler state). Exit codes: 0 done, 1 training failed, 2 bad job.json or data.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from remote.events import EventWriter
from remote.export import Refused
from remote.formats import DatasetError
from remote.jobconfig import ConfigError, TrainConfig, load_config


def peak_vram_gb() -> float | None:
    """The most GPU memory torch reserved during the run (None off CUDA)."""
    import torch

    return round(torch.cuda.max_memory_reserved() / 2**30, 2) if torch.cuda.is_available() else None


def final_eval_loss(trainer: Any) -> float:
    """The evaluation at the last step: the scheduled one when it fell there (not run twice), else one
    now (its ``eval`` event comes from the progress callback, once)."""
    last = next((h for h in reversed(trainer.state.log_history) if "eval_loss" in h), None)
    if last is not None and last.get("step") == trainer.state.global_step:
        return float(last["eval_loss"])
    return float(trainer.evaluate()["eval_loss"])


def name_the_base(adapter: Path, name: str) -> None:
    """``adapter_config.json`` names the base as the user gave it (a hub id, a folder on their machine),
    not the folder it was rebuilt in on the pod: the adapter then loads anywhere the user has the base."""
    path = adapter / "adapter_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = name
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_samples(model: Any, tokenizer: Any, eval_examples: list[Any], count: int, path: Path) -> int:
    """Greedy generations for the first ``count`` held-out conversations, beside what was expected."""
    import torch

    rows = []
    convos = [e for e in eval_examples if "messages" in e.example and e.example["messages"][0]["role"] != "assistant"]
    for src in convos[:count]:
        messages = src.example["messages"]
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        prompt = tokenizer.apply_chat_template(messages[:last], tokenize=False, add_generation_prompt=True)
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").to(model.device)
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=64, do_sample=False, use_cache=True,
                                 pad_token_id=tokenizer.pad_token_id)
        generated = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
        rows.append({"source": f"{src.path}:{src.line}", "prompt": messages[:last],
                     "expected": messages[last]["content"], "generated": generated})
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return len(rows)


def check_context(cfg: TrainConfig) -> None:
    """max_seq_length within the model's context (its config's max_position_embeddings), before weights load."""
    from transformers import AutoConfig

    context = getattr(AutoConfig.from_pretrained(cfg.model), "max_position_embeddings", None)
    if isinstance(context, int) and cfg.max_seq_length > context:
        raise ConfigError(f"--max-seq-length {cfg.max_seq_length}: beyond {cfg.model_name or cfg.model}'s context of "
                          f"{context:,} tokens (max_position_embeddings)")


def fetch_s3_datasets(cfg: TrainConfig) -> None:
    """Replace s3:// datasets by local copies (errors keep naming the URL)."""
    if not any(p.startswith("s3://") for p in cfg.datasets + cfg.eval_datasets):
        return
    from remote.s3 import fetch

    def local(url: str) -> str:
        if not url.startswith("s3://"):
            return url
        path = str(fetch(url, Path("s3")))
        cfg.dataset_names[path] = cfg.dataset_names.get(url, url)
        return path

    cfg.datasets = [local(p) for p in cfg.datasets]
    cfg.eval_datasets = [local(p) for p in cfg.eval_datasets]


@dataclasses.dataclass
class Prepared:
    tokenizer: Any
    data: Any  # TokenizedData of the training examples
    eval_data: Any  # TokenizedData of the held-out ones, or None
    eval_examples: list[Any]
    chatml_fallback: bool


def prepare_data(cfg: TrainConfig) -> Prepared:
    """Data first, with the tokenizer only: a bad line fails in seconds, not after the weights load."""
    from remote.data import ensure_chat_template, load_examples, split_eval, tokenize_all
    from remote.modeling import load_tokenizer

    fetch_s3_datasets(cfg)
    examples, formats = load_examples(cfg.datasets, cfg.max_samples, cfg.seed, cfg.dataset_names)
    if cfg.eval_datasets:
        train_ex, (eval_ex, _) = examples, load_examples(cfg.eval_datasets, None, cfg.seed, cfg.dataset_names)
    else:
        train_ex, eval_ex = split_eval(examples, cfg.eval_fraction, cfg.seed)
    tokenizer = load_tokenizer(cfg)
    chatml_fallback = ensure_chat_template(tokenizer)
    if chatml_fallback:
        print("[trainer] the tokenizer has no chat template: using ChatML", file=sys.stderr)
    check_context(cfg)
    if cfg.exports:
        from remote.export import preflight

        preflight(cfg.exports, cfg.model, tokenizer, cfg.model_name)
    data = tokenize_all(tokenizer, train_ex, cfg.max_seq_length, formats)
    eval_data = tokenize_all(tokenizer, eval_ex, cfg.max_seq_length, {}) if eval_ex else None
    if not data.items:
        raise DatasetError(cfg.dataset_names.get(cfg.datasets[0], cfg.datasets[0]), 0,
                           "no example has an assistant token to train on")
    return Prepared(tokenizer, data, eval_data, eval_ex, chatml_fallback)


def run(cfg: TrainConfig, events: EventWriter) -> dict[str, Any]:
    from transformers import set_seed

    from remote.modeling import count_parameters, enable_unsloth_padding_free, load_for_training
    from remote.outputs import publish, staging_dir, write_json
    from remote.trainer import (
        TokenCounts,
        counting_trainer,
        newest_checkpoint,
        perplexity,
        plan_batches,
        progress_callback,
        training_arguments,
    )

    set_seed(cfg.seed)
    prepared = prepare_data(cfg)
    tokenizer, data, eval_data = prepared.tokenizer, prepared.data, prepared.eval_data
    loaded = load_for_training(cfg)
    batches = plan_batches(cfg, loaded.engine, tokenizer.pad_token_id, data, eval_data, loaded.padding_free_problem)
    for note in batches.notes:
        print(f"[trainer] {note}", file=sys.stderr)
    trainable, total = count_parameters(loaded.model)
    start_fields = dict(engine=loaded.engine, device=loaded.device, trainable_params=trainable, total_params=total,
                        packing=batches.packing, batch_layout=batches.layout, rows=len(batches.train),
                        eval_examples=len(eval_data.items) if eval_data else 0,
                        eval_tokens=eval_data.tokens if eval_data else 0,
                        chatml_fallback=prepared.chatml_fallback, **data.summary())
    counts = TokenCounts()
    trainer = counting_trainer(
        counts, model=loaded.model, args=training_arguments(cfg, loaded.device, loaded.bf16, batches.eval is not None),
        train_dataset=batches.train, eval_dataset=batches.eval, data_collator=batches.collator,
        callbacks=[progress_callback(events, counts, start_fields, cfg.save_every_s)])
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # its raw {'loss': ...} dicts: the progress callback says it readably
    if loaded.engine == "unsloth" and loaded.padding_free_problem is None:
        enable_unsloth_padding_free(loaded.model, trainer)
    resume = newest_checkpoint()
    t0 = time.monotonic()
    result = trainer.train(resume_from_checkpoint=resume)
    runtime = time.monotonic() - t0
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]

    metrics: dict[str, Any] = {
        "engine": loaded.engine, "device": loaded.device, "steps": trainer.state.global_step,
        "epochs_trained": round(trainer.state.epoch or 0.0, 4), "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None, "train_loss": result.training_loss,
        "runtime_s": round(runtime, 3), "tokens_trained": counts.real,
        "tokens_per_s": round(counts.real / runtime, 1) if runtime > 0 else None,
        "packing": batches.packing, "batch_layout": batches.layout, "padding_waste": counts.padding_waste,
        "resumed_from": resume, "trainable_params": trainable, "total_params": total, "data": data.summary(),
        "peak_vram_gb": peak_vram_gb(), "config": dataclasses.asdict(cfg),
    }
    staging = staging_dir(Path(cfg.output_dir))
    if batches.eval is not None:
        eval_loss = final_eval_loss(trainer)
        metrics.update(eval_loss=eval_loss, perplexity=perplexity(eval_loss),
                       eval_examples=len(eval_data.items) if eval_data else 0)
        loaded.model.eval()
        metrics["samples"] = write_samples(loaded.model, tokenizer, prepared.eval_examples, cfg.eval_samples,
                                           staging / "samples.jsonl")
    loaded.model.save_pretrained(staging / "adapter")
    name_the_base(staging / "adapter", cfg.model_name or cfg.model)
    tokenizer.save_pretrained(staging / "adapter")
    if cfg.exports:
        from remote.export import export

        metrics["exports"] = export(staging / "adapter", staging / "export", base=cfg.model, metrics=metrics,
                                    base_label=cfg.model_name, gguf="gguf" in cfg.exports,
                                    ollama="modelfile" in cfg.exports, merged="merged" in cfg.exports)
    write_json(staging / "metrics.json", metrics)
    manifest = publish(staging, Path(cfg.output_dir))
    return {"steps": metrics["steps"], "final_loss": metrics["final_loss"], "first_loss": metrics["first_loss"],
            "eval_loss": metrics.get("eval_loss"), "runtime_s": metrics["runtime_s"],
            "padding_waste": metrics["padding_waste"], "files": len(manifest["files"])}


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m remote.train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="path of job.json")
    args = parser.parse_args(argv)
    events = EventWriter.claim_stdout()
    signal.signal(signal.SIGTERM, _interrupt)  # terminating a pod or a local job: end with an event
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import warnings

    warnings.simplefilter("once")  # a library's warning goes to the log once, not once a step
    try:
        cfg = load_config(args.config)
        os.chdir(Path(args.config).resolve().parent)
        summary = run(cfg, events)
    except (ConfigError, DatasetError, Refused) as exc:
        events.emit("error", kind="config", message=str(exc))
        return 2
    except KeyboardInterrupt:
        events.emit("error", kind="interrupted", message="interrupted")
        return 130
    except Exception as exc:  # the launcher needs one line it can show; the traceback goes to train.log
        traceback.print_exc()
        events.emit("error", kind="training", message=f"{type(exc).__name__}: {exc}")
        return 1
    events.emit("done", **summary)
    loss = summary.get("final_loss")
    print(f"[trainer] done: {summary.get('steps')} steps"
          + (f", final loss {loss:.4f}" if isinstance(loss, (int, float)) else "")
          + f", {summary.get('files')} files written", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    code = main()
    # Outputs are published and every event is flushed: skip the interpreter's teardown of torch and
    # friends (seconds on a small machine), which only delays the exit_code the launcher waits for.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
