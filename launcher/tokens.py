"""Counting a dataset's tokens as the trainer will, when the model's tokenizer is on this machine (a
local model folder, rtrain's tiny model): its ``tokenizer.json`` through the ``tokenizers`` library
and its chat template through ``jinja2``, rendered in the environment transformers'
``apply_chat_template`` builds (sandboxed, ``trim_blocks``, ``lstrip_blocks``, loop controls, its
``tojson``, ``raise_exception``, ``strftime_now``, the special tokens as variables), so a launch and
``rtrain cost`` agree with the trainer's own count (tests/test_token_counts.py holds them to it).

Both libraries are light (no torch) and come with the ``train`` extra; without them, or without a
local tokenizer, counts are estimates (4 characters a token) and say so.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from remote.formats import CHATML_TEMPLATE, Example, capped

ESTIMATED = "estimated at 4 characters a token (the tokenizer is not on this machine)"
COUNTED = "counted with the model's tokenizer and chat template"


def _special(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _template(folder: Path, config: dict[str, Any]) -> str:
    for name in ("chat_template.jinja",):
        if (folder / name).is_file():
            return (folder / name).read_text(encoding="utf-8")
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: the default one
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    return template if isinstance(template, str) and template else CHATML_TEMPLATE


def _environment() -> Any:
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
               sort_keys: bool = False) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


class Counter:
    """Tokens of one example as the trainer counts them (rendered, tokenized, cut at max_seq_length)."""

    def __init__(self, folder: Path) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        config_path = folder / "tokenizer_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
        self.template = _environment().from_string(_template(folder, config))
        self.special = {k: _special(config.get(k)) for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
        self.has_eos = self.special["eos_token"] is not None

    def encode(self, text: str, special: bool) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=special).ids)

    def __call__(self, example: Example, max_seq_length: int) -> int:
        if "text" in example:
            n = self.encode(capped(example["text"], max_seq_length), True) + (1 if self.has_eos else 0)
        else:
            messages = [{**m, "content": capped(m["content"], max_seq_length)} for m in example["messages"]]
            text = self.template.render(messages=messages, tools=None, documents=None, add_generation_prompt=False,
                                        **self.special)
            n = self.encode(text, False)
        return min(n, max_seq_length)


def counter_for(folder: Path | None) -> Callable[[Example, int], int] | None:
    """The exact counter for a model folder, or None (no local tokenizer, or no tokenizers/jinja2)."""
    if folder is None or not (folder / "tokenizer.json").is_file():
        return None
    try:
        return Counter(folder)
    except ImportError:
        return None
    except Exception:  # a tokenizer or template these libraries cannot read: estimate instead of failing
        return None
