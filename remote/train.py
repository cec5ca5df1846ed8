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
import inspect
import json
import math
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

CHECKPOINTS = Path("checkpoints")


def training_arguments(cfg: TrainConfig, device: str, bf16: bool, has_eval: bool) -> Any:
    from transformers import TrainingArguments

    kwargs: dict[str, Any] = dict(
        output_dir=str(CHECKPOINTS), num_train_epochs=cfg.epochs, max_steps=cfg.max_steps or -1,
        per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, learning_rate=cfg.lr, lr_scheduler_type=cfg.lr_scheduler,
        weight_decay=cfg.weight_decay, logging_steps=cfg.logging_steps,
        save_strategy="steps" if cfg.save_steps else "no", save_steps=cfg.save_steps or 500,
        save_total_limit=cfg.save_total_limit,
        eval_strategy="steps" if cfg.eval_steps and has_eval else "no", eval_steps=cfg.eval_steps,
        report_to="none", seed=cfg.seed, use_cpu=device == "cpu", bf16=bf16, disable_tqdm=True,
        remove_unused_columns=False, dataloader_num_workers=0,
    )
    params = inspect.signature(TrainingArguments.__init__).parameters
    if cfg.warmup_steps:
        kwargs["warmup_steps"] = cfg.warmup_steps
    elif "warmup_ratio" in params:
        kwargs["warmup_ratio"] = cfg.warmup_ratio
    else:  # transformers >= 5: a float below 1 in warmup_steps is a ratio
        kwargs["warmup_steps"] = cfg.warmup_ratio
    return TrainingArguments(**kwargs)


def progress_callback(events: EventWriter, collator: Any, start_fields: dict[str, Any]) -> Any:
    """``start`` (with the step count the Trainer settled on), ``step`` per log, ``eval``, ``checkpoint``."""
    from transformers import TrainerCallback

    class EmitProgress(TrainerCallback):  # type: ignore[misc]
        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.t0, self.first_step = time.monotonic(), state.global_step
            events.emit("start", total_steps=state.max_steps, resumed_from_step=state.global_step or None,
                        **start_fields)

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            logs = logs or {}
            if "loss" not in logs or state.global_step == 0:
                return
            elapsed = time.monotonic() - self.t0
            done, step, total = state.global_step - self.first_step, state.global_step, state.max_steps
            events.emit(
                "step", step=step, total_steps=total, epoch=round(state.epoch or 0.0, 4), loss=float(logs["loss"]),
                lr=float(logs.get("learning_rate", 0.0)),
                grad_norm=float(logs["grad_norm"]) if logs.get("grad_norm") is not None else None,
                tokens_per_s=round(collator.tokens_seen / elapsed, 1) if elapsed > 0 else None,
                eta_s=round(elapsed / max(done, 1) * (total - step), 1),
            )

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Any = None, **kw: Any) -> None:
            loss = (metrics or {}).get("eval_loss")
            if loss is not None:
                events.emit("eval", step=state.global_step, eval_loss=float(loss), perplexity=_perplexity(loss))

        def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            events.emit("checkpoint", step=state.global_step,
                        path=str(CHECKPOINTS / f"checkpoint-{state.global_step}"))

    return EmitProgress()


def _perplexity(loss: float) -> float | None:
    return round(math.exp(loss), 4) if loss < 50 else None


def newest_checkpoint() -> str | None:
    """The newest complete checkpoint: the Trainer writes trainer_state.json last, so a folder without
    it was cut short (the trainer was killed while saving) and is skipped."""
    found = [p for p in CHECKPOINTS.glob("checkpoint-*")
             if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file()]
    return str(max(found, key=lambda p: int(p.name.split("-")[-1]))) if found else None


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
    from transformers import Trainer, set_seed

    from remote.data import PackedCollator, PadCollator, pack
    from remote.modeling import count_parameters, load_for_training
    from remote.outputs import publish, staging_dir, write_json

    set_seed(cfg.seed)
    prepared = prepare_data(cfg)
    tokenizer, data, eval_data = prepared.tokenizer, prepared.data, prepared.eval_data
    loaded = load_for_training(cfg)
    packing = cfg.packing if cfg.packing is not None else loaded.engine != "unsloth"
    collator = (PackedCollator if packing else PadCollator)(tokenizer.pad_token_id)
    train_set = pack(data.items, cfg.max_seq_length) if packing else data.items
    eval_set = None
    if eval_data and eval_data.items:
        eval_set = pack(eval_data.items, cfg.max_seq_length) if packing else eval_data.items
    trainable, total = count_parameters(loaded.model)
    start_fields = dict(engine=loaded.engine, device=loaded.device, trainable_params=trainable, total_params=total,
                        packing=packing, rows=len(train_set), eval_examples=len(eval_data.items) if eval_data else 0,
                        chatml_fallback=prepared.chatml_fallback,
                        **data.summary())
    args = training_arguments(cfg, loaded.device, loaded.bf16, eval_set is not None)
    trainer = Trainer(model=loaded.model, args=args, train_dataset=train_set, eval_dataset=eval_set,
                      data_collator=collator, callbacks=[progress_callback(events, collator, start_fields)])
    resume = newest_checkpoint()
    t0 = time.monotonic()
    result = trainer.train(resume_from_checkpoint=resume)
    runtime = time.monotonic() - t0
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]

    metrics: dict[str, Any] = {
        "engine": loaded.engine, "device": loaded.device, "steps": trainer.state.global_step,
        "epochs": trainer.state.epoch, "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None, "train_loss": result.training_loss,
        "runtime_s": round(runtime, 3), "tokens_seen": collator.tokens_seen,
        "tokens_per_s": round(collator.tokens_seen / runtime, 1) if runtime > 0 else None,
        "packing": packing, "padding_waste": round(collator.pad_seen / max(collator.pad_seen + collator.tokens_seen,
                                                                           1), 4),
        "resumed_from": resume, "trainable_params": trainable, "total_params": total, "data": data.summary(),
        "config": dataclasses.asdict(cfg),
    }
    staging = staging_dir(Path(cfg.output_dir))
    if eval_set is not None:
        eval_loss = float(trainer.evaluate()["eval_loss"])
        metrics.update(eval_loss=eval_loss, perplexity=_perplexity(eval_loss),
                       eval_examples=len(eval_data.items) if eval_data else 0)
        events.emit("eval", step=trainer.state.global_step, eval_loss=eval_loss, perplexity=_perplexity(eval_loss))
        loaded.model.eval()
        metrics["samples"] = write_samples(loaded.model, tokenizer, prepared.eval_examples, cfg.eval_samples,
                                           staging / "samples.jsonl")
    loaded.model.save_pretrained(staging / "adapter")
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
    return 0


if __name__ == "__main__":
    code = main()
    # Outputs are published and every event is flushed: skip the interpreter's teardown of torch and
    # friends (seconds on a small machine), which only delays the exit_code the launcher waits for.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
