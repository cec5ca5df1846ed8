"""Dataset validation on the user's machine, before any work or money: the trainer's own rules
(``remote/formats.py``, standard library only) applied to every line, plus counts for the user."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from launcher.errors import UsageError
from remote.formats import DatasetError, example_text, read_examples

#: Rough characters per token for English chat text with a BPE tokenizer; the cost command refines it
#: with the real tokenizer when one is at hand.
CHARS_PER_TOKEN = 4.0


@dataclass
class DatasetSummary:
    path: Path
    format: str
    examples: int
    conversations_with_system: int
    multi_turn: int
    approx_tokens: int
    size_bytes: int
    source: str = ""
    #: tokens counted as the trainer counts (launcher/tokens.py), when the tokenizer is at hand
    counted: int | None = None

    def describe(self) -> str:
        if self.format.startswith("s3"):
            return f"{self.source}: {self.size_bytes / 1e6:.1f} MB in S3, read and checked line by line on the machine"
        extra = ""
        if self.conversations_with_system or self.multi_turn:
            extra = f", {self.conversations_with_system} with a system prompt, {self.multi_turn} multi-turn"
        if self.counted is not None:
            tokens = f"{self.counted:,} tokens (counted with the model's tokenizer and chat template)"
        else:
            tokens = f"~{self.approx_tokens:,} tokens (estimated at 4 characters a token)"
        return f"{self.path.name}: {self.examples} examples ({self.format}{extra}), {tokens}"


@dataclass
class DatasetsSummary:
    files: list[DatasetSummary] = field(default_factory=list)

    @property
    def examples(self) -> int:
        return sum(f.examples for f in self.files)

    @property
    def approx_tokens(self) -> int:
        return sum(f.approx_tokens for f in self.files)


def validate_dataset(path: str | Path) -> DatasetSummary:
    """Parse every line of ``path``; UsageError ``file:line: what is wrong`` on the first bad one."""
    p = Path(path)
    n = with_system = multi = chars = 0
    fmt = ""
    try:
        for _line, line_fmt, example in read_examples(p):
            fmt = line_fmt  # one format per file: the last is the file's
            n += 1
            chars += len(example_text(example))
            if "messages" in example:
                roles = [m["role"] for m in example["messages"]]
                with_system += roles[0] == "system"
                multi += roles.count("assistant") > 1
    except DatasetError as exc:
        raise UsageError(str(exc)) from None
    return DatasetSummary(
        path=p,
        format=fmt,
        examples=n,
        conversations_with_system=with_system,
        multi_turn=multi,
        approx_tokens=int(chars / CHARS_PER_TOKEN),
        size_bytes=p.stat().st_size,
    )


def validate_datasets(paths: list[str]) -> DatasetsSummary:
    """Every local file line by line; an s3:// one only as far as it exists (the trainer reads it on
    the machine, with the same rules, and names its lines by the URL)."""
    from launcher.s3 import check_object, is_s3

    summaries = []
    for p in paths:
        if is_s3(p):
            size = check_object(p)
            summaries.append(DatasetSummary(path=Path(p.rsplit("/", 1)[-1]), format="s3", examples=0,
                                            conversations_with_system=0, multi_turn=0,
                                            approx_tokens=int(size / CHARS_PER_TOKEN / 1.6), size_bytes=size,
                                            source=p))
        else:
            summaries.append(validate_dataset(p))
    return DatasetsSummary(summaries)
