"""The trainer's half of the line protocol: one JSON object per line on the events stream.

Events: ``start``, ``step``, ``checkpoint``, ``done``, ``error`` (each with ``"event"`` and ``"ts"``).
Library chatter must never corrupt the stream, so ``EventWriter.claim_stdout`` moves the real stdout
aside for events and points file descriptor 1 at stderr.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import IO, Any


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class EventWriter:
    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    @classmethod
    def claim_stdout(cls) -> EventWriter:
        """Events go to the original stdout; anything else printed (by any library) goes to stderr."""
        sys.stdout.flush()
        events_fd = os.dup(1)
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        return cls(os.fdopen(events_fd, "w", buffering=1, encoding="utf-8"))

    def emit(self, event: str, **fields: Any) -> None:
        record = {"event": event, "ts": round(time.time(), 3)}
        record.update({k: _finite(v) for k, v in fields.items()})
        self._stream.write(json.dumps(record, allow_nan=False) + "\n")
        self._stream.flush()
