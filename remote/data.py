"""From dataset files to token ids and labels.

Conversations are rendered with the tokenizer's own chat template (ChatML when it has none, and the
trainer says so); labels are -100 everywhere except the assistant's turns, so the model learns to
answer, not to imitate users. Plain ``text`` examples are trained on every token.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from remote.formats import Example, read_examples

IGNORE = -100

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


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
        return {
            "examples": self.examples,
            "used": len(self.items),
            "truncated": self.truncated,
            "dropped_no_target": self.dropped_no_target,
            "tokens": self.tokens,
            "target_tokens": self.target_tokens,
            "formats": self.formats,
        }


def load_examples(paths: list[str], max_samples: int | None, seed: int) -> tuple[list[Example], dict[str, int]]:
    examples: list[Example] = []
    formats: dict[str, int] = {}
    for path in paths:
        for _line, fmt, example in read_examples(path):
            examples.append(example)
            formats[fmt] = formats.get(fmt, 0) + 1
    if max_samples is not None and len(examples) > max_samples:
        # A seeded sample, not the first N: files are often sorted by topic or date.
        examples = random.Random(seed).sample(examples, max_samples)
    return examples, formats


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
        # Templates that rewrite earlier turns (e.g. drop reasoning) are not prefix-stable; fall
        # back to finding the content itself in the full rendering.
        pos = text.find(message["content"], search_from) if message["content"] else -1
        if pos >= 0:
            end = pos + len(message["content"])
            spans.append((pos, end))
            search_from = end
    return text, spans


def _label(ids: list[int], offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[int]:
    labels = [IGNORE] * len(ids)
    for j, (start, end) in enumerate(offsets):
        if any(start < s_end and end > s_start for s_start, s_end in spans):
            labels[j] = ids[j]
    return labels


def tokenize_example(tokenizer: Any, example: Example) -> tuple[list[int], list[int]]:
    if "text" in example:
        ids = list(tokenizer(example["text"], add_special_tokens=True)["input_ids"])
        if tokenizer.eos_token_id is not None:
            ids.append(tokenizer.eos_token_id)
        return ids, list(ids)
    text, spans = assistant_spans(tokenizer, example["messages"])
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    return ids, _label(ids, [tuple(o) for o in enc["offset_mapping"]], spans)


def tokenize_all(tokenizer: Any, examples: list[Example], max_seq_length: int,
                 formats: dict[str, int]) -> TokenizedData:
    data = TokenizedData(items=[], examples=len(examples), formats=formats)
    for example in examples:
        ids, labels = tokenize_example(tokenizer, example)
        if len(ids) > max_seq_length:
            data.truncated += 1
            ids, labels = ids[:max_seq_length], labels[:max_seq_length]
        targets = sum(1 for x in labels if x != IGNORE)
        if targets == 0:
            data.dropped_no_target += 1
            continue
        data.tokens += len(ids)
        data.target_tokens += targets
        data.items.append({"input_ids": ids, "labels": labels})
    return data


class PadCollator:
    """Right-pads a batch; counts the real (non-pad) tokens it has handed out, for tokens/s."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id
        self.tokens_seen = 0

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
        self.tokens_seen += int(mask.sum())
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}
