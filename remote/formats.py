"""Dataset formats: detection, validation and normalisation, in one place.

Standard library only: the launcher validates datasets with these same rules before anything is
rented, and the trainer reads them with them on the pod. Every record becomes an *example*: either
``{"messages": [{"role", "content"}, ...]}`` (a conversation) or ``{"text": str}`` (plain language
modelling).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROLES = ("system", "user", "assistant", "tool")

Example = dict[str, Any]


class RecordError(ValueError):
    """What is wrong with one record (the caller adds file and line)."""


class DatasetError(ValueError):
    """A dataset problem located at ``path:line`` (line 0: the file as a whole)."""

    def __init__(self, path: str | Path, line: int, message: str) -> None:
        self.path, self.line, self.message = str(path), line, message
        where = f"{self.path}:{line}" if line else self.path
        super().__init__(f"{where}: {message}")


def _check_messages(messages: Any) -> Example:
    if not isinstance(messages, list) or not messages:
        raise RecordError('"messages" must be a non-empty list of {"role", "content"} objects')
    clean = []
    for i, msg in enumerate(messages, 1):
        if not isinstance(msg, dict):
            raise RecordError(f"message {i} is not an object")
        role = msg.get("role")
        if role not in ROLES:
            raise RecordError(f"message {i} has unknown role {role!r} (expected one of {', '.join(ROLES)})")
        content = msg.get("content")
        if content is None and role == "assistant" and msg.get("tool_calls"):
            content = ""
        if not isinstance(content, str):
            raise RecordError(f'message {i} ({role}) has no string "content"')
        turn = {"role": role, "content": content}
        for key in ("tool_calls", "name", "tool_call_id"):
            if key in msg:
                turn[key] = msg[key]
        clean.append(turn)
    if not any(m["role"] == "assistant" and (m["content"].strip() or m.get("tool_calls")) for m in clean):
        raise RecordError("conversation has no assistant turn with content (nothing to learn from)")
    return {"messages": clean}


def _check_text(text: Any) -> Example:
    if not isinstance(text, str) or not text.strip():
        raise RecordError('"text" is empty')
    return {"text": text}


#: name -> (does this record look like it, turn it into an example). Order matters: first match wins.
FORMATS: dict[str, tuple[Callable[[dict[str, Any]], bool], Callable[[dict[str, Any]], Example]]] = {
    "messages": (lambda r: "messages" in r, lambda r: _check_messages(r["messages"])),
    "text": (lambda r: "text" in r, lambda r: _check_text(r["text"])),
}


def detect_format(record: Any) -> str:
    """The name of the format ``record`` is in; RecordError when none fits."""
    if not isinstance(record, dict):
        raise RecordError(f"expected a JSON object, got {type(record).__name__}")
    for name, (matches, _) in FORMATS.items():
        if matches(record):
            return name
    keys = ", ".join(sorted(record)) or "none"
    raise RecordError(f"no recognised format (keys: {keys}; expected one of {', '.join(FORMATS)})")


def to_example(record: dict[str, Any], fmt: str) -> Example:
    return FORMATS[fmt][1](record)


def read_examples(path: str | Path) -> Iterator[tuple[int, str, Example]]:
    """Yield ``(line, format, example)`` for every record of a JSONL file; DatasetError on the first
    bad line, on a file that mixes formats, or on a file with no records at all."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, 0, "no such file")
    first_fmt: str | None = None
    first_line = 0
    with path.open("r", encoding="utf-8", errors="strict") as fh:
        try:
            for lineno, raw in enumerate(fh, 1):
                if not raw.strip():
                    continue
                try:
                    record = json.loads(raw)
                except json.JSONDecodeError as exc:
                    raise DatasetError(path, lineno, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
                try:
                    fmt = detect_format(record)
                    example = to_example(record, fmt)
                except RecordError as exc:
                    raise DatasetError(path, lineno, str(exc)) from None
                if first_fmt is None:
                    first_fmt, first_line = fmt, lineno
                elif fmt != first_fmt:
                    differs = f"format {fmt!r} differs from {first_fmt!r} of line {first_line} (one format per file)"
                    raise DatasetError(path, lineno, differs)
                yield lineno, fmt, example
        except UnicodeDecodeError as exc:
            raise DatasetError(path, 0, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if first_fmt is None:
        raise DatasetError(path, 0, "no examples (the file is empty)")


def example_text(example: Example) -> str:
    """All the text of an example, for rough size estimates."""
    if "text" in example:
        return str(example["text"])
    return "\n".join(m["content"] for m in example["messages"])
