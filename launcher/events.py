"""The launcher's half of the line protocol: parsing the trainer's events as they arrive.

Bytes arrive in arbitrary pieces (a poll may end mid-line); ``EventStream`` only consumes complete
lines and keeps the byte offset of the first unconsumed one, which is what the registry saves so a
resumed launcher continues exactly where the last one stopped.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

#: fields that must be numbers wherever they appear (a trainer's event is data, checked like any input)
NUMBERS = ("step", "total_steps", "epoch", "loss", "lr", "grad_norm", "tokens_per_s", "eta_s", "eval_loss",
           "perplexity", "tokens", "target_tokens", "trainable_params", "total_params", "used", "examples",
           "truncated", "dropped_no_target", "rows", "eval_examples", "resumed_from_step", "steps", "final_loss",
           "first_loss", "runtime_s", "padding_waste", "files", "bytes")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def parse_event(line: bytes | str) -> dict[str, Any] | None:
    """One event, or None for a line that is not one (blank, not JSON, no ``event`` name). A field of
    NUMBERS that is not a finite number is dropped, and named in ``_dropped``."""
    if isinstance(line, bytes):
        line = line.decode("utf-8", errors="replace")
    line = line.strip()
    if not line:
        return None
    try:
        value = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("event"), str):
        return None
    dropped = [k for k in NUMBERS if k in value and value[k] is not None and not _number(value[k])]
    for key in dropped:
        del value[key]
    if dropped:
        value["_dropped"] = dropped
    return value


@dataclass
class EventStream:
    offset: int = 0
    skipped: int = 0

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        """Events in the complete lines of ``data`` (bytes read at ``self.offset``); advances the offset
        past those lines only."""
        end = data.rfind(b"\n")
        if end < 0:
            return []
        events = []
        for raw in data[: end + 1].splitlines():
            event = parse_event(raw)
            if event is None:
                self.skipped += raw.strip() != b""
            else:
                events.append(event)
        self.offset += end + 1
        return events


@dataclass
class TrainerStatus:
    state: str  # RUNNING, STARTING, DEAD, EXIT
    exit_code: int | None = None


def parse_probe(output: bytes) -> tuple[TrainerStatus, bytes]:
    """Split the follow probe's output: a status line, then raw event bytes."""
    head, _, rest = output.partition(b"\n")
    words = head.decode(errors="replace").split()
    if not words:
        return TrainerStatus("STARTING"), rest
    if words[0] == "EXIT":
        code = int(words[1]) if len(words) > 1 and words[1].lstrip("-").isdigit() else -1
        return TrainerStatus("EXIT", code), rest
    return TrainerStatus(words[0]), rest
