"""What the user sees while a job runs: phases, dataset counts, a live training bar.

Human output goes to stderr, so that ``--json`` leaves stdout to the one JSON line. On a terminal the
training bar is live; elsewhere (CI, a pipe) a plain line is printed now and then instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class Reporter:
    def __init__(self, quiet: bool = False, console: Console | None = None) -> None:
        # soft_wrap: a long line stays one line in a log or a pipe instead of breaking at 80 columns
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)
        self.quiet = quiet
        self._progress: Any = None
        self._task: Any = None
        self._last_line = 0.0
        self.price_per_hr = 0.0
        self.expect_gpu = False  # a cloud job: training on a CPU there is worth a warning
        self.started = time.monotonic()
        self._warned_fields = False

    def info(self, message: str) -> None:
        if not self.quiet:
            self.console.print(escape(message))

    def phase(self, message: str) -> None:
        if not self.quiet:
            self.console.print(f"[bold cyan]>[/] {escape(message)}")

    def warn(self, message: str) -> None:
        self.console.print(f"[bold yellow]warning:[/] {escape(message)}")

    def error(self, message: str) -> None:
        self.console.print(f"[bold red]error:[/] {escape(message)}")

    @contextmanager
    def transfer(self, label: str, total: int) -> Iterator[Callable[[int], None] | None]:
        """A byte progress bar for a transfer big enough to watch (on a terminal); else nothing."""
        if self.quiet or not self.console.is_terminal or total < (8 << 20):
            yield None
            return
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        with Progress(TextColumn("  {task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                      console=self.console, transient=True) as progress:
            task = progress.add_task(label, total=total)
            yield lambda n: progress.advance(task, n)

    # training events -------------------------------------------------------------------------

    def training_event(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if event.get("_dropped") and not self._warned_fields:
            self._warned_fields = True
            self.warn(f"the trainer sent non-numbers for {', '.join(event['_dropped'])} (in a {kind} event): ignored")
        if kind == "start":
            self._on_start(event)
        elif kind == "step":
            self._on_step(event)
        elif kind == "checkpoint":
            self._line(f"  checkpoint at step {event.get('step')}")
        elif kind == "eval":
            ppl = f", perplexity {event['perplexity']:.2f}" if event.get("perplexity") else ""
            loss = f"{event['eval_loss']:.4f}" if "eval_loss" in event else "?"
            self._line(f"  eval at step {event.get('step')}: loss {loss}{ppl}")
        elif kind in ("done", "error"):
            self.stop_progress()

    def _on_start(self, ev: dict[str, Any]) -> None:
        self.started = time.monotonic()
        self.phase(
            f"training on {ev.get('device')} with {ev.get('engine')}: {ev.get('used')} examples, "
            f"{ev.get('tokens', 0):,} tokens ({ev.get('target_tokens', 0):,} trained on)"
            + (f", {ev['eval_examples']} examples and {ev.get('eval_tokens', 0):,} tokens held out for eval"
               if ev.get("eval_examples") else "") + ", "
            f"{ev.get('trainable_params', 0):,} trainable parameters, {ev.get('total_steps')} steps"
            + (f", resuming from step {ev['resumed_from_step']}" if ev.get("resumed_from_step") else "")
        )
        if self.expect_gpu and str(ev.get("device", "")).startswith("cpu"):
            self.warn("the trainer sees no GPU on the machine: it is training on the CPU (check the image)")
        if ev.get("chatml_fallback"):
            self.warn("the model's tokenizer has no chat template: conversations are rendered as ChatML")
        if ev.get("truncated"):
            self.warn(f"{ev['truncated']} examples were longer than max_seq_length and were truncated")
        if ev.get("dropped_no_target"):
            self.warn(f"{ev['dropped_no_target']} examples had no assistant tokens left and were skipped")
        if self.quiet or not self.console.is_terminal:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
            TimeRemainingColumn(), console=self.console, transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task("train", total=ev.get("total_steps") or None, stats="")

    def _stats(self, ev: dict[str, Any]) -> str:
        parts = [f"loss {ev['loss']:.4f}" if isinstance(ev.get("loss"), int | float) else "loss ?"]
        if ev.get("tokens_per_s"):
            parts.append(f"{ev['tokens_per_s']:,.0f} tok/s")
        if self.price_per_hr:
            spent = self.price_per_hr * (time.monotonic() - self.started) / 3600
            parts.append(f"${spent:.2f}")
        return "  ".join(parts)

    def _on_step(self, ev: dict[str, Any]) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=ev.get("step", 0), stats=self._stats(ev))
            return
        now = time.monotonic()
        last = ev.get("step") == ev.get("total_steps")
        if self.quiet or (not last and ev.get("step") != 1 and now - self._last_line < 5.0):
            return
        self._last_line = now
        self.console.print(escape(
            f"  step {ev.get('step')}/{ev.get('total_steps')}  {self._stats(ev)}  eta {fmt_duration(ev.get('eta_s'))}"
        ))

    def _line(self, message: str) -> None:
        """A line above the live bar (or a plain line without one)."""
        if self.quiet:
            return
        target = self._progress.console if self._progress is not None else self.console
        target.print(escape(message))

    def stop_progress(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
