"""Dataset formats: detection, validation and normalisation, in one place.

Standard library only: the launcher validates datasets with these same rules before anything is
rented, and the trainer reads them with them on the pod. Every record becomes an *example*: either
``{"messages": [{"role", "content"}, ...]}`` (a conversation) or ``{"text": str}`` (plain language
modelling).

JSONL records, detected per line (one format per file): ``messages`` (OpenAI/ChatML roles, tool calls
kept), ``conversations`` (ShareGPT from/value), Alpaca ``instruction``/``input``/``output`` (with
optional ``system`` and ``history``), ``instruction``/``response``, ``prompt``/``completion``, and
``text``. Files ending in .txt or .md hold blank-line separated blocks of ``Q:``/``A:`` or
``User:``/``Assistant:`` turns.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROLES = ("system", "user", "assistant", "tool")
#: The longest line (or text block) read: memory stays bounded whatever a file holds. A record this
#: long is far beyond any max_seq_length; rtrain truncates what it trains on anyway.
LINE_LIMIT = 64 << 20

Example = dict[str, Any]

#: the chat template a tokenizer without one is given (the trainer says so); the launcher counts
#: tokens with it too
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def held_out(examples: int, fraction: float, cap: int = 200) -> int:
    """How many of ``examples`` the trainer holds out for eval: a share (at least 1, at most ``cap``),
    none from fewer than 20 examples."""
    if fraction <= 0 or examples < 20:
        return 0
    return min(cap, max(1, round(examples * fraction)))


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
        if "tool_calls" in msg and msg["tool_calls"] is not None and (
                not isinstance(msg["tool_calls"], list) or not all(isinstance(c, dict) for c in msg["tool_calls"])):
            raise RecordError(f'message {i} ({role}) has "tool_calls" that is not a list of objects')
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


def _string(record: dict[str, Any], key: str, required: bool = True) -> str:
    value = record.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise RecordError(f'"{key}" must be a non-empty string')
    return value


#: ShareGPT speakers -> roles
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system", "tool": "tool", "observation": "tool", "function_response": "tool"}


def _from_sharegpt(record: dict[str, Any]) -> Example:
    turns = record["conversations"]
    if not isinstance(turns, list) or not turns:
        raise RecordError('"conversations" must be a non-empty list of {"from", "value"} objects')
    messages = []
    for i, turn in enumerate(turns, 1):
        if not isinstance(turn, dict):
            raise RecordError(f"turn {i} is not an object")
        speaker = turn.get("from")
        if speaker not in SHAREGPT_ROLES:
            raise RecordError(f"turn {i} is from unknown speaker {speaker!r} (expected one of "
                              f"{', '.join(SHAREGPT_ROLES)})")
        messages.append({"role": SHAREGPT_ROLES[speaker], "content": turn.get("value")})
    return _check_messages(messages)


def _from_alpaca(record: dict[str, Any]) -> Example:
    messages: list[dict[str, Any]] = []
    system = _string(record, "system", required=False)
    if system.strip():
        messages.append({"role": "system", "content": system})
    history = record.get("history") or []
    if not isinstance(history, list) or not all(isinstance(h, list | tuple) and len(h) == 2 for h in history):
        raise RecordError('"history" must be a list of [instruction, response] pairs')
    for question, answer in history:
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    prompt = _string(record, "instruction")
    extra = _string(record, "input", required=False)
    if extra.strip():
        prompt = f"{prompt}\n\n{extra}"
    messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": _string(record, "output")}]
    return _check_messages(messages)


def _pair(prompt_key: str, answer_key: str) -> Callable[[dict[str, Any]], Example]:
    def convert(record: dict[str, Any]) -> Example:
        return _check_messages([{"role": "user", "content": _string(record, prompt_key)},
                                {"role": "assistant", "content": _string(record, answer_key)}])

    return convert


#: name -> (does this record look like it, turn it into an example). Order matters: first match wins.
FORMATS: dict[str, tuple[Callable[[dict[str, Any]], bool], Callable[[dict[str, Any]], Example]]] = {
    "messages": (lambda r: "messages" in r, lambda r: _check_messages(r["messages"])),
    "conversations": (lambda r: "conversations" in r, _from_sharegpt),
    "alpaca": (lambda r: "instruction" in r and "output" in r, _from_alpaca),
    "instruction_response": (lambda r: "instruction" in r and "response" in r, _pair("instruction", "response")),
    "prompt_completion": (lambda r: "prompt" in r and "completion" in r, _pair("prompt", "completion")),
    "text": (lambda r: "text" in r, lambda r: _check_text(r["text"])),
}

#: Plain-text files: blank-line separated blocks of "Q:"/"A:" or "User:"/"Assistant:" turns.
TEXT_SUFFIXES = (".txt", ".md")
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
_SPEAKER = re.compile(r"^(q|a|user|assistant|system)\s*:\s?(.*)$", re.IGNORECASE)
_TEXT_ROLES = {"q": "user", "user": "user", "a": "assistant", "assistant": "assistant", "system": "system"}


def _lines(path: Path, fh: Any) -> Iterator[tuple[int, str]]:
    """The lines of an open file, none read beyond LINE_LIMIT characters (memory stays bounded)."""
    lineno = 0
    while line := fh.readline(LINE_LIMIT + 1):
        lineno += 1
        if len(line) > LINE_LIMIT and not line.endswith("\n"):
            raise DatasetError(path, lineno, f"the line is longer than {LINE_LIMIT >> 20} MiB (rtrain reads at most "
                               "that much of one record)")
        yield lineno, line


def _read_turn_blocks(path: Path) -> Iterator[tuple[int, str, Example]]:
    block: list[tuple[int, str]] = []
    size = 0
    with path.open("r", encoding="utf-8") as fh:
        for lineno, line in _lines(path, fh):
            if line.strip():
                block.append((lineno, line.rstrip("\n")))
                size += len(line)
                if size > LINE_LIMIT:
                    raise DatasetError(path, block[0][0], f"the block is longer than {LINE_LIMIT >> 20} MiB")
                continue
            if block:
                yield _turn_block(path, block)
                block, size = [], 0
    if block:
        yield _turn_block(path, block)


def _turn_block(path: Path, block: list[tuple[int, str]]) -> tuple[int, str, Example]:
    first = block[0][0]
    messages: list[dict[str, str]] = []
    for lineno, line in block:
        match = _SPEAKER.match(line)
        if match:
            messages.append({"role": _TEXT_ROLES[match[1].lower()], "content": match[2]})
        elif messages:
            messages[-1]["content"] += "\n" + line
        else:
            raise DatasetError(path, lineno, "expected a turn starting with 'Q:', 'A:', 'User:' or 'Assistant:'")
    try:
        return first, "qa_text", _check_messages([{**m, "content": m["content"].strip()} for m in messages])
    except RecordError as exc:
        raise DatasetError(path, first, str(exc)) from None


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


def is_text_file(path: Path, name: str | None = None) -> bool:
    """Whether ``path`` holds turn blocks (not JSONL), judged by the user's file name ``name`` (a
    dataset may be stored under another name: a content-addressed blob on a pod), and by its content
    when that name says nothing: JSONL starts with ``{``."""
    suffix = Path(name or path).suffix.lower()
    if suffix in TEXT_SUFFIXES or suffix in JSONL_SUFFIXES:
        return suffix in TEXT_SUFFIXES
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 16):
            stripped = chunk.lstrip()
            if stripped:
                return not stripped.startswith(b"{")
    return False


def _checked_file(path: Path) -> None:
    """DatasetError unless ``path`` is a regular file this process can read, naming what it is."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise DatasetError(path, 0, "no such file") from None
    except PermissionError:
        raise DatasetError(path, 0, "cannot be read (permission denied)") from None
    if stat.S_ISDIR(mode):
        raise DatasetError(path, 0, "is a folder, expected a dataset file")
    if not stat.S_ISREG(mode):
        kind = {stat.S_IFIFO: "a FIFO (named pipe)", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
                stat.S_IFSOCK: "a socket"}.get(stat.S_IFMT(mode), "not a regular file")
        raise DatasetError(path, 0, f"is {kind}, not a regular file")
    if not os.access(path, os.R_OK):
        raise DatasetError(path, 0, "cannot be read (permission denied)")


def _parse(path: Path, lineno: int, raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DatasetError(path, lineno, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise DatasetError(path, lineno, "nested too deeply to be a dataset record") from None
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise DatasetError(path, lineno, f"not a usable JSON record ({exc})") from None


def _unicode_checked(path: Path, lineno: int, example: Example) -> Example:
    """A string with a lone surrogate is valid JSON and invalid text: no tokenizer takes it."""
    try:
        json.dumps(example, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        bad = exc.object[exc.start:exc.end].encode("unicode_escape").decode()
        raise DatasetError(path, lineno, f"holds a lone surrogate ({bad}): not valid Unicode text") from None
    return example


def read_examples(path: str | Path, name: str | None = None) -> Iterator[tuple[int, str, Example]]:
    """Yield ``(line, format, example)`` for every record of a dataset file; DatasetError on the first
    bad line, on a file that mixes formats, or on a file with no records at all. ``name`` is the
    user's name for the file when it is stored under another (it decides between JSONL and text).
    Memory stays bounded: a file is streamed, and no line is read beyond LINE_LIMIT."""
    path = Path(path)
    _checked_file(path)
    try:
        text_file = is_text_file(path, name)
    except PermissionError:
        raise DatasetError(path, 0, "cannot be read (permission denied)") from None
    if text_file:
        for lineno, fmt, example in _read_text_file(path):
            yield lineno, fmt, _unicode_checked(path, lineno, example)
        return
    first_fmt: str | None = None
    first_line = 0
    with path.open("r", encoding="utf-8", errors="strict") as fh:
        try:
            for lineno, raw in _lines(path, fh):
                if not raw.strip():
                    continue
                record = _parse(path, lineno, raw)
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
                yield lineno, fmt, _unicode_checked(path, lineno, example)
        except UnicodeDecodeError as exc:
            raise DatasetError(path, 0, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if first_fmt is None:
        raise DatasetError(path, 0, "no examples (the file is empty)")


def _read_text_file(path: Path) -> Iterator[tuple[int, str, Example]]:
    count = 0
    try:
        for item in _read_turn_blocks(path):
            count += 1
            yield item
    except UnicodeDecodeError as exc:
        raise DatasetError(path, 0, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not count:
        raise DatasetError(path, 0, "no examples (the file is empty)")


#: No token of a real vocabulary spans more characters than this: text cut at ``max_seq_length`` times
#: this never loses what training would keep (it truncates at ``max_seq_length`` tokens), and a 50 MB
#: record costs no more to tokenize than a long one.
MAX_CHARS_PER_TOKEN = 32


def capped(text: str, max_tokens: int) -> str:
    """``text`` cut where ``max_tokens`` tokens surely end (before it is tokenized)."""
    return text[: max_tokens * MAX_CHARS_PER_TOKEN]


def example_text(example: Example) -> str:
    """All the text of an example, for rough size estimates."""
    if "text" in example:
        return str(example["text"])
    return "\n".join(m["content"] for m in example["messages"])
