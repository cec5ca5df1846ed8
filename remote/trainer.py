"""The transformers ``Trainer`` as rtrain drives it: how batches are made for each engine, its
arguments, a count of the tokens it really trained on, and progress as events.

Batches:
- transformers + peft: packed bins, one row each, position ids restarting per example and no mask
  (transformers builds a block-diagonal mask from them); or right-padded rows with ``--no-packing``.
- Unsloth: every example of a step in ONE row with ``packed_seq_lengths`` and no mask (FlatCollator),
  Unsloth's own padding-free path; packing only decides how many examples a step takes.

Tokens are counted in ``training_step``, not when a batch is collated: the dataloader fetches a
batch ahead, and the one fetched when training stops was never trained on.
"""

from __future__ import annotations

import inspect
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from remote.data import PAD_TOKENS, REAL_TOKENS, FlatCollator, PackedCollator, PadCollator, pack
from remote.events import EventWriter
from remote.jobconfig import TrainConfig

CHECKPOINTS = Path("checkpoints")


@dataclass
class TokenCounts:
    """Tokens of the batches the trainer stepped on: real ones and padding."""

    real: int = 0
    pad: int = 0

    @property
    def padding_waste(self) -> float:
        return round(self.pad / max(self.pad + self.real, 1), 4)


@dataclass
class Batches:
    train: list[Any]
    eval: list[Any] | None
    collator: Any
    packing: bool
    #: how a step's examples reach the model, for the start event and metrics.json
    layout: str
    notes: list[str] = field(default_factory=list)


def plan_batches(cfg: TrainConfig, engine: str, pad_id: int, data: Any, eval_data: Any,
                 padding_free_problem: str | None = None) -> Batches:
    """The training and evaluation sets and the collator, for ``engine``. ``padding_free_problem`` is
    why Unsloth's padding-free path cannot be used with this model (then rows are padded)."""
    packing = cfg.packing if cfg.packing is not None else True
    notes = []
    if engine == "unsloth" and padding_free_problem is None:
        collator, layout = FlatCollator(pad_id), "one row per step, padding-free (Unsloth)"
    elif engine == "unsloth":
        packing = False
        notes.append(f"Unsloth's padding-free batches are off ({padding_free_problem}): rows are padded")
        collator, layout = PadCollator(pad_id), "padded rows"
    elif packing:
        collator, layout = PackedCollator(pad_id), "packed rows, block-diagonal attention"
    else:
        collator, layout = PadCollator(pad_id), "padded rows"

    def arrange(items: list[Any]) -> list[Any]:
        return pack(items, cfg.max_seq_length) if packing else items

    eval_set = arrange(eval_data.items) if eval_data is not None and eval_data.items else None
    return Batches(arrange(data.items), eval_set, collator, packing, layout, notes)


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


def counting_trainer(counts: TokenCounts, **kwargs: Any) -> Any:
    """A ``Trainer`` that adds each trained batch's tokens to ``counts`` (and hands the model only its
    own inputs)."""
    from transformers import Trainer

    class CountingTrainer(Trainer):  # type: ignore[misc]
        def training_step(self, model: Any, inputs: dict[str, Any], *args: Any, **kw: Any) -> Any:
            counts.real += int(inputs.pop(REAL_TOKENS, 0))
            counts.pad += int(inputs.pop(PAD_TOKENS, 0))
            return super().training_step(model, inputs, *args, **kw)

        def prediction_step(self, model: Any, inputs: dict[str, Any], *args: Any, **kw: Any) -> Any:
            inputs.pop(REAL_TOKENS, None)
            inputs.pop(PAD_TOKENS, None)
            return super().prediction_step(model, inputs, *args, **kw)

    return CountingTrainer(**kwargs)


def perplexity(loss: float) -> float | None:
    return round(math.exp(loss), 4) if loss < 50 else None


def progress_callback(events: EventWriter, counts: TokenCounts, start_fields: dict[str, Any],
                      save_every_s: int | None = None) -> Any:
    """``start`` (with the step count the Trainer settled on), ``step`` per log, ``eval``, ``checkpoint``;
    a checkpoint at least every ``save_every_s``; each checkpoint gets a ``manifest.json`` (sha256 and
    size of its files) written last, so a copy of it can be verified and an incomplete one is known."""
    from transformers import TrainerCallback

    class EmitProgress(TrainerCallback):  # type: ignore[misc]
        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.t0, self.first_step, self.first_tokens = time.monotonic(), state.global_step, counts.real
            self.last_save = self.t0
            events.emit("start", total_steps=state.max_steps, resumed_from_step=state.global_step or None,
                        **start_fields)

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            due = save_every_s and time.monotonic() - self.last_save >= save_every_s
            if due and state.global_step < state.max_steps:
                control.should_save = True

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            logs = logs or {}
            if "loss" not in logs or state.global_step == 0:
                return
            elapsed = time.monotonic() - self.t0
            done, step, total = state.global_step - self.first_step, state.global_step, state.max_steps
            trained = counts.real - self.first_tokens
            fields = dict(
                step=step, total_steps=total, epoch=round(state.epoch or 0.0, 4), loss=float(logs["loss"]),
                lr=float(logs.get("learning_rate", 0.0)),
                grad_norm=float(logs["grad_norm"]) if logs.get("grad_norm") is not None else None,
                tokens_per_s=round(trained / elapsed, 1) if elapsed > 0 else None,
                eta_s=round(elapsed / max(done, 1) * (total - step), 1),
            )
            events.emit("step", **fields)
            say(step_line(fields))

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Any = None, **kw: Any) -> None:
            loss = (metrics or {}).get("eval_loss")
            if loss is not None:
                events.emit("eval", step=state.global_step, eval_loss=float(loss), perplexity=perplexity(loss))
                ppl = perplexity(loss)
                say(f"eval at step {state.global_step}: loss {float(loss):.4f}"
                    + (f", perplexity {ppl:.2f}" if ppl is not None else ""))

        def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            from remote.outputs import MANIFEST, build_manifest, write_json

            self.last_save = time.monotonic()
            folder = CHECKPOINTS / f"checkpoint-{state.global_step}"
            manifest = build_manifest(folder)
            write_json(folder / MANIFEST, manifest)
            events.emit("checkpoint", step=state.global_step, path=str(folder), files=len(manifest["files"]),
                        bytes=sum(f["size"] for f in manifest["files"].values()))
            say(f"checkpoint at step {state.global_step}: {folder}")

    return EmitProgress()


def say(line: str) -> None:
    """A line for people: the trainer's log (stderr; the events are the machine-readable record)."""
    print(f"[trainer] {line}", file=sys.stderr, flush=True)


def step_line(f: dict[str, Any]) -> str:
    """``step 10/60  loss 4.5061  lr 4.50e-04  grad 1.23  1,234 tok/s  eta 0:12``"""
    parts = [f"step {f['step']}/{f['total_steps']}", f"loss {f['loss']:.4f}", f"lr {f['lr']:.2e}"]
    if f.get("grad_norm") is not None:
        parts.append(f"grad {f['grad_norm']:.2f}")
    if f.get("tokens_per_s") is not None:
        parts.append(f"{f['tokens_per_s']:,.0f} tok/s")
    eta = int(f.get("eta_s") or 0)
    parts.append(f"eta {eta // 3600}:{eta // 60 % 60:02d}:{eta % 60:02d}" if eta >= 3600 else
                 f"eta {eta // 60}:{eta % 60:02d}")
    return "  ".join(parts)


def newest_checkpoint() -> str | None:
    """The newest complete checkpoint: the Trainer writes trainer_state.json last, so a folder without
    it was cut short (the trainer was killed while saving) and is skipped."""
    found = [p for p in CHECKPOINTS.glob("checkpoint-*")
             if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").is_file()]
    return str(max(found, key=lambda p: int(p.name.split("-")[-1]))) if found else None
