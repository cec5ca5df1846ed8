"""The trainer: ``python -m remote.train --config job.json``.

Reads like a recipe: config, data, model, loop, save. Progress goes out as JSON lines (see
remote/events.py); the adapter, tokenizer, ``metrics.json`` and ``manifest.json`` land in the job's
output folder, atomically. Exit codes: 0 done, 1 training failed, 2 bad job.json or dataset.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from remote.events import EventWriter
from remote.formats import DatasetError
from remote.jobconfig import ConfigError, TrainConfig, load_config


def training_arguments(cfg: TrainConfig, checkpoints: Path, device: str, bf16: bool) -> Any:
    from transformers import TrainingArguments

    kwargs: dict[str, Any] = dict(
        output_dir=str(checkpoints),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr,
        lr_scheduler_type=cfg.lr_scheduler,
        weight_decay=cfg.weight_decay,
        logging_steps=cfg.logging_steps,
        save_strategy="no",
        report_to="none",
        seed=cfg.seed,
        use_cpu=device == "cpu",
        bf16=bf16,
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
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
    """Emit ``start`` (with the step count the Trainer settled on) and one ``step`` per log."""
    from transformers import TrainerCallback

    class EmitProgress(TrainerCallback):  # type: ignore[misc]
        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.t0 = time.monotonic()
            events.emit("start", total_steps=state.max_steps, **start_fields)

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            logs = logs or {}
            if "loss" not in logs or state.global_step == 0:
                return
            elapsed = time.monotonic() - self.t0
            step, total = state.global_step, state.max_steps
            events.emit(
                "step", step=step, total_steps=total, epoch=round(state.epoch or 0.0, 4),
                loss=float(logs["loss"]), lr=float(logs.get("learning_rate", 0.0)),
                grad_norm=float(logs["grad_norm"]) if logs.get("grad_norm") is not None else None,
                tokens_per_s=round(collator.tokens_seen / elapsed, 1) if elapsed > 0 else None,
                eta_s=round(elapsed / step * (total - step), 1),
            )

    return EmitProgress()


def run(cfg: TrainConfig, events: EventWriter) -> dict[str, Any]:
    from transformers import Trainer, set_seed

    from remote.data import PadCollator, ensure_chat_template, load_examples, tokenize_all
    from remote.modeling import count_parameters, load_for_training
    from remote.outputs import publish, staging_dir, write_json

    set_seed(cfg.seed)
    examples, formats = load_examples(cfg.datasets, cfg.max_samples, cfg.seed)
    loaded = load_for_training(cfg)
    tokenizer = loaded.tokenizer
    if ensure_chat_template(tokenizer):
        print("[trainer] the tokenizer has no chat template: using ChatML", file=sys.stderr)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    data = tokenize_all(tokenizer, examples, cfg.max_seq_length, formats)
    if not data.items:
        raise ValueError("no example has any assistant token left to train on after truncation")
    output = Path(cfg.output_dir)
    collator = PadCollator(tokenizer.pad_token_id)
    args = training_arguments(cfg, output.parent / "checkpoints", loaded.device, loaded.bf16)
    trainable, total = count_parameters(loaded.model)
    start_fields = dict(engine=loaded.engine, device=loaded.device, trainable_params=trainable,
                        total_params=total, **data.summary())
    trainer = Trainer(model=loaded.model, args=args, train_dataset=data.items, data_collator=collator,
                      callbacks=[progress_callback(events, collator, start_fields)])

    t0 = time.monotonic()
    result = trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]

    staging = staging_dir(output)
    loaded.model.save_pretrained(staging / "adapter")
    tokenizer.save_pretrained(staging / "adapter")
    metrics = {
        "engine": loaded.engine, "device": loaded.device, "steps": trainer.state.global_step,
        "epochs": trainer.state.epoch, "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None, "train_loss": result.training_loss,
        "runtime_s": round(time.monotonic() - t0, 3), "tokens_seen": collator.tokens_seen,
        "trainable_params": trainable, "total_params": total, "data": data.summary(),
        "config": dataclasses.asdict(cfg),
    }
    write_json(staging / "metrics.json", metrics)
    manifest = publish(staging, output)
    return {"steps": metrics["steps"], "final_loss": metrics["final_loss"], "first_loss": metrics["first_loss"],
            "runtime_s": metrics["runtime_s"], "files": len(manifest["files"])}


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
    except (ConfigError, DatasetError) as exc:
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
