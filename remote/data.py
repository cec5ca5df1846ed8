"""From dataset files to token ids and labels, and from those to batches.

Conversations are rendered with the tokenizer's own chat template (ChatML when it has none, and the
trainer says so); labels are -100 everywhere except the assistant's turns and their end-of-turn
marker, so the model learns to answer, not to imitate users. Plain ``text`` examples are trained on
every token.

Packing puts several examples into each ``max_seq_length`` row (best-fit decreasing) without letting
them see each other: position ids restart at 0 for every example and no attention mask is passed, so
transformers builds a block-diagonal causal mask from the position ids (``masking_utils``; it needs
``use_cache=False``, as in training). The first label of every example is -100, so no example
learns to predict the next one's first token.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from remote.formats import CHATML_TEMPLATE, DatasetError, Example, capped, held_out, read_examples

IGNORE = -100



@dataclass
class Sourced:
    """An example and where it came from (for errors that name the file and line)."""

    path: str
    line: int
    example: Example


@dataclass
class TokenizedData:
    items: list[dict[str, list[int]]]
    examples: int = 0
    truncated: int = 0
    dropped_no_target: int = 0
    tokens: int = 0
    target_tokens: int = 0
    formats: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"examples": self.examples, "used": len(self.items), "truncated": self.truncated,
                "dropped_no_target": self.dropped_no_target, "tokens": self.tokens,
                "target_tokens": self.target_tokens, "formats": self.formats}


def load_examples(paths: list[str], max_samples: int | None, seed: int,
                  names: dict[str, str] | None = None) -> tuple[list[Sourced], dict[str, int]]:
    """Every example of ``paths``; ``names`` gives the user's name for a file stored under another
    (a content-addressed blob on a pod), so that errors point at the file the user knows."""
    examples: list[Sourced] = []
    formats: dict[str, int] = {}
    for path in paths:
        shown = (names or {}).get(path, path)
        try:
            for line, fmt, example in read_examples(path, shown):
                examples.append(Sourced(shown, line, example))
                formats[fmt] = formats.get(fmt, 0) + 1
        except DatasetError as exc:
            raise DatasetError(shown, exc.line, exc.message) from None
    if max_samples is not None and len(examples) > max_samples:
        # A seeded sample, not the first N: files are often sorted by topic or date.
        examples = random.Random(seed).sample(examples, max_samples)
    return examples, formats


def split_eval(examples: list[Sourced], fraction: float, seed: int) -> tuple[list[Sourced], list[Sourced]]:
    """A seeded held-out share, as many as ``held_out`` says."""
    n_eval = held_out(len(examples), fraction)
    if not n_eval:
        return examples, []
    order = list(range(len(examples)))
    random.Random(seed + 1).shuffle(order)
    held = set(order[:n_eval])
    return [e for i, e in enumerate(examples) if i not in held], [examples[i] for i in sorted(held)]


def ensure_chat_template(tokenizer: Any) -> bool:
    """Give the tokenizer ChatML when it has no template. True when it did (the caller says so)."""
    if getattr(tokenizer, "chat_template", None):
        return False
    tokenizer.chat_template = CHATML_TEMPLATE
    return True


def _render(tokenizer: Any, messages: list[dict[str, Any]], generation_prompt: bool = False) -> str:
    if not messages:
        return ""
    return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt))


def assistant_spans(tokenizer: Any, messages: list[dict[str, Any]]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of each assistant turn (its content and
    end-of-turn marker, not the role header the template puts before it)."""
    text = _render(tokenizer, messages)
    end_marker = getattr(tokenizer, "eos_token", None) or ""
    spans: list[tuple[int, int]] = []
    search_from = 0
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:i], generation_prompt=True)
        upto = _render(tokenizer, messages[: i + 1])
        if text.startswith(upto) and upto.startswith(before) and len(upto) > len(before):
            spans.append((len(before), len(upto)))
            search_from = len(upto)
            continue
        # Templates that rewrite earlier turns (Qwen3 drops reasoning from all but the last answer)
        # are not prefix-stable: find the content itself, and its end-of-turn marker after it.
        pos = text.find(message["content"], search_from) if message["content"] else -1
        if pos >= 0:
            end = pos + len(message["content"])
            if end_marker and text.startswith(end_marker, end):
                end += len(end_marker)
            spans.append((pos, end))
            search_from = end
    return text, spans


def _label(ids: list[int], offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[int]:
    labels = [IGNORE] * len(ids)
    for j, (start, end) in enumerate(offsets):
        if any(start < s_end and end > s_start for s_start, s_end in spans):
            labels[j] = ids[j]
    return labels


def tokenize_example(tokenizer: Any, example: Example, max_seq_length: int = 1 << 30) -> tuple[list[int], list[int]]:
    """Token ids and labels; every text is cut before it is tokenized where ``max_seq_length`` tokens surely
    end (the result is truncated to that anyway), so a huge record costs no more than a long one."""
    if "text" in example:
        ids = list(tokenizer(capped(example["text"], max_seq_length), add_special_tokens=True)["input_ids"])
        if tokenizer.eos_token_id is not None:
            ids.append(tokenizer.eos_token_id)
        return ids, list(ids)
    messages = [{**m, "content": capped(m["content"], max_seq_length)} for m in example["messages"]]
    text, spans = assistant_spans(tokenizer, messages)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    return ids, _label(ids, [tuple(o) for o in enc["offset_mapping"]], spans)


def tokenize_all(tokenizer: Any, examples: list[Sourced], max_seq_length: int,
                 formats: dict[str, int]) -> TokenizedData:
    """Token ids and labels for every example. DatasetError (naming file and line) for a conversation
    the chat template cannot render, or whose prompt leaves no room for an answer."""
    from jinja2 import TemplateError

    data = TokenizedData(items=[], examples=len(examples), formats=formats)
    for src in examples:
        try:
            ids, labels = tokenize_example(tokenizer, src.example, max_seq_length)
        except TemplateError as exc:
            raise DatasetError(src.path, src.line, f"the model's chat template cannot render this conversation: "
                               f"{exc}") from None
        first_target = next((j for j, lab in enumerate(labels) if lab != IGNORE), None)
        if first_target is None:
            data.dropped_no_target += 1
            continue
        if first_target >= max_seq_length:
            raise DatasetError(src.path, src.line, f"the prompt before the first answer is {first_target} tokens, "
                               f"over max_seq_length {max_seq_length}: raise --max-seq-length or shorten it")
        if len(ids) > max_seq_length:
            data.truncated += 1
            ids, labels = ids[:max_seq_length], labels[:max_seq_length]
        data.tokens += len(ids)
        data.target_tokens += sum(1 for x in labels if x != IGNORE)
        data.items.append({"input_ids": ids, "labels": labels})
    return data


def pack(items: list[dict[str, list[int]]], max_seq_length: int) -> list[list[dict[str, list[int]]]]:
    """Best-fit decreasing: each bin is a list of examples whose lengths add up to at most
    ``max_seq_length`` (every example already is at most that long)."""
    bins: list[list[dict[str, list[int]]]] = []
    room: list[int] = []
    for item in sorted(items, key=lambda it: len(it["input_ids"]), reverse=True):
        n = len(item["input_ids"])
        best = min((i for i, r in enumerate(room) if r >= n), key=lambda i: room[i], default=None)
        if best is None:
            bins.append([item])
            room.append(max_seq_length - n)
        else:
            bins[best].append(item)
            room[best] -= n
    return bins


#: batch keys the collators add for the trainer's count of trained tokens (popped before the model)
REAL_TOKENS, PAD_TOKENS = "rtrain_real_tokens", "rtrain_pad_tokens"


class PadCollator:
    """Right-pads a batch of examples (with an attention mask); says how many of its tokens are real
    and how many padding (``REAL_TOKENS``/``PAD_TOKENS``), for the steps that train on it."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, batch: list[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        width = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, b in enumerate(batch):
            n = len(b["input_ids"])
            ids[row, :n] = torch.tensor(b["input_ids"])
            labels[row, :n] = torch.tensor(b["labels"])
            mask[row, :n] = 1
        real = int(mask.sum())
        return {"input_ids": ids, "labels": labels, "attention_mask": mask, REAL_TOKENS: real,
                PAD_TOKENS: mask.numel() - real}


class PackedCollator(PadCollator):
    """A batch of packed bins: one row per bin, position ids restarting for every example (and for
    the padding after the last one), the first label of each example ignored, no attention mask."""

    def __call__(self, batch: list[list[dict[str, list[int]]]]) -> dict[str, Any]:  # type: ignore[override]
        import torch

        width = max(sum(len(ex["input_ids"]) for ex in b) for b in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
        positions = torch.zeros((len(batch), width), dtype=torch.long)
        real = 0
        for row, examples in enumerate(batch):
            at = 0
            for ex in examples:
                n = len(ex["input_ids"])
                ids[row, at:at + n] = torch.tensor(ex["input_ids"])
                labels[row, at:at + n] = torch.tensor(ex["labels"])
                labels[row, at] = IGNORE
                positions[row, at:at + n] = torch.arange(n)
                at += n
            positions[row, at:] = torch.arange(width - at)  # padding: a sequence of its own, never trained
            real += at
        return {"input_ids": ids, "labels": labels, "position_ids": positions, REAL_TOKENS: real,
                PAD_TOKENS: ids.numel() - real}


class FlatCollator:
    """Unsloth's padding-free batch, made as Unsloth's own SFT path makes it: TRL's
    ``DataCollatorForLanguageModeling(padding_free=True)`` lays every example of the step (each packed
    bin's examples, or each example) end to end in ONE row, position ids restarting per example,
    the first label of each example ignored, no padding and no attention mask; Unsloth's wrapper
    (unsloth/utils/packing.py) adds ``packed_seq_lengths`` for its varlen attention, as this does.
    With several rows, or with a mask, Unsloth cannot see the boundaries and the examples of a row
    attend to each other."""

    #: Unsloth's ``enable_sample_packing`` wraps a collator's ``torch_call`` unless it is marked as
    #: already giving the lengths, which this one does
    _unsloth_packing_wrapped = True

    def __init__(self, pad_id: int) -> None:
        from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

        self.trl = DataCollatorForLanguageModeling(pad_token_id=pad_id, padding_free=True)

    def __call__(self, batch: list[Any]) -> dict[str, Any]:
        import torch

        rows = []
        for item in batch:
            examples = item if isinstance(item, list) else [item]
            rows.append({"input_ids": [t for ex in examples for t in ex["input_ids"]],
                         "labels": [t for ex in examples for t in ex["labels"]],
                         "seq_lengths": [len(ex["input_ids"]) for ex in examples]})
        out = dict(self.trl(rows))
        lengths = [n for row in rows for n in row["seq_lengths"]]
        out["packed_seq_lengths"] = torch.tensor(lengths, dtype=torch.int32)
        out[REAL_TOKENS], out[PAD_TOKENS] = sum(lengths), out["input_ids"].numel() - sum(lengths)
        return out

    torch_call = __call__
